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

__all__ = ["get", "load", "DIR", "EXPERIMENT", "DATASETS", "OBJECTIVES", "VARIANTS", "CPU", "CPU_SHRINK",
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
