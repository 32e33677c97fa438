"""Smooth surrogate of a ReLU / leaky-ReLU network that shares the original weights (method.md §4.2).

ReLU networks are piecewise linear, so the input-Hessian of any score is zero almost everywhere and an
attack on an attribution map gets no gradient (method.md §2.5). The surrogate replaces every
`relu(z)` by `softplus_β(z) = log(1 + e^{βz})/β` and every `leaky_relu(z)` (slope a) by
`a·z + (1 − a)·softplus_β(z)`, while every weight-bearing layer is the *same* layer object as in the
original model, so the surrogate always sees the current weights and gradients reach them.
"""
import keras
import tensorflow as tf


def softplus_beta(z, beta=1.0):
    """log(1 + exp(βz)) / β, the smooth ReLU of the attacks (β = 1 in RAR/Sarkar, 50 in ART)."""
    return tf.math.softplus(beta * z) / beta


def leaky_softplus(z, slope=0.1, beta=1.0):
    """a·z + (1 − a)·softplus_β(z): the surrogate of leaky_relu(z, a) (RAR GTSRB/Flower ResNets)."""
    return slope * z + (1.0 - slope) * softplus_beta(z, beta)


@keras.saving.register_keras_serializable(package="attr_robust_tf")
class SmoothActivation(keras.layers.Layer):
    """The smooth replacement of a ReLU-type activation: leaky_softplus with the given slope and β."""

    def __init__(self, slope=0.0, beta=1.0, **kwargs):
        super().__init__(**kwargs)
        self.slope = float(slope)
        self.beta = float(beta)

    def call(self, inputs):
        return leaky_softplus(inputs, self.slope, self.beta)

    def get_config(self):
        return {**super().get_config(), "slope": self.slope, "beta": self.beta}


class _Preactivation(keras.layers.Layer):
    """Calls a shared layer with its activation switched off, then applies the smooth activation."""

    def __init__(self, layer, slope, beta, **kwargs):
        super().__init__(name=f"{layer.name}_smooth", **kwargs)
        self.layer = layer
        self.smooth = SmoothActivation(slope, beta)

    def build(self, input_shape):
        self.built = True  # the shared layer is already built

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def call(self, inputs):
        saved = self.layer.activation
        self.layer.activation = keras.activations.linear
        try:
            z = self.layer(inputs)
        finally:
            self.layer.activation = saved
        return self.smooth(z)


def _relu_slope(fn):
    """The negative slope of a ReLU-type activation function, or None if it is something else."""
    name = getattr(fn, "__name__", "")
    if name == "relu":
        return 0.0
    if name == "leaky_relu":
        return 0.2  # keras.activations.leaky_relu default negative_slope
    return None


def _clone_layer(layer, beta):
    if isinstance(layer, keras.layers.ReLU):
        cfg = layer.get_config()
        if cfg.get("max_value") is not None or cfg.get("threshold", 0.0) != 0.0:
            raise ValueError(
                f"`model` layer {layer.name!r} is a ReLU with max_value/threshold, which has no softplus "
                "surrogate. Pass `surrogate=` explicitly.")
        return SmoothActivation(cfg.get("negative_slope", 0.0), beta, name=f"{layer.name}_smooth")
    if isinstance(layer, keras.layers.LeakyReLU):
        return SmoothActivation(layer.get_config()["negative_slope"], beta, name=f"{layer.name}_smooth")
    if isinstance(layer, keras.layers.Activation):
        slope = _relu_slope(layer.activation)
        return layer if slope is None else SmoothActivation(slope, beta, name=f"{layer.name}_smooth")
    slope = _relu_slope(getattr(layer, "activation", None))
    if slope is not None:
        return _Preactivation(layer, slope, beta)
    return layer  # shared: same object, same weights


def softplus_surrogate(model, beta=1.0):
    """A functional copy of `model` with ReLU → softplus_β and leaky ReLU(a) → a·z + (1 − a)·softplus_β.

    Weight-bearing layers are shared with `model` (not copied), so the surrogate tracks training. Works for
    Sequential and functional models (nested ones too); a subclassed model must provide its own surrogate
    (pass `surrogate=` to the attack).

    Reference: Ghorbani et al. 2019 (arXiv 1710.10547) §3; RAR/Sarkar `ig_attack.py` (β = 1, leaky form for
    the ResNets); ART (β = 50).
    """
    beta = float(beta)
    if not beta > 0:
        raise ValueError(f"`beta` must be > 0. Received: beta={beta!r}.")
    if not isinstance(model, keras.Model):
        raise ValueError(f"`model` must be a keras.Model. Received: model={type(model).__name__}.")
    if not (isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False)
            or type(model) is keras.Model or model.__class__.__name__ == "Functional"):
        raise ValueError(
            f"`model` must be a Sequential or functional Keras model to build a softplus surrogate. "
            f"Received: a subclassed model of type {type(model).__name__}. Pass `surrogate=` explicitly "
            "(a copy of the network with smooth activations that shares its weights).")
    if not model.built:
        raise ValueError("`model` must be built (call it once or give it an Input) before building a surrogate.")
    return keras.models.clone_model(model, clone_function=lambda layer: _clone_layer(layer, beta),
                                    recursive=True)
