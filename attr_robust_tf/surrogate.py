"""Smooth surrogate of a piecewise-linear network that shares the original weights (docs/method.md §4.2).

ReLU networks are piecewise linear, so the input-Hessian of any score is zero almost everywhere and an
attack on an attribution map gets no gradient (docs/method.md §2.5). The surrogate replaces every piecewise-linear
activation by a smooth counterpart built from `softplus_β(z) = log(1 + e^{βz})/β` (sup-distance log 2/β to
relu), while every weight-bearing layer is the *same* layer object as in the original model, so the surrogate
always sees the current weights and gradients reach them:

| activation | surrogate | sup error |
|---|---|---|
| relu | softplus_β(z) | log 2/β |
| leaky_relu(a), `ReLU(negative_slope=a)` | a·z + (1 − a)·softplus_β(z) | (1 − a)·log 2/β |
| `ReLU(max_value=M, negative_slope=a)` | a·z + (1 − a)·softplus_β(z) − softplus_β(z − M) | log 2/β |
| relu6 | softplus_β(z) − softplus_β(z − 6) | log 2/β |
| hard_sigmoid = relu6(z + 3)/6 | smooth relu6(z + 3)/6 | log 2/(6β) |
| hard_silu (hard_swish) = z·hard_sigmoid(z) | z·smooth hard_sigmoid(z) | ≈ log 2/(2β) |

This covers keras.applications MobileNetV2 (ReLU(6)), MobileNetV3 (ReLU, ReLU(6)-based hard sigmoid,
hard_swish) and EfficientNet (swish, sigmoid: already smooth). Smooth activations (`SMOOTH_ACTIVATIONS`) are
kept; any other activation (hard_tanh, sparse_sigmoid, `ReLU(threshold≠0)`, PReLU, a custom function) raises
a ValueError asking for an explicit `surrogate=`.
"""

import keras
import tensorflow as tf

# activations with a continuous first derivative (kept as they are in the surrogate), by function name
SMOOTH_ACTIVATIONS = frozenset({
    "linear", "softplus", "sigmoid", "tanh", "silu", "swish", "gelu", "elu", "selu", "celu", "mish", "softmax",
    "log_softmax", "exponential", "log_sigmoid", "softsign", "squareplus", "glu", "tanh_shrink",
})

KINDS = ("relu", "hard_sigmoid", "hard_silu")


def softplus_beta(z, beta=1.0):
    """log(1 + exp(βz)) / β, the smooth ReLU of the attacks (β = 1 in RAR/Sarkar, 50 in ART)."""
    return tf.math.softplus(beta * z) / beta


def leaky_softplus(z, slope=0.1, beta=1.0):
    """a·z + (1 − a)·softplus_β(z): the surrogate of leaky_relu(z, a) (RAR GTSRB/Flower ResNets)."""
    return slope * z + (1.0 - slope) * softplus_beta(z, beta)


def smooth_relu(z, slope=0.0, max_value=None, beta=1.0):
    """a·z + (1 − a)·softplus_β(z) − softplus_β(z − M): `ReLU(negative_slope=a, max_value=M)` made smooth.

    Slopes a, 1 and 0 on (−∞, 0), (0, M) and (M, ∞), as the original; without `max_value` it is
    `leaky_softplus`. Sup distance to the original: (1 − a)·log 2/β (plus log 2/β at M).
    """
    out = leaky_softplus(z, slope, beta)
    if max_value is not None:
        out = out - softplus_beta(z - max_value, beta)
    return out


def smooth_hard_sigmoid(z, beta=1.0):
    """smooth_relu(z + 3, max_value=6)/6: hard_sigmoid = clip(z/6 + 1/2, 0, 1) made smooth (error ≤ log 2/(6β))."""
    return smooth_relu(z + 3.0, 0.0, 6.0, beta) / 6.0


def smooth_hard_silu(z, beta=1.0):
    """z·smooth_hard_sigmoid(z): hard_silu (hard swish, MobileNetV3) made smooth."""
    return z * smooth_hard_sigmoid(z, beta)


@keras.saving.register_keras_serializable(package="attr_robust_tf")
class SmoothActivation(keras.layers.Layer):
    """The smooth replacement of a piecewise-linear activation (see the module table).

    Args:
      slope: negative slope a of a ReLU-type activation.
      beta: the softplus sharpness β > 0 (→ ∞ recovers the original).
      max_value: the cap M of a capped ReLU (6 for relu6), or None.
      kind: "relu" (`smooth_relu` with `slope`, `max_value`), "hard_sigmoid" or "hard_silu".
    """

    def __init__(self, slope=0.0, beta=1.0, max_value=None, kind="relu", **kwargs):
        super().__init__(**kwargs)
        if kind not in KINDS:
            raise ValueError(f"`kind` must be one of {KINDS}. Received: kind={kind!r}.")
        self.slope = float(slope)
        self.beta = float(beta)
        self.max_value = None if max_value is None else float(max_value)
        self.kind = kind

    def call(self, inputs):
        if self.kind == "hard_sigmoid":
            return smooth_hard_sigmoid(inputs, self.beta)
        if self.kind == "hard_silu":
            return smooth_hard_silu(inputs, self.beta)
        return smooth_relu(inputs, self.slope, self.max_value, self.beta)

    def get_config(self):
        return {**super().get_config(), "slope": self.slope, "beta": self.beta, "max_value": self.max_value,
                "kind": self.kind}


class _Preactivation(keras.layers.Layer):
    """Calls a shared layer with its activation switched off, then applies the smooth activation."""

    def __init__(self, layer, smooth, **kwargs):
        super().__init__(name=f"{layer.name}_smooth", **kwargs)
        self.layer = layer
        self.smooth = smooth

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


def _no_surrogate(layer, what):
    return ValueError(
        f"`model` layer {layer.name!r} uses {what}, which has no smooth surrogate. Supported: relu, leaky_relu, "
        "ReLU(max_value=..., negative_slope=...), relu6, hard_sigmoid, hard_silu/hard_swish, and the smooth "
        f"activations {sorted(SMOOTH_ACTIVATIONS)}. Pass `surrogate=` explicitly (a copy of the network with "
        "smooth activations that shares its weights).")


def _smooth_kwargs(layer, fn):
    """SmoothActivation kwargs (without β) for activation function `fn`, None if it is smooth, else raises."""
    name = getattr(fn, "__name__", "")
    if name in SMOOTH_ACTIVATIONS:
        return None
    if name == "relu":
        return {"slope": 0.0}
    if name == "leaky_relu":
        return {"slope": 0.2}  # keras.activations.leaky_relu default negative_slope
    if name == "relu6":
        return {"max_value": 6.0}
    if name in ("hard_sigmoid", "hard_silu", "hard_swish"):
        return {"kind": "hard_sigmoid" if name == "hard_sigmoid" else "hard_silu"}
    raise _no_surrogate(layer, f"the activation {name or fn!r}")


def _clone_layer(layer, beta):
    if isinstance(layer, keras.layers.ReLU):
        cfg = layer.get_config()
        if cfg.get("threshold", 0.0) != 0.0:
            raise _no_surrogate(layer, f"a ReLU with threshold={cfg['threshold']} (a jump)")
        return SmoothActivation(cfg.get("negative_slope", 0.0), beta, max_value=cfg.get("max_value"),
                                name=f"{layer.name}_smooth")
    if isinstance(layer, keras.layers.LeakyReLU):
        return SmoothActivation(layer.get_config()["negative_slope"], beta, name=f"{layer.name}_smooth")
    if isinstance(layer, keras.layers.PReLU):
        raise _no_surrogate(layer, "PReLU (a learned negative slope)")
    if isinstance(layer, keras.layers.Activation):
        kwargs = _smooth_kwargs(layer, layer.activation)
        return layer if kwargs is None else SmoothActivation(beta=beta, name=f"{layer.name}_smooth", **kwargs)
    fn = getattr(layer, "activation", None)
    if callable(fn):
        kwargs = _smooth_kwargs(layer, fn)
        if kwargs is not None:
            return _Preactivation(layer, SmoothActivation(beta=beta, **kwargs))
    return layer  # shared: same object, same weights


def softplus_surrogate(model, beta=1.0):
    """A functional copy of `model` with every piecewise-linear activation made smooth (see the module table).

    ReLU → softplus_β, leaky ReLU(a) → a·z + (1 − a)·softplus_β, ReLU(max_value=M) → ... − softplus_β(z − M),
    relu6, hard_sigmoid and hard_silu/hard_swish → their smooth counterparts; smooth activations are kept and
    any other activation raises a ValueError.

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
