"""Attribution penalties: per-example terms `(N,)` that `RobustModel` weights and reduces once.

Every penalty is a serializable class with
`__call__(model, images, labels, *, adv_images=None, training=False) -> (N,)` that evaluates one function of
`terms` with its settings. The weight λ of a penalty in training is `RobustModel.regularizer_weights[name]`, a
non-trainable variable, and nowhere else. (`attr_robust_tf.regularizers` is the same module under its earlier
name.)
"""
import inspect

import keras

from attr_robust_tf import _checks, attributions, scores, terms
from attr_robust_tf.terms import TEMPERATURES, cosine, kl_divergence, kl_uniform_softmax, scale_map  # noqa: F401

__all__ = ["AttributionRegularizer", "InputGradientNorm", "IGNorm", "TradesKL", "ARTAlignment", "CACR", "IGRCosine", "scale_map", "TEMPERATURES",
           "WACR", "kl_divergence", "kl_uniform_softmax", "cosine", "REGULARIZERS", "get", "build"]


def _require_adv(name, adv_images):
    if adv_images is None:
        raise ValueError(
            f"`adv_images` must be given: the {name!r} regularizer compares clean and perturbed inputs. "
            "Received: adv_images=None. Use an objective with an inner attack.")


class AttributionRegularizer:
    """Base class. Subclasses set `term` (a function of `terms`) and list their settings in `get_config`.

    Args:
      weight: accepted and saved for compatibility; not read by this package. `RobustModel` keeps each λ in
        a non-trainable variable (`regularizer_weights`), initialised from its `weights` argument or the row.
      name: the term's name (its metric and weight key).

    Class attributes:
      requires_adv: the penalty needs the inner attack's output `adv_images`.
      uses_surrogate: attribution gradients go through the smooth surrogate when `RobustModel` has one.
      uses: the `RobustSettings` fields `from_settings` reads.

    Returns (from `__call__`): the per-example penalty, shape (N,); differentiable with respect to the weights.

    Example:
      >>> penalty = CACR(steps=20)(model, images, labels, adv_images=adv)  # doctest: +SKIP
    """

    requires_adv = False
    uses_surrogate = False
    default_name = "regularizer"
    uses = ()
    term = None

    def __init__(self, weight=1.0, name=None):
        self.weight = _checks.check_nonnegative(weight, "weight")
        self.name = name or self.default_name

    @classmethod
    def from_settings(cls, settings, name=None, **kwargs):
        """The penalty configured from a `RobustSettings` (the fields listed in `uses`) and the row's `kwargs`."""
        return cls(name=name, **kwargs)

    def _settings(self):
        """Keyword arguments of the term function."""
        return {}

    def __call__(self, model, images, labels, *, adv_images=None, training=False):
        if self.term is None:
            raise NotImplementedError(f"{type(self).__name__} must set `term` or implement `__call__`.")
        if self.requires_adv:
            _require_adv(self.name, adv_images)
        return type(self).term(model, images, adv_images, labels, training=training, **self._settings())

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
    uses = ("ig_steps", "ig_method", "ig_batch_size")

    def __init__(self, steps=None, method="riemann_right", batch_size=None, weight=1.0, name=None):
        super().__init__(weight, name)
        self.steps = _checks.check_positive_int(self.default_steps if steps is None else steps, "steps")
        attributions.quadrature(method, self.steps)  # validates the rule name
        self.method = method
        self.batch_size = (None if batch_size is None
                           else _checks.check_positive_int(batch_size, "batch_size"))

    @classmethod
    def from_settings(cls, settings, name=None, **kwargs):
        return cls(steps=settings.ig_steps, method=settings.ig_method, batch_size=settings.ig_batch_size,
                   name=name, **kwargs)

    def _settings(self):
        return {"steps": self.steps, "method": self.method, "batch_size": self.batch_size}

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
    term = staticmethod(terms.input_gradient_norm)

    def __init__(self, p=2, score="cross_entropy", weight=1.0, name=None):
        super().__init__(weight, name)
        if p not in (1, 2):
            raise ValueError(f"`p` must be 1 or 2. Received: p={p!r}.")
        scores.get(score)
        self.p = int(p)
        self.score = score

    def _settings(self):
        return {"p": self.p, "score": self.score}

    def get_config(self):
        return {**super().get_config(), "p": self.p, "score": self.score}


@keras.saving.register_keras_serializable(package="attr_robust_tf")
class IGNorm(_IGRegularizer):
    """‖IG^ℓ(x, x′)‖₁: the L1 norm of the loss attribution from the clean x to the perturbed x′ (`terms.ig_norm`).

    The penalty of IG-NORM and IG-SUM-NORM, with m = `steps` points.

    Reference: Chen et al. 2019 (RAR, arXiv 1905.09957), `training_objective='ar'/'adv_ar'`.
    """

    requires_adv = True
    default_name = "ig_norm"
    term = staticmethod(terms.ig_norm)


@keras.saving.register_keras_serializable(package="attr_robust_tf")
class TradesKL(AttributionRegularizer):
    """KL(p(x) ‖ p(x′)), with the gradient through both p(x) and p(x′) (`terms.trades_kl`).

    Reference: Zhang et al. 2019 (TRADES, arXiv 1901.08573), eq. 5 and `trades.py`.
    """

    requires_adv = True
    default_name = "trades_kl"
    term = staticmethod(terms.trades_kl)


@keras.saving.register_keras_serializable(package="attr_robust_tf")
class ARTAlignment(AttributionRegularizer):
    """ART triplet (`terms.art_triplet`): align the input with its true-class gradient more than with the
    strongest other class, over the pair {x, x′}.

    The batch mean of the penalty is ART's (1/2N) Σ_{i=1..2N}; the gradients are taken on the smooth
    surrogate when `RobustModel` has one (ART uses softplus β = 50).

    Reference: Singh et al. 2020 (ART, ECCV), `loss_art.py`.
    """

    requires_adv = True
    uses_surrogate = True
    default_name = "art"
    term = staticmethod(terms.art_triplet)


@keras.saving.register_keras_serializable(package="attr_robust_tf")
class CACR(_IGRegularizer):
    """L_CACR = KL(U ‖ P_N) − KL(U ‖ P_T) on the perturbed input x′ (`terms.cacr`), m = `steps` points.

    P = softmax(a / s) over the H·W pixels of the channel-summed IG maps a; each KL is logsumexp(z) − mean(z) −
    log(H·W) with z = a / s, evaluated stably (`kl_uniform_softmax`), never as log(softmax).

    KL(U ‖ softmax(z)) = log mean_p exp(z_p − z̄) ≥ 0 measures how far the map's softmax is from uniform; for
    small z it is ½·Var(z) + O(z³), and it never exceeds max_p (z_p − z̄). The scale s (`temperature`):

    * None (faithful, the released code): s = 1. IG of a probability sums to p(x′) − p(0) ≤ 1 over H·W pixels,
      so a ≈ 1e−3 per pixel on 28×28 maps and the KL ≈ ½·Var(a) ≈ 1e−7: the term (and its gradient) is tiny
      next to the cross-entropy.
    * τ > 0: s = τ, KL ≈ Var(a) / (2τ²); one fixed scale for every map.
    * "std": s = the map's own pixel standard deviation, so z has unit variance and KL ≈ ½ for Gaussian-like
      maps, O(1) in general (at most √(H·W − 1) for a one-pixel map); the KL then measures the shape of the map
      (its peakedness), not its size, and is invariant to a ⟶ c·a, c > 0.
    * "l1": s = mean_p |a_p|, the saliency-map normalisation of docs/method.md §3 (mean |z| = 1); larger than
      "std" for sparse maps, also invariant to a ⟶ c·a.

    The per-map scale is a constant for differentiation (stop-gradient) and floored at 1e−12 (a zero map stays
    zero); with "std"/"l1" the gradient is invariant to a ⟶ c·a as well.

    Args:
      temperature: None (faithful), a positive float τ, "std" or "l1" (see above).

    Reference: Sarkar et al. 2021 (arXiv 2012.14395), `Flower/model.py` ("L_CACR"); the scaled forms are the
    project's (docs/objectives.md).
    """

    requires_adv = True
    default_name = "cacr"
    default_steps = 20
    term = staticmethod(terms.cacr)

    def __init__(self, steps=None, method="riemann_right", batch_size=None, weight=1.0, name=None,
                 temperature=None):
        super().__init__(steps, method, batch_size, weight, name)
        self.temperature = _check_temperature(temperature)

    def _settings(self):
        return {**super()._settings(), "temperature": self.temperature}

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


def _check_temperature(temperature):
    if temperature is None or temperature in TEMPERATURES:
        return temperature
    if isinstance(temperature, (int, float)) and not isinstance(temperature, bool) and temperature > 0:
        return float(temperature)
    raise ValueError(
        f"`temperature` must be None (the faithful CACR), a positive float τ, 'std' or 'l1'. Received: "
        f"temperature={temperature!r}. Use 'std' for unit-variance maps.")


@keras.saving.register_keras_serializable(package="attr_robust_tf")
class WACR(_IGRegularizer):
    """L_WACR = Σ_j w_j, w_j = B_j·ΔA_j if sgn(B_j) = sgn(ΔA_j), else |ΔA_j| (`terms.wacr`), m = `steps`.

    Reference: Sarkar et al. 2021 (arXiv 2012.14395), `Flower/model.py` ("L_WACR").
    """

    requires_adv = True
    default_name = "wacr"
    default_steps = 20
    term = staticmethod(terms.wacr)


@keras.saving.register_keras_serializable(package="attr_robust_tf")
class IGRCosine(_IGRegularizer):
    """R = 1 − cos(IG_s(x), IG_s(x′)) per example (`terms.igr_cosine`), m = `steps` points, in [0, 2].

    Args:
      steps, method, batch_size: IG points, quadrature rule and path-point chunk (as the other IG penalties).
      score: the attributed scalar of the true class (`scores.SCORES`; default "logit").

    Reference: Wang & Kong 2022 (IGR, NeurIPS, arXiv 2205.07279), abstract; choices in docs/igr.md.
    """

    requires_adv = True
    default_name = "igr"
    term = staticmethod(terms.igr_cosine)

    def __init__(self, steps=None, method="riemann_right", batch_size=None, score="logit", weight=1.0, name=None):
        super().__init__(steps=steps, method=method, batch_size=batch_size, weight=weight, name=name)
        scores.get(score)  # did-you-mean for an unknown score
        self.score = score

    def _settings(self):
        return {**super()._settings(), "score": self.score}

    def get_config(self):
        return {**super().get_config(), "score": self.score}


REGULARIZERS = {
    "input_gradient_norm": InputGradientNorm,
    "ig_norm": IGNorm,
    "trades_kl": TradesKL,
    "art": ARTAlignment,
    "cacr": CACR,
    "wacr": WACR,
    "igr": IGRCosine,
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
