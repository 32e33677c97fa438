"""Flower-17 × IGR, Wang & Kong 2022 (docs/igr.md).

Variants: `:cpu` (minutes on 2 CPU cores), `:tiny` (tests). Values and their sources: attr_robust_tf/configs/common.py.
"""
from attr_robust_tf import configs


def get_config(arg=None):
    return configs.get("flower17", "igr", arg)
