"""The config builder, kept here for `configs/<dataset>_<objective>.py` users: it lives in the package.

`get_config(dataset, objective, arg)` and the tables `DATASETS`, `OBJECTIVES`, `CPU`, ... are those of
`attr_robust_tf.configs.common`, which ships with the installed package (`attr_robust_tf.configs.get`).
"""
from attr_robust_tf.configs.common import *  # noqa: F401,F403
from attr_robust_tf.configs.common import __all__  # noqa: F401
