"""`EpsilonSchedule`: the exact ramp per step, the traced step reading it, resume and reload with the target ε."""
import os

import keras
import numpy as np

from attr_robust_tf import EpsilonSchedule, models
from attr_robust_tf.robust_model import RobustModel
import testing

TINY = dict(epsilon=0.1, step_size=0.04, attack_steps=1)


def _data(n=16):
    rng = np.random.default_rng(0)
    return rng.uniform(size=(n, 8, 8, 1)).astype("float32"), rng.integers(0, 3, n).astype("int32")


def _build(objective="madry", **kwargs):
    keras.utils.set_random_seed(0)
    robust = RobustModel(models.tiny_cnn(), objective, **{**TINY, **kwargs})
    robust.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   jit_compile=False)
    return robust


class Recorder(keras.callbacks.Callback):
    """(iterations, ε, step size) as the step about to run sees them."""

    def __init__(self):
        super().__init__()
        self.seen = []
        self.traces = []
        self.traced = []

    def on_train_batch_end(self, batch, logs=None):
        self.traces.append(len(self.traced))

    def on_train_batch_begin(self, batch, logs=None):
        self.seen.append((int(self.model.optimizer.iterations), float(self.model.epsilon_variable.numpy()),
                          float(self.model.step_size_variable.numpy())))


def _count_traces(robust):
    """A list that grows by one each time `train_step` is traced (its Python body runs only then)."""
    traces = []
    train_step = robust.train_step
    robust.train_step = lambda data: (traces.append(1), train_step(data))[1]
    return traces


def _max_diff(a, b):
    return max(float(np.max(np.abs(p - q))) for p, q in zip(a, b))


class EpsilonScheduleTest(testing.TestCase):
    def test_variables_follow_the_linear_ramp_per_step(self):
        x, y = _data()
        robust = _build()
        recorder = Recorder()
        recorder.traced = _count_traces(robust)
        robust.fit(x, y, batch_size=4, epochs=3, verbose=0, callbacks=[EpsilonSchedule(1.5, start=0.25), recorder])
        # 4 steps per epoch, ramp over 1.5 · 4 = 6 steps: ε_t = ε·(¼ + ¾·t/6), then ε
        expected = []
        for t in range(12):
            factor = 0.25 + 0.75 * (t / 6) if t < 6 else 1.0
            expected.append((t, 0.1 * factor if t < 6 else 0.1, 0.04 * factor if t < 6 else 0.04))
        self.assertEqual(recorder.seen, expected)
        self.assertEqual(recorder.seen[0][1], 0.025)
        self.assertEqual((float(robust.epsilon_variable.numpy()), float(robust.step_size_variable.numpy())),
                         (0.1, 0.04))  # the targets again after training
        # the ramp did not retrace the step: no trace after the first step, while ε changed at every step
        self.assertEqual(recorder.traces, [recorder.traces[0]] * 12)

    def test_the_traced_step_reads_the_scheduled_epsilon(self):
        # one step at half the ramp equals one step of a model built with ε/2 and a/2 (exact halving)
        x, y = _data(n=8)
        scheduled = _build()
        scheduled.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False,
                      callbacks=[EpsilonSchedule(1, start=0.5)])
        half = _build(epsilon=0.05, step_size=0.02)
        half.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
        self.assertEqual(_max_diff(scheduled.get_weights(), half.get_weights()), 0.0)
        full = _build()
        full.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
        self.assertGreater(_max_diff(scheduled.get_weights(), full.get_weights()), 0.0)

    def test_zero_warmup_changes_nothing(self):
        x, y = _data(n=8)
        results = []
        for callbacks in ([], [EpsilonSchedule(0)]):
            robust = _build()
            robust.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False, callbacks=callbacks)
            results.append(robust.get_weights())
        self.assertEqual(_max_diff(*results), 0.0)

    def test_resumed_run_repeats_the_uninterrupted_one_and_reloads_the_target(self):
        x, y = _data()
        uninterrupted = _build()
        uninterrupted.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False, callbacks=[EpsilonSchedule(2)])
        path = os.path.join(self.get_temp_dir(), "epoch.keras")
        first = _build()
        # saved at the end of epoch 1, mid-ramp (ε_t = ε/2 for the next step)
        first.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False,
                  callbacks=[EpsilonSchedule(2), keras.callbacks.ModelCheckpoint(path)])
        resumed = keras.models.load_model(path)
        self.assertEqual(float(resumed.epsilon_variable.numpy()), 0.1)
        self.assertEqual(resumed.get_config()["epsilon"], 0.1)
        recorder = Recorder()
        resumed.fit(x, y, batch_size=8, epochs=2, initial_epoch=1, verbose=0, shuffle=False,
                    callbacks=[EpsilonSchedule(2), recorder])
        self.assertEqual([s[:2] for s in recorder.seen], [(2, 0.1 * 0.5), (3, 0.1 * 0.75)])
        self.assertEqual(_max_diff(resumed.get_weights(), uninterrupted.get_weights()), 0.0)

    def test_natural_row_and_errors(self):
        x, y = _data(n=8)
        natural = _build("natural")
        self.assertIsNone(natural.epsilon_variable)
        natural.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[EpsilonSchedule(1)])  # nothing to ramp
        with self.assertRaisesRegex(ValueError, "`warmup_epochs` must be a finite number >= 0"):
            EpsilonSchedule(-1)
        with self.assertRaisesRegex(ValueError, r"`start` must be a number in \[0, 1\]. Received: start=1.5"):
            EpsilonSchedule(1, start=1.5)
        with self.assertRaisesRegex(ValueError, "`steps_per_epoch` must be an integer >= 1"):
            EpsilonSchedule(1, steps_per_epoch=0)
        schedule = EpsilonSchedule(1)
        schedule.set_model(models.tiny_cnn())
        with self.assertRaisesRegex(ValueError, "must be used with a RobustModel"):
            schedule.on_train_begin()
