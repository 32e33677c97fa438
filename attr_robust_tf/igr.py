"""IGR: the integrated gradient regularizer of Wang & Kong (NeurIPS 2022, arXiv 2205.07279), docs/igr.md.

The paper shows that the expected Kendall's τ between two attribution maps rises with their cosine similarity,
so the direction of the attribution, not its ℓp norm, decides attributional robustness; IGR therefore
*maximizes the cosine similarity between the natural and the perturbed IG attributions* (abstract). The
penalty here is, per example, on flattened maps,

    R_IGR(x, x′) = 1 − cos(IG_s(x), IG_s(x′)),   IG_s(z) = z ⊙ Σ_k w_k ∇s(α_k z)  (zero baseline, m = `steps`)

with s the true-class logit by default: the map that the attribution attack and the evaluation compare with
Kendall's τ (`attacks.attribution`, `evaluation`). Both maps depend on the weights; the gradient flows through
both (double backprop), and x′ is a constant (Danskin), as for every row.

Choices not established from the accessible sources (only the abstract was available, see docs/igr.md):
the baseline (zero) and the score (logit) of IG, the inner attack (the IG-SUM-NORM inner objective
CE + β‖IG^ℓ(x, x′)‖₁ of RAR, `objectives` row `igr`), the task input (x′, as IG-SUM-NORM, so `igr` and
`ig_sum_norm` differ only in the penalty) and λ = 1.
"""
import keras
import tensorflow as tf

from attr_robust_tf import attributions, regularizers, scores
import attr_robust_tf.attacks.inner as inner

__all__ = ["IGRCosine", "igr_penalty", "inner_term"]


def igr_penalty(ig_clean, ig_adv):
    """1 − cos(a, b) per example of two attribution batches (N, ...) → (N,), on the flattened maps.

    In [0, 2]; 0 when the maps point the same way, whatever their norms (scale invariance is the point of IGR).
    """
    a = tf.reshape(ig_clean, [tf.shape(ig_clean)[0], -1])
    b = tf.reshape(ig_adv, [tf.shape(ig_adv)[0], -1])
    return 1.0 - regularizers.cosine(a, b)


@keras.saving.register_keras_serializable(package="attr_robust_tf")
class IGRCosine(regularizers._IGRegularizer):
    """R = 1 − cos(IG_s(x), IG_s(x′)) per example (Wang & Kong 2022, arXiv 2205.07279; docs/igr.md).

    IG from the zero baseline with m = `steps` points of rule `method`, attributing `score` of the true class
    (default "logit"; any `scores.SCORES` name). Clean and perturbed maps are computed in one batched pass.

    Args:
      steps, method, batch_size: IG points, quadrature rule and path-point chunk (as the other IG penalties).
      score: the attributed scalar.
      weight, name: see `AttributionRegularizer`.

    Returns (from `__call__`): (N,) penalties in [0, 2], differentiable with respect to the weights.

    Example:
      >>> penalty = IGRCosine(steps=8)(model, images, labels, adv_images=adv)  # doctest: +SKIP
    """

    requires_adv = True
    default_name = "igr"

    def __init__(self, steps=None, method="riemann_right", batch_size=None, score="logit", weight=1.0, name=None):
        super().__init__(steps=steps, method=method, batch_size=batch_size, weight=weight, name=name)
        if not callable(score):
            scores.get(score)  # validates the name (did-you-mean)
        self.score = score

    def __call__(self, model, images, labels, *, adv_images=None, training=False):
        regularizers._require_adv(self.name, adv_images)
        images = tf.convert_to_tensor(images)
        n = tf.shape(images)[0]
        both = tf.concat([images, tf.cast(adv_images, images.dtype)], axis=0)  # clean rows, then perturbed rows
        labels = tf.convert_to_tensor(labels)
        ig = self._ig(model, both, tf.concat([labels, labels], axis=0), self.score, training=training)
        return igr_penalty(ig[:n], ig[n:])

    def get_config(self):
        return {**super().get_config(), "score": self.score}


def inner_term(attack, model, adv, images, labels, context):
    """Inner-attack term J(x′) = 1 − cos(IG(x), IG(x′)): the ascent that maximises the IGR penalty itself.

    Zero baseline, true-class logit, m′ = `attack.ig_steps` points of `attack.ig_method` (IG(x) does not depend
    on x′, so only the x′ map is differentiated). Not used by the `igr` row (docs/igr.md: the paper's inner
    objective could not be established); available to custom rows as inner term "igr".
    """
    both = tf.concat([images, adv], axis=0)
    ig = attributions.integrated_gradients(
        model, both, tf.concat([labels, labels], axis=0), steps=attack.ig_steps, method=attack.ig_method,
        score="logit", batch_size=attack.ig_batch_size)
    n = tf.shape(images)[0]
    return igr_penalty(tf.stop_gradient(ig[:n]), ig[n:])


regularizers.REGULARIZERS["igr"] = IGRCosine  # the registry row of the penalty (objectives.py imports this module)
inner.TERMS["igr"] = inner_term  # optional inner term for custom rows
