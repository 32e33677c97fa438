"""ε warm-up of the inner attack: `EpsilonSchedule`, a Keras callback.

Strong attacks early in training can collapse it (MNIST at ε = 0.3 with a 3-step attack); a linear ramp of ε
over the first epochs is the usual remedy (e.g. Gowal et al. 2018, arXiv 1810.12715, §4 "ε ramp-up").
"""
import keras

from attr_robust_tf import _checks

__all__ = ["EpsilonSchedule"]


class EpsilonSchedule(keras.callbacks.Callback):
    """Ramps the inner attack's ε linearly from `start`·ε to ε over `warmup_epochs`, then holds it.

    Before training step t (t = `optimizer.iterations`, counted over the whole run) the attack uses

        ε_t = ε · (start + (1 − start) · min(1, t / (warmup_epochs · steps_per_epoch))),

    and its step size is scaled by the same factor (a_t = a · ε_t / ε). ε and a are the targets of
    `RobustModel.settings`; the callback assigns `RobustModel.epsilon_variable` and `step_size_variable`,
    which the traced step reads (no retracing). The value depends only on the optimizer's iteration count and
    the number of steps per epoch, so a run resumed from a checkpoint repeats the uninterrupted one. After
    training the variables hold the targets again (validation during `fit` uses the current ε_t).
    `warmup_epochs=0` changes nothing. With `compile(steps_per_execution=k)` the value is set once per k steps.

    Args:
      warmup_epochs: length of the ramp in epochs (≥ 0; may be fractional).
      start: the first step's fraction of ε, in [0, 1].
      steps_per_epoch: steps per epoch (None: the `steps` that `fit` reports, which needs a dataset of known
        length or `steps_per_epoch` given to `fit`).

    Example:
      >>> robust.fit(images, labels, epochs=10, callbacks=[EpsilonSchedule(3)])  # doctest: +SKIP
    """

    def __init__(self, warmup_epochs, start=0.0, steps_per_epoch=None):
        super().__init__()
        ok = isinstance(warmup_epochs, (int, float)) and not isinstance(warmup_epochs, bool)
        if not ok or not warmup_epochs >= 0 or warmup_epochs == float("inf"):
            raise ValueError(
                f"`warmup_epochs` must be a finite number >= 0. Received: warmup_epochs={warmup_epochs!r}.")
        ok = isinstance(start, (int, float)) and not isinstance(start, bool)
        if not ok or not 0.0 <= start <= 1.0:
            raise ValueError(f"`start` must be a number in [0, 1]. Received: start={start!r}.")
        if steps_per_epoch is not None:
            _checks.check_positive_int(steps_per_epoch, "steps_per_epoch")
        self.warmup_epochs = warmup_epochs
        self.start = float(start)
        self.steps_per_epoch = steps_per_epoch

    def factor(self, step, steps_per_epoch):
        """The fraction of the target ε used at training step `step` (a Python float in [start, 1])."""
        ramp = self.warmup_epochs * steps_per_epoch
        if step >= ramp:
            return 1.0
        return self.start + (1.0 - self.start) * (step / ramp)

    def _variables(self):
        epsilon = getattr(self.model, "epsilon_variable", None)
        if epsilon is None and not hasattr(self.model, "settings"):
            raise ValueError(
                "`EpsilonSchedule` must be used with a RobustModel. Received: a model of type "
                f"{type(self.model).__name__}.")
        return epsilon, self.model.step_size_variable  # (None, None) without an inner attack

    def _set(self, factor):
        epsilon, step_size = self._variables()
        if epsilon is None:
            return
        target = self.model.settings
        if factor == 1.0:  # the targets exactly, as without a schedule
            epsilon.assign(target.epsilon)
            step_size.assign(target.step_size)
        else:
            epsilon.assign(target.epsilon * factor)
            step_size.assign(target.step_size * factor)

    def _steps_per_epoch(self):
        steps = self.steps_per_epoch or (self.params or {}).get("steps")
        if not steps:
            raise ValueError(
                "`EpsilonSchedule` needs the number of steps per epoch: `fit` did not report it (a dataset of "
                "unknown length). Pass EpsilonSchedule(..., steps_per_epoch=n) or fit(..., steps_per_epoch=n).")
        return int(steps)

    def on_train_begin(self, logs=None):
        if self.warmup_epochs:
            self._variables()
            self.on_train_batch_begin(0)

    def on_train_batch_begin(self, batch, logs=None):
        if self.warmup_epochs:
            step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
            self._set(self.factor(step, self._steps_per_epoch()))

    def on_train_end(self, logs=None):
        if self.warmup_epochs:
            self._set(1.0)
