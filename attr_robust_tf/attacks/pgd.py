"""ℓ∞ projected gradient ascent (Madry et al. 2018, arXiv 1706.06083, eq. 2; docs/method.md §5).

x'₀ = Π(x + U(−ε, ε)),  x'_{t+1} = Π_{x,ε}(x'_t + a·sign(∇_{x'} J(x'_t))),  with
Π_{x,ε}(z) = clip(clip(z, x − ε, x + ε), lo, hi). The random start is clipped to the valid range before the
first step (docs/method.md §9 quirk 10).
"""
import weakref

import tensorflow as tf

from attr_robust_tf import _checks, attributions, path_chunks, scores


def cross_entropy_objective(model, adv_images, images, labels):
    """J(x') = CE(f(x'), y) per example, in inference mode (docs/method.md §5: AA attacks pure CE)."""
    del images
    return scores.cross_entropy(model(adv_images, training=False), labels)


OBJECTIVES = {"cross_entropy": cross_entropy_objective}


def project(z, images, epsilon, clip=(0.0, 1.0), quantize=None):
    """Π_{x,ε}: onto the ℓ∞ ball around `images` ∩ [lo, hi], optionally onto the 1/quantize grid."""
    z = tf.clip_by_value(z, images - epsilon, images + epsilon)
    if clip is not None:
        z = tf.clip_by_value(z, clip[0], clip[1])
    if quantize:
        # round(q·x)/q: the reference's int32 cast on 0–255 images (docs/method.md §9 quirk 3); rounding can leave
        # the ball by < 1/(2q), so project once more onto it and back onto the grid's interior
        q = tf.cast(quantize, z.dtype)
        z = tf.round(z * q) / q
        lo_grid = tf.math.ceil((images - epsilon) * q - 1e-4) / q
        hi_grid = tf.math.floor((images + epsilon) * q + 1e-4) / q
        z = tf.clip_by_value(z, lo_grid, hi_grid)
    return z


def uniform_start(images, epsilon, *, seed=None, clip=(0.0, 1.0), quantize=None):
    """x + U(−ε, ε), projected (clipped to the valid range); seeded with a stateless RNG if `seed` is given."""
    shape = tf.shape(images)
    if seed is None:
        noise = tf.random.uniform(shape, -1.0, 1.0, dtype=images.dtype)
    else:
        seed = tf.cast(tf.reshape(seed, [-1])[:2] if tf.is_tensor(seed) else [int(seed), 1], tf.int32)
        seed = tf.pad(seed, [[0, 2 - tf.shape(seed)[0]]])
        noise = tf.random.stateless_uniform(shape, seed, -1.0, 1.0, dtype=images.dtype)
    return project(images + epsilon * noise, images, epsilon, clip, quantize)


def pgd_loop(model, objective, images, labels, start, *, epsilon, step_size, steps, clip=(0.0, 1.0),
             quantize=None):
    """`steps` signed ascent steps on Σ_i J_i from `start`; a static Python loop (no AutoGraph needed).

    Only ∇_adv is taken, so chunked IGs inside the objective skip their weight VJPs (`input_gradients_only`).
    """
    adv = start
    for _ in range(steps):
        with tf.GradientTape(watch_accessed_variables=False) as tape, path_chunks.input_gradients_only():
            tape.watch(adv)
            total = tf.reduce_sum(objective(model, adv, images, labels))
        grad = tape.gradient(total, adv)
        if grad is None:
            grad = tf.zeros_like(adv)
        adv = project(adv + step_size * tf.sign(grad), images, epsilon, clip, quantize)
    return tf.stop_gradient(adv)


_COMPILED = weakref.WeakKeyDictionary()


def _compiled_loop(model, objective, key):
    """One tf.function per (model, objective, settings), reused by eager callers (no retracing per call)."""
    per_model = _COMPILED.setdefault(model, {})
    fn = per_model.get((objective, key))
    if fn is None:
        epsilon, step_size, steps, clip, quantize = key

        @tf.function(reduce_retracing=True)
        def fn(images, labels, start):
            return pgd_loop(model, objective, images, labels, start, epsilon=epsilon, step_size=step_size,
                            steps=steps, clip=clip, quantize=quantize)

        per_model[(objective, key)] = fn
    return fn


def pgd_linf(model, images, labels, *, epsilon, step_size, steps, random_start=True, loss="cross_entropy",
             clip=(0.0, 1.0), seed=None, quantize=None, bounds=None):
    """ℓ∞ PGD that maximises a per-example objective; returns the adversarial images (a constant).

    Args:
      model: Keras model returning logits.
      images: float (N, H, W, C) in [0, 1]; labels: int (N,).
      epsilon: ℓ∞ radius ≥ 0 (0 returns the images unchanged); step_size: a ≥ 0; steps: K ≥ 0.
      random_start: start from a uniform point in the ball (clipped to `clip`) instead of x.
      loss: "cross_entropy" or a callable `J(model, adv_images, images, labels) -> (N,)` to maximise.
      clip: valid range (lo, hi), or None (the earlier name of `bounds`).
      bounds: (lo, hi), the declared pixel range (Foolbox/ART convention): `images` must lie inside it, and ε
        and the step size are in its units (default: `clip`).
      seed: int for a reproducible random start.
      quantize: e.g. 255 to keep iterates on the 0–255 grid (reference GTSRB/Flower behaviour).

    Returns:
      Adversarial images with ‖x' − x‖∞ ≤ ε, inside `clip`.
    """
    if bounds is not None:
        clip = _checks.check_bounds(bounds)
    if clip is not None:
        images = _checks.images_in_bounds(images, _checks.check_bounds(clip, "clip"))
    images = _checks.check_images(images)
    labels = _checks.check_target(labels, images.shape[0], attributions.num_classes(model, images), name="labels")
    epsilon = _checks.check_nonnegative(epsilon, "epsilon")
    step_size = _checks.check_nonnegative(step_size, "step_size")
    steps = _checks.check_positive_int(steps, "steps", minimum=0)
    if clip is not None and not (len(clip) == 2 and clip[0] < clip[1]):
        raise ValueError(f"`clip` must be a pair (lo, hi) with lo < hi, or None. Received: clip={clip!r}.")
    objective = _checks.lookup("loss", loss, OBJECTIVES) if isinstance(loss, str) else loss
    if not callable(objective):
        raise ValueError(f"`loss` must be 'cross_entropy' or a callable. Received: loss={loss!r}.")
    clip = None if clip is None else (float(clip[0]), float(clip[1]))
    if random_start and epsilon > 0:
        start = uniform_start(images, epsilon, seed=seed, clip=clip, quantize=quantize)
    else:
        start = images
    if epsilon == 0 or steps == 0:
        return tf.stop_gradient(start)
    key = (epsilon, step_size, steps, clip, quantize)
    if tf.executing_eagerly():
        return _compiled_loop(model, objective, key)(images, labels, start)
    return pgd_loop(model, objective, images, labels, start, epsilon=epsilon, step_size=step_size,
                    steps=steps, clip=clip, quantize=quantize)


