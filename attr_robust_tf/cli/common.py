"""Flags and runtime setup shared by the config-driven tools (docs/conventions.md §7).

Flags are defined inside `define_common_flags()`, never at import, so importing this module (or the library)
registers nothing and cannot raise `DuplicateFlagError`. `--config` takes a config file `path[:arg]`; a path
that does not exist is looked up in the installed package (`attr_robust_tf.configs.resolve`), so
`--config=attr_robust_tf/configs/experiment.py:fmnist,sarkar2021,cpu` works from any folder.
"""
import os
import sys

from absl import flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
STRATEGIES = ("default", "mirrored", "multi_worker")


class _ResolvedConfigFile(flags.ArgumentParser):
    """config_flags' file parser, given the path resolved by `attr_robust_tf.configs.resolve` first."""

    def __init__(self, parser):
        self.parser = parser

    def parse(self, path):
        from attr_robust_tf import configs

        return self.parser.parse(configs.resolve(path))

    def flag_type(self):
        return self.parser.flag_type()


def define_common_flags(workdir_required=True):
    """--config (a config file, `:arg` variant, `--config.a.b=value` overrides), --workdir, --strategy."""
    holder = config_flags.DEFINE_config_file(
        "config", None, "Experiment config file, e.g. configs/fmnist_sarkar2021.py:cpu or "
        "attr_robust_tf/configs/experiment.py:fmnist,sarkar2021,cpu; override fields with --config.lr=1e-3 or "
        "--config.robust.weights.cacr=0.2.", lock_config=True)
    FLAGS[holder.name].parser = _ResolvedConfigFile(FLAGS[holder.name].parser)
    flags.DEFINE_string("workdir", None, "Output folder: config.json, checkpoints/, metrics.csv, tb/, model.keras "
                        "(train.py default: runs/<config name>_<arg>).")
    flags.DEFINE_enum("strategy", None, STRATEGIES,
                      "tf.distribute strategy; overrides config.runtime.strategy.")
    flags.mark_flags_as_required(["config", "workdir"] if workdir_required else ["config"])


def default_workdir():
    """runs/<config file name>[_<arg>], e.g. runs/fmnist_sarkar2021_cpu for configs/fmnist_sarkar2021.py:cpu."""
    path, _, arg = config_flags.get_config_filename(FLAGS["config"]).partition(":")
    name = os.path.splitext(os.path.basename(path))[0]
    return os.path.join("runs", f"{name}_{arg.replace(',', '_')}" if arg else name)


def parse_flags(argv):
    """`app.run` flags parser: a mistyped `--config.` key prints the did-you-mean and exits 1, no traceback."""
    try:
        return FLAGS(argv)
    except flags.Error as error:
        message = str(error)
    except (KeyError, AttributeError) as error:  # ml_collections: an override names a key that does not exist
        text = " ".join(str(error.args[0] if error.args else error).split("\n"))
        overrides = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
        message = f"Unknown config key in {', '.join(overrides)}: {text}"
    sys.stderr.write(f"FATAL Flags parsing error: {message}\nPass --helpshort or --helpfull to see help on flags.\n")
    sys.exit(1)


def setup_runtime(config):
    """Runs first in a tool: logical CPUs (before any TF op), determinism, seeds, logging; returns the strategy.

    `config.runtime.logical_cpus` splits the CPU into that many devices for `MirroredStrategy` on a machine
    without GPUs; `runtime.deterministic` turns on TF's deterministic ops and turns off Grappler's graph
    rewrites, so two runs of a config, and a resumed run and an uninterrupted one, end bit for bit equal.
    """
    import keras
    import tensorflow as tf

    from attr_robust_tf import distribute

    logging.set_verbosity(logging.INFO)  # our progress messages
    tf.get_logger().setLevel("WARNING")  # but not TF's per-step INFO lines (cross-device reductions)
    runtime = config.runtime
    if runtime.strategy == "mirrored" and runtime.logical_cpus and not tf.config.list_physical_devices("GPU"):
        distribute.configure_logical_cpus(runtime.logical_cpus)
    keras.utils.set_random_seed(config.seed)
    if runtime.deterministic:
        tf.config.experimental.enable_op_determinism()
        # Grappler's graph rewrites reorder float sums differently from one trace to the next: two identical
        # sarkar2021 runs differed by ~1e-8 in the weights with them and were bit-identical without them,
        # at the same speed on CPU.
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    strategy = distribute.make_strategy(runtime.strategy)
    logging.info("Strategy %s with %d replica(s).", runtime.strategy, strategy.num_replicas_in_sync)
    return strategy
