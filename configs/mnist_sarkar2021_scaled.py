"""MNIST × Sarkar et al. 2021 with the scale-aware CACR (temperature "std"), CACR + WACR (docs/objectives.md).

Variants: `:cpu` (minutes on 2 CPU cores), `:tiny` (tests). Values and their sources: attr_robust_tf/configs/common.py.
"""
from attr_robust_tf import configs


def get_config(arg=None):
    return configs.get("mnist", "sarkar2021_scaled", arg)
