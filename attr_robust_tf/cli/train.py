"""Train a model from a config; rerunning the same command resumes an interrupted run (docs/configs.md).

  python -m attr_robust_tf.cli.train --config=attr_robust_tf/configs/experiment.py:fmnist,sarkar2021,cpu
  python tools/train.py --config=configs/fmnist_sarkar2021.py:cpu            # workdir runs/fmnist_sarkar2021_cpu
  python tools/train.py --config=configs/tiny.py:madry --workdir=runs/t --config.lr=1e-3 --strategy=mirrored

Writes <workdir>/config.json first, then checkpoints/ after every epoch, metrics.csv, tb/ (TensorBoard) and
finally model.keras. After a crash or `kill -9`, the same command continues from the last finished epoch and
ends with the weights of an uninterrupted run. --overwrite starts over.
"""
import os

from absl import app, flags

from attr_robust_tf.cli import common

FLAGS = flags.FLAGS


def define_flags():
    common.define_common_flags(workdir_required=False)  # default: runs/<config name>[_<arg>]
    flags.DEFINE_bool("overwrite", False, "Delete the workdir's previous run instead of resuming it.")
    flags.DEFINE_string("overrides", None, "JSON file of {dotted.config.key: value} overrides applied after "
                        "--config (e.g. tools/tune.py's best_overrides.json).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = FLAGS.config
    if FLAGS.strategy:
        config.runtime.strategy = FLAGS.strategy

    from attr_robust_tf import config_utils, experiment

    if FLAGS.overrides:
        if not os.path.isfile(FLAGS.overrides):
            raise app.UsageError(f"`--overrides` must be a JSON file. Received: --overrides={FLAGS.overrides}.")
        config = config_utils.override(config, config_utils.read_json(FLAGS.overrides))
    config_utils.validate(config)  # config mistakes fail here, before TensorFlow starts any work
    workdir = FLAGS.workdir or common.default_workdir()
    if os.path.isfile(workdir):
        raise app.UsageError(f"`--workdir` must be a folder. Received: --workdir={workdir} (a file).")
    strategy = common.setup_runtime(config)
    experiment.run_train(config, workdir, strategy, overwrite=FLAGS.overwrite)


def run():
    """The `attr-robust-train` console script and `python -m attr_robust_tf.cli.train`."""
    define_flags()
    app.run(main, flags_parser=common.parse_flags)


if __name__ == "__main__":
    run()
