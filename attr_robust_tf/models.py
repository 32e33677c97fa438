"""Reference architectures (docs/method.md §8.3) and small CPU-scale CNNs; all output logits (N, K).

Every builder returns a built functional `keras.Model` that takes float images in [0, 1]; any
normalisation is a layer inside the model, so ε and step sizes stay in pixel units (docs/conventions.md §1).
Activations are ReLU-type layers, so `softplus_surrogate(model, beta)` (re-exported here) can build the
smooth copy that shares the weights (docs/method.md §4.2).
"""
import keras
import tensorflow as tf

from attr_robust_tf import _checks
from attr_robust_tf.surrogate import softplus_surrogate

__all__ = ["mnist_cnn", "gtsrb_resnet", "flower_resnet", "cpu_cnn", "tiny_cnn", "get", "MODELS",
           "PerImageStandardization", "ChannelPad", "softplus_surrogate"]


@keras.saving.register_keras_serializable(package="attr_robust_tf")
class PerImageStandardization(keras.layers.Layer):
    """(x − mean(x)) / max(std(x), 1/√(H·W·C)) per image: `tf.image.per_image_standardization`.

    The first layer of the RAR GTSRB/Flower ResNets (docs/method.md §2.6: it makes zero-baseline IG degenerate).
    """

    def call(self, inputs):
        return tf.image.per_image_standardization(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="attr_robust_tf")
class ChannelPad(keras.layers.Layer):
    """Zero-pads the channel axis by `before` and `after` channels (the ResNet shortcut, docs/method.md §8.3)."""

    def __init__(self, before, after, **kwargs):
        super().__init__(**kwargs)
        self.before = int(before)
        self.after = int(after)

    def call(self, inputs):
        return tf.pad(inputs, [[0, 0], [0, 0], [0, 0], [self.before, self.after]])

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (input_shape[-1] + self.before + self.after,)

    def get_config(self):
        return {**super().get_config(), "before": self.before, "after": self.after}


def _check_shape(input_shape, num_classes, min_size=1):
    if (not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3
            or not all(isinstance(d, int) and d >= min_size for d in input_shape[:2])
            or not (isinstance(input_shape[2], int) and input_shape[2] >= 1)):
        raise ValueError(
            f"`input_shape` must be a tuple (H, W, C) of positive integers with H, W >= {min_size}. "
            f"Received: input_shape={input_shape!r}.")
    _checks.check_positive_int(num_classes, "num_classes", minimum=2)
    return tuple(input_shape)


def _check_weight_decay(weight_decay):
    wd = _checks.check_nonnegative(weight_decay, "weight_decay")
    # keras L2(l) adds l·ΣW²; the reference adds w_d·tf.nn.l2_loss(W) = w_d·ΣW²/2, hence l = w_d/2
    return keras.regularizers.L2(wd / 2.0) if wd > 0 else None


def mnist_cnn(input_shape=(28, 28, 1), num_classes=10, *, dtype=None):
    """The MNIST/Fashion-MNIST CNN of the RAR code (Madry MNIST challenge; docs/method.md §8.3).

    conv5×5-32 → maxpool 2 → conv5×5-64 → maxpool 2 → dense 1024 → dense K; ReLU, SAME padding,
    truncated-normal(0.1) kernels and constant-0.1 biases. 3,274,634 parameters at 28×28×1, 10 classes.

    Returns:
      A functional model mapping (N, H, W, C) in [0, 1] to logits (N, K).
    """
    input_shape = _check_shape(input_shape, num_classes)
    init = dict(kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.1),
                bias_initializer=keras.initializers.Constant(0.1), dtype=dtype)
    inputs = keras.Input(input_shape, dtype=dtype)
    h = keras.layers.Conv2D(32, 5, padding="same", activation="relu", name="conv1", **init)(inputs)
    h = keras.layers.MaxPooling2D(2, 2, padding="same", dtype=dtype)(h)
    h = keras.layers.Conv2D(64, 5, padding="same", activation="relu", name="conv2", **init)(h)
    h = keras.layers.MaxPooling2D(2, 2, padding="same", dtype=dtype)(h)
    h = keras.layers.Flatten(dtype=dtype)(h)
    h = keras.layers.Dense(1024, activation="relu", name="fc1", **init)(h)
    logits = keras.layers.Dense(num_classes, name="logits", **init)(h)
    return keras.Model(inputs, logits, name="mnist_cnn")


def _resnet(input_shape, num_classes, units, name, weight_decay, dtype):
    """The no-BatchNorm pre-activation ResNet of the RAR GTSRB/Flower code (docs/method.md §8.3)."""
    reg = _check_weight_decay(weight_decay)

    def act(t):
        return keras.layers.LeakyReLU(negative_slope=0.1, dtype=dtype)(t)

    def conv(t, filters, stride):
        # normal(0, sqrt(2/(3·3·out))): He init on fan-out, as in the reference `_conv`
        init = keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")
        return keras.layers.Conv2D(filters, 3, stride, padding="same", use_bias=False, dtype=dtype,
                                   kernel_initializer=init, kernel_regularizer=reg)(t)

    inputs = keras.Input(input_shape, dtype=dtype)
    # the reference feeds 0–255 pixels to the standardisation; its clamp 1/√(HWC) is scale dependent,
    # so the [0, 1] port rescales first (docs/method.md §2.6, §9 quirk 11)
    h = keras.layers.Rescaling(255.0, dtype=dtype)(inputs)
    h = PerImageStandardization(dtype=dtype)(h)
    h = conv(h, 16, 1)
    in_filters = 16
    for stage, (filters, stride) in enumerate([(16, 1), (32, 2), (64, 2)]):
        for unit in range(units):
            s = stride if unit == 0 else 1
            if stage == 0 and unit == 0:
                h = act(h)
                shortcut = h
            else:
                shortcut = h
                h = act(h)
            h = conv(h, filters, s)
            h = act(h)
            h = conv(h, filters, 1)
            if in_filters != filters:
                shortcut = keras.layers.AveragePooling2D(s, s, padding="valid", dtype=dtype)(shortcut)
                pad = (filters - in_filters) // 2
                shortcut = ChannelPad(pad, pad, dtype=dtype)(shortcut)
            h = keras.layers.Add(dtype=dtype)([h, shortcut])
            in_filters = filters
    h = act(h)
    h = keras.layers.GlobalAveragePooling2D(dtype=dtype)(h)
    # uniform_unit_scaling(1.0) = U(±√(3/fan_in))
    logits = keras.layers.Dense(
        num_classes, dtype=dtype, name="logits", kernel_regularizer=reg,
        kernel_initializer=keras.initializers.VarianceScaling(1.0, "fan_in", "uniform"))(h)
    return keras.Model(inputs, logits, name=name)


def gtsrb_resnet(input_shape=(32, 32, 3), num_classes=43, *, weight_decay=0.0, dtype=None):
    """GTSRB ResNet of the RAR code: 3 stages × 2 units, 16/32/64 filters, leaky ReLU 0.1, no BatchNorm.

    173,723 parameters at 32×32×3, 43 classes. `weight_decay` = w_d of the reference
    (`w_d·Σ tf.nn.l2_loss(W)` over conv and dense kernels; the reference uses 2e-4).
    """
    input_shape = _check_shape(input_shape, num_classes, min_size=4)
    return _resnet(input_shape, num_classes, 2, "gtsrb_resnet", weight_decay, dtype)


def flower_resnet(input_shape=(128, 128, 3), num_classes=17, *, weight_decay=0.0, dtype=None):
    """Flower-17 ResNet of the RAR/Sarkar code: as `gtsrb_resnet` with 1 unit per stage.

    75,265 parameters at 128×128×3, 17 classes.
    """
    input_shape = _check_shape(input_shape, num_classes, min_size=4)
    return _resnet(input_shape, num_classes, 1, "flower_resnet", weight_decay, dtype)


def cpu_cnn(input_shape=(28, 28, 1), num_classes=10, *, dtype=None, pooling="max"):
    """A small, fast CNN for 28×28 inputs on CPU: conv3×3-16 → pool → conv3×3-32 → pool → dense 64 → K.

    105,866 parameters and about 1/12 of the MNIST CNN's multiply-adds, so IG-regularised training fits a
    CPU budget. `pooling`: "max" (2×2 max-pools) or "avg" (2×2 average pools, which pass the gradient to every
    pixel of a cell instead of its winner; `cpu_cnn_avgpool`, docs/method.md §15).
    """
    input_shape = _check_shape(input_shape, num_classes, min_size=4)
    pools = {"max": keras.layers.MaxPooling2D, "avg": keras.layers.AveragePooling2D}
    if pooling not in pools:
        raise ValueError(f"`pooling` must be one of max, avg. Received: pooling={pooling!r}.")
    inputs = keras.Input(input_shape, dtype=dtype)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", dtype=dtype)(inputs)
    h = pools[pooling](2, dtype=dtype)(h)
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu", dtype=dtype)(h)
    h = pools[pooling](2, dtype=dtype)(h)
    h = keras.layers.Flatten(dtype=dtype)(h)
    h = keras.layers.Dense(64, activation="relu", dtype=dtype)(h)
    logits = keras.layers.Dense(num_classes, dtype=dtype, name="logits")(h)
    return keras.Model(inputs, logits, name="cpu_cnn" if pooling == "max" else "cpu_cnn_avgpool")


def cpu_cnn_avgpool(input_shape=(28, 28, 1), num_classes=10, *, dtype=None):
    """`cpu_cnn` with 2×2 average pools instead of max-pools (the same parameters)."""
    return cpu_cnn(input_shape, num_classes, dtype=dtype, pooling="avg")


def tiny_cnn(input_shape=(8, 8, 1), num_classes=3, *, dtype=None):
    """A tiny ReLU CNN for tests: conv3×3-4 → maxpool 2 → dense 16 → K (a few hundred parameters)."""
    input_shape = _check_shape(input_shape, num_classes, min_size=2)
    inputs = keras.Input(input_shape, dtype=dtype)
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", dtype=dtype)(inputs)
    h = keras.layers.MaxPooling2D(2, dtype=dtype)(h)
    h = keras.layers.Flatten(dtype=dtype)(h)
    h = keras.layers.Dense(16, activation="relu", dtype=dtype)(h)
    logits = keras.layers.Dense(num_classes, dtype=dtype, name="logits")(h)
    return keras.Model(inputs, logits, name="tiny_cnn")


MODELS = {
    "mnist_cnn": mnist_cnn,
    "gtsrb_resnet": gtsrb_resnet,
    "flower_resnet": flower_resnet,
    "cpu_cnn": cpu_cnn,
    "cpu_cnn_avgpool": cpu_cnn_avgpool,
    "tiny_cnn": tiny_cnn,
}


def get(name, **kwargs):
    """Builds the registered architecture `name` with `kwargs`; unknown names raise a did-you-mean error."""
    return _checks.lookup("model", name, MODELS)(**kwargs)
