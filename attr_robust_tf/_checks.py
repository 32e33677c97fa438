"""Boundary validation shared by the public functions.

Every error follows one template: "`{argument}` must be {expectation}. Received: {argument}={value}."
Checks on tensor *values* (NaN, range) run only eagerly: inside a traced step the values are unknown, and
the public functions are validated before tracing.
"""
import difflib

import numpy as np
import tensorflow as tf

FLOAT_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)


def did_you_mean(kind, name, options):
    """Raises ValueError for an unknown `name` among `options`, with a close match if there is one."""
    options = sorted(options)
    close = difflib.get_close_matches(str(name), options, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"Unknown {kind} {name!r}.{hint} Available: {', '.join(options)}.")


def lookup(kind, name, table):
    """`table[name]`, or a did-you-mean ValueError naming `kind`."""
    if not isinstance(name, str) or name not in table:
        did_you_mean(kind, name, table)
    return table[name]


def _is_eager(x):
    return tf.executing_eagerly() and not isinstance(x, tf.Variable) and hasattr(x, "numpy")


def check_images(images, name="images", *, check_range=False, allow_nan=False, unit_range=True):
    """Returns `images` as a float tensor of rank 4 (N, H, W, C), or raises ValueError.

    `unit_range=False` is for tensors shaped like images that are not pixels (attributions): the
    messages then do not ask for values in [0, 1].
    """
    what = "a float tensor (float32) with values in [0, 1]" if unit_range else "a float tensor"
    if isinstance(images, (tf.data.Dataset,)):
        raise ValueError(f"`{name}` must be a tensor of shape (N, H, W, C). Received: a tf.data.Dataset.")
    if not tf.is_tensor(images):
        arr = np.asarray(images)
        if arr.dtype.kind not in "f":
            raise ValueError(
                f"`{name}` must be {what}. Received: {name}.dtype={arr.dtype}."
                + (" Convert with images.astype('float32') / 255." if unit_range else ""))
        images = tf.convert_to_tensor(arr)
    if images.dtype not in FLOAT_DTYPES:
        raise ValueError(
            f"`{name}` must be {what}. Received: {name}.dtype={images.dtype.name}."
            + (" Convert with tf.cast(images, tf.float32) / 255." if unit_range else ""))
    if images.shape.rank != 4:
        raise ValueError(
            f"`{name}` must have rank 4, shape (N, H, W, C). Received: {name}.shape={tuple(images.shape)}."
            + (" Add a channel axis for grayscale images (images[..., None])." if unit_range else ""))
    if _is_eager(images):
        values = images.numpy()
        if not allow_nan and not np.all(np.isfinite(values)):
            bad = int(np.sum(~np.isfinite(values)))
            raise ValueError(f"`{name}` must be finite. Received: {name} with {bad} NaN/Inf values.")
        if check_range and values.size and (values.min() < 0.0 or values.max() > 1.0):
            raise ValueError(
                f"`{name}` must have values in [0, 1]. Received: {name} with min={values.min():.4g}, "
                f"max={values.max():.4g}. Scale pixels to [0, 1]; normalisation belongs inside the model.")
    return images


def check_target(target, n, num_classes=None, name="target"):
    """Returns `target` as int32 of shape (n,), or raises ValueError."""
    if not tf.is_tensor(target):
        arr = np.asarray(target)
        if arr.dtype.kind not in "iu":
            raise ValueError(
                f"`{name}` must be integer class indices of shape (N,) or the string 'predicted'. Received: "
                f"{name}.dtype={arr.dtype}.")
        target = tf.convert_to_tensor(arr)
    if not target.dtype.is_integer:
        raise ValueError(
            f"`{name}` must be integer class indices of shape (N,) or the string 'predicted'. Received: "
            f"{name}.dtype={target.dtype.name}.")
    if target.shape.rank != 1 or (n is not None and target.shape[0] is not None and target.shape[0] != n):
        raise ValueError(
            f"`{name}` must have shape (N,) with N = images.shape[0] = {n}. Received: "
            f"{name}.shape={tuple(target.shape)}. Pass integer class indices, not one-hot labels.")
    target = tf.cast(target, tf.int32)
    if num_classes is not None and _is_eager(target):
        values = target.numpy()
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(
                f"`{name}` must hold class indices in [0, {num_classes - 1}]. Received: {name} with "
                f"min={values.min()}, max={values.max()}.")
    return target


def check_positive_int(value, name, *, minimum=1, maximum=None, context=""):
    """Returns `value` as int if minimum <= value (<= maximum), else raises ValueError.

    `context` (e.g. " (the number of pixels per map)") explains where `maximum` comes from.
    """
    upper = f" and <= {maximum}{context}" if maximum is not None else ""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"`{name}` must be an integer >= {minimum}{upper}. Received: {name}={value!r}.")
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"`{name}` must be an integer >= {minimum}{upper}. Received: {name}={value!r}.")
    return int(value)


def check_nonnegative(value, name, *, strict=False):
    """Returns `value` as float if >= 0 (> 0 when strict), else raises ValueError."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a number. Received: {name}={value!r}.") from None
    if not np.isfinite(v) or v < 0 or (strict and v == 0):
        rel = "> 0" if strict else ">= 0"
        raise ValueError(f"`{name}` must be a finite number {rel}. Received: {name}={value!r}.")
    return v


def check_logits(logits, name="model output"):
    """Raises ValueError unless `logits` has rank 2 (N, K)."""
    if logits.shape.rank != 2:
        raise ValueError(
            f"The {name} must be logits of shape (N, num_classes). Received: shape={tuple(logits.shape)}. "
            "Wrap the model so it returns one logit vector per image.")
    return logits


def check_maps(maps, name, *, ranks=(2, 3), nonnegative=False):
    """Returns `maps` as a float tensor of shape (N, H, W) or (N, P), or raises ValueError.

    Integer maps are accepted and converted to float64 (exact for |values| < 2**53).
    """
    shapes = " or ".join({2: "(N, P)", 3: "(N, H, W)"}[r] for r in ranks)
    if not tf.is_tensor(maps):
        arr = np.asarray(maps)
        if arr.dtype.kind not in "fiu":
            raise ValueError(f"`{name}` must be a real-valued tensor of shape {shapes}. Received: "
                             f"{name}.dtype={arr.dtype}.")
        maps = tf.convert_to_tensor(arr)
    if maps.dtype.is_integer:
        maps = tf.cast(maps, tf.float64)
    if maps.dtype not in FLOAT_DTYPES:
        raise ValueError(f"`{name}` must be a real-valued tensor of shape {shapes}. Received: "
                         f"{name}.dtype={maps.dtype.name}.")
    if maps.shape.rank not in ranks:
        hint = " Pass saliency maps (saliency_map(attributions)), not attributions." if maps.shape.rank == 4 else ""
        raise ValueError(f"`{name}` must have shape {shapes}. Received: {name}.shape={tuple(maps.shape)}.{hint}")
    if _is_eager(maps):
        values = maps.numpy()
        if not np.all(np.isfinite(values)):
            bad = int(np.sum(~np.isfinite(values)))
            raise ValueError(f"`{name}` must be finite. Received: {name} with {bad} NaN/Inf values.")
        if nonnegative and values.size and values.min() < 0:
            raise ValueError(f"`{name}` must be non-negative (a saliency map of absolute values). Received: "
                             f"{name} with min={values.min():.4g}.")
    return maps


def built_input_shape(model):
    """The input shape of a built Keras model (functional: `input_shape`; subclassed and built by a call: the
    recorded build shape), or None when it has none."""
    try:
        return model.input_shape
    except (AttributeError, ValueError):
        build_shapes = getattr(model, "_build_shapes_dict", None) or {}
        return next(iter(build_shapes.values())) if len(build_shapes) == 1 else None


DEFAULT_BOUNDS = (0.0, 1.0)
# values this far (relative to hi − lo) outside the bounds are float noise from a pipeline, not an error
BOUNDS_TOLERANCE = 1e-5


def check_bounds(bounds, name="bounds"):
    """Returns `bounds` as a pair of floats (lo, hi) with lo < hi, both finite, or raises ValueError."""
    try:
        lo, hi = (float(v) for v in bounds)
    except (TypeError, ValueError):
        raise ValueError(
            f"`{name}` must be a pair (lo, hi) of numbers, e.g. (0.0, 1.0) or (0, 255). Received: "
            f"{name}={bounds!r}.") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(
            f"`{name}` must be a pair (lo, hi) of finite numbers with lo < hi. Received: {name}={bounds!r}.")
    return (lo, hi)


def _bounds_message(name, bounds):
    lo, hi = bounds
    return (f"`{name}` must have values in [{lo:g}, {hi:g}], the declared bounds=({lo:g}, {hi:g}). Rescale the "
            f"images (e.g. divide uint8 pixels by 255) or declare their range with bounds=(lo, hi); ε and step "
            f"sizes are in the units of the bounds.")


def images_in_bounds(images, bounds=DEFAULT_BOUNDS, name="images"):
    """Float images checked against `bounds`: the one place where pixels enter the package.

    Integer images (uint8 from `tf.io.decode_png`, say) are cast to float32 here, once; nothing downstream sees
    an integer tensor. Values outside [lo − tol, hi + tol], tol = `BOUNDS_TOLERANCE`·(hi − lo), raise: eagerly a
    ValueError with the received min/max; inside a traced step an InvalidArgumentError with the same text
    and the min/max, through a data dependency (no retrace, no host sync per batch).
    """
    lo, hi = bounds
    if not tf.is_tensor(images):
        arr = np.asarray(images)
        if arr.dtype.kind in "iu":
            arr = arr.astype(np.float32)
        images = tf.convert_to_tensor(arr)
    if images.dtype.is_integer:
        images = tf.cast(images, tf.float32)
    if images.dtype not in FLOAT_DTYPES:
        raise ValueError(f"`{name}` must be float or integer pixel values. Received: {name}.dtype="
                         f"{images.dtype.name}.")
    tol = BOUNDS_TOLERANCE * (hi - lo)
    if _is_eager(images):
        values = images.numpy()
        finite = values[np.isfinite(values)]
        if finite.size and (finite.min() < lo - tol or finite.max() > hi + tol):
            raise ValueError(f"{_bounds_message(name, bounds)} Received: {name} with min={finite.min():.6g}, "
                             f"max={finite.max():.6g}.")
        return images
    lo_t = tf.cast(lo - tol, images.dtype)
    hi_t = tf.cast(hi + tol, images.dtype)
    v_min = tf.reduce_min(images)
    v_max = tf.reduce_max(images)
    # NaN compares False on both sides and is left to the finiteness check
    ok = tf.logical_not(tf.logical_or(v_min < lo_t, v_max > hi_t))
    check = tf.debugging.Assert(ok, [f"{_bounds_message(name, bounds)} Received: {name} with min, max =",
                                     v_min, v_max])
    with tf.control_dependencies([check]):
        return tf.identity(images)


def check_logits_not_probabilities(logits, name="model"):
    """Raises ValueError if every row of `logits` lies in [0, 1] and sums to 1 (a softmax output)."""
    values = np.asarray(logits)
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] < 2:
        return
    sums = values.sum(axis=-1)
    if values.min() >= 0.0 and values.max() <= 1.0 and np.allclose(sums, 1.0, atol=1e-3):
        raise ValueError(
            f"`{name}` must return logits (unnormalised class scores), since the attributed score is the "
            f"logit f_y. Received: outputs that look like probabilities (all in [0, 1], row sums in "
            f"[{sums.min():.6f}, {sums.max():.6f}]). Remove the final softmax (e.g. Dense(K) without "
            "activation='softmax'), or wrap the model to return its pre-softmax output.")
