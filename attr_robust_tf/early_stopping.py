"""Early stopping on validation accuracy that survives a kill: its state and the best weights live on disk.

`experiment.run_train` adds `ResumableEarlyStopping` when `train.early_stopping_patience > 0`. After every
epoch it records the monitored value in `<workdir>/checkpoints/early_stopping.json` (before the epoch's
checkpoint is written), keeps the weights of the best epoch in `checkpoints/best.weights.h5`, and stops once
`patience` epochs in a row have not improved on the best value. The decision is a function of the recorded
per-epoch values only (`decide`), so a run resumed from its per-epoch checkpoints, which repeats the
uninterrupted run bit for bit, stops at the same epoch and restores the same weights.
"""
import json
import math
import os

import keras

from attr_robust_tf import config_utils

__all__ = ["decide", "read_state", "ResumableEarlyStopping", "STATE", "BEST_WEIGHTS"]

STATE = "early_stopping.json"
BEST_WEIGHTS = "best.weights.h5"


def decide(history, patience, warmup=0):
    """(best epoch, best value, stop) for {epoch (1-based): monitored value}, maximised.

    The best epoch is the first one reaching the maximum (a later tie is no improvement); training stops
    once the last epoch is `patience` epochs past it. Non-finite values never count as an improvement. The
    first `warmup` epochs (an ε warm-up trains against a weaker attack) are recorded but never the best, and
    patience counts from the end of the warm-up.
    """
    patience, warmup = int(patience), int(warmup)
    if patience < 1:
        raise ValueError(f"`patience` must be >= 1. Received: patience={patience!r}.")
    if not history:
        raise ValueError("`history` must hold at least one epoch. Received: an empty history.")
    best_epoch, best_value = None, -math.inf
    for epoch in sorted(history):
        value = history[epoch]
        if epoch <= warmup:
            continue
        if value is not None and math.isfinite(value) and value > best_value:
            best_epoch, best_value = epoch, float(value)
    last = max(history)
    if best_epoch is None:
        return None, None, last - warmup >= patience
    return best_epoch, best_value, last - best_epoch >= patience


def read_state(workdir):
    """The early-stopping state of a `run_train` workdir (dict), or None if it has none."""
    path = os.path.join(workdir, "checkpoints", STATE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        state = json.load(f)
    state["history"] = {int(k): v for k, v in state["history"].items()}
    return state


class ResumableEarlyStopping(keras.callbacks.Callback):
    """Stops when `monitor` (maximised) has not improved for `patience` epochs; state and best weights on disk.

    Args:
      workdir: the `run_train` workdir; files go to its checkpoints/ folder.
      patience: epochs without improvement before stopping (>= 1).
      monitor: a logged metric, by default the validation accuracy.
      warmup: epochs that are never the best (the ε warm-up, `robust.epsilon_warmup_epochs`); see `decide`.
      write: whether this worker writes the files (the chief); every worker takes the same decision.
    """

    def __init__(self, workdir, patience, monitor="val_accuracy", warmup=0, write=True):
        super().__init__()
        self.folder = os.path.join(workdir, "checkpoints")
        self.patience = int(patience)
        if self.patience < 1:
            raise ValueError(f"`patience` must be >= 1. Received: patience={patience!r}.")
        self.monitor = monitor
        self.warmup = int(warmup)
        self.write = write
        self.workdir = workdir

    @property
    def best_weights(self):
        return os.path.join(self.folder, BEST_WEIGHTS)

    def state(self):
        return read_state(self.workdir)

    def stopped_before(self, initial_epoch):
        """Whether a recorded stop happened at or before `initial_epoch` finished epochs (nothing left to do)."""
        state = self.state()
        return bool(state and state.get("stopped_epoch") and state["stopped_epoch"] <= initial_epoch)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise ValueError(f"Early stopping monitors `{self.monitor}`, which was not logged (logged: "
                             f"{', '.join(sorted(logs))}). Set data.validation_limit > 0.")
        state = self.state() or {}
        done = epoch + 1
        # a resumed run repeats the epochs after its checkpoint: drop what they recorded before the kill
        history = {e: v for e, v in (state.get("history") or {}).items() if e < done}
        history[done] = float(logs[self.monitor])
        best_epoch, best_value, stop = decide(history, self.patience, self.warmup)
        if self.write:
            os.makedirs(self.folder, exist_ok=True)
            if best_epoch == done:
                tmp = os.path.join(self.folder, f".tmp-{BEST_WEIGHTS}")
                self.model.save_weights(tmp)
                os.replace(tmp, self.best_weights)
            record = {"monitor": self.monitor, "patience": self.patience, "warmup": self.warmup, "history": history,
                      "best_epoch": best_epoch, "best_value": best_value, "stopped_epoch": done if stop else None}
            config_utils.write_text(os.path.join(self.folder, STATE), json.dumps(record, indent=2) + "\n")
        if stop:
            self.model.stop_training = True

    def restore_best(self, model):
        """Loads the best epoch's weights into `model` (if recorded); returns the best epoch or None."""
        state = self.state()
        if not state or not state.get("best_epoch") or not os.path.exists(self.best_weights):
            return None
        model.load_weights(self.best_weights)
        return state["best_epoch"]
