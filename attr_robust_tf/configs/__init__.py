"""Experiment configs, shipped with the package: every dataset × objective × variant as an ml_collections config.

  from attr_robust_tf import configs
  config = configs.get("fmnist", "sarkar2021", "cpu")           # a ConfigDict (docs/configs.md)

On the command line the same config is `--config=attr_robust_tf/configs/experiment.py:fmnist,sarkar2021,cpu`
(resolved inside the installed package when the path does not exist, `config_utils.resolve_config_path`), or in
a checkout the thin file `--config=configs/fmnist_sarkar2021.py:cpu`. Datasets: mnist, fmnist, gtsrb, flower17;
objectives: the rows of `attr_robust_tf.objectives`; variants: "" (reference), "cpu", "tiny".
"""
import os

from attr_robust_tf.configs.common import CPU, CPU_SHRINK, DATASETS, OBJECTIVES, SARKAR_FLOWER, VARIANTS, get_config

__all__ = ["get", "load", "resolve", "DIR", "EXPERIMENT", "DATASETS", "OBJECTIVES", "VARIANTS", "CPU", "CPU_SHRINK",
           "SARKAR_FLOWER"]

DIR = os.path.dirname(os.path.abspath(__file__))
EXPERIMENT = os.path.join(DIR, "experiment.py")  # the file behind --config=...experiment.py:<arg>


def get(dataset, objective, variant=None):
    """The ConfigDict of `dataset` × `objective` in `variant` ("", "cpu" or "tiny"; a `parse_arg` string)."""
    return get_config(dataset, objective, variant)


def load(dataset, objective, variant=None, overrides=()):
    """`get` with dotted overrides applied through `config_utils.override`, validated.

    `overrides` is a dict {"robust.weights.cacr": 1.0} or strings ["robust.weights.cacr=1", "train.epochs=4"]
    (the `objective@key=value+key=value` entries of tools/reproduce.py).
    """
    from attr_robust_tf import config_utils

    config = get(dataset, objective, variant)
    if overrides:
        config = config_utils.override(config, overrides if isinstance(overrides, dict) else list(overrides))
    return config_utils.validate(config)


def resolve(spec):
    """The `--config` value `path[:arg]` with `path` made a file that exists, for config_flags.

    An existing `path` is kept (a checkout's `configs/x.py`, your own file). Otherwise the config comes from the
    installed package, so the same command line works without the checkout:
    `attr_robust_tf/configs/experiment.py:arg` (or `experiment.py:arg`) is this package's file, and
    `configs/<dataset>_<objective>.py:arg` / `configs/tiny.py:objective` become
    `experiment.py:<dataset>,<objective>,<arg>` / `experiment.py:fmnist,<objective>,tiny`.
    """
    path, sep, arg = str(spec).partition(":")
    if os.path.exists(path) or not path.endswith(".py"):
        return spec
    parts = path.replace(os.sep, "/").split("/")
    name = parts[-1][:-3]
    if os.path.isfile(os.path.join(DIR, parts[-1])) and parts[-1] != "__init__.py" and (
            len(parts) == 1 or parts[-3:-1] == ["attr_robust_tf", "configs"]):
        return os.path.join(DIR, parts[-1]) + sep + arg
    if len(parts) >= 2 and parts[-2] == "configs":
        if name == "tiny":
            return f"{EXPERIMENT}:fmnist,{arg or 'sarkar2021'},tiny"
        dataset, _, objective = name.partition("_")
        if dataset in DATASETS and objective in OBJECTIVES:
            return f"{EXPERIMENT}:{dataset},{objective}" + (f",{arg}" if arg else "")
    return spec
