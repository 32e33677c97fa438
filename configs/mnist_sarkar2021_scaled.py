"""MNIST × Sarkar et al. 2021 with the scale-aware CACR (temperature "std"), CACR + WACR (docs/objectives.md).

Variants: `:cpu` (minutes on 2 CPU cores), `:tiny` (tests). Values and their sources: configs/common.py.
"""
from attr_robust_tf.config_utils import import_sibling


def get_config(arg=None):
    return import_sibling(__file__, "common").get_config("mnist", "sarkar2021_scaled", arg)
