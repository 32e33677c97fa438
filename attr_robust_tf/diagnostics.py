"""How hard each term of a robust objective pulls on the weights: per-term parameter-gradient norms.

For one batch, with the x′ of the next training step (the same stateless seed) and the reduction of the train step:

    g_task = ∇_θ task_loss(f(x_task), y),   g_r = ∇_θ λ_r · reduce(R_r(x, x′, y))   for every regularizer r
    norm_r = ‖g_r‖₂ (global norm over all trainable variables),  ratio_r = norm_r / ‖g_task‖₂,
    cosine_r = ⟨g_r, g_task⟩ / (‖g_r‖₂ ‖g_task‖₂)   (0 when either gradient is zero)

A ratio of 1e−5 means the term hardly moves the weights, whatever its logged value; a cosine near −1 means it
pulls against the task loss. One backward pass per term through one persistent tape; nothing is applied.
"""
import keras
import tensorflow as tf

__all__ = ["regularizer_influence", "RegularizerInfluence", "TASK"]

TASK = "task"  # key of the task loss in `regularizer_influence`'s result


def _unpack(batch):
    if isinstance(batch, dict) or not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        raise ValueError(
            "`batch` must be a tuple (images, labels) or (images, labels, sample_weight). Received: "
            f"{type(batch).__name__}{'' if not isinstance(batch, (tuple, list)) else f' of length {len(batch)}'}. "
            "Pass one batch, e.g. (x[:50], y[:50]).")
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(tuple(batch))
    x = tf.convert_to_tensor(x)
    if x.dtype.is_integer:  # uint8 images, as the data loaders return them
        x = tf.cast(x, tf.float32) / 255.0
    return x, tf.convert_to_tensor(y), None if sample_weight is None else tf.convert_to_tensor(sample_weight)


def _global_norm_and_dot(grads, ref):
    sq = tf.constant(0.0, tf.float64)
    dot = tf.constant(0.0, tf.float64)
    for g, r in zip(grads, ref):
        g, r = tf.cast(g, tf.float64), tf.cast(r, tf.float64)
        sq += tf.reduce_sum(g * g)
        dot += tf.reduce_sum(g * r)
    return tf.sqrt(sq), dot


def _influence_tensors(robust_model, x, y, sample_weight, training):
    """{name: (norm, dot with g_task)} as float64 tensors; name TASK for the task loss."""
    variables = robust_model.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        _, _, task_loss, terms = robust_model._robust_terms(x, y, sample_weight, training, tape=tape)
    out = {}
    task_grads = None
    for name, loss in [(TASK, task_loss)] + [(n, w) for n, (_, w) in terms.items()]:
        # a variable the term does not reach (e.g. the logit bias of an attribution penalty) has gradient 0
        grads = [tf.zeros(v.shape, v.dtype) if g is None else g
                 for g, v in zip(tape.gradient(loss, variables), variables)]
        if task_grads is None:
            task_grads = grads
        out[name] = _global_norm_and_dot(grads, task_grads)
    del tape
    return out


def _as_dict(tensors):
    task_norm = float(tensors[TASK][0])
    result = {}
    for name, (norm, dot) in tensors.items():
        norm, dot = float(norm), float(dot)
        result[name] = {
            "norm": norm,
            "ratio": norm / task_norm if task_norm > 0 else float("nan"),
            "cosine": dot / (norm * task_norm) if norm > 0 and task_norm > 0 else 0.0,
        }
    return result


def _check_model(robust_model):
    if not hasattr(robust_model, "_robust_terms"):
        raise TypeError(
            f"`robust_model` must be a RobustModel. Received: {type(robust_model).__name__}. Wrap the network "
            "with RobustModel(model, objective) and compile it first.")


def regularizer_influence(robust_model, batch, *, training=False):
    """The parameter-gradient norm of the task loss and of every weighted term on one batch (module docstring).

    Args:
      robust_model: a compiled `RobustModel`.
      batch: (images, labels) or (images, labels, sample_weight); uint8 images are scaled to [0, 1].
      training: the task forward pass's mode. False (default) keeps BatchNorm statistics and dropout untouched;
        the train step itself uses True.

    Returns:
      {"task": {"norm", "ratio", "cosine"}, <regularizer>: {...}, ...} of Python floats, regularizers in the
      row's order; the task entry has ratio 1 and cosine 1. A term of weight 0 has norm, ratio and cosine 0.

    Example:
      >>> regularizer_influence(robust, (x[:50], y[:50]))["cacr"]["ratio"]  # doctest: +SKIP
      4.7e-06
    """
    _check_model(robust_model)
    x, y, sample_weight = _unpack(batch)
    return _as_dict(_influence_tensors(robust_model, x, y, sample_weight, training))


class RegularizerInfluence(keras.callbacks.Callback):
    """Records `regularizer_influence` on a fixed batch every `every_n_steps` training steps.

    The latest values go into the logs of the batch where they are computed and of every following epoch end,
    so they reach the History, `CSVLogger` and TensorBoard: `influence/<term>` is the term's ratio to the task
    loss's gradient norm, `influence/<term>_cosine` its cosine with it, `influence/task_norm` the task loss's
    norm. Put the callback before the loggers (Keras calls callbacks in list order). It reads the weights only
    and uses no random state, so training is bit-identical with and without it.

    Args:
      data: the fixed batch, (images, labels) or (images, labels, sample_weight).
      every_n_steps: record after every n-th training step (counted over the whole `fit`), and once before
        the first step.
      training: see `regularizer_influence`.
    """

    def __init__(self, data, every_n_steps=100, *, training=False):
        super().__init__()
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(f"`every_n_steps` must be a positive integer. Received: every_n_steps={every_n_steps!r}.")
        self.data = _unpack(data)
        self.every_n_steps = every_n_steps
        self.training = training
        self.latest = {}
        self._steps = 0
        self._fn = None

    def _record(self):
        _check_model(self.model)
        if self._fn is None:
            model, training = self.model, self.training
            self._fn = tf.function(lambda x, y, w: _influence_tensors(model, x, y, w, training))
        result = _as_dict(self._fn(*self.data))
        self.latest = {"influence/task_norm": result[TASK]["norm"]}
        for name, values in result.items():
            if name != TASK:
                self.latest[f"influence/{name}"] = values["ratio"]
                self.latest[f"influence/{name}_cosine"] = values["cosine"]

    def on_train_begin(self, logs=None):
        self._steps = 0
        self._record()

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1
        if self._steps % self.every_n_steps == 0:
            self._record()
            if logs is not None:
                logs.update(self.latest)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self.latest)
