"""Input gradients of many path points, in chunks, with activations recomputed in backprop (docs/memory.md).

`chunked_input_gradients` evaluates ∇_z Σ s(f(z), t) over the rows of `points` in chunks of `batch_size`
inside one `tf.while_loop` (at most two chunks in flight, `parallel_iterations=2`), so neither the memory of
a run nor the size of the traced graph depends on the number of points. Every chunk has exactly
`batch_size` rows (static shapes, so the loop also compiles under XLA): the last one repeats the last row,
and the repeated rows are masked out of every sum. `recomputed_input_gradients` is the
same computation as a custom-gradient op for use under a recording tape: it keeps no activations, and its
gradient (a Hessian-vector product) re-runs each chunk in a second loop (gradient checkpointing, Chen et
al. 2016, arXiv 1604.06174, per chunk).

`path_mean_gradient` is the IG special case Σ_j w_j ∇s(x₀ + α_j (x − x₀)): the path points are made chunk
by chunk from (x, x₀) and the weighted gradients are summed per image as they come, so no tensor of all
m·N points exists, forward or backward, and the memory of an IG does not depend on m at all.
"""
import contextlib
import threading

import tensorflow as tf
from tensorflow.python.eager import record as _record  # only to ask whether any tape is recording

# chunks in flight at once: two let the executor overlap consecutive chunks (about 1.3× faster on a 2-core CPU
# than one at a time), for twice one chunk's activation memory
PARALLEL_CHUNKS = 2

_STATE = threading.local()


@contextlib.contextmanager
def input_gradients_only():
    """Within this block, the chunk ops' gradients skip the model's variables (they get None).

    For a caller whose tape differentiates with respect to the images alone (an attack's ascent): the VJP
    v ↦ vᵀ ∂g/∂θ would otherwise be computed for every variable and thrown away, since a custom-gradient op
    cannot know which of its inputs the tape needs. Read when an op is built (at trace time in a graph).
    """
    previous = getattr(_STATE, "inputs_only", False)
    _STATE.inputs_only = True
    try:
        yield
    finally:
        _STATE.inputs_only = previous


def _inputs_only():
    """True inside `input_gradients_only`: a chunk op built now differentiates no variable."""
    return getattr(_STATE, "inputs_only", False)


def input_gradient(model, z, t, score_fn, call_logits, training):
    """∇_z Σ s(f(z), t) for one chunk: the per-example input gradients of its rows (docs/method.md §2.5)."""
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(z)
        total_score = tf.reduce_sum(score_fn(call_logits(model, z, training), t))
    g = tape.gradient(total_score, z)
    return tf.zeros_like(z) if g is None else g


def _for_each_chunk(total, batch_size, body, state):
    """state ← body(rows, valid, *state) for the chunks of range(total), in order.

    `rows` (batch_size,) are the chunk's row indices, clamped to total − 1 in the last chunk, and `valid` marks
    the real ones. A `tf.while_loop` (`PARALLEL_CHUNKS` iterations in flight, each step's state after the
    last): eagerly a Python loop, in a graph one loop op whose size does not depend on the number of chunks.
    """
    total = tf.cast(total, tf.int32)
    count = (total + batch_size - 1) // batch_size
    offsets = tf.range(batch_size)

    def step(i, *carried):
        rows = i * batch_size + offsets
        return (i + 1, *body(tf.minimum(rows, total - 1), rows < total, *carried))

    return tf.while_loop(lambda i, *_: i < count, step, (tf.constant(0), *state),
                         parallel_iterations=PARALLEL_CHUNKS)[1:]


def _masked(valid, values):
    """values with the rows of the repeated (not valid) chunk rows set to 0."""
    return tf.where(tf.reshape(valid, [-1] + [1] * (values.shape.rank - 1)), values, tf.zeros_like(values))


def _add_rows(target, index, rows):
    """target with rows[k] added at target[index[k]] (a scatter-add; repeated indices add up)."""
    return tf.tensor_scatter_nd_add(target, index[:, None], rows)


def _chunk_vjp(model, z, t, v, variables, score_fn, call_logits, training):
    """(vᵀ ∂g/∂z, [vᵀ ∂g/∂θ or None per variable]) of one chunk's input gradient g, recomputed under two tapes."""
    with tf.GradientTape(watch_accessed_variables=False) as outer:
        outer.watch(z)
        outer.watch(variables)
        g = input_gradient(model, z, t, score_fn, call_logits, training)
    vjp = outer.gradient(g, [z] + variables, output_gradients=v)
    return (tf.zeros_like(z) if vjp[0] is None else vjp[0]), vjp[1:]


class _WeightGradients:
    """Σ over chunks of vᵀ ∂g/∂θ per variable, None for a variable no chunk reaches (as unchunked).

    Inside `input_gradients_only` (read when the op was built) no variable is differentiated.
    """

    def __init__(self, variables, inputs_only):
        self.all = list(variables or [])
        self.variables = [] if inputs_only else self.all
        self.reached = [False] * len(self.variables)

    def zeros(self):
        return [tf.zeros(v.shape, v.dtype) for v in self.variables]

    def add(self, sums, parts):
        self.reached[:] = [part is not None for part in parts]  # the same at every chunk
        return [s if part is None else s + tf.convert_to_tensor(part) for s, part in zip(sums, parts)]

    def result(self, sums):
        if not self.variables:
            return [None] * len(self.all)
        return [s if r else None for s, r in zip(sums, self.reached)]


def chunked_input_gradients(model, points, target, score_fn, call_logits, batch_size, training):
    """`input_gradient` of every row of `points`, `batch_size` rows at a time (no tape keeps anything)."""

    def body(rows, valid, grads):
        g = input_gradient(model, tf.gather(points, rows), tf.gather(target, rows), score_fn, call_logits, training)
        return (_add_rows(grads, rows, _masked(valid, g)),)

    (grads,) = _for_each_chunk(tf.shape(points)[0], batch_size, body, (tf.zeros_like(points),))
    return grads


def recomputed_input_gradients(model, points, target, score_fn, call_logits, batch_size, training):
    """`chunked_input_gradients` as one op whose gradient recomputes every chunk, so a tape keeps no activations.

    The gradient of the op is the vector-Jacobian product v ↦ (vᵀ ∂g/∂z, vᵀ ∂g/∂θ), obtained by re-running
    each chunk under two tapes in a second loop and summing the weight parts over the chunks.
    `tf.recompute_grad` cannot be used: it runs the forward function with every tape stopped, so the chunk's
    own input gradient would be None. The VJP is itself recorded by any tape active during backprop, so a
    third derivative exists (through the recomputed chunks). A variable that no chunk's input gradient
    depends on (e.g. the logit bias) gets the gradient None, as in the unchunked computation.
    """

    @tf.custom_gradient
    def op(z_all, t_all):
        result = chunked_input_gradients(model, z_all, t_all, score_fn, call_logits, batch_size, training)
        inputs_only = _inputs_only()

        def backward(upstream, variables=None):
            theta = _WeightGradients(variables, inputs_only)

            def body(rows, valid, z_grads, *sums):
                v = _masked(valid, tf.gather(upstream, rows))  # a repeated row adds nothing
                z_grad, parts = _chunk_vjp(model, tf.gather(z_all, rows), tf.gather(t_all, rows), v,
                                           theta.variables, score_fn, call_logits, training)
                return (_add_rows(z_grads, rows, _masked(valid, z_grad)), *theta.add(sums, parts))

            z_grad, *sums = _for_each_chunk(tf.shape(z_all)[0], batch_size, body,
                                            (tf.zeros_like(z_all), *theta.zeros()))
            return (z_grad, None), theta.result(sums)

        return result, backward

    return op(points, target)


def _path_points(images, x0, alphas, rows):
    """The point-major path points x₀ + α_j (x − x₀) of `rows`, row r = j·N + i; returns (points, j, i).

    The arithmetic is that of the whole (m, N, ...) batch, so the points are the same.
    """
    n = tf.shape(images)[0]
    j, i = rows // n, rows % n
    a = _row_values(alphas, j, images.shape.rank)
    x0_i = tf.gather(x0, i)
    return x0_i + a * (tf.gather(images, i) - x0_i), j, i


def _row_values(values, j, rank):
    """values[j] per row, shaped to broadcast over a chunk of rank `rank`."""
    return tf.reshape(tf.gather(values, j), [-1] + [1] * (rank - 1))


def _mean_gradient_loop(model, images, x0, target, alphas, weights, score_fn, call_logits, batch_size, training):
    def body(rows, valid, total):
        z, j, i = _path_points(images, x0, alphas, rows)
        g = input_gradient(model, z, tf.gather(target, i), score_fn, call_logits, training)
        return (_add_rows(total, i, _masked(valid, _row_values(weights, j, images.shape.rank) * g)),)

    m = tf.shape(alphas)[0]
    (total,) = _for_each_chunk(m * tf.shape(images)[0], batch_size, body, (tf.zeros_like(images),))
    return total


def path_mean_gradient(model, images, x0, target, alphas, weights, score_fn, call_logits, batch_size, training):
    """Σ_j w_j ∇_z s(z_j) at z_j = x₀ + α_j (x − x₀), per image (N, H, W, C), in chunks of `batch_size` points.

    The mean gradient of IG (docs/method.md §2, eq. 1) without materialising the m·N path points. `images` and
    `x0` have the same shape; `alphas`, `weights` are (m,) tensors of their dtype. Under a recording tape it is
    one op whose gradient re-runs each chunk (v ↦ vᵀ ∂g/∂z, vᵀ ∂g/∂θ per chunk, then ∂z/∂x = α_j and
    ∂z/∂x₀ = 1 − α_j), so a tape keeps only (x, x₀) and the result. A variable that no chunk's input gradient
    depends on (e.g. the logit bias) gets the gradient None, as in the unchunked computation.
    """
    args = (target, alphas, weights, score_fn, call_logits, batch_size, training)
    if not _record.could_possibly_record():
        return _mean_gradient_loop(model, images, x0, *args)

    @tf.custom_gradient
    def op(x, base):
        result = _mean_gradient_loop(model, x, base, *args)
        inputs_only = _inputs_only()

        def backward(upstream, variables=None):
            theta = _WeightGradients(variables, inputs_only)
            rank = x.shape.rank

            def body(rows, valid, x_grad, base_grad, *sums):
                z, j, i = _path_points(x, base, alphas, rows)
                v = _masked(valid, _row_values(weights, j, rank) * tf.gather(upstream, i))
                z_grad, parts = _chunk_vjp(model, z, tf.gather(target, i), v, theta.variables, score_fn,
                                           call_logits, training)
                z_grad = _masked(valid, z_grad)
                a = _row_values(alphas, j, rank)
                return (_add_rows(x_grad, i, a * z_grad), _add_rows(base_grad, i, (1 - a) * z_grad),
                        *theta.add(sums, parts))

            x_grad, base_grad, *sums = _for_each_chunk(tf.shape(alphas)[0] * tf.shape(x)[0], batch_size, body,
                                                       (tf.zeros_like(x), tf.zeros_like(base), *theta.zeros()))
            return (x_grad, base_grad), theta.result(sums)

        return result, backward

    return op(images, x0)
