"""`RobustModel`: attributionally robust training of any Keras model through plain `compile` / `fit`.

The wrapper delegates `call` to the wrapped model and overrides only `train_step` / `test_step`. One step:

    x′ = stop_gradient(InnerAttack(x, y))                       (Danskin; none for `natural`)
    L  = task_loss(f(x_task), y) + Σ_r λ_r · reduce(R_r(x, x′, y))

with the task loss from `compile(loss=...)` (`compute_loss`: sample weights, `model.losses`, 1/R scaling) and
the penalties R_r of the objective row (objectives.py). All settings are one `RobustSettings` (settings.py):
the row's defaults with the constructor's overrides. Every attribution map of the penalties runs inside the
outer `tf.GradientTape`, so ∇_θ L contains the double-backprop terms (docs/conventions.md §4, §12); the inner
attack runs with that tape paused, since x′ is a constant of L.
"""
import contextlib
import difflib
import inspect

import keras
import tensorflow as tf

from attr_robust_tf import _checks, errors, objectives
from attr_robust_tf import penalties as penalties_lib
from attr_robust_tf import settings as settings_lib
from attr_robust_tf.attacks.attribution import check_logits_not_probabilities
from attr_robust_tf.attacks.inner import InnerAttack
from attr_robust_tf.surrogate import softplus_surrogate

__all__ = ["RobustModel"]

REDUCTIONS = settings_lib.REDUCTIONS


def _multi_worker(strategy):
    """True for a MultiWorkerMirroredStrategy with replicas on more than this worker."""
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.num_replicas_in_sync > len(strategy.extended.worker_devices))


class _Untracked:
    """Holds an object out of Keras' attribute tracking (the surrogate shares the model's layers)."""

    def __init__(self, value):
        self.value = value


def _input_shape(model):
    """(None, H, W, C) of a built model, or a ValueError telling how to build it."""
    shape = _checks.built_input_shape(model)
    if isinstance(shape, list) and len(shape) == 1:
        shape = shape[0]
    if shape is None or not isinstance(shape, (tuple, list)) or len(shape) != 4:
        raise ValueError(
            "`model` must be a built Keras model taking one image tensor (N, H, W, C). Received: "
            f"{type(model).__name__} with input shape {shape!r}. Build it first, e.g. "
            "model.build((None, 28, 28, 1)) or give it a keras.Input.")
    return (None,) + tuple(shape[1:])


def _num_classes(model, input_shape):
    """K from a probe call on zeros; ValueError unless the model returns rank-2 logits (N, K)."""
    dtype = getattr(model, "input_dtype", None) or keras.config.floatx()
    try:
        dtype = model.inputs[0].dtype
    except (AttributeError, IndexError, TypeError, ValueError):
        pass
    out = model(tf.zeros((1,) + tuple(input_shape[1:]), dtype=dtype), training=False)
    if isinstance(out, (list, tuple, dict)) or not hasattr(out, "shape") or out.shape.rank != 2:
        if isinstance(out, (list, tuple)):
            shape = [tuple(o.shape) for o in out]
        else:
            shape = getattr(out, "shape", out)
        raise ValueError(
            "`model` must return logits of shape (N, num_classes). Received: a model whose output for a "
            f"(1, {', '.join(map(str, input_shape[1:]))}) input has shape {shape}. Wrap it so it returns "
            "one logit vector per image.")
    k = out.shape[-1]
    if k is None or k < 2:
        raise ValueError(
            f"`model` must return logits for at least 2 classes. Received: output shape {out.shape}.")
    # the task loss takes logits: a softmax output would be read as logits, silently (all objectives)
    check_logits_not_probabilities(keras.ops.convert_to_numpy(out))
    return int(k)


def _check_batch_shapes(x_shape, y_shape):
    """Static checks of one batch's shapes: images (N, H, W, C), labels (N,) or (N, 1) class indices."""
    if x_shape is None or x_shape.rank != 4:
        raise ValueError(f"`x` must be one image tensor of shape (N, H, W, C). Received: shape {x_shape}.")
    if y_shape is None:
        raise ValueError("`y` must be given: the robust objectives need integer class labels. Received: y=None.")
    if not (y_shape.rank == 1 or (y_shape.rank == 2 and y_shape[-1] == 1)):
        raise ValueError(
            f"`y` must be integer class indices of shape (N,). Received: y.shape={tuple(y_shape)}. "
            "Pass class indices, not one-hot labels, and compile with SparseCategoricalCrossentropy.")


def _check_fit_data(x, y):
    """What `fit` receives, before anything is built: no empty arrays or datasets of known cardinality 0, and
    `_check_batch_shapes` on arrays or on a dataset of (images, labels[, sample weights]) whose element spec is
    known. Other inputs are checked per batch."""
    if isinstance(x, tf.data.Dataset):
        if int(x.cardinality()) == 0:
            raise ValueError("`x` must be a dataset with at least one batch of (images, labels). Received: an "
                             "empty tf.data.Dataset (cardinality 0).")
        spec = x.element_spec
        if isinstance(spec, tuple) and len(spec) in (2, 3) and all(
                isinstance(s, tf.TensorSpec) for s in spec[:2]):
            _check_batch_shapes(spec[0].shape, spec[1].shape)
        return
    rows = getattr(x, "shape", None)
    if rows is not None and len(rows) and rows[0] == 0:
        raise ValueError(f"`x` must hold at least one image. Received: x.shape={tuple(rows)}.")
    if rows is not None and hasattr(y, "shape"):
        _check_batch_shapes(tf.TensorShape(rows), tf.TensorShape(y.shape))


class _BatchCounter(keras.callbacks.Callback):
    """Counts the training batches of one `fit`."""

    batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1


def _with_input_errors(function):
    """`function` (a compiled Keras step) raising `errors.InputValueError` (a ValueError that is also the
    InvalidArgumentError TensorFlow raised) when one of the batch checks fails inside the graph; the only
    reason `RobustModel` touches Keras' step functions."""
    if function is None or getattr(function, "_robust_input_errors", False):
        return function

    def call(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except tf.errors.InvalidArgumentError as error:
            converted = errors.input_value_error(error)
            if converted is None or isinstance(error, errors.InputValueError):
                raise
            raise converted from error

    call._robust_input_errors = True
    return call


@keras.saving.register_keras_serializable(package="attr_robust_tf")
class RobustModel(keras.Model):
    """Wraps a Keras model (logits out) and trains it with a robust objective.

    Args:
      model: a built Keras model (Sequential, functional or subclassed) mapping images (N, H, W, C) in
        [0, 1] to logits (N, K).
      objective: a registered objective name (`objectives.names()`) or an `objectives.Objective` row.
      weights: dict regularizer name → initial weight λ ≥ 0 (e.g. {"cacr": 0.1, "wacr": 0.1}); missing
        names keep the row default. Each weight lives in a non-trainable variable
        (`regularizer_weights`), so callbacks and tuners can change it without retracing; an inner-attack
        term that shares a weight (IG-SUM-NORM) reads the same variable.
      **overrides: fields of `RobustSettings` replacing the row's defaults (`None`: the default):
        `epsilon`, `step_size`, `attack_steps`, `random_start`, `ig_steps`, `inner_ig_steps`, `ig_method`,
        `ig_batch_size`, `inner_weight`, `surrogate_beta`, `top_k`, `loss_reduction`, `seed`, `bounds` (the
        pixel range every batch is checked against; see `settings.RobustSettings` for their meaning). Any other
        keyword goes to `keras.Model` (e.g. `name`).

    The resolved settings are `settings`. The inner attack reads ε and its step size from two non-trainable
    variables (`epsilon_variable`, `step_size_variable`), so `schedules.EpsilonSchedule` can ramp them
    without retracing; they are not saved state (`get_config` keeps the target values). Every term is logged
    as a metric: `loss` (total), `ce` (the compiled task loss) and one per regularizer (its unweighted batch
    mean); compiled metrics see the task input (x′ for `madry`, `ig_sum_norm`, `art`, `sarkar2021`).
    `compile()` is Keras' own: pass `jit_compile=False` explicitly (XLA is about 2× slower on CPU and fails
    under MirroredStrategy on logical CPUs, docs/stack.md §5; Keras' "auto" turns it on for single GPUs).

    Example:
      >>> robust = RobustModel(models.tiny_cnn(), "ig_norm", ig_steps=4, inner_ig_steps=2, attack_steps=2)
      >>> robust.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
      >>> robust.fit(images, labels, epochs=1, batch_size=8)  # doctest: +SKIP

    Reference: the objectives of docs/method.md §7 (Madry 2018, TRADES 2019, RAR 2019, ART 2020, Sarkar 2021).
    """

    def __init__(self, model, objective="sarkar2021", *, weights=None, **overrides):
        names = settings_lib.names()
        for key in [k for k in overrides if k not in names]:
            # a near miss of a setting name is a typo, not a keras.Model argument
            if difflib.get_close_matches(key, names, n=1):
                _checks.did_you_mean("RobustModel setting", key, names)
        kwargs = {k: overrides.pop(k) for k in list(overrides) if k not in names}
        super().__init__(**kwargs)
        if not isinstance(model, keras.Model):
            raise ValueError(f"`model` must be a keras.Model. Received: model={type(model).__name__}.")
        row = objectives.get(objective)
        input_shape = _input_shape(model)
        num_classes = _num_classes(model, input_shape)
        weights = dict(weights or {})
        for name in weights:
            if name not in row.regularizers:
                options = row.regularizers or ("(none: this objective has no regularizer)",)
                _checks.did_you_mean(f"weight name for objective {row.name!r}:", name, options)
        s = row.resolve(**overrides)
        initial = {name: _checks.check_nonnegative(weights.get(name, row.weights[name]), f"weights[{name!r}]")
                   for name in row.regularizers}

        self.model = model
        self.objective = row
        self._robust_settings = s
        # penalties, their weights (non-trainable variables) and their trackers, in row order
        self._robust_regularizers = {
            name: penalties_lib.get(name).from_settings(s, name=name, **row.regularizer_args.get(name, {}))
            for name in row.regularizers}
        self.regularizer_weights = {
            name: self.add_weight(shape=(), initializer=keras.initializers.Constant(initial[name]),
                                  trainable=False, name=f"{name}_weight")
            for name in row.regularizers}
        self.ce_tracker = keras.metrics.Mean(name="ce")
        self.term_trackers = {name: keras.metrics.Mean(name=name) for name in row.regularizers}

        self._robust_attack = None
        self._robust_attack_variables = _Untracked({})
        if row.has_inner_attack:
            # float64, so the ε and a of float32 and float64 steps are the nearest values of their dtype
            variables = {name: tf.Variable(getattr(s, name), trainable=False, dtype=tf.float64, name=name)
                         for name in ("epsilon", "step_size")}
            self._robust_attack_variables = _Untracked(variables)
            # a term weight naming a regularizer is that regularizer's variable: one λ, read in both places
            terms = {term: self.regularizer_weights[w] if isinstance(w, str) else w
                     for term, w in row.inner_weights(s).items()}
            self._robust_attack = InnerAttack.from_settings(terms, s, start=row.start, **variables)

        surrogate = None
        if s.surrogate_beta:
            try:
                surrogate = softplus_surrogate(model, s.surrogate_beta)
            except ValueError as e:
                raise ValueError(
                    f"{e} Or pass surrogate_beta=0 to differentiate through the network itself.") from None
        self._robust_surrogate = _Untracked(surrogate)
        self._robust_num_classes = num_classes
        self._robust_input_shape = input_shape
        self.build(input_shape)

    @property
    def settings(self):
        """The resolved `RobustSettings` (the row's defaults with this model's overrides)."""
        return self._robust_settings

    @property
    def loss_reduction(self):
        return self.settings.loss_reduction

    @property
    def seed(self):
        return self.settings.seed

    @property
    def epsilon_variable(self):
        """The inner attack's ε (a non-trainable float64 variable), or None without an inner attack."""
        return self._robust_attack_variables.value.get("epsilon")

    @property
    def step_size_variable(self):
        """The inner attack's step size (a non-trainable float64 variable), or None without an inner attack."""
        return self._robust_attack_variables.value.get("step_size")

    # -- Keras plumbing -------------------------------------------------------------------------------

    def build(self, input_shape=None):
        self.built = True  # the wrapped model is already built

    def call(self, inputs, training=False):
        """Logits of the wrapped model; `predict` and direct calls check the images against `bounds` as `fit` does
        (0–255 pixels given to a model trained on [0, 1] raise instead of predicting quietly wrong)."""
        if not isinstance(inputs, keras.KerasTensor):
            inputs = _checks.images_in_bounds(inputs, self.settings.bounds, "inputs")
        return self.model(inputs, training=training)

    def compute_output_shape(self, input_shape):
        return self.model.compute_output_shape(input_shape)

    @property
    def surrogate(self):
        """The smooth copy of `model` sharing its weights, or None."""
        return self._robust_surrogate.value

    @property
    def inner_attack(self):
        """The `InnerAttack` of the objective, or None."""
        return self._robust_attack

    @property
    def regularizers(self):
        """dict name → regularizer instance, in the row's order."""
        return dict(self._robust_regularizers)

    # -- the step -------------------------------------------------------------------------------------

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            x_task, y_pred, task_loss, loss = self._robust_objective(x, y, sample_weight, training=True, tape=tape)
            scaled = self.optimizer.scale_loss(loss)  # mixed-precision safety
        grads = tape.gradient(scaled, self.trainable_variables)
        # a variable the loss does not reach (e.g. the logit bias under a penalty-only loss) has gradient 0
        grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, self.trainable_variables)]
        self.optimizer.apply(grads, self.trainable_variables)
        self._robust_track(task_loss, loss, x)
        return self._robust_outputs(self.compute_metrics(x_task, y, y_pred, sample_weight))

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x_task, y_pred, task_loss, loss = self._robust_objective(x, y, sample_weight, training=False)
        self._robust_track(task_loss, loss, x)
        return self._robust_outputs(self.compute_metrics(x_task, y, y_pred, sample_weight))

    def _robust_objective(self, x, y, sample_weight, training, tape=None):
        """(x_task, y_pred, task_loss, total loss): the row's objective on one batch, reduced once."""
        x_task, y_pred, task_loss, terms = self._robust_terms(x, y, sample_weight, training, tape=tape)
        loss = task_loss
        for name, (per_example, weighted) in terms.items():
            self.term_trackers[name].update_state(per_example, sample_weight=sample_weight)
            loss = loss + weighted
        return x_task, y_pred, task_loss, loss

    def _robust_terms(self, x, y, sample_weight, training, tape=None):
        """(x_task, y_pred, task_loss, {name: (per-example penalty, λ·reduce(penalty))}) of one batch.

        The pieces of `_robust_objective` (which sums them) before any metric is updated; x′ uses this step's
        seed, so `diagnostics.regularizer_influence` sees the terms of the next training step. x′ is a
        constant (Danskin), so the inner attack runs with `tape` (the training tape) paused: recorded, its
        own backward passes would be kept for a gradient that is never taken (memory growing with the
        inner IG points; docs/memory.md).
        """
        self._robust_check_compiled()
        x, labels = self._robust_check_batch(x, y)
        with tape.stop_recording() if tape is not None else contextlib.nullcontext():
            adv = self.objective.adversary(self.model, x, labels, attack=self._robust_attack,
                                           surrogate=self.surrogate, seed=self._robust_seed())
        x_task, _, penalties = self.objective.terms(
            self.model, x, labels, attack=self._robust_attack, regularizers=self._robust_regularizers,
            surrogate=self.surrogate, adv_images=adv)
        y_pred = self.model(x_task, training=training)
        task_loss = self.compute_loss(x=x_task, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                      training=training)
        terms = {}
        for name, per_example in penalties.items():
            weight = tf.cast(self.regularizer_weights[name], per_example.dtype)
            terms[name] = (per_example,
                           tf.cast(weight * self._robust_reduce(per_example, sample_weight), task_loss.dtype))
        return x_task, y_pred, task_loss, terms

    def _robust_reduce(self, per_example, sample_weight):
        """Σ/(global batch) under "mean" (the optimizer SUM-all-reduces gradients), Σ under "sum"."""
        if sample_weight is not None:
            sample_weight = tf.cast(tf.reshape(sample_weight, [-1]), per_example.dtype)
        if self.loss_reduction == "mean":
            return tf.nn.compute_average_loss(per_example, sample_weight=sample_weight)
        if sample_weight is not None:
            per_example = per_example * sample_weight
        return tf.reduce_sum(per_example)

    def _robust_track(self, task_loss, loss, x):
        """Logs the unscaled total and task losses (× replicas, as Keras does), weighted by the batch size."""
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        n = tf.shape(x)[0]
        for tracker, value in ((self._robust_loss_tracker(), loss), (self.ce_tracker, task_loss)):
            if tracker is not None:
                tracker.update_state(value * tf.cast(replicas, value.dtype), sample_weight=n)

    def _robust_loss_tracker(self):
        return next((m for m in self.metrics if m.name == "loss"), None)

    def _robust_seed(self):
        """The stateless seed (seed, optimizer.iterations) of this step's inner random start."""
        step = self.optimizer.iterations if self.optimizer is not None else tf.constant(0, tf.int64)
        return tf.stack([tf.constant(self.seed, tf.int64), tf.cast(step, tf.int64)])

    def _robust_check_batch(self, x, y):
        """Validates a batch in the graph: finite images, integer labels in [0, K); returns (x, labels)."""
        if not tf.is_tensor(x):
            raise ValueError(f"`x` must be one image tensor of shape (N, H, W, C). Received: {type(x).__name__}.")
        labels = None if y is None else tf.convert_to_tensor(y)
        _check_batch_shapes(x.shape, None if labels is None else labels.shape)
        # integer images become float32 here, once; values outside the declared bounds stop the step
        x = _checks.images_in_bounds(x, self.settings.bounds, "x")
        labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)  # (N, 1) → (N,)
        k = self._robust_num_classes
        checks = [
            tf.debugging.assert_greater_equal(
                labels, 0, message=f"`y` (labels) must hold class indices in [0, {k - 1}]; the batch has a "
                                   "negative label. No weights were updated."),
            tf.debugging.assert_less(
                labels, k, message=f"`y` (labels) must hold class indices in [0, {k - 1}] (the model has {k} "
                                   "logits); the batch has a larger label. No weights were updated."),
        ]
        # a data dependency: nothing downstream (gradients, the update) runs unless the batch is valid
        x = tf.debugging.assert_all_finite(
            x, "The input batch `x` must be finite: it contains NaN or Inf values. Check the data pipeline; "
               "no weights were updated.")
        with tf.control_dependencies([c for c in checks if c is not None]):
            return tf.identity(x), tf.identity(labels)

    def _robust_check_compiled(self):
        """Trace-time checks that the compiled loss fits this wrapper (logits, reduction)."""
        loss = getattr(self, "loss", None)
        if loss is None:
            raise ValueError(
                "`loss` must be given to compile(): RobustModel adds its regularizers to the compiled task "
                "loss. Received: loss=None. "
                "Use keras.losses.SparseCategoricalCrossentropy(from_logits=True).")
        if isinstance(loss, str) and loss in ("sparse_categorical_crossentropy", "categorical_crossentropy"):
            raise ValueError(
                f"`loss` must take logits: the wrapped model outputs logits. Received: loss={loss!r} "
                "(from_logits=False). Use keras.losses.SparseCategoricalCrossentropy(from_logits=True).")
        if getattr(loss, "from_logits", True) is False:
            raise ValueError(
                f"`loss` must take logits: the wrapped model outputs logits. Received: {loss!r} with "
                "from_logits=False. Pass from_logits=True.")
        reduction = getattr(loss, "reduction", None)
        if self.loss_reduction == "sum" and reduction is not None and reduction != "sum":
            raise ValueError(
                "With loss_reduction='sum' the compiled task loss must also sum over the batch. Received: "
                f"a loss with reduction={reduction!r}. Compile with "
                "keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction='sum').")

    # -- data-check errors as ValueError ----------------------------------------------------------------

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`, refusing data that holds no batch (an empty dataset would train silently)."""
        bound = inspect.signature(keras.Model.fit).bind(self, *args, **kwargs)
        bound.apply_defaults()
        params = {name: value for name, value in bound.arguments.items() if name != "self"}
        _check_fit_data(params["x"], params["y"])
        counter = _BatchCounter()
        callbacks = params["callbacks"]
        if isinstance(callbacks, keras.callbacks.CallbackList):
            callbacks.append(counter)
        else:
            params["callbacks"] = list(callbacks or []) + [counter]
        epochs = params["epochs"] - params["initial_epoch"]
        message = ("`x` must yield at least one batch of (images, labels). Received: a dataset that yielded none "
                   f"in {epochs} epoch(s), so no training step ran. Check the dataset's filters and "
                   "`steps_per_epoch`.")
        try:
            history = super().fit(**params)
        except StopIteration as error:  # a distributed fit reads one batch to build, before any step
            if counter.batches:
                raise
            raise ValueError(message) from error
        if not counter.batches and epochs > 0:
            raise ValueError(message)
        return history

    def make_train_function(self, force=False):
        super().make_train_function(force)
        self.train_function = _with_input_errors(self.train_function)
        return self.train_function

    def make_test_function(self, force=False):
        super().make_test_function(force)
        self.test_function = _with_input_errors(self.test_function)
        return self.test_function

    # -- MultiWorkerMirroredStrategy under Keras 3 (keras-team/keras#20585) ------------------------------

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Builds from one local replica's batch under multi-worker training.

        Keras reduces the first (x, y) batch across replicas with `strategy.reduce`, which rejects a nested
        structure under MultiWorkerMirroredStrategy; only the shapes are used, and the local batch has them.
        """
        strategy = self._distribute_strategy
        if iterator is None or not _multi_worker(strategy):
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        for _, _, it in iterator:
            data_batch = tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], next(it))
            break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def _robust_outputs(self, logs):
        """Step outputs with a length-1 axis under multi-worker training, else unchanged.

        Keras averages step outputs across workers with `strategy.reduce("MEAN", v, axis=0)`, which needs an
        axis to reduce; the reduced value is a scalar again.
        """
        if _multi_worker(tf.distribute.get_strategy()):
            return tf.nest.map_structure(lambda v: tf.reshape(v, [1]), logs)
        return logs

    # -- serialization --------------------------------------------------------------------------------

    def get_config(self):
        name = self.objective.name
        if objectives.OBJECTIVES.get(name) is not self.objective:
            raise ValueError(
                f"Objective {name!r} is not the registered row of that name, so it cannot be saved by name. "
                "Register it with objectives.register(...) before saving.")
        config = {
            "name": self.name,
            "trainable": self.trainable,
            "model": keras.saving.serialize_keras_object(self.model),
            "objective": name,
            # the shortest decimal that round-trips each variable's value (0.3, not 0.30000001192092896)
            "weights": {k: float(str(keras.ops.convert_to_numpy(v)))
                        for k, v in self.regularizer_weights.items()},
            **self.settings.asdict(),  # the target ε and step size, whatever a schedule set the variables to
        }
        if config["bounds"] == (0.0, 1.0):
            del config["bounds"]  # the default: configs saved before `bounds` existed stay the same
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        model = keras.saving.deserialize_keras_object(config.pop("model"), custom_objects=custom_objects)
        return cls(model, **config)
