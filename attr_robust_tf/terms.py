"""Per-example loss terms `(model, images, adv_images, labels, ...) -> (N,)`, each defined once.

The inner attack (`attacks.inner.TERMS`, maximised over x′) and the outer penalties (`penalties`, weighted
into the training loss) refer to these functions by name. Quantities that the inner attack holds fixed during
its ascent (TRADES' p(x), ART's top-k mask) are explicit keyword arguments. Attribution passes are
differentiable: inside an outer `tf.GradientTape` the parameter gradient includes the double-backprop terms.
None of them reduces over the batch.

| term | value per example | reference |
|---|---|---|
| `cross_entropy` | CE(f(x′), y) | Madry et al. 2018 eq. 2.8 |
| `ig_norm` | ‖IG^ℓ(x, x′)‖₁ | Chen et al. 2019 (RAR), `ar`/`adv_ar` |
| `trades_kl` | KL(p(x) ‖ p(x′)) | Zhang et al. 2019 (TRADES) eq. 5 |
| `art_margin` | softplus(d⁺ − d⁻) at x′ on the top-k mask | Singh et al. 2020 (ART), `saliency_pgd.py` |
| `art_triplet` | ½ Σ_{i∈{x,x′}} softplus(max D⁺ − min D⁻) | Singh et al. 2020 (ART), `loss_art.py` |
| `cacr` | KL(U ‖ P_N) − KL(U ‖ P_T) at x′ | Sarkar et al. 2021, `Flower/model.py` |
| `wacr` | Σ_j w_j(B, ΔA) | Sarkar et al. 2021, `Flower/model.py` |
| `input_gradient_norm` | Σ_i |∂s(x)/∂x_i|^p | Ross & Doshi-Velez 2018 |
| `igr_cosine` | 1 − cos(IG(x), IG(x′)) | Wang & Kong 2022 (IGR), abstract; docs/igr.md |
"""
import tensorflow as tf

from attr_robust_tf import _tensors, attributions, scores

__all__ = ["cross_entropy", "ig_norm", "trades_kl", "art_margin", "art_triplet", "cacr", "wacr",
           "input_gradient_norm", "igr_cosine", "kl_divergence", "scale_map", "TEMPERATURES", "kl_uniform_softmax", "cosine"]

cosine = _tensors.cosine


def kl_divergence(logits_p, logits_q):
    """KL(p ‖ q) = Σ_c p_c (log p_c − log q_c) per example, from logits (stable log_softmax)."""
    log_p = tf.nn.log_softmax(logits_p, axis=-1)
    log_q = tf.nn.log_softmax(logits_q, axis=-1)
    return tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1)


def kl_uniform_softmax(a):
    """KL(U ‖ softmax(a)) over the pixels of each map a (N, H, W) → (N,), evaluated stably.

    KL(U ‖ P) = logsumexp(a) − mean(a) − log(H·W) = log mean_p exp(a_p − ā). For small attributions this is
    ≈ ½·Var(a), far below float32 resolution of logsumexp(a) ≈ log(H·W), so it is evaluated as
    log1p(mean(expm1(a − ā))) unless some a_p − ā > 20, where logsumexp(a − ā) − log(H·W) is exact enough.
    """
    a = _tensors.flat(a)  # (N, H·W)
    d = a - tf.reduce_mean(a, axis=-1, keepdims=True)
    big = tf.reduce_max(d, axis=-1) > 20.0
    # the clamp keeps the unselected branch (and its gradient) finite under tf.where
    small_form = tf.math.log1p(tf.reduce_mean(tf.math.expm1(tf.minimum(d, 20.0)), axis=-1))
    log_n = tf.math.log(tf.cast(tf.shape(d)[-1], d.dtype))
    big_form = tf.reduce_logsumexp(d, axis=-1) - log_n
    return tf.where(big, big_form, small_form)


def cross_entropy(model, images, adv_images, labels, *, training=False):
    """CE(f(x′), y): Madry's inner objective and the first part of IG-SUM-NORM's and Sarkar's."""
    del images
    return scores.cross_entropy(model(adv_images, training=training), labels)


def ig_norm(model, images, adv_images, labels, *, steps, method="riemann_right", batch_size=None, training=False):
    """‖IG^ℓ(x, x′)‖₁, IG^ℓ(x, x′) = (x′ − x) ⊙ Σ_k w_k ∇_z ℓ(z, y)|_{z = x + α_k(x′ − x)}, `steps` points.

    The IG-NORM / IG-SUM-NORM penalty (m points) and inner term (m′ points, RAR's "IG approx").
    """
    ig = attributions.integrated_gradients(
        model, adv_images, labels, baseline=images, steps=steps, method=method, score="cross_entropy",
        batch_size=batch_size, training=training)
    return tf.reduce_sum(tf.abs(_tensors.flat(ig)), axis=-1)


def trades_kl(model, images, adv_images, labels, *, clean_logits=None, training=False):
    """KL(p(x) ‖ p(x′)). `clean_logits`: f(x) held fixed (the inner ascent); None: f(x), differentiated."""
    del labels
    if clean_logits is None:
        clean_logits = model(images, training=training)
    return kl_divergence(clean_logits, model(adv_images, training=training))


def art_margin(model, images, adv_images, labels, *, mask):
    """softplus(d⁺ − d⁻) at x′, d^± = 1 − cos(x′ ⊙ K, ∇f^±(x′) ⊙ K): ART's inner (saliency-PGD) objective.

    f⁺ = f_y, f⁻ = max_{c≠y} f_c; `mask` K (N, D) is 0/1, the top-k entries of |∇f_y| at the start point,
    held fixed for the ascent (`_tensors.top_k_mask`).
    """
    del images
    g_pos = _tensors.flat(attributions.saliency(model, adv_images, labels, score="logit"))
    g_neg = _tensors.flat(attributions.saliency(model, adv_images, labels, score="strongest_other_logit"))
    masked = _tensors.flat(adv_images) * mask
    d_pos = 1.0 - cosine(masked, g_pos * mask)
    d_neg = 1.0 - cosine(masked, g_neg * mask)
    return tf.math.softplus(d_pos - d_neg)


def art_triplet(model, images, adv_images, labels, *, training=False):
    """ART's triplet penalty: align each input with its true-class gradient more than with the strongest other.

    Over X = [x; x′], with example pairs {x_e, x′_e}:
    D⁺[i, j] = 1 − cos(X_i, ∇f_y(X_j)),  D⁻[i, j] = 1 − cos(X_i, ∇max_{c≠y} f_c(X_j)),
    d_ap(i) = max_{j in pair} D⁺[i, j],  d_an(i) = min_{j in pair} D⁻[i, j],
    penalty_e = ½ Σ_{i ∈ {x_e, x′_e}} log(1 + exp(d_ap(i) − d_an(i))).
    """
    both = tf.concat([images, adv_images], axis=0)  # (2N, H, W, C): clean rows, then perturbed rows
    labels2 = tf.concat([labels, labels], axis=0)
    g_pos = attributions.saliency(model, both, labels2, score="logit", training=training)
    g_neg = attributions.saliency(model, both, labels2, score="strongest_other_logit", training=training)
    n = tf.shape(images)[0]
    flat = _tensors.flat
    pos = [flat(g_pos[:n]), flat(g_pos[n:])]
    neg = [flat(g_neg[:n]), flat(g_neg[n:])]
    total = 0.0
    for row in (flat(images), flat(adv_images)):
        d_ap = tf.maximum(1.0 - cosine(row, pos[0]), 1.0 - cosine(row, pos[1]))
        d_an = tf.minimum(1.0 - cosine(row, neg[0]), 1.0 - cosine(row, neg[1]))
        total += tf.math.softplus(d_ap - d_an)
    return 0.5 * total


def _ig(model, images, labels, score, baseline, steps, method, batch_size, training):
    return attributions.integrated_gradients(
        model, images, labels, baseline=baseline, steps=steps, method=method, score=score, batch_size=batch_size,
        training=training)


TEMPERATURES = ("std", "l1")  # the per-map scales of the CACR temperature; a float τ is a fixed scale
_SCALE_FLOOR = 1e-12  # lower bound of a per-map scale: a zero map stays zero instead of 0/0


def scale_map(a, temperature):
    """a / s per map for the CACR temperature: (N, H, W) → (N, H, W); `None` returns `a` unchanged.

    s = τ (a float), the pixel standard deviation of the map ("std") or its mean |a| ("l1"), each per-map scale
    held constant for differentiation (`tf.stop_gradient`) and floored at 1e-12 so that a zero map stays zero.
    """
    if temperature is None:
        return a
    if isinstance(temperature, str):
        flat = _tensors.flat(a)
        if temperature == "std":
            scale = tf.math.reduce_std(flat, axis=-1)
        else:  # "l1"
            scale = tf.reduce_mean(tf.abs(flat), axis=-1)
        scale = tf.maximum(tf.stop_gradient(scale), tf.cast(_SCALE_FLOOR, a.dtype))
        return a / tf.reshape(scale, [-1] + [1] * (a.shape.rank - 1))  # (N,) → (N, 1, 1)
    return a / tf.cast(temperature, a.dtype)


def cacr(model, images, adv_images, labels, *, steps, method="riemann_right", batch_size=None, temperature=None,
         training=False):
    """L_CACR = KL(U ‖ P_N) − KL(U ‖ P_T) on x′ (Sarkar et al. 2021).

    A_T = IG of p_y and A_N = IG of p_{n_k} (strongest other class, re-selected per path point), both from the
    zero baseline to x′ with `steps` points; a = channel sums (signed); P = softmax(a / s) over the H·W pixels,
    s from `temperature` (`scale_map`; None: s = 1, the released code).
    """
    del images
    a_t = tf.reduce_sum(_ig(model, adv_images, labels, "probability", None, steps, method, batch_size, training),
                        axis=-1)
    a_n = tf.reduce_sum(_ig(model, adv_images, labels, "strongest_other_probability", None, steps, method,
                            batch_size, training), axis=-1)  # (N, H, W)
    return kl_uniform_softmax(scale_map(a_n, temperature)) - kl_uniform_softmax(scale_map(a_t, temperature))


def wacr(model, images, adv_images, labels, *, steps, method="riemann_right", batch_size=None, training=False):
    """L_WACR = Σ_j w_j, w_j = B_j·ΔA_j if sgn(B_j) = sgn(ΔA_j), else |ΔA_j| (Sarkar et al. 2021 code eq 9).

    B = IG of p_y from 0 to x (code eq 7); ΔA = IG of log p_y from x to x′ (code eq 8), `steps` points each.
    The sign indicator is a comparison, so no gradient flows through it.
    """
    b = _ig(model, images, labels, "probability", None, steps, method, batch_size, training)
    delta_a = _ig(model, adv_images, labels, "log_probability", images, steps, method, batch_size, training)
    same_sign = tf.equal(tf.sign(b), tf.sign(delta_a))
    w = tf.where(same_sign, b * delta_a, tf.abs(delta_a))
    return tf.reduce_sum(_tensors.flat(w), axis=-1)


def input_gradient_norm(model, images, adv_images, labels, *, p=2, score="cross_entropy", training=False):
    """Σ_i |∂s(x)/∂x_i|^p on the clean input (`adv_images` is unused)."""
    del adv_images
    g = attributions.saliency(model, images, labels, score=score, training=training)
    return tf.reduce_sum(tf.abs(_tensors.flat(g)) ** p, axis=-1)


def igr_cosine(model, images, adv_images, labels, *, steps, method="riemann_right", batch_size=None, score="logit",
               fixed_clean=False, training=False):
    """1 − cos(IG_s(x), IG_s(x′)) per example on the flattened maps, in [0, 2] (Wang & Kong 2022, IGR).

    IG_s(z) = z ⊙ Σ_k w_k ∇s(α_k z): zero baseline, `steps` points, `score` of the true class (default the logit,
    the map the attack and the Kendall evaluation compare). Clean and perturbed maps are one batched pass.
    `fixed_clean`: IG(x) is a constant (the inner ascent, where only x′ moves). Only the paper's abstract was
    available: the baseline and score are choices (docs/igr.md).
    """
    n = tf.shape(images)[0]
    both = tf.concat([images, tf.cast(adv_images, images.dtype)], axis=0)  # (2N, H, W, C): clean, then perturbed
    ig = _ig(model, both, tf.concat([labels, labels], axis=0), score, None, steps, method, batch_size, training)
    clean = tf.stop_gradient(ig[:n]) if fixed_clean else ig[:n]
    return 1.0 - cosine(_tensors.flat(clean), _tensors.flat(ig[n:]))
