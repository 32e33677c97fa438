"""Differentiable attributions: IG, saliency, input×gradient, SmoothGrad, and the saliency map.

All functions take images (N, H, W, C) in [0, 1] and a model returning logits (N, K), and are plain
functions on tensors. Called inside an outer `tf.GradientTape`, each result is differentiable with respect
to the model weights and to the images (double backprop): the inner input gradient is taken while the
outer tape records, so it is itself recorded.

Called eagerly with no tape recording (plain explanation, evaluation), the same computation runs through
a `tf.function` cached per model and setting, which avoids eager per-op overhead (about 2× on a CPU CNN);
the numbers are those of the eager computation.
"""
import functools
import warnings
import weakref

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.eager import record as _record  # only to ask whether any tape is recording

from attr_robust_tf import _checks, errors, path_chunks, scores

METHODS = ("riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid", "gausslegendre")

# model -> {setting: tf.function}. Weak keys, and the functions hold only a weak reference to their
# model, so a cached model is freed with its last user reference (e.g. by keras.backend.clear_session()).
_COMPILED = weakref.WeakKeyDictionary()


def quadrature(method, steps):
    """Nodes α_j in [0, 1] and weights w_j (summing to 1) of a path-integral rule (docs/method.md §2.2).

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


def _warn_training(training):
    if training:
        warnings.warn(errors.TrainingModeWarning(
            "AR001: attributions computed with `training=True`. BatchNorm then normalises with statistics "
            "of the path points, couples the examples and updates its moving averages. Pass "
            "training=False."), stacklevel=4)


def num_classes(model, images, training=False):
    """K from the model's static output shape, else (eagerly, inference mode) from a one-image call."""
    try:
        output_shape = model.output_shape
    except (AttributeError, ValueError):
        output_shape = None
    if isinstance(output_shape, tuple) and len(output_shape) == 2 and isinstance(output_shape[-1], int):
        return output_shape[-1]
    if tf.executing_eagerly() and not training and images.shape[0]:
        return int(_call_logits(model, images[:1], False).shape[-1])
    return None


def resolve_target(model, images, target, *, training=False):
    """`target` as int32 (N,): class indices as given, or the model's argmax for "predicted"."""
    if isinstance(target, str):
        if target != "predicted":
            raise ValueError(
                "`target` must be integer class indices of shape (N,) or the string 'predicted'. "
                f"Received: target={target!r}.")
        return _run(model, ("predicted", training), functools.partial(_predicted, training=training),
                    images)
    return _checks.check_target(target, images.shape[0], num_classes(model, images, training))


def _predicted(model, images, *, training):
    return tf.argmax(_call_logits(model, images, training), axis=-1, output_type=tf.int32)


def _can_compile(model):
    return (tf.executing_eagerly() and isinstance(model, keras.Layer) and model.built
            and not _record.could_possibly_record() and not tf.distribute.has_strategy())


def _run(model, setting, fn, *tensors, batched=None):
    """`fn(model, *tensors)`; when it cannot be recorded by a tape, through a cached tf.function.

    The first `batched` tensors (default: all) get a free batch dimension in the signature, so a model is
    traced once per setting and image shape.
    """
    if not _can_compile(model):
        return fn(model, *tensors)
    batched = len(tensors) if batched is None else batched
    specs = tuple(
        tf.TensorSpec([None] + t.shape[1:] if i < batched else t.shape, t.dtype)
        for i, t in enumerate(tensors))
    per_model = _COMPILED.setdefault(model, {})
    key = setting + specs
    compiled = per_model.get(key)
    if compiled is None:
        ref = weakref.ref(model)
        compiled = tf.function(lambda *args: fn(ref(), *args), input_signature=specs, autograph=False)
        per_model[key] = compiled
    return compiled(*tensors)


def path_gradients(model, points, target, *, score="logit", batch_size=None, training=False):
    """∇_z s(z) for every row of `points` (M, H, W, C) with `target` (M,), chunked by `batch_size`.

    The examples do not interact (inference mode), so the gradient of Σ s over a chunk is exactly the
    per-example input gradient (docs/method.md §2.5).

    Memory. With `batch_size=None` the computation is recorded as it is, so an outer tape keeps the
    activations of all M points. With `batch_size` set, the chunks run one at a time in one `tf.while_loop`
    (`path_chunks`), and under a recording tape the loop is one op that keeps only the points, the targets
    and the result: each chunk's activations are recomputed, chunk by chunk, when the outer tape
    differentiates. Neither the activation memory nor the traced graph then depends on M, at the cost of
    one more forward + input-gradient pass per chunk in the backward pass (docs/memory.md). The values and
    their first derivatives (w.r.t. the points and the model's variables) equal the unchunked ones to float
    rounding.
    """
    score_fn = scores.get(score)
    if batch_size is None:
        return path_chunks.input_gradient(model, points, target, score_fn, _call_logits, training)
    chunked = (path_chunks.recomputed_input_gradients if _record.could_possibly_record()
               else path_chunks.chunked_input_gradients)
    return chunked(model, points, target, score_fn, _call_logits, batch_size, training)


def _prepare(model, images, target, training, check_range=False, bounds=None):
    _warn_training(training)
    if bounds is not None:  # declared pixel range: integer images are cast to float32, the range is checked
        images = _checks.images_in_bounds(images, _checks.check_bounds(bounds))
    images = _checks.check_images(images, check_range=check_range)
    if _checks._is_eager(images) and images.shape[0] and not _record.could_possibly_record():
        # every attributed score reads logits: a softmax output would be attributed silently wrong (a public
        # call; under a tape the caller is differentiating, and the check would add a recorded forward pass)
        _checks.check_logits_not_probabilities(_call_logits(model, images, False).numpy())
    return images, resolve_target(model, images, target, training=training)


def _check_batch_size(batch_size):
    return None if batch_size is None else _checks.check_positive_int(batch_size, "batch_size")


def _baseline(baseline, images):
    """The baseline broadcast to the images' shape (zeros for None)."""
    if baseline is None:
        return tf.zeros_like(images)
    x0 = tf.cast(baseline, images.dtype)
    if tf.executing_eagerly() and not np.all(np.isfinite(x0.numpy())):
        raise ValueError("`baseline` must be finite. Received: a baseline with NaN/Inf values.")
    try:
        return tf.broadcast_to(x0, tf.shape(images))
    except (ValueError, tf.errors.InvalidArgumentError):
        raise ValueError(
            f"`baseline` must be broadcastable to images.shape={tuple(images.shape)}: None (zeros), one "
            f"image (H, W, C) or one per image (N, H, W, C). Received: baseline.shape={tuple(x0.shape)}."
        ) from None


def _ig(model, images, x0, target, *, alphas, weights, score, batch_size, training):
    """(x − x₀) ⊙ Σ_j w_j ∇s(x₀ + α_j (x − x₀)) with all path points in one (chunked) batch."""
    dtype = images.dtype
    delta = images - x0
    if batch_size is not None:  # chunked, m-independent memory (docs/memory.md)
        mean_grad = path_chunks.path_mean_gradient(model, images, x0, target, tf.constant(alphas, dtype),
                                                   tf.constant(weights, dtype), scores.get(score), _call_logits,
                                                   batch_size, training)
        return delta * mean_grad
    m = len(alphas)
    a = tf.constant(alphas, dtype)[:, None, None, None, None]  # (m, 1, 1, 1, 1)
    # (m, N, H, W, C) path points, flattened point-major to (m·N, H, W, C)
    points = tf.reshape(x0[None] + a * delta[None], tf.concat([[-1], tf.shape(images)[1:]], 0))
    n = images.shape[0]
    points = tf.ensure_shape(points, [None if n is None else m * n] + images.shape[1:].as_list())
    grads = path_gradients(model, points, tf.tile(target, [m]), score=score, batch_size=batch_size,
                           training=training)
    grads = tf.reshape(grads, tf.concat([[m], tf.shape(images)], 0))  # (m, N, H, W, C)
    mean_grad = tf.tensordot(tf.constant(weights, dtype), grads, axes=1)  # Σ_j w_j ∇s → (N, H, W, C)
    return delta * mean_grad


def integrated_gradients(model, images, target, *, baseline=None, steps=50, method="riemann_right",
                         score="logit", batch_size=None, training=False, check_range=False, bounds=None):
    """Integrated Gradients (Sundararajan et al. 2017, arXiv 1703.01365, eq. 1; docs/method.md §2).

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
      score: which scalar is attributed (see `scores.SCORES`), or a callable fn(logits, target) -> (N,).
      batch_size: at most this many path points per forward pass (None: all at once).
      training: forwarded to the model; keep False (BatchNorm must not couple examples).
      check_range: also require images in [0, 1].
      bounds: (lo, hi), the declared pixel range, only to validate: integer images are cast to float32 and values
        outside it raise (attributions themselves need no bounds). None: float images, any range.

    Returns:
      Attributions with the shape of `images`.

    Example:
      >>> import numpy as np, keras
      >>> model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
      >>> integrated_gradients(model, np.ones((2, 4, 4, 1), "float32"), "predicted", steps=8).shape
      TensorShape([2, 4, 4, 1])
    """
    images, target = _prepare(model, images, target, training, check_range, bounds)
    alphas, weights = quadrature(method, steps)
    scores.get(score)  # validate the name before tracing
    batch_size = _check_batch_size(batch_size)
    x0 = _baseline(baseline, images)
    fn = functools.partial(_ig, alphas=alphas, weights=weights, score=score, batch_size=batch_size,
                           training=training)
    setting = ("ig", method, len(alphas), score, batch_size, training)
    return _run(model, setting, fn, images, x0, target)


def _saliency(model, images, target, *, score, batch_size, training, times_input):
    grads = path_gradients(model, images, target, score=score, batch_size=batch_size, training=training)
    return images * grads if times_input else grads


def _gradient_method(model, images, target, score, batch_size, training, check_range, times_input, bounds=None):
    images, target = _prepare(model, images, target, training, check_range, bounds)
    scores.get(score)
    batch_size = _check_batch_size(batch_size)
    fn = functools.partial(_saliency, score=score, batch_size=batch_size, training=training,
                           times_input=times_input)
    setting = ("saliency", times_input, score, batch_size, training)
    return _run(model, setting, fn, images, target)


def saliency(model, images, target, *, score="logit", batch_size=None, training=False,
             check_range=False, bounds=None):
    """Simple gradient ∇_x s(x) (docs/method.md §2.7). Returns the shape of `images`; `bounds` as in IG."""
    return _gradient_method(model, images, target, score, batch_size, training, check_range, False, bounds)


def input_x_gradient(model, images, target, *, score="logit", batch_size=None, training=False,
                     check_range=False, bounds=None):
    """x ⊙ ∇_x s(x) (docs/method.md §2.7). Returns the shape of `images`; `bounds` as in IG."""
    return _gradient_method(model, images, target, score, batch_size, training, check_range, True, bounds)


def _smoothgrad(model, images, target, seed, *, noise, samples, score, batch_size, training, seeded):
    axes = [1, 2, 3]
    # σ per image: noise·(max − min), (N, 1, 1, 1)
    sigma = noise * (tf.reduce_max(images, axes, keepdims=True) - tf.reduce_min(images, axes, keepdims=True))
    shape = tf.concat([[samples], tf.shape(images)], 0)
    if seeded:
        eps = tf.random.stateless_normal(shape, seed=seed, dtype=images.dtype)
    else:
        eps = tf.random.normal(shape, dtype=images.dtype)
    # (samples, N, H, W, C) noisy copies, flattened sample-major to (samples·N, H, W, C)
    noisy = tf.reshape(images[None] + sigma[None] * eps, tf.concat([[-1], tf.shape(images)[1:]], 0))
    n = images.shape[0]
    noisy = tf.ensure_shape(noisy, [None if n is None else samples * n] + images.shape[1:].as_list())
    grads = path_gradients(model, noisy, tf.tile(target, [samples]), score=score, batch_size=batch_size,
                           training=training)
    return tf.reduce_mean(tf.reshape(grads, shape), axis=0)


def smoothgrad(model, images, target, *, noise=0.15, samples=25, score="logit", seed=None,
               batch_size=None, training=False, check_range=False, bounds=None):
    """SmoothGrad (Smilkov et al. 2017, arXiv 1706.03825): mean of ∇s at x + N(0, σ²), σ = noise·(max − min).

    All `samples`·N noisy copies are evaluated as one batch (chunked by `batch_size`); an integer `seed`
    makes the noise deterministic (stateless RNG), None draws fresh noise on every call.
    """
    images, target = _prepare(model, images, target, training, check_range, bounds)
    samples = _checks.check_positive_int(samples, "samples")
    noise = _checks.check_nonnegative(noise, "noise")
    scores.get(score)
    batch_size = _check_batch_size(batch_size)
    if seed is not None:
        seed = _checks.check_positive_int(seed, "seed", minimum=0)
    seed_pair = tf.constant([0 if seed is None else seed, 0], tf.int64)
    fn = functools.partial(_smoothgrad, noise=noise, samples=samples, score=score, batch_size=batch_size,
                           training=training, seeded=seed is not None)
    setting = ("smoothgrad", noise, samples, score, batch_size, training, seed is not None)
    return _run(model, setting, fn, images, target, seed_pair, batched=2)


def saliency_map(attributions, *, normalize=True):
    """Channel-summed |A|, normalised so each map sums to H·W (docs/method.md §3; the reference convention).

    Returns (N, H, W). An all-zero attribution gives an all-zero map (the normalisation is undefined).
    """
    attributions = _checks.check_images(attributions, "attributions", unit_range=False)
    s = tf.reduce_sum(tf.abs(attributions), axis=-1)  # (N, H, W)
    if not normalize:
        return s
    hw = tf.cast(tf.shape(s)[1] * tf.shape(s)[2], s.dtype)
    total = tf.reduce_sum(s, axis=[1, 2], keepdims=True)  # (N, 1, 1)
    return tf.math.divide_no_nan(hw * s, total)
