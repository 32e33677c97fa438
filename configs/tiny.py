"""Seconds-scale config for tests and CI: synthetic 8×8×1 data, tiny_cnn, batch 8, ≤ 4 IG points, 2 epochs.

The argument names the objective (default sarkar2021): `--config=configs/tiny.py:madry`. It is the `:tiny`
variant of the Fashion-MNIST config of that objective (attr_robust_tf/configs/common.py).
"""
from attr_robust_tf import configs


def get_config(arg=None):
    return configs.get("fmnist", arg or "sarkar2021", "tiny")
