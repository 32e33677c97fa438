"""The training-time inner maximisation x′ = argmax_{‖x′−x‖∞≤ε} J(x′) of the robust objectives (docs/method.md §7).

J is a weighted sum of named per-example terms, each a function of `attr_robust_tf.terms` (docs/method.md §7.9):

| term | J_t(x′) |
|---|---|
| `cross_entropy` | `terms.cross_entropy`: CE(f(x′), y) (Madry; the first part of IG-SUM-NORM and Sarkar's) |
| `ig_norm` | `terms.ig_norm`: ‖IG^ℓ_{m′}(x, x′)‖₁, m′ = `ig_steps` points ("IG approx", RAR `ar_approx`) |
| `trades_kl` | `terms.trades_kl`: KL(p(x) ‖ p(x′)), p(x) fixed (TRADES) |
| `art` | `terms.art_margin`: softplus(d_p − d_n) on the fixed top-k mask of ART (docs/method.md §7.7) |

The ascent is ℓ∞ PGD with sign steps (`attacks.pgd.pgd_loop`, a static Python loop), run in inference mode.
All randomness is stateless: the start is drawn from the seed passed in (RobustModel passes
(seed, optimizer.iterations)), so a resumed run repeats the uninterrupted one. The Philox algorithm is named
explicitly ("auto_select" may pick another generator on another device); XLA's Philox kernel still orders
its draws differently, so a `jit_compile=True` run has other (equally seeded) random starts.
"""
import keras
import tensorflow as tf

from attr_robust_tf import _checks, _tensors, attributions, terms
from attr_robust_tf.attacks.pgd import pgd_loop, project

__all__ = ["InnerAttack", "TERMS", "STARTS"]

STARTS = ("uniform", "normal", "none")

# term name → J_t(attack, model, adv, images, labels, context), each a function of `terms` with the attack's
# settings and the quantities fixed for the ascent (`InnerAttack._context`)
TERMS = {
    "cross_entropy": lambda attack, model, adv, images, labels, context: terms.cross_entropy(
        model, images, adv, labels),
    "ig_norm": lambda attack, model, adv, images, labels, context: terms.ig_norm(
        model, images, adv, labels, steps=attack.ig_steps, method=attack.ig_method,
        batch_size=attack.ig_batch_size),
    "trades_kl": lambda attack, model, adv, images, labels, context: terms.trades_kl(
        model, images, adv, labels, clean_logits=context["clean_logits"]),
    "art": lambda attack, model, adv, images, labels, context: terms.art_margin(
        model, images, adv, labels, mask=context["art_mask"]),
    # IGR's penalty itself, IG(x) held fixed; not used by the `igr` row, available to custom rows (docs/igr.md)
    "igr": lambda attack, model, adv, images, labels, context: terms.igr_cosine(
        model, images, adv, labels, steps=attack.ig_steps, method=attack.ig_method, batch_size=attack.ig_batch_size,
        fixed_clean=True),
}

# the `RobustSettings` fields each term reads (besides the attack's own, `InnerAttack.uses`)
TERM_USES = {
    "cross_entropy": (),
    "ig_norm": ("inner_ig_steps", "ig_method", "ig_batch_size"),
    "trades_kl": (),
    "art": ("top_k",),
    "igr": ("inner_ig_steps", "ig_method", "ig_batch_size"),
}


def _is_variable(value):
    return isinstance(value, (tf.Variable, keras.Variable))


def _value(value, dtype):
    """A number as is; a variable read and cast to `dtype` (read inside a traced step: no retracing)."""
    return tf.cast(value, dtype) if _is_variable(value) else value


def _shortest(value):
    """A float, or a variable's value as the shortest decimal that round-trips it (0.3, not 0.30000001…)."""
    if _is_variable(value):
        return float(str(value.numpy()))
    return value


def _replica_noise(sample, shape, seed):
    """Noise for this replica's shard, cut from the noise of the global batch.

    Under a strategy with R replicas every replica draws the (R·N, ...) noise of the global batch with the
    same seed and keeps its own rows, so a distributed step sees exactly the single-device noise.
    """
    ctx = tf.distribute.get_replica_context()
    replicas = ctx.num_replicas_in_sync if ctx is not None else 1
    if replicas == 1:
        return sample(shape, seed)
    n = shape[0]
    full = sample(tf.concat([[n * replicas], shape[1:]], 0), seed)
    rid = tf.cast(ctx.replica_id_in_sync_group, tf.int32)
    return full[rid * n:(rid + 1) * n]


@keras.saving.register_keras_serializable(package="attr_robust_tf")
class InnerAttack:
    """ℓ∞ PGD on a weighted sum of inner terms; the result is a constant for the parameter update.

    Args:
      objectives: dict term → weight, terms from `TERMS`, e.g. {"cross_entropy": 1.0, "ig_norm": 0.1}. A weight
        may be a scalar variable (e.g. a regularizer weight of `RobustModel` that the term shares): it is read at
        every call, so changing it needs no retracing.
      epsilon: ℓ∞ radius ε > 0 (pixel units of [0, 1]); a scalar variable is read at every call (ε warm-up).
      step_size: sign-step size a > 0; a number or a scalar variable, like `epsilon`.
      steps: number of ascent steps K ≥ 0.
      start: "uniform" (x + U(−ε, ε), clipped: Madry/RAR/Sarkar/ART), "normal" (x + `noise_scale`·N(0, I),
        not clipped before step 1: TRADES) or "none" (start at x).
      ig_steps: m′, the right-Riemann points of the `ig_norm` term (RAR's m/approx_factor).
      ig_method: quadrature rule of the `ig_norm` term.
      ig_batch_size: chunk size for the IG path points (None: all at once).
      top_k: entries of the `art` mask (None: min(1000, H·W·C), ART's k).
      noise_scale: σ of the "normal" start (TRADES: 0.001).
      clip: valid pixel range (the earlier name of `bounds`).
      bounds: (lo, hi), the valid pixel range; ε and the step size are in its units (default: `clip`).

    Returns (from `__call__`): x′ with ‖x′ − x‖∞ ≤ ε inside `clip`, wrapped in `tf.stop_gradient` (Danskin).

    Example:
      >>> attack = InnerAttack({"cross_entropy": 1.0}, epsilon=0.1, step_size=0.01, steps=5)
      >>> adv = attack(model, images, labels, seed=[0, 0])  # doctest: +SKIP

    Reference: Madry et al. 2018 (arXiv 1706.06083) eq. 2; Chen et al. 2019 (RAR) `ar_approx`/`adv_ar_approx`;
    Zhang et al. 2019 (TRADES) Alg. 1; Singh et al. 2020 (ART) `saliency_pgd.py`; Sarkar et al. 2021 §4.
    """

    # the `RobustSettings` fields `from_settings` and `RobustModel` read for any inner attack
    uses = ("epsilon", "step_size", "attack_steps", "random_start", "surrogate_beta", "seed")

    def __init__(self, objectives, *, epsilon, step_size, steps, start="uniform", ig_steps=10,
                 ig_method="riemann_right", ig_batch_size=None, top_k=None, noise_scale=0.001,
                 clip=(0.0, 1.0), bounds=None):
        if not isinstance(objectives, dict) or not objectives:
            raise ValueError(
                "`objectives` must be a non-empty dict term → weight, e.g. {'cross_entropy': 1.0}. "
                f"Received: objectives={objectives!r}.")
        self.objectives = {}
        for term, weight in objectives.items():
            _checks.lookup("inner-attack term", term, TERMS)
            checked = _checks.check_nonnegative(_shortest(weight), f"objectives[{term!r}]")
            self.objectives[term] = weight if _is_variable(weight) else checked
        self._epsilon = self._scalar(epsilon, "epsilon")  # a number or a variable, read by `_value`
        self._step_size = self._scalar(step_size, "step_size")
        self.steps = _checks.check_positive_int(steps, "steps", minimum=0)
        if start not in STARTS:
            _checks.did_you_mean("start", start, STARTS)
        self.start_kind = start
        self.ig_steps = _checks.check_positive_int(ig_steps, "ig_steps")
        attributions.quadrature(ig_method, self.ig_steps)  # validates the rule
        self.ig_method = ig_method
        self.ig_batch_size = None if ig_batch_size is None else _checks.check_positive_int(
            ig_batch_size, "ig_batch_size")
        self.top_k = None if top_k is None else _checks.check_positive_int(top_k, "top_k")
        self.noise_scale = _checks.check_nonnegative(noise_scale, "noise_scale")
        if bounds is not None:
            clip = _checks.check_bounds(bounds)
        if clip is not None and not (len(clip) == 2 and float(clip[0]) < float(clip[1])):
            raise ValueError(
                f"`clip` must be a pair (lo, hi) with lo < hi, or None. Received: clip={clip!r}.")
        self.clip = None if clip is None else (float(clip[0]), float(clip[1]))

    @property
    def epsilon(self):
        """ε as a float (a variable's current value)."""
        return _shortest(self._epsilon)

    @property
    def step_size(self):
        """The step size as a float (a variable's current value)."""
        return _shortest(self._step_size)

    @staticmethod
    def _scalar(value, name):
        checked = _checks.check_nonnegative(_shortest(value), name, strict=True)
        return value if _is_variable(value) else checked

    @classmethod
    def from_settings(cls, objectives, settings, *, start, epsilon=None, step_size=None):
        """The attack of a `RobustSettings` with term weights `objectives` and the row's random `start`.

        `epsilon`, `step_size`: variables holding ε and a (None: the settings' numbers).
        """
        return cls(objectives, epsilon=settings.epsilon if epsilon is None else epsilon,
                   step_size=settings.step_size if step_size is None else step_size, steps=settings.attack_steps,
                   start=start if settings.random_start else "none", ig_steps=settings.inner_ig_steps,
                   ig_method=settings.ig_method, ig_batch_size=settings.ig_batch_size, top_k=settings.top_k,
                   bounds=settings.bounds)

    def start(self, images, seed=None):
        """The random start x′₀ for `images`, drawn from the stateless `seed` (shape (2,)) if given."""
        shape = tf.shape(images)
        if self.start_kind == "none":
            return images
        if self.start_kind == "uniform":
            def sample(s, sd):
                if sd is None:
                    return tf.random.uniform(s, -1.0, 1.0, dtype=images.dtype)
                return tf.random.stateless_uniform(s, sd, -1.0, 1.0, dtype=images.dtype, alg="philox")
            noise = _replica_noise(sample, shape, seed)
            epsilon = _value(self._epsilon, images.dtype)
            return project(images + epsilon * noise, images, epsilon, self.clip)

        def sample(s, sd):
            if sd is None:
                return tf.random.normal(s, dtype=images.dtype)
            return tf.random.stateless_normal(s, sd, dtype=images.dtype, alg="philox")
        # TRADES: not clipped before the first step (docs/method.md §7.4); every step projects
        return images + self.noise_scale * _replica_noise(sample, shape, seed)

    def _context(self, model, reference, images, labels, start):
        """Quantities fixed for the whole ascent (TRADES p(x), ART's top-k mask)."""
        context = {}
        if "trades_kl" in self.objectives:
            context["clean_logits"] = tf.stop_gradient(model(images, training=False))
        if "art" in self.objectives:
            # K from |∇f_y| of the original (ReLU) network at the start point (docs/method.md §7.7, step 2)
            g = tf.abs(_tensors.flat(attributions.saliency(reference, start, labels, score="logit")))
            d = g.shape[-1]
            k = min(self.top_k or 1000, d) if d is not None else (self.top_k or 1000)
            context["art_mask"] = tf.stop_gradient(_tensors.top_k_mask(g, k))  # (N, D)
        return context

    def objective(self, model, adv, images, labels, *, context=None, weights=None):
        """J(x′) = Σ_t w_t J_t(x′) per example (N,); `weights` overrides term weights with tensors."""
        context = context or {}
        weights = weights or {}
        total = 0.0
        for term, weight in self.objectives.items():
            w = tf.cast(weights.get(term, weight), adv.dtype)
            total += w * TERMS[term](self, model, adv, images, labels, context)
        return total

    def __call__(self, model, images, labels, *, seed=None, surrogate=None, weights=None):
        """x′ for `images` (N, H, W, C) and int labels (N,).

        Args:
          model: the network (logits). ART's top-k mask is computed on it.
          seed: a stateless seed, shape (2,) (None: unseeded random start).
          surrogate: smooth copy of `model` sharing its weights; if given, the ascent's gradients (including
            the input second derivatives of the `ig_norm`/`art` terms) go through it.
          weights: optional dict term → scalar tensor overriding `objectives` weights.
        """
        images = tf.convert_to_tensor(images)
        labels = tf.cast(labels, tf.int32)
        epsilon = _value(self._epsilon, images.dtype)
        x0 = self.start(images, seed)
        if self.steps == 0:
            return tf.stop_gradient(project(x0, images, epsilon, self.clip))
        ascent_model = model if surrogate is None else surrogate
        context = self._context(ascent_model, model, images, labels, x0)

        def objective(m, adv, x, y):
            return self.objective(m, adv, x, y, context=context, weights=weights)

        return pgd_loop(ascent_model, objective, images, labels, x0, epsilon=epsilon,
                        step_size=_value(self._step_size, images.dtype), steps=self.steps, clip=self.clip)

    def get_config(self):
        return {"objectives": {t: _shortest(w) for t, w in self.objectives.items()},
                "epsilon": self.epsilon, "step_size": self.step_size,
                "steps": self.steps, "start": self.start_kind, "ig_steps": self.ig_steps,
                "ig_method": self.ig_method, "ig_batch_size": self.ig_batch_size, "top_k": self.top_k,
                "noise_scale": self.noise_scale, "clip": self.clip}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.get("clip") is not None:
            config["clip"] = tuple(config["clip"])
        return cls(config.pop("objectives"), **config)

    def __repr__(self):
        return f"InnerAttack({self.get_config()!r})"
