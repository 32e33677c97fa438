"""attr_robust_tf: attributionally robust training, attribution attacks and evaluation (Keras 3 / TF)."""
import os as _os

_backend = _os.environ.get("KERAS_BACKEND", "tensorflow")
if _backend != "tensorflow":
    raise ImportError(
        "attr_robust_tf needs the TensorFlow backend of Keras 3 (nested tf.GradientTape for double "
        f"backprop). Received: KERAS_BACKEND={_backend!r}. Set KERAS_BACKEND=tensorflow before importing.")

import keras as _keras  # noqa: E402

if _keras.config.backend() != "tensorflow":
    raise ImportError(
        "attr_robust_tf needs the TensorFlow backend of Keras 3. Received: keras.config.backend()="
        f"{_keras.config.backend()!r} (from ~/.keras/keras.json). Set KERAS_BACKEND=tensorflow.")

from attr_robust_tf.version import __version__  # noqa: E402
from attr_robust_tf import scores  # noqa: E402
from attr_robust_tf.attributions import (  # noqa: E402
    input_x_gradient,
    integrated_gradients,
    saliency,
    saliency_map,
    smoothgrad,
)

__all__ = [
    "__version__",
    "scores",
    "integrated_gradients",
    "saliency",
    "input_x_gradient",
    "smoothgrad",
    "saliency_map",
]
