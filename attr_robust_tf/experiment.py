"""Experiments from configs: build the model, the robust wrapper and the data, then train with resume.

With `config_utils`, the only module that reads `ConfigDict`s (docs/conventions.md §6); everything it calls
takes explicit keyword arguments. `run_train` writes to its workdir (docs/conventions.md §7):

    config.json        the resolved config, written before anything runs
    checkpoints/       weights + optimizer state after every epoch, and state.json naming the last one;
                       with `train.early_stopping_patience` also early_stopping.json and best.weights.h5
    metrics.csv, tb/   per-epoch metrics (CSV) and TensorBoard logs
    model.keras        the trained `RobustModel`, written at the end

Every file is written to a temporary name and renamed (`config_utils.write_atomic`, on `tf.io.gfile`). A run
killed at any point resumes from its last finished epoch and ends with the same weights as an uninterrupted run:
the weights and the optimizer state (including `iterations`, which seeds the inner attack) are restored, and the
order and augmentation of the training batches depend only on (seed, epoch, step), never on how many epochs this
process has seen.
"""
import csv
import io
import json
import math
import os
import shutil

from absl import logging
import keras
import tensorflow as tf

from attr_robust_tf import config_utils, data, distribute, early_stopping, models
from attr_robust_tf.data import augment as augment_lib
from attr_robust_tf.robust_model import RobustModel

__all__ = ["build_model", "build_optimizer", "build_robust_model", "build_datasets", "run_train",
           "latest_checkpoint", "epoch_order"]

CHECKPOINTS = "checkpoints"
STATE = "state.json"
KEEP_CHECKPOINTS = 2
# Configs may differ between a run and its resumption only here: more epochs continue the same data
# stream; the runtime block (strategy, logical CPUs) does not change the mathematics.
RESUMABLE_CHANGES = ("train.epochs", "runtime.")
# Offsets that separate the data's random streams from RobustModel's (seed, step) stream.
_SHUFFLE_STREAM, _AUGMENT_STREAM = 1, 2


def _shape_and_classes(config):
    """((H, W, C), K) of the config's images and labels, without loading any data."""
    if config.data.name == config_utils.SYNTHETIC:
        return tuple(config.data.image_shape), config.data.num_classes
    meta = data.info(config.data.name)
    shape = tuple(meta.image_shape)
    if config.data.image_size is not None:
        shape = (config.data.image_size, config.data.image_size, shape[2])
    return shape, meta.num_classes


def build_model(config):
    """The base network `config.model.name` for the config's image shape and classes (seeded init)."""
    shape, classes = _shape_and_classes(config)
    kwargs = {"weight_decay": config.model.weight_decay} if config.model.weight_decay else {}
    keras.utils.set_random_seed(config.seed)
    return models.get(config.model.name, input_shape=shape, num_classes=classes, **kwargs)


def build_optimizer(config):
    """Adam, SGD or momentum SGD at `config.lr`, piecewise constant over `train.lr_schedule` (docs/method.md
    §8.2)."""
    lr = config.lr
    if config.train.lr_schedule:
        steps = [int(step) for step, _ in config.train.lr_schedule]
        values = [lr] + [lr * factor for _, factor in config.train.lr_schedule]
        # values[i] until step `steps[i]` (inclusive), as TF1's piecewise_constant in the reference code
        lr = keras.optimizers.schedules.PiecewiseConstantDecay(steps, values)
    if config.train.optimizer == "adam":
        return keras.optimizers.Adam(lr, epsilon=1e-8)  # ε of TF1's AdamOptimizer, which RAR used
    momentum = config.train.momentum if config.train.optimizer == "momentum" else 0.0
    return keras.optimizers.SGD(lr, momentum=momentum)


def build_robust_model(config, strategy=None):
    """The compiled `RobustModel` of the config, built inside `strategy.scope()` (docs/conventions.md §4).

    The `robust` block's settings (`config_utils.ROBUST_FIELDS`) are `RobustModel`'s keyword arguments. The task
    loss is summed over the batch when `robust.loss_reduction == "sum"` (the reference code), so that it and the
    regularizers share one scale (docs/conventions.md §5).
    """
    strategy = strategy or tf.distribute.get_strategy()
    robust = {k: v for k, v in config.robust.items() if k in config_utils.ROBUST_FIELDS}
    objective = config.robust.objective
    reduction = robust["loss_reduction"]
    if "weights" in robust:
        robust["weights"] = dict(robust["weights"])
    with strategy.scope():
        model = RobustModel(build_model(config), objective, seed=config.seed,
                            bounds=config.data.get("bounds", (0.0, 1.0)), **robust)
        model.compile(
            optimizer=build_optimizer(config),
            loss=keras.losses.SparseCategoricalCrossentropy(
                from_logits=True, reduction="sum" if reduction == "sum" else "sum_over_batch_size"),
            metrics=["accuracy"],
            jit_compile=config.runtime.jit_compile)
    return model


def _arrays(config):
    """((train images, labels), (validation images, labels) or None) as NumPy arrays."""
    d = config.data
    if d.name == config_utils.SYNTHETIC:
        kwargs = dict(image_shape=tuple(d.image_shape), num_classes=d.num_classes, as_arrays=True)
        train = data.synthetic(d.num_examples, seed=config.seed, **kwargs)
        # a different noise draw around the same class prototypes
        validation = data.synthetic(d.validation_limit, seed=config.seed + 1, **kwargs) if d.validation_limit else None
        return train, validation
    train = data.arrays(d.name, d.train_split, image_size=d.image_size, limit=d.limit, offset=d.offset)
    validation = None
    if d.validation_limit:
        validation = data.arrays(d.name, d.validation_split, image_size=d.image_size, limit=d.validation_limit)
    return train, validation


def epoch_order(seed, epoch, n):
    """The permutation of the `n` training examples in epoch `epoch`: a function of (seed, epoch) only."""
    key = tf.stack([tf.cast(seed, tf.int64) + _SHUFFLE_STREAM, tf.cast(epoch, tf.int64)])
    return tf.argsort(tf.random.stateless_uniform([n], key), stable=True)


def _train_dataset(images, labels, *, batch_size, steps, seed, first_epoch, epochs, augment, bounds=(0.0, 1.0)):
    """Batches of epochs first_epoch .. epochs−1; batch b of epoch e is fixed by (seed, e, b) alone."""
    n = len(labels)
    images = tf.constant(images)
    labels = tf.constant(labels, tf.int32)

    def epoch_batches(epoch):
        order = epoch_order(seed, epoch, n)
        index = tf.reshape(order[: steps * batch_size], [steps, batch_size])  # (steps, B); drops the remainder
        step = epoch * steps + tf.range(steps, dtype=tf.int64)  # global step of each batch
        return tf.data.Dataset.from_tensor_slices((index, step))

    def fetch(index, step):
        x = tf.gather(images, index)  # (B, H, W, C)
        if augment:  # in [0, 1], where the affine fill (0) is black
            x = augment_lib.random_affine(data.to_bounds(x),
                                          tf.stack([tf.constant(seed + _AUGMENT_STREAM, tf.int64), step]))
        return data.to_bounds(x, bounds), tf.gather(labels, index)  # float32 in data.bounds

    ds = tf.data.Dataset.range(first_epoch, epochs).flat_map(epoch_batches)
    return ds.map(fetch, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def build_datasets(config, *, initial_epoch=0):
    """(train, validation, steps_per_epoch) for epochs `initial_epoch` .. `train.epochs` − 1.

    `train` yields exactly `(epochs − initial_epoch) · steps_per_epoch` full batches: each epoch is a fresh
    permutation (`epoch_order`) cut into `steps_per_epoch` batches of `train.batch_size`, augmented with
    stateless seeds (seed, global step) when `data.augment`. `validation` is the first
    `data.validation_limit` examples of the validation split, batched (None when the limit is 0). Images are
    served in `data.bounds` (default [0, 1]), the range the model, its ε and the checks are declared in.
    """
    (images, labels), validation = _arrays(config)
    batch = config.train.batch_size
    full = len(labels) // batch
    if full < 1:
        raise ValueError(
            f"`train.batch_size` must be <= the number of training examples ({len(labels)}). Received: "
            f"train.batch_size={batch}. Raise data.limit or lower the batch size.")
    steps = config.train.steps_per_epoch or full
    if steps > full:
        raise ValueError(
            f"`train.steps_per_epoch` must be <= {full} (= {len(labels)} examples // batch {batch}), so each "
            f"epoch is one pass over a permutation. Received: train.steps_per_epoch={steps}.")
    augment = bool(config.data.get("augment", False))
    bounds = tuple(config.data.get("bounds", (0.0, 1.0)))
    train = _train_dataset(images, labels, batch_size=batch, steps=steps, seed=config.seed,
                           first_epoch=initial_epoch, epochs=config.train.epochs, augment=augment, bounds=bounds)
    if validation is not None:
        validation = data.make_dataset(*validation, batch_size=batch, bounds=bounds)
    return train, validation, steps


# -- checkpoints -------------------------------------------------------------------------------------


def latest_checkpoint(workdir):
    """(finished epochs, weights path) of the last checkpoint in `workdir`, or (0, None)."""
    path = os.path.join(workdir, CHECKPOINTS, STATE)
    if not tf.io.gfile.exists(path):
        return 0, None
    with tf.io.gfile.GFile(path) as f:
        state = json.load(f)
    weights = os.path.join(workdir, CHECKPOINTS, state["weights"])
    if not tf.io.gfile.exists(weights):
        raise FileNotFoundError(
            f"{path} names the checkpoint {state['weights']!r}, which is missing. Delete {CHECKPOINTS}/ or rerun "
            "with --overwrite to start over.")
    return int(state["epoch"]), weights


def _save_checkpoint(model, workdir, epoch):
    """Weights + optimizer state after `epoch` finished epochs, then state.json; both atomic renames."""
    folder = os.path.join(workdir, CHECKPOINTS)
    name = f"epoch-{epoch:05d}.weights.h5"
    config_utils.write_atomic(os.path.join(folder, name), model.save_weights)
    config_utils.write_text(os.path.join(folder, STATE), json.dumps({"epoch": epoch, "weights": name}) + "\n")
    kept = sorted(f for f in tf.io.gfile.listdir(folder) if f.startswith("epoch-") and f.endswith(".weights.h5"))
    for old in kept[:-KEEP_CHECKPOINTS]:
        tf.io.gfile.remove(os.path.join(folder, old))


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves a resumable checkpoint after every epoch whose loss is finite (chief worker only)."""

    def __init__(self, workdir):
        super().__init__()
        self.workdir = workdir

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            logging.error("Epoch %d ended with loss %s; not checkpointing it.", epoch + 1, loss)
            return
        _save_checkpoint(self.model, self.workdir, epoch + 1)


def _truncate_metrics(path, initial_epoch):
    """Keeps only the CSV rows of epochs before `initial_epoch` (a killed epoch may have logged its row)."""
    if not tf.io.gfile.exists(path):
        return
    if initial_epoch == 0:
        tf.io.gfile.remove(path)
        return
    with tf.io.gfile.GFile(path) as f:
        rows = list(csv.reader(io.StringIO(f.read())))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) < initial_epoch]
    text = io.StringIO()
    csv.writer(text).writerows(kept)
    config_utils.write_text(path, text.getvalue())


def _prepare_workdir(config, workdir, overwrite):
    """Creates `workdir`, refuses to mix two different runs in it, and writes config.json."""
    path = os.path.join(workdir, "config.json")
    if overwrite:
        for name in ("config.json", "model.keras", "metrics.csv"):
            if os.path.exists(os.path.join(workdir, name)):
                os.remove(os.path.join(workdir, name))
        for name in (CHECKPOINTS, "tb"):
            shutil.rmtree(os.path.join(workdir, name), ignore_errors=True)
    elif os.path.exists(path):
        old = config_utils.flatten(config_utils.load(path))
        new = config_utils.flatten(config_utils.from_json(config_utils.to_json(config)))
        changed = sorted(k for k in set(old) | set(new)
                         if old.get(k) != new.get(k) and not k.startswith(RESUMABLE_CHANGES))
        if changed:
            details = "; ".join(f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in changed[:5])
            raise ValueError(
                f"`workdir` must hold a run of the same config to resume it. Received: workdir={workdir!r} "
                f"whose config.json differs in {details}. Pass --overwrite to start over, or use another "
                "--workdir.")
    os.makedirs(workdir, exist_ok=True)
    config_utils.save(config, path)


def _optional_callbacks(config, train, validation):
    """The callbacks of `robust.epsilon_warmup_epochs` and `train.influence_every` when they are on (> 0)."""
    callbacks = []
    warmup = config.robust.get("epsilon_warmup_epochs", 0)
    if warmup:
        schedules = _optional_module("schedules", "robust.epsilon_warmup_epochs", warmup)
        callbacks.append(schedules.EpsilonSchedule(warmup))
    every = config.train.get("influence_every", 0)
    if every:
        diagnostics = _optional_module("diagnostics", "train.influence_every", every)
        batch = next(iter(validation if validation is not None else train))  # a fixed first batch
        callbacks.append(diagnostics.RegularizerInfluence(batch, every_n_steps=every))
    return callbacks


def _optional_module(name, key, value):
    """`attr_robust_tf.<name>`, or an ImportError saying which config key needs it."""
    import importlib

    try:
        return importlib.import_module(f"attr_robust_tf.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"attr_robust_tf.{name}":
            raise
        raise ImportError(f"`{key}` > 0 needs attr_robust_tf.{name}, which this installation lacks. Received: "
                          f"{key}={value!r}. Set {key}=0 or update attr_robust_tf.") from None


def run_train(config, workdir, strategy=None, *, overwrite=False, verbose=1):
    """Trains the config's `RobustModel` in `workdir`, resuming from its last checkpoint; returns the model.

    Args:
      config: an experiment ConfigDict (configs/); validated first.
      workdir: output folder (see the module docstring). A finished or interrupted run in it is resumed,
        unless `overwrite`.
      strategy: a `tf.distribute.Strategy`; default `distribute.make_strategy(config.runtime.strategy)`.
      overwrite: delete this module's files in `workdir` first and train from scratch.
      verbose: Keras progress output (1: a progress bar with every loss term, 2: one line per epoch).

    Returns:
      The trained `RobustModel`; `model.history.history` holds the metrics of the epochs run by this call.

    Raises:
      FloatingPointError: the loss became NaN or infinite (the last finite epoch stays checkpointed).
    """
    strategy = strategy or distribute.make_strategy(config.runtime.strategy)
    config_utils.validate(config, num_replicas=strategy.num_replicas_in_sync)
    distribute.check_global_batch(config.train.batch_size, strategy)
    chief = distribute.is_chief(strategy)
    if chief:
        _prepare_workdir(config, workdir, overwrite)
    initial_epoch, weights = latest_checkpoint(workdir)
    epochs = config.train.epochs

    model = build_robust_model(config, strategy)
    if weights is not None:
        with strategy.scope():
            model.optimizer.build(model.trainable_variables)  # so the optimizer state is loaded too
        model.load_weights(weights)
        logging.info("Resuming %s after epoch %d of %d (step %d).", workdir, initial_epoch, epochs,
                     int(model.optimizer.iterations.numpy()))
    train, validation, steps = build_datasets(config, initial_epoch=min(initial_epoch, epochs))

    callbacks = [keras.callbacks.TerminateOnNaN()] + _optional_callbacks(config, train, validation)
    stopper = None
    if config.train.get("early_stopping_patience"):
        if validation is None:
            raise ValueError("`train.early_stopping_patience` needs validation data. Received: "
                             "data.validation_limit=0. Set data.validation_limit > 0 or the patience to 0.")
        # before EpochCheckpoint: the epoch's early-stopping record is on disk before its checkpoint
        stopper = early_stopping.ResumableEarlyStopping(
            workdir, config.train.early_stopping_patience, warmup=config.robust.get("epsilon_warmup_epochs", 0),
            write=chief)
        callbacks.append(stopper)
    if chief:
        metrics_path = os.path.join(workdir, "metrics.csv")
        _truncate_metrics(metrics_path, initial_epoch)
        callbacks += [
            keras.callbacks.CSVLogger(metrics_path, append=True),
            keras.callbacks.TensorBoard(os.path.join(workdir, "tb"), write_graph=False),
            EpochCheckpoint(workdir),
        ]
    if stopper is not None and stopper.stopped_before(initial_epoch):
        logging.info("Early stopping already ended %s after epoch %d.", workdir, initial_epoch)
    elif initial_epoch < epochs:
        logging.info("Training %s (%s) for epochs %d..%d, %d steps each, in %s.", config.robust.objective,
                     config.model.name, initial_epoch + 1, epochs, steps, workdir)
        model.fit(train, epochs=epochs, initial_epoch=initial_epoch, steps_per_epoch=steps,
                  validation_data=validation, callbacks=callbacks, verbose=verbose, shuffle=False)
        losses = model.history.history.get("loss", [])
        bad = [i for i, v in enumerate(losses) if not math.isfinite(v)]
        if bad:
            raise FloatingPointError(
                f"Training diverged: the loss became {losses[bad[0]]} in epoch {initial_epoch + bad[0] + 1}. "
                f"Lower `lr` (now {config.lr}) or the regularizer weights; the last finite epoch is "
                f"checkpointed in {os.path.join(workdir, CHECKPOINTS)}.")
    if stopper is not None:
        best = stopper.restore_best(model)
        logging.info("Early stopping: restored the weights of epoch %s (best %s).", best, stopper.monitor)
    if chief:
        config_utils.write_atomic(os.path.join(workdir, "model.keras"), model.save)
        logging.info("Wrote %s.", os.path.join(workdir, "model.keras"))
    return model
