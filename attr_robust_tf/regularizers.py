"""Compatibility name of `attr_robust_tf.penalties` (`regularizers` reads like `keras.regularizers`).

Every public name is the same object as in `penalties`.
"""
from attr_robust_tf.penalties import *  # noqa: F401,F403
from attr_robust_tf.penalties import __all__  # noqa: F401
