"""Differentiable attributions: IG, saliency, input×gradient, SmoothGrad, and the saliency map.

All functions take images (N, H, W, C) in [0, 1] and a model returning logits (N, K), and are plain
functions on tensors. Called inside an outer `tf.GradientTape`, each result is differentiable with respect
to the model weights and to the images (double backprop): the inner input gradient is taken while the
outer tape records, so it is itself recorded.
"""
import numpy as np
import tensorflow as tf

from attr_robust_tf import _checks, scores

METHODS = ("riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid", "gausslegendre")


def quadrature(method, steps):
    """Nodes α_j in [0, 1] and weights w_j (summing to 1) of a path-integral rule (method.md §2.2).

    Returns two float64 NumPy arrays of length `steps`.
    """
    if not isinstance(method, str) or method not in METHODS:
        _checks.did_you_mean("method", method, METHODS)
    m = _checks.check_positive_int(steps, "steps", minimum=2 if method == "riemann_trapezoid" else 1)
    j = np.arange(1, m + 1, dtype=np.float64)
    if method == "riemann_right":
        return j / m, np.full(m, 1.0 / m)
    if method == "riemann_left":
        return (j - 1) / m, np.full(m, 1.0 / m)
    if method == "riemann_middle":
        return (j - 0.5) / m, np.full(m, 1.0 / m)
    if method == "riemann_trapezoid":
        w = np.full(m, 1.0 / (m - 1))
        w[[0, -1]] *= 0.5
        return (j - 1) / (m - 1), w
    t, v = np.polynomial.legendre.leggauss(m)
    return (t + 1.0) / 2.0, v / 2.0


def _call_logits(model, z, training):
    logits = model(z, training=training)
    if isinstance(logits, (list, tuple, dict)):
        raise ValueError(
            "The model must return a single logits tensor of shape (N, num_classes). Received: "
            f"{type(logits).__name__} of outputs.")
    return _checks.check_logits(logits)


def resolve_target(model, images, target, *, training=False):
    """`target` as int32 (N,): class indices as given, or the model's argmax for "predicted"."""
    if isinstance(target, str):
        if target != "predicted":
            raise ValueError(
                "`target` must be integer class indices of shape (N,) or the string 'predicted'. "
                f"Received: target={target!r}.")
        logits = _call_logits(model, images, training)
        return tf.stop_gradient(tf.argmax(logits, axis=-1, output_type=tf.int32))
    num_classes = None
    output_shape = getattr(model, "output_shape", None)
    if isinstance(output_shape, tuple) and len(output_shape) == 2 and isinstance(output_shape[-1], int):
        num_classes = output_shape[-1]
    return _checks.check_target(target, images.shape[0], num_classes)


def path_gradients(model, points, target, *, score="logit", batch_size=None, training=False):
    """∇_z s(z) for every row of `points` (M, H, W, C) with `target` (M,), chunked by `batch_size`.

    The examples do not interact (inference mode), so the gradient of Σ s over a chunk is exactly the
    per-example input gradient (method.md §2.5). Chunks are a static Python loop, never a tf.while_loop,
    so the result stays twice differentiable.
    """
    score_fn = scores.get(score)
    total = points.shape[0]
    if total is None:
        total = tf.shape(points)[0]
    size = total if batch_size is None or not isinstance(total, int) else batch_size
    grads = []
    for start in range(0, total, size) if isinstance(total, int) else [0]:
        z = points if size == total else points[start:start + size]
        t = target if size == total else target[start:start + size]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(z)
            s = score_fn(_call_logits(model, z, training), t)
            total_score = tf.reduce_sum(s)
        g = tape.gradient(total_score, z)
        grads.append(tf.zeros_like(z) if g is None else g)
    return grads[0] if len(grads) == 1 else tf.concat(grads, axis=0)


def _prepare(model, images, target, training, check_range=False):
    images = _checks.check_images(images, check_range=check_range)
    return images, resolve_target(model, images, target, training=training)


def integrated_gradients(model, images, target, *, baseline=None, steps=50, method="riemann_right",
                         score="logit", batch_size=None, training=False, check_range=False):
    """Integrated Gradients (Sundararajan et al. 2017, arXiv 1703.01365, eq. 1; method.md §2).

    IG(x) = (x − x₀) ⊙ Σ_j w_j ∇s(x₀ + α_j (x − x₀)), with all `steps`·N path points in one batch
    (chunked by `batch_size`).

    Args:
      model: a Keras model returning logits (N, K).
      images: float (N, H, W, C) in [0, 1].
      target: int (N,) class indices, or "predicted" for the model's argmax.
      baseline: None (zeros), a tensor broadcastable to `images`, or a per-image tensor (N, H, W, C).
      steps: number of path points m.
      method: "riemann_right" (reference), "riemann_left", "riemann_middle", "riemann_trapezoid",
        "gausslegendre".
      score: which scalar is attributed (see `scores.SCORES`).
      batch_size: at most this many path points per forward pass (None: all at once).
      training: forwarded to the model; keep False (BatchNorm must not couple examples).
      check_range: also require images in [0, 1].

    Returns:
      Attributions with the shape of `images`.

    Example:
      >>> ig = integrated_gradients(model, x, "predicted", steps=20)  # doctest: +SKIP
    """
    images, target = _prepare(model, images, target, training, check_range)
    alphas, weights = quadrature(method, steps)
    dtype = images.dtype
    x0 = tf.zeros_like(images) if baseline is None else tf.cast(baseline, dtype)
    try:
        x0 = tf.broadcast_to(x0, tf.shape(images))
    except (ValueError, tf.errors.InvalidArgumentError):
        raise ValueError(
            f"`baseline` must be broadcastable to images.shape={tuple(images.shape)}. Received: "
            f"baseline.shape={tuple(x0.shape)}.") from None
    delta = images - x0
    m = len(alphas)
    a = tf.constant(alphas, dtype)[:, None, None, None, None]
    # (m, N, H, W, C) path points, flattened point-major to (m·N, H, W, C)
    points = tf.reshape(x0[None] + a * delta[None], tf.concat([[-1], tf.shape(images)[1:]], 0))
    points = tf.ensure_shape(points, [None] + images.shape[1:].as_list())
    if images.shape[0] is not None:
        points = tf.ensure_shape(points, [m * images.shape[0]] + images.shape[1:].as_list())
    grads = path_gradients(model, points, tf.tile(target, [m]), score=score, batch_size=batch_size,
                           training=training)
    grads = tf.reshape(grads, tf.concat([[m], tf.shape(images)], 0))  # (m, N, H, W, C)
    mean_grad = tf.tensordot(tf.constant(weights, dtype), grads, axes=1)  # Σ_j w_j ∇s → (N, H, W, C)
    return delta * mean_grad


def saliency(model, images, target, *, score="logit", batch_size=None, training=False,
             check_range=False):
    """Simple gradient ∇_x s(x) (method.md §2.7). Returns the shape of `images`."""
    images, target = _prepare(model, images, target, training, check_range)
    return path_gradients(model, images, target, score=score, batch_size=batch_size, training=training)


def input_x_gradient(model, images, target, *, score="logit", batch_size=None, training=False,
                     check_range=False):
    """x ⊙ ∇_x s(x) (method.md §2.7). Returns the shape of `images`."""
    images, target = _prepare(model, images, target, training, check_range)
    return images * path_gradients(model, images, target, score=score, batch_size=batch_size,
                                   training=training)


def smoothgrad(model, images, target, *, noise=0.15, samples=25, score="logit", seed=None,
               batch_size=None, training=False, check_range=False):
    """SmoothGrad (Smilkov et al. 2017, arXiv 1706.03825): mean of ∇s at x + N(0, σ²), σ = noise·(max − min).

    All `samples`·N noisy copies are evaluated as one batch (chunked by `batch_size`); `seed` makes the
    noise deterministic.
    """
    images, target = _prepare(model, images, target, training, check_range)
    samples = _checks.check_positive_int(samples, "samples")
    noise = _checks.check_nonnegative(noise, "noise")
    axes = [1, 2, 3]
    sigma = noise * (tf.reduce_max(images, axes, keepdims=True) - tf.reduce_min(images, axes, keepdims=True))
    shape = tf.concat([[samples], tf.shape(images)], 0)
    if seed is None:
        eps = tf.random.normal(shape, dtype=images.dtype)
    else:
        eps = tf.random.stateless_normal(shape, seed=[int(seed), 0], dtype=images.dtype)
    # (samples, N, H, W, C) noisy copies, flattened to (samples·N, H, W, C)
    noisy = tf.reshape(images[None] + sigma[None] * eps, tf.concat([[-1], tf.shape(images)[1:]], 0))
    grads = path_gradients(model, noisy, tf.tile(target, [samples]), score=score, batch_size=batch_size,
                           training=training)
    return tf.reduce_mean(tf.reshape(grads, shape), axis=0)


def saliency_map(attributions, *, normalize=True):
    """Channel-summed |A|, normalised so each map sums to H·W (method.md §3; the reference convention).

    Returns (N, H, W). An all-zero attribution gives an all-zero map (the normalisation is undefined).
    """
    attributions = _checks.check_images(attributions, "attributions", allow_nan=False)
    s = tf.reduce_sum(tf.abs(attributions), axis=-1)  # (N, H, W)
    if not normalize:
        return s
    hw = tf.cast(tf.shape(s)[1] * tf.shape(s)[2], s.dtype)
    total = tf.reduce_sum(s, axis=[1, 2], keepdims=True)  # (N, 1, 1)
    return tf.math.divide_no_nan(hw * s, total)
