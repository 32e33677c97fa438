"""Attribution regularizers: per-example penalties `(N,)` that `RobustModel` weights and reduces once.

Every regularizer is a serializable class with
`__call__(model, images, labels, *, adv_images=None, training=False) -> (N,)`. Attribution passes are
differentiable: called inside an outer `tf.GradientTape`, the parameter gradient includes the double-backprop
terms (style.md §3, §12.3). None of them reduces over the batch (style.md §1 rule 6).
"""
import inspect

import keras
import tensorflow as tf

from attr_robust_tf import _checks, attributions, scores

__all__ = ["AttributionRegularizer", "InputGradientNorm", "IGNorm", "TradesKL", "ARTAlignment", "CACR",
           "WACR", "kl_divergence", "kl_uniform_softmax", "scale_map", "cosine", "REGULARIZERS", "get", "build"]


def _flat(t):
    # (N, H, W, C) -> (N, H·W·C)
    return tf.reshape(t, [tf.shape(t)[0], -1])


def _require_adv(name, adv_images):
    if adv_images is None:
        raise ValueError(
            f"`adv_images` must be given: the {name!r} regularizer compares clean and perturbed inputs. "
            "Received: adv_images=None. Use an objective with an inner attack.")


class AttributionRegularizer:
    """Base class. Subclasses implement `__call__` and list their settings in `get_config`.

    Args:
      weight: the initial weight λ of the term (RobustModel keeps it in a non-trainable variable).
      name: the term's name (its metric and weight key).

    Class attributes:
      requires_adv: the penalty needs the inner attack's output `adv_images`.
      uses_surrogate: attribution gradients go through the smooth surrogate when `RobustModel` has one.

    Returns (from `__call__`): the per-example penalty, shape (N,); differentiable with respect to the weights.

    Example:
      >>> penalty = CACR(steps=20)(model, images, labels, adv_images=adv)  # doctest: +SKIP
    """

    requires_adv = False
    uses_surrogate = False
    default_name = "regularizer"

    def __init__(self, weight=1.0, name=None):
        self.weight = _checks.check_nonnegative(weight, "weight")
        self.name = name or self.default_name

    def __call__(self, model, images, labels, *, adv_images=None, training=False):
        raise NotImplementedError

    def get_config(self):
        return {"weight": self.weight, "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class _IGRegularizer(AttributionRegularizer):
    """Shared settings of the IG-based penalties: path points, quadrature rule, chunk size."""

    default_steps = 50

    def __init__(self, steps=None, method="riemann_right", batch_size=None, weight=1.0, name=None):
        super().__init__(weight, name)
        self.steps = _checks.check_positive_int(self.default_steps if steps is None else steps, "steps")
        attributions.quadrature(method, self.steps)  # validates the rule name
        self.method = method
        self.batch_size = (None if batch_size is None
                           else _checks.check_positive_int(batch_size, "batch_size"))

    def _ig(self, model, images, labels, score, baseline=None, training=False):
        return attributions.integrated_gradients(
            model, images, labels, baseline=baseline, steps=self.steps, method=self.method, score=score,
            batch_size=self.batch_size, training=training)

    def get_config(self):
        return {**super().get_config(), "steps": self.steps, "method": self.method,
                "batch_size": self.batch_size}


@keras.saving.register_keras_serializable(package="attr_robust_tf")
class InputGradientNorm(AttributionRegularizer):
    """Σ_i |∂s(x)/∂x_i|^p: input-gradient regularization (Ross & Doshi-Velez 2018, arXiv 1711.09404).

    Args:
      p: 1 (L1) or 2 (squared L2).
      score: the differentiated scalar (default: the cross-entropy loss).
    """

    default_name = "input_gradient_norm"

    def __init__(self, p=2, score="cross_entropy", weight=1.0, name=None):
        super().__init__(weight, name)
        if p not in (1, 2):
            raise ValueError(f"`p` must be 1 or 2. Received: p={p!r}.")
        scores.get(score)
        self.p = int(p)
        self.score = score

    def __call__(self, model, images, labels, *, adv_images=None, training=False):
        g = attributions.saliency(model, images, labels, score=self.score, training=training)
        return tf.reduce_sum(tf.abs(_flat(g)) ** self.p, axis=-1)

    def get_config(self):
        return {**super().get_config(), "p": self.p, "score": self.score}


@keras.saving.register_keras_serializable(package="attr_robust_tf")
class IGNorm(_IGRegularizer):
    """‖IG^ℓ(x, x′)‖₁: the L1 norm of the loss attribution from the clean x to the perturbed x′.

    IG^ℓ(x, x′) = (x′ − x) ⊙ Σ_k w_k ∇_z ℓ(z, y)|_{z = x + α_k(x′ − x)} with m = `steps` points
    (method.md §7.1). The penalty of IG-NORM and IG-SUM-NORM.

    Reference: Chen et al. 2019 (RAR, arXiv 1905.09957), `training_objective='ar'/'adv_ar'`.
    """

    requires_adv = True
    default_name = "ig_norm"

    def __call__(self, model, images, labels, *, adv_images=None, training=False):
        _require_adv(self.name, adv_images)
        ig = self._ig(model, adv_images, labels, "cross_entropy", baseline=images, training=training)
        return tf.reduce_sum(tf.abs(_flat(ig)), axis=-1)


def kl_divergence(logits_p, logits_q):
    """KL(p ‖ q) = Σ_c p_c (log p_c − log q_c) per example, from logits (stable log_softmax)."""
    log_p = tf.nn.log_softmax(logits_p, axis=-1)
    log_q = tf.nn.log_softmax(logits_q, axis=-1)
    return tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1)


@keras.saving.register_keras_serializable(package="attr_robust_tf")
class TradesKL(AttributionRegularizer):
    """KL(p(x) ‖ p(x′)), with the gradient through both p(x) and p(x′) (method.md §7.4).

    Reference: Zhang et al. 2019 (TRADES, arXiv 1901.08573), eq. 5 and `trades.py`.
    """

    requires_adv = True
    default_name = "trades_kl"

    def __call__(self, model, images, labels, *, adv_images=None, training=False):
        _require_adv(self.name, adv_images)
        return kl_divergence(model(images, training=training), model(adv_images, training=training))


def cosine(u, v, eps=1e-8):
    """Row-wise cosine similarity of (N, D) tensors; the eps keeps it (and its gradient) finite at 0."""
    uv = tf.reduce_sum(u * v, axis=-1)
    norms = tf.reduce_sum(u * u, axis=-1) * tf.reduce_sum(v * v, axis=-1)
    return uv / tf.sqrt(norms + tf.cast(eps, u.dtype) ** 2)


@keras.saving.register_keras_serializable(package="attr_robust_tf")
class ARTAlignment(AttributionRegularizer):
    """ART triplet: align the input with its true-class gradient more than with the strongest other.

    Over X = [x; x′], with example pairs {x_e, x′_e}:
    D⁺[i, j] = 1 − cos(X_i, ∇f_y(X_j)),  D⁻[i, j] = 1 − cos(X_i, ∇max_{c≠y} f_c(X_j)),
    d_ap(i) = max_{j in pair} D⁺[i, j],  d_an(i) = min_{j in pair} D⁻[i, j],
    penalty_e = ½ Σ_{i ∈ {x_e, x′_e}} log(1 + exp(d_ap(i) − d_an(i)))   (method.md §7.7).
    The batch mean of the penalty is ART's (1/2N) Σ_{i=1..2N}; the gradients are taken on the smooth
    surrogate when `RobustModel` has one (ART uses softplus β = 50).

    Reference: Singh et al. 2020 (ART, ECCV), `loss_art.py`.
    """

    requires_adv = True
    uses_surrogate = True
    default_name = "art"

    def __call__(self, model, images, labels, *, adv_images=None, training=False):
        _require_adv(self.name, adv_images)
        both = tf.concat([images, adv_images], axis=0)  # (2N, H, W, C): clean rows, then perturbed rows
        labels2 = tf.concat([labels, labels], axis=0)
        g_pos = attributions.saliency(model, both, labels2, score="logit", training=training)
        g_neg = attributions.saliency(model, both, labels2, score="strongest_other_logit", training=training)
        n = tf.shape(images)[0]
        x_rows = [_flat(images), _flat(adv_images)]
        pos = [_flat(g_pos[:n]), _flat(g_pos[n:])]
        neg = [_flat(g_neg[:n]), _flat(g_neg[n:])]
        total = 0.0
        for row in x_rows:
            d_ap = tf.maximum(1.0 - cosine(row, pos[0]), 1.0 - cosine(row, pos[1]))
            d_an = tf.minimum(1.0 - cosine(row, neg[0]), 1.0 - cosine(row, neg[1]))
            total += tf.math.softplus(d_ap - d_an)
        return 0.5 * total


def kl_uniform_softmax(a):
    """KL(U ‖ softmax(a)) over the pixels of each map a (N, H, W) → (N,) (method.md §7.8, stable form).

    KL(U ‖ P) = logsumexp(a) − mean(a) − log(H·W) = log mean_p exp(a_p − ā). For small attributions this is
    ≈ ½·Var(a), far below float32 resolution of logsumexp(a) ≈ log(H·W), so it is evaluated as
    log1p(mean(expm1(a − ā))) unless some a_p − ā > 20, where logsumexp(a − ā) − log(H·W) is exact enough.
    """
    a = _flat(a)  # (N, H·W)
    d = a - tf.reduce_mean(a, axis=-1, keepdims=True)
    big = tf.reduce_max(d, axis=-1) > 20.0
    # the clamp keeps the unselected branch (and its gradient) finite under tf.where
    small_form = tf.math.log1p(tf.reduce_mean(tf.math.expm1(tf.minimum(d, 20.0)), axis=-1))
    log_n = tf.math.log(tf.cast(tf.shape(d)[-1], d.dtype))
    big_form = tf.reduce_logsumexp(d, axis=-1) - log_n
    return tf.where(big, big_form, small_form)


TEMPERATURES = ("std", "l1")  # the per-map scales of `CACR(temperature=...)`; a float τ is a fixed scale
_SCALE_FLOOR = 1e-12  # lower bound of a per-map scale: a zero map stays zero instead of 0/0


def scale_map(a, temperature):
    """a / s per map for `CACR(temperature=...)`: (N, H, W) → (N, H, W); `None` returns `a` unchanged.

    s = τ (a float), the pixel standard deviation of the map ("std") or its mean |a| ("l1"), each per-map scale
    held constant for differentiation (`tf.stop_gradient`) and floored at 1e-12 so that a zero map stays zero.
    """
    if temperature is None:
        return a
    if isinstance(temperature, str):
        flat = _flat(a)
        if temperature == "std":
            scale = tf.math.reduce_std(flat, axis=-1)
        else:  # "l1"
            scale = tf.reduce_mean(tf.abs(flat), axis=-1)
        scale = tf.maximum(tf.stop_gradient(scale), tf.cast(_SCALE_FLOOR, a.dtype))
        return a / tf.reshape(scale, [-1] + [1] * (a.shape.rank - 1))
    return a / tf.cast(temperature, a.dtype)


def _check_temperature(temperature):
    if temperature is None or temperature in TEMPERATURES:
        return temperature
    if isinstance(temperature, (int, float)) and not isinstance(temperature, bool) and temperature > 0:
        return float(temperature)
    raise ValueError(
        f"`temperature` must be None (the faithful CACR), a positive float τ, 'std' or 'l1'. Received: "
        f"temperature={temperature!r}. Use 'std' for unit-variance maps.")


@keras.saving.register_keras_serializable(package="attr_robust_tf")
class CACR(_IGRegularizer):
    """L_CACR = KL(U ‖ P_N) − KL(U ‖ P_T) on the perturbed input x′ (Sarkar et al. 2021, method.md §7.8).

    A_T = IG of p_y and A_N = IG of p_{n_k} (strongest other class, re-selected per path point), both
    from the zero baseline to x′ with m = `steps` points; a = channel sums (signed); P = softmax(a / s) over the
    H·W pixels; U uniform. Each KL is logsumexp(z) − mean(z) − log(H·W) with z = a / s, evaluated stably
    (`kl_uniform_softmax`), never as log(softmax).

    KL(U ‖ softmax(z)) = log mean_p exp(z_p − z̄) ≥ 0 measures how far the map's softmax is from uniform; for
    small z it is ½·Var(z) + O(z³), and it never exceeds max_p (z_p − z̄). The scale s (`temperature`):

    * None (faithful, the released code): s = 1. IG of a probability sums to p(x′) − p(0) ≤ 1 over H·W pixels, so
      a ≈ 1e−3 per pixel on 28×28 maps and the KL ≈ ½·Var(a) ≈ 1e−7: the term (and its gradient) is tiny
      next to the cross-entropy.
    * τ > 0: s = τ, KL ≈ Var(a) / (2τ²); one fixed scale for every map.
    * "std": s = the map's own pixel standard deviation, so z has unit variance and KL ≈ ½ for Gaussian-like maps,
      O(1) in general (at most √(H·W − 1) for a one-pixel map); the KL then measures the shape of the map
      (its peakedness), not its size, and is invariant to a ⟶ c·a, c > 0.
    * "l1": s = mean_p |a_p|, the saliency-map normalisation of method.md §3 (mean |z| = 1); larger than "std"
      for sparse maps (their std exceeds their mean |a|), also invariant to a ⟶ c·a.

    The per-map scale is a constant for differentiation (stop-gradient) and floored at 1e−12 (a zero map stays
    zero); the gradient therefore flows through the shape of the maps only, and with "std"/"l1" it is invariant
    to a ⟶ c·a as well.

    Args:
      temperature: None (faithful), a positive float τ, "std" or "l1" (see above).

    Reference: Sarkar et al. 2021 (arXiv 2012.14395), `Flower/model.py` ("L_CACR"); the scaled forms are the
    project's (docs/objectives.md).
    """

    requires_adv = True
    default_name = "cacr"
    default_steps = 20

    def __init__(self, steps=None, method="riemann_right", batch_size=None, weight=1.0, name=None,
                 temperature=None):
        super().__init__(steps, method, batch_size, weight, name)
        self.temperature = _check_temperature(temperature)

    def __call__(self, model, images, labels, *, adv_images=None, training=False):
        _require_adv(self.name, adv_images)
        a_t = tf.reduce_sum(self._ig(model, adv_images, labels, "probability", training=training), axis=-1)
        a_n = tf.reduce_sum(self._ig(model, adv_images, labels, "strongest_other_probability",
                                     training=training), axis=-1)  # (N, H, W)
        a_t, a_n = scale_map(a_t, self.temperature), scale_map(a_n, self.temperature)
        return kl_uniform_softmax(a_n) - kl_uniform_softmax(a_t)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="attr_robust_tf")
class WACR(_IGRegularizer):
    """L_WACR = Σ_j w_j, w_j = B_j·ΔA_j if sgn(B_j) = sgn(ΔA_j), else |ΔA_j| (Sarkar et al. 2021 code eq 9).

    B = IG of p_y from 0 to x (code eq 7); ΔA = −IG^ℓ(x, x′) = IG of log p_y from x to x′ (code eq 8),
    m = `steps` points each; j runs over all H·W·C entries. The sign indicator is a constant for
    differentiation (it is a comparison, so no gradient flows through it).

    Reference: Sarkar et al. 2021 (arXiv 2012.14395), `Flower/model.py` ("L_WACR").
    """

    requires_adv = True
    default_name = "wacr"
    default_steps = 20

    def __call__(self, model, images, labels, *, adv_images=None, training=False):
        _require_adv(self.name, adv_images)
        b = self._ig(model, images, labels, "probability", training=training)
        delta_a = self._ig(model, adv_images, labels, "log_probability", baseline=images, training=training)
        same_sign = tf.equal(tf.sign(b), tf.sign(delta_a))
        w = tf.where(same_sign, b * delta_a, tf.abs(delta_a))
        return tf.reduce_sum(_flat(w), axis=-1)


REGULARIZERS = {
    "input_gradient_norm": InputGradientNorm,
    "ig_norm": IGNorm,
    "trades_kl": TradesKL,
    "art": ARTAlignment,
    "cacr": CACR,
    "wacr": WACR,
}


def get(name):
    """The regularizer class registered as `name` (did-you-mean error otherwise)."""
    return _checks.lookup("regularizer", name, REGULARIZERS)


def build(name, **settings):
    """Instantiates regularizer `name` with the subset of `settings` its constructor accepts.

    Shared settings (`steps`, `method`, `batch_size`, `weight`) are offered to every regularizer; `None`
    values keep the class default.
    """
    cls = get(name)
    params = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in settings.items() if k in params and v is not None}, name=name)
