"""tf.distribute: a distributed step equals the single-device step (docs/conventions.md §5, docs/stack.md §6).

* MirroredStrategy on the 2 logical CPUs of tests/conftest.py vs the default strategy: one training step of
  every objective, for loss_reduction "mean" and "sum", through `experiment.build_robust_model` (the path
  of tools/train.py).
* MultiWorkerMirroredStrategy: two worker processes on loopback ports with TF_CONFIG, each one replica,
  train through `experiment.build_datasets` (Keras' own sharding of the tf.data pipeline) and must end
  with identical weights, equal to the single-process run.
"""
import importlib.util
import json
import os
import socket
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized

from attr_robust_tf import config_utils, data, distribute, experiment, objectives
from testing import TestCase

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OBJECTIVES = ("natural", "madry", "trades", "ig_norm", "ig_sum_norm", "art", "sarkar2021", "igr")
# SGD: the update is lr·gradient, so a weight difference measures a gradient difference (Adam's first step
# is lr·sign(g) and would hide it).
STEP = {"train.optimizer": "sgd", "lr": 0.05, "data.validation_limit": 0}


def tiny_config(objective, overrides=()):
    """configs/tiny.py:<objective> with dotted overrides (the CI config of every objective)."""
    spec = importlib.util.spec_from_file_location("config_tiny", os.path.join(REPO, "configs", "tiny.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return config_utils.override(module.get_config(objective), dict(overrides))


def shrink(objective):
    """One inner step and 2 IG points where the objective has them: a smaller graph to trace twice."""
    keys = config_utils.robust_keys(objective)
    return {f"robust.{k}": v for k, v in (("attack_steps", 1), ("ig_steps", 2), ("inner_ig_steps", 2))
            if k in keys}


def max_diff(a, b):
    return max(float(np.max(np.abs(p - q))) for p, q in zip(a, b))


def mirrored():
    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        pytest.skip("needs the 2 logical CPUs of tests/conftest.py")
    return tf.distribute.MirroredStrategy([d.name for d in devices[:2]])


class MirroredEquivalenceTest(TestCase):
    def _one_step(self, config, strategy, x, y):
        model = experiment.build_robust_model(config, strategy)
        before = [w.copy() for w in model.get_weights()]
        history = model.fit(x, y, batch_size=config.train.batch_size, epochs=1, shuffle=False, verbose=0)
        self.assertEqual(int(model.optimizer.iterations.numpy()), 1)  # exactly one step
        return before, model.get_weights(), history.history

    @parameterized.named_parameters(
        (f"{objective}_{reduction}", objective, reduction)
        for objective in OBJECTIVES for reduction in ("mean", "sum"))
    def test_one_step_matches_single_device(self, objective, reduction):
        config = tiny_config(objective, {**STEP, **shrink(objective), "robust.loss_reduction": reduction})
        self.assertEqual(config.train.batch_size, 8)  # 4 examples per replica
        x, y = data.synthetic(8, seed=3, as_arrays=True)
        strategy = mirrored()
        self.assertEqual(strategy.num_replicas_in_sync, 2)
        b1, w1, h1 = self._one_step(config, tf.distribute.get_strategy(), x, y)
        b2, w2, h2 = self._one_step(config, strategy, x, y)
        self.assertEqual(max_diff(b1, b2), 0.0)  # same seeded initialisation
        update = max_diff(w1, b1)
        self.assertGreater(update, 1e-3)  # the step moved the weights: the comparison can fail
        self.assertLess(max_diff(w1, w2), 1e-6, f"update size {update:.3g}")
        # logged values are global means/sums too (× replicas, SUM-synced trackers)
        self.assertEqual(sorted(h1), sorted(h2))
        expected = {"loss", "ce", "accuracy", *objectives.get(objective).regularizers}
        self.assertEqual(set(h1), expected)
        for key in h1:
            self.assertAllClose(h1[key], h2[key], rtol=1e-5, atol=1e-6, msg=key)

    def test_task_loss_scale_of_sum_reduction(self):
        # "sum": the logged task loss is the batch sum of CE, identical on 1 and 2 replicas (oracle: CE of
        # the untrained model computed directly).
        config = tiny_config("natural", {**STEP, "robust.loss_reduction": "sum"})
        x, y = data.synthetic(8, seed=4, as_arrays=True)
        base = experiment.build_model(config)
        ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")(y, base(x))
        for strategy in (tf.distribute.get_strategy(), mirrored()):
            _, _, history = self._one_step(config, strategy, x, y)
            self.assertAllClose(history["ce"][0], float(ce), rtol=1e-5)

    def test_global_batch_must_split_over_replicas(self):
        strategy = mirrored()
        self.assertEqual(distribute.check_global_batch(8, strategy), 4)
        with self.assertRaisesRegex(ValueError, r"`batch_size` must be divisible by the number of replicas "
                                                r"\(2\)\. Received: batch_size=7\. Use 6 or 8"):
            distribute.check_global_batch(7, strategy)
        config = tiny_config("natural", {"train.batch_size": 7})
        with self.assertRaisesRegex(ValueError, r"`train.batch_size` must be divisible by the number of "
                                                r"replicas \(2\)"):
            config_utils.validate(config, num_replicas=2)


# Runs in each worker process (and once without TF_CONFIG as the single-process reference).
WORKER = textwrap.dedent("""
    import json, sys
    import keras
    import numpy as np
    keras.config.disable_traceback_filtering()
    sys.path.insert(0, sys.argv[4])
    import test_distribute as t
    from attr_robust_tf import distribute, experiment

    config = t.tiny_config(sys.argv[1], json.loads(sys.argv[2]))
    strategy = distribute.make_strategy(sys.argv[3])
    model = experiment.build_robust_model(config, strategy)
    train, _, steps = experiment.build_datasets(config)
    history = model.fit(train, epochs=config.train.epochs, steps_per_epoch=steps, shuffle=False, verbose=0)
    np.savez(sys.argv[5], *model.get_weights(), replicas=strategy.num_replicas_in_sync,
             steps=int(model.optimizer.iterations.numpy()), history=json.dumps(history.history))
""")
MULTI_WORKER = {**STEP, "train.steps_per_epoch": 2, "train.epochs": 1}


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _load(path):
    with np.load(path) as f:
        weights = [f[f"arr_{i}"] for i in range(len(f.files) - 3)]
        return weights, int(f["replicas"]), int(f["steps"]), json.loads(str(f["history"]))


class MultiWorkerTest(TestCase):
    @pytest.fixture(autouse=True)
    def _inject(self, tmp_path):
        self.tmp = tmp_path

    def test_two_workers_equal_single_process(self):
        objective = "ig_norm"  # random inner start + double backprop: the sharding must match the noise rows
        script = self.tmp / "worker.py"
        script.write_text(WORKER)
        cluster = {"worker": [f"localhost:{p}" for p in _free_ports(2)]}
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
        procs = []
        for index in range(2):
            tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
            args = [sys.executable, str(script), objective, json.dumps(MULTI_WORKER), "multi_worker",
                    os.path.join(REPO, "tests"), str(self.tmp / f"worker{index}.npz")]
            procs.append(subprocess.Popen(args, env=dict(env, TF_CONFIG=tf_config), stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
        try:
            # the single-process reference, here while the workers run
            config = tiny_config(objective, MULTI_WORKER)
            model = experiment.build_robust_model(config, tf.distribute.get_strategy())
            train, _, steps = experiment.build_datasets(config)
            reference = model.fit(train, epochs=config.train.epochs, steps_per_epoch=steps, shuffle=False,
                                  verbose=0).history
            before = experiment.build_model(config).get_weights()
            outputs = [p.communicate(timeout=300) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        for p, (_, err) in zip(procs, outputs):
            self.assertEqual(p.returncode, 0, err[-4000:])
        w0, r0, s0, h0 = _load(self.tmp / "worker0.npz")
        w1, r1, s1, h1 = _load(self.tmp / "worker1.npz")
        self.assertEqual((r0, r1), (2, 2))  # one replica per worker, two in sync
        self.assertEqual((s0, s1), (2, 2))
        self.assertEqual(max_diff(w0, w1), 0.0)  # all-reduced updates: bit-identical replicas
        self.assertGreater(max_diff(model.model.get_weights(), before), 1e-3)  # two real SGD steps
        self.assertLess(max_diff(w0, model.get_weights()), 1e-6)
        for key in reference:
            self.assertAllClose(h0[key], reference[key], rtol=1e-5, atol=1e-6, msg=key)
