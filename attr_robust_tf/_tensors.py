"""Small tensor helpers shared by the loss terms, attacks and metrics (one definition each)."""
import tensorflow as tf


def flat(t):
    """(N, ...) -> (N, D): one row per example."""
    return tf.reshape(t, [tf.shape(t)[0], -1])


def cosine(u, v, eps=1e-8):
    """Row-wise cosine similarity of (N, D) tensors; the eps keeps it (and its gradient) finite at 0."""
    uv = tf.reduce_sum(u * v, axis=-1)
    norms = tf.reduce_sum(u * u, axis=-1) * tf.reduce_sum(v * v, axis=-1)
    return uv / tf.sqrt(norms + tf.cast(eps, u.dtype) ** 2)


def top_k_mask(values, k):
    """1 on the `k` largest entries of each row of `values` (N, ...), else 0, in the shape of `values`.

    `tf.math.top_k` returns equal values lower index first, so ties go to the lower flat index. The 1s are
    scattered at (row, index) pairs: O(N·D) memory, not the O(N·k·D) of a one-hot sum.
    """
    values = tf.convert_to_tensor(values)
    rows2d = flat(values)  # (N, D)
    _, idx = tf.math.top_k(rows2d, k=k)  # (N, k)
    rows = tf.broadcast_to(tf.range(tf.shape(idx)[0])[:, None], tf.shape(idx))  # (N, k)
    mask = tf.scatter_nd(tf.stack([rows, idx], axis=-1), tf.ones(tf.shape(idx), values.dtype), tf.shape(rows2d))
    return tf.reshape(mask, tf.shape(values))


def mass_center(maps, *, empty=0.0):
    """C(S) = (Σ_p S_p·row_p, Σ_p S_p·col_p) / Σ_p S_p of maps (N, H, W), float pixel coordinates (N, 2).

    `empty` is returned for a map summing to 0 (0.0, or float("nan") to mark it undefined). The result has the
    dtype of `maps` (cast the maps first for float64 centers).
    """
    maps = tf.convert_to_tensor(maps)
    rows = tf.cast(tf.range(tf.shape(maps)[1]), maps.dtype)[None, :, None]  # (1, H, 1)
    cols = tf.cast(tf.range(tf.shape(maps)[2]), maps.dtype)[None, None, :]  # (1, 1, W)
    total = tf.reduce_sum(maps, axis=[1, 2])
    center = tf.stack([tf.math.divide_no_nan(tf.reduce_sum(maps * rows, axis=[1, 2]), total),
                       tf.math.divide_no_nan(tf.reduce_sum(maps * cols, axis=[1, 2]), total)], axis=-1)
    if empty == 0.0:
        return center
    return tf.where((total == 0)[:, None], tf.cast(empty, maps.dtype), center)
