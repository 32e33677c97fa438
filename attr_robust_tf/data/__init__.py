"""Local-file loaders and `tf.data` pipelines for MNIST, Fashion-MNIST, GTSRB, Flower-17 and Flowers-102.

Nothing downloads unless `download=True`; every official file is checked by MD5 (docs/datasets.md, docs/data.md).
TFDS builders live in `attr_robust_tf.data.tfds_builders` (needs the `tfds` extra; imported only on demand).
"""
from attr_robust_tf.data.catalog import NAMES, DatasetInfo
from attr_robust_tf.data.flowers import FLOWER17_REFERENCE_LABELS, rar_split
from attr_robust_tf.data.loaders import arrays, clear_cache, info, load, make_dataset, synthetic, to_bounds
from attr_robust_tf.data.verify import ChecksumError

__all__ = [
    "NAMES",
    "DatasetInfo",
    "ChecksumError",
    "FLOWER17_REFERENCE_LABELS",
    "arrays",
    "clear_cache",
    "info",
    "load",
    "make_dataset",
    "rar_split",
    "synthetic",
    "to_bounds",
]
