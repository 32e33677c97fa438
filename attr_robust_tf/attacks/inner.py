"""The training-time inner maximisation x′ = argmax_{‖x′−x‖∞≤ε} J(x′) of the robust objectives (method.md §7).

J is a weighted sum of named per-example terms (method.md §7.9):

| term | J_t(x′) |
|---|---|
| `cross_entropy` | CE(f(x′), y) (Madry; the first part of IG-SUM-NORM and Sarkar's inner objective) |
| `ig_norm` | ‖IG^ℓ_{m′}(x, x′)‖₁ with m′ = `ig_steps` right-Riemann points ("IG approx", RAR `ar_approx`) |
| `trades_kl` | KL(p(x) ‖ p(x′)), p(x) fixed (TRADES) |
| `art` | softplus(d_p − d_n), the top-k alignment triplet of ART (method.md §7.7) |

The ascent is ℓ∞ PGD with sign steps (`attacks.pgd.pgd_loop`, a static Python loop), run in inference mode.
All randomness is stateless: the start is drawn from the seed passed in (RobustModel passes
(seed, optimizer.iterations)), so a resumed run repeats the uninterrupted one. The Philox algorithm is named
explicitly ("auto_select" may pick another generator on another device); XLA's Philox kernel still orders
its draws differently, so a `jit_compile=True` run has other (equally seeded) random starts.
"""
import keras
import tensorflow as tf

from attr_robust_tf import _checks, attributions, scores
from attr_robust_tf.attacks.pgd import pgd_loop, project

__all__ = ["InnerAttack", "TERMS", "STARTS"]

STARTS = ("uniform", "normal", "none")


def _flat(t):
    # (N, H, W, C) -> (N, H·W·C)
    return tf.reshape(t, [tf.shape(t)[0], -1])


def _cosine(u, v, eps=1e-8):
    # row-wise cosine of (N, D) tensors; eps keeps the value and its gradient finite at 0
    uv = tf.reduce_sum(u * v, axis=-1)
    return uv / tf.sqrt(tf.reduce_sum(u * u, -1) * tf.reduce_sum(v * v, -1) + tf.cast(eps, u.dtype) ** 2)


def _cross_entropy(attack, model, adv, images, labels, context):
    return scores.cross_entropy(model(adv, training=False), labels)


def _ig_norm(attack, model, adv, images, labels, context):
    ig = attributions.integrated_gradients(
        model, adv, labels, baseline=images, steps=attack.ig_steps, method=attack.ig_method,
        score="cross_entropy", batch_size=attack.ig_batch_size)
    return tf.reduce_sum(tf.abs(_flat(ig)), axis=-1)


def _trades_kl(attack, model, adv, images, labels, context):
    log_p = context["trades_log_p"]  # log p(x), computed once, a constant for the ascent
    log_q = tf.nn.log_softmax(model(adv, training=False), axis=-1)
    return tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1)


def _art(attack, model, adv, images, labels, context):
    mask = context["art_mask"]  # (N, D) 0/1: the top-k entries of |∇f_y| at the start, held fixed
    g1 = _flat(attributions.saliency(model, adv, labels, score="logit"))
    g2 = _flat(attributions.saliency(model, adv, labels, score="strongest_other_logit"))
    xk = _flat(adv) * mask
    d_p = 1.0 - _cosine(xk, g1 * mask)
    d_n = 1.0 - _cosine(xk, g2 * mask)
    return tf.math.softplus(d_p - d_n)


TERMS = {
    "cross_entropy": _cross_entropy,
    "ig_norm": _ig_norm,
    "trades_kl": _trades_kl,
    "art": _art,
}


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
      objectives: dict term → weight, terms from `TERMS`, e.g. {"cross_entropy": 1.0, "ig_norm": 0.1}.
      epsilon: ℓ∞ radius ε > 0 (pixel units of [0, 1]).
      step_size: sign-step size a > 0.
      steps: number of ascent steps K ≥ 0.
      start: "uniform" (x + U(−ε, ε), clipped: Madry/RAR/Sarkar/ART), "normal" (x + `noise_scale`·N(0, I),
        not clipped before step 1: TRADES) or "none" (start at x).
      ig_steps: m′, the right-Riemann points of the `ig_norm` term (RAR's m/approx_factor).
      ig_method: quadrature rule of the `ig_norm` term.
      ig_batch_size: chunk size for the IG path points (None: all at once).
      top_k: entries of the `art` mask (None: min(1000, H·W·C), ART's k).
      noise_scale: σ of the "normal" start (TRADES: 0.001).
      clip: valid pixel range.

    Returns (from `__call__`): x′ with ‖x′ − x‖∞ ≤ ε inside `clip`, wrapped in `tf.stop_gradient` (Danskin).

    Example:
      >>> attack = InnerAttack({"cross_entropy": 1.0}, epsilon=0.1, step_size=0.01, steps=5)
      >>> adv = attack(model, images, labels, seed=[0, 0])  # doctest: +SKIP

    Reference: Madry et al. 2018 (arXiv 1706.06083) eq. 2; Chen et al. 2019 (RAR) `ar_approx`/`adv_ar_approx`;
    Zhang et al. 2019 (TRADES) Alg. 1; Singh et al. 2020 (ART) `saliency_pgd.py`; Sarkar et al. 2021 §4.
    """

    def __init__(self, objectives, *, epsilon, step_size, steps, start="uniform", ig_steps=10,
                 ig_method="riemann_right", ig_batch_size=None, top_k=None, noise_scale=0.001,
                 clip=(0.0, 1.0)):
        if not isinstance(objectives, dict) or not objectives:
            raise ValueError(
                "`objectives` must be a non-empty dict term → weight, e.g. {'cross_entropy': 1.0}. "
                f"Received: objectives={objectives!r}.")
        self.objectives = {}
        for term, weight in objectives.items():
            _checks.lookup("inner-attack term", term, TERMS)
            self.objectives[term] = _checks.check_nonnegative(weight, f"objectives[{term!r}]")
        self.epsilon = _checks.check_nonnegative(epsilon, "epsilon", strict=True)
        self.step_size = _checks.check_nonnegative(step_size, "step_size", strict=True)
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
        if clip is not None and not (len(clip) == 2 and float(clip[0]) < float(clip[1])):
            raise ValueError(
                f"`clip` must be a pair (lo, hi) with lo < hi, or None. Received: clip={clip!r}.")
        self.clip = None if clip is None else (float(clip[0]), float(clip[1]))

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
            return project(images + self.epsilon * noise, images, self.epsilon, self.clip)

        def sample(s, sd):
            if sd is None:
                return tf.random.normal(s, dtype=images.dtype)
            return tf.random.stateless_normal(s, sd, dtype=images.dtype, alg="philox")
        # TRADES: not clipped before the first step (method.md §7.4); every step projects
        return images + self.noise_scale * _replica_noise(sample, shape, seed)

    def _context(self, model, reference, images, labels, start):
        """Quantities fixed for the whole ascent (TRADES p(x), ART's top-k mask)."""
        context = {}
        if "trades_kl" in self.objectives:
            context["trades_log_p"] = tf.stop_gradient(
                tf.nn.log_softmax(model(images, training=False), axis=-1))
        if "art" in self.objectives:
            # K from |∇f_y| of the original (ReLU) network at the start point (method.md §7.7, step 2)
            g = tf.abs(_flat(attributions.saliency(reference, start, labels, score="logit")))
            d = g.shape[-1]
            k = min(self.top_k or 1000, d) if d is not None else (self.top_k or 1000)
            _, idx = tf.math.top_k(g, k=k)
            # scatter 1s at the (row, index) pairs: O(N·D) memory, not the O(N·k·D) of a one-hot sum
            rows = tf.broadcast_to(tf.range(tf.shape(idx)[0])[:, None], tf.shape(idx))  # (N, k)
            mask = tf.scatter_nd(tf.stack([rows, idx], axis=-1), tf.ones(tf.shape(idx), images.dtype),
                                 tf.shape(g))  # (N, D)
            context["art_mask"] = tf.stop_gradient(mask)
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
          weights: optional dict term → scalar tensor overriding `objectives` weights (e.g. a weight shared
            with a scheduled regularizer).
        """
        images = tf.convert_to_tensor(images)
        labels = tf.cast(labels, tf.int32)
        x0 = self.start(images, seed)
        if self.steps == 0:
            return tf.stop_gradient(project(x0, images, self.epsilon, self.clip))
        ascent_model = model if surrogate is None else surrogate
        context = self._context(ascent_model, model, images, labels, x0)

        def objective(m, adv, x, y):
            return self.objective(m, adv, x, y, context=context, weights=weights)

        return pgd_loop(ascent_model, objective, images, labels, x0, epsilon=self.epsilon,
                        step_size=self.step_size, steps=self.steps, clip=self.clip)

    def get_config(self):
        return {"objectives": dict(self.objectives), "epsilon": self.epsilon, "step_size": self.step_size,
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
