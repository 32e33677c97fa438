"""RobustModel: double-backprop gradients against finite differences, real-data training, determinism and
resume, Keras bookkeeping, tf.distribute equivalence and boundary errors."""
import gzip
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized

from attr_robust_tf import models
from attr_robust_tf.robust_model import RobustModel
import testing

FMNIST = "/usr/share/datasets/fashion-mnist"
TINY = dict(epsilon=0.1, step_size=0.04, attack_steps=2, ig_steps=3, inner_ig_steps=2)


def _ce(reduction="sum_over_batch_size"):
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction)


def _data(n=16, shape=(8, 8, 1), classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(size=(n,) + shape).astype("float32"), rng.integers(0, classes, n).astype("int32")


def _read_idx(path, limit):
    """The first `limit` records of a gzipped IDX file (big-endian header: magic, dims, sizes)."""
    with gzip.open(path) as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)[:limit]


def _build(objective="sarkar2021", init_seed=0, model=None, optimizer=None, **kwargs):
    keras.utils.set_random_seed(init_seed)
    robust = RobustModel(model or models.tiny_cnn(), objective, **{**TINY, **kwargs})
    robust.compile(optimizer or keras.optimizers.Adam(1e-2), _ce(), metrics=["accuracy"], jit_compile=False)
    return robust


def _max_diff(a, b):
    return max(float(np.max(np.abs(p - q))) for p, q in zip(a, b))


class GradientTest(testing.TestCase):
    """With CE weight 0 the update comes from the attribution terms alone (double backprop)."""

    def setUp(self):
        super().setUp()
        # keras caches the default dtype policy from floatx: save and restore both
        self._floatx, self._policy = keras.config.floatx(), keras.config.dtype_policy()
        keras.config.set_floatx("float64")
        keras.config.set_dtype_policy("float64")

    def tearDown(self):
        keras.config.set_floatx(self._floatx)
        keras.config.set_dtype_policy(self._policy)
        super().tearDown()

    @parameterized.parameters("sarkar2021", "ig_norm")
    def test_parameter_gradient_matches_central_differences(self, objective):
        x, y = _data(n=4, shape=(6, 6, 1))
        x = x.astype("float64")
        keras.utils.set_random_seed(1)
        model = models.tiny_cnn(input_shape=(6, 6, 1), dtype="float64")
        robust = RobustModel(model, objective, **TINY)
        # SGD(1) without momentum: θ_after = θ_before − ∇θL, so the applied update is the gradient
        robust.compile(keras.optimizers.SGD(1.0), _ce(), loss_weights=0.0)
        theta = [w.numpy() for w in model.trainable_variables]

        def loss_at(thetas):
            for w, t in zip(model.trainable_variables, thetas):
                w.assign(t)
            return robust.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)

        # central differences first: evaluate and the first train step share the random start (seed, 0)
        rng = np.random.default_rng(2)
        direction = [rng.normal(size=t.shape) for t in theta]
        h = 1e-6
        plus = loss_at([t + h * d for t, d in zip(theta, direction)])
        minus = loss_at([t - h * d for t, d in zip(theta, direction)])
        numeric = (plus["loss"] - minus["loss"]) / (2 * h)
        self.assertEqual(plus["ce"], 0.0)  # the task loss has weight 0
        loss_at(theta)
        robust.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
        grads = [b - a.numpy() for b, a in zip(theta, model.trainable_variables)]
        self.assertGreater(float(np.max(np.abs(grads[0]))), 1e-8)  # the first conv kernel is reached
        analytic = sum(float(np.sum(g * d)) for g, d in zip(grads, direction))
        self.assertAllClose(analytic, numeric, rtol=1e-5, atol=1e-10)
        self.assertGreater(abs(analytic), 1e-8)


class TrainingTest(testing.TestCase):
    @pytest.mark.skipif(not os.path.exists(os.path.join(FMNIST, "train-images-idx3-ubyte.gz")),
                        reason="Fashion-MNIST IDX files not installed "
                               "(apt-get install dataset-fashion-mnist)")
    def test_short_fashion_mnist_training(self):
        x = _read_idx(os.path.join(FMNIST, "train-images-idx3-ubyte.gz"), 192)
        x = x[..., None].astype("float32") / 255
        y = _read_idx(os.path.join(FMNIST, "train-labels-idx1-ubyte.gz"), 192).astype("int32")
        robust = _build("sarkar2021", model=models.cpu_cnn(), optimizer=keras.optimizers.Adam(2e-3),
                        epsilon=0.1, step_size=0.05, ig_steps=4)
        history = robust.fit(x, y, batch_size=32, epochs=3, verbose=0).history
        self.assertEqual(sorted(history), ["accuracy", "cacr", "ce", "loss", "wacr"])
        for values in history.values():
            self.assertTrue(np.all(np.isfinite(values)))
        self.assertLess(history["loss"][-1], 0.85 * history["loss"][0])
        self.assertGreater(min(history["wacr"]), 0.0)
        # the logged total is the task loss plus the weighted terms (equal batches: epoch means add up)
        for i in range(3):
            self.assertAllClose(history["loss"][i],
                                history["ce"][i] + 0.1 * (history["cacr"][i] + history["wacr"][i]), rtol=1e-4)

    def test_seeded_runs_are_identical(self):
        x, y = _data()
        weights = []
        for _ in range(2):
            robust = _build("trades")
            robust.fit(x, y, batch_size=8, epochs=2, verbose=0)
            weights.append(robust.get_weights())
        self.assertEqual(_max_diff(*weights), 0.0)
        other = _build("trades", seed=5)  # same initial weights, another attack seed
        other.fit(x, y, batch_size=8, epochs=2, verbose=0)
        self.assertGreater(_max_diff(weights[0], other.get_weights()), 0.0)

    @parameterized.parameters("ig_sum_norm", "trades")
    def test_resume_from_keras_file_repeats_the_uninterrupted_run(self, objective):
        # the attack seeds come from (seed, optimizer.iterations), both restored from the file; a weight
        # changed by a schedule is a saved variable
        x, y = _data()
        uninterrupted = _build(objective)
        name = uninterrupted.objective.regularizers[0]
        uninterrupted.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
        uninterrupted.regularizer_weights[name].assign(0.25)
        path = os.path.join(self.get_temp_dir(), "mid.keras")
        uninterrupted.save(path)
        uninterrupted.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
        resumed = keras.models.load_model(path)
        self.assertIsInstance(resumed, RobustModel)
        self.assertEqual(int(resumed.optimizer.iterations), 2)
        self.assertAllClose(resumed.regularizer_weights[name], 0.25)
        resumed.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
        self.assertEqual(_max_diff(resumed.get_weights(), uninterrupted.get_weights()), 0.0)
        self.assertEqual(_max_diff(resumed.optimizer.variables, uninterrupted.optimizer.variables), 0.0)

    def test_config_round_trip(self):
        robust = _build("ig_sum_norm", weights={"ig_norm": 0.3}, surrogate_beta=2.0, loss_reduction="mean",
                        seed=7, ig_batch_size=16)
        config = robust.get_config()
        self.assertEqual(config["objective"], "ig_sum_norm")
        self.assertEqual(config["weights"], {"ig_norm": pytest.approx(0.3)})
        self.assertEqual((config["surrogate_beta"], config["seed"], config["ig_batch_size"]), (2.0, 7, 16))
        clone = RobustModel.from_config(config)
        self.assertEqual(clone.model.name, robust.model.name)
        self.assertEqual(clone.model.count_params(), robust.model.count_params())
        self.assertEqual({k: v for k, v in clone.get_config().items() if k not in ("model", "name")},
                         {k: v for k, v in config.items() if k not in ("model", "name")})
        self.assertIsNotNone(clone.surrogate)
        self.assertEqual(clone.inner_attack.get_config(), robust.inner_attack.get_config())


class KerasBookkeepingTest(testing.TestCase):
    def test_zero_weight_equals_plain_fit(self):
        # the inner attack is a constant and the penalty has weight 0: the update is plain CE training
        x, y = _data()
        keras.utils.set_random_seed(0)
        plain = models.tiny_cnn()
        plain.compile(keras.optimizers.Adam(1e-2), _ce())
        plain.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
        robust = _build("ig_norm", weights={"ig_norm": 0.0})
        history = robust.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False).history
        self.assertAllClose(robust.model.get_weights(), plain.get_weights(), atol=1e-6)
        self.assertGreater(history["ig_norm"][0], 0.0)

    def test_metrics_listed_once_and_logged_per_term(self):
        x, y = _data()
        robust = _build("sarkar2021")
        history = robust.fit(x, y, batch_size=8, epochs=1, verbose=0, validation_data=(x, y)).history
        self.assertEqual(sorted(history), sorted(
            ["loss", "ce", "cacr", "wacr", "accuracy", "val_loss", "val_ce", "val_cacr", "val_wacr",
             "val_accuracy"]))
        names = robust.metrics_names
        self.assertEqual(len(names), len(set(names)))
        self.assertEqual(sorted(robust.regularizer_weights), ["cacr", "wacr"])
        self.assertTrue(all(not v.trainable for v in robust.regularizer_weights.values()))
        self.assertAllClose(robust.predict(x, verbose=0), robust.model(x))

    def test_weight_schedule_by_callback_reaches_the_traced_step(self):
        x, y = _data()
        robust = _build("ig_norm", weights={"ig_norm": 0.0})
        schedule = keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs: robust.regularizer_weights["ig_norm"].assign(float(epoch)))
        h = robust.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[schedule]).history
        for epoch in range(3):
            self.assertAllClose(h["loss"][epoch], h["ce"][epoch] + epoch * h["ig_norm"][epoch], rtol=1e-5)

    def test_run_eagerly_matches_graph(self):
        x, y = _data(n=8)
        results = []
        for eager in (False, True):
            robust = _build("ig_sum_norm", attack_steps=1)
            robust.compile(keras.optimizers.Adam(1e-2), _ce(), run_eagerly=eager)
            robust.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
            results.append(robust.get_weights())
        self.assertLess(_max_diff(*results), 1e-5)

    @pytest.mark.slow
    def test_jit_compile_matches_no_jit(self):
        # XLA is opt-in (slower on CPU); the double-backprop step compiles and gives the same update
        # (x′ = x: XLA's stateless generator draws other random starts, and sign steps flip on round-off)
        x, y = _data(n=8)
        results = []
        for jit in (False, True):
            robust = _build("sarkar2021", attack_steps=0, random_start=False)
            before = robust.get_weights()
            robust.compile(keras.optimizers.SGD(0.1), _ce(), jit_compile=jit)
            robust.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
            results.append(robust.get_weights())
        update = _max_diff(before, results[0])
        self.assertGreater(update, 1e-4)
        self.assertLess(_max_diff(*results), 1e-3 * update)

    def test_wraps_sequential_and_subclassed_models(self):
        x, y = _data(n=8)

        class Net(keras.Model):
            def __init__(self):
                super().__init__()
                self.flat = keras.layers.Flatten()
                self.dense = keras.layers.Dense(3)

            def call(self, inputs):
                return self.dense(self.flat(inputs))

        net = Net()
        net(x[:1])
        seq = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3, activation="relu"),
                                keras.layers.Flatten(), keras.layers.Dense(3)])
        for model in (net, seq):
            robust = _build("ig_norm", model=model, attack_steps=1)
            h = robust.fit(x, y, batch_size=8, epochs=1, verbose=0).history
            self.assertTrue(np.isfinite(h["loss"][0]))
        with self.assertRaisesRegex(ValueError, "subclassed model.*surrogate_beta=0"):
            RobustModel(net, "art")
        RobustModel(net, "art", surrogate_beta=0)  # the network itself

    def test_sample_weight_weights_each_term(self):
        x, y = _data(n=8)
        robust = _build("trades")
        w = np.array([1, 0, 2, 0, 1, 1, 0, 3], "float32")
        got = robust.evaluate(x, y, sample_weight=w, batch_size=8, verbose=0, return_dict=True)
        per_example = robust.regularizers["trades_kl"](
            robust.model, tf.constant(x), y,
            adv_images=robust.inner_attack(robust.model, x, y, seed=tf.constant([0, 0], tf.int64)))
        self.assertAllClose(got["trades_kl"], np.sum(w * per_example) / np.sum(w), rtol=1e-5)
        # "mean": Σ w·v / N (tf.nn.compute_average_loss), like Keras' sum_over_batch_size task loss
        ce = got["ce"]
        self.assertAllClose(got["loss"], ce + np.sum(w * per_example) / 8, rtol=1e-5)


class DistributeTest(testing.TestCase):
    @parameterized.parameters(("madry", "mean"), ("ig_norm", "sum"))
    def test_mirrored_two_replicas_equals_single_device(self, objective, reduction):
        devices = tf.config.list_logical_devices("CPU")
        if len(devices) < 2:
            self.skipTest("needs 2 logical CPUs (tests/conftest.py)")
        x, y = _data(n=16)
        results = []
        for strategy in (tf.distribute.get_strategy(), tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])):
            with strategy.scope():
                keras.utils.set_random_seed(0)
                robust = RobustModel(models.tiny_cnn(), objective, loss_reduction=reduction, **TINY)
                robust.compile(keras.optimizers.SGD(0.05), _ce("sum" if reduction == "sum" else
                                                              "sum_over_batch_size"))
            h = robust.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False).history
            results.append((robust.get_weights(), h))
        (w1, h1), (w2, h2) = results
        self.assertLess(_max_diff(w1, w2), 1e-5)
        for key in h1:
            self.assertAllClose(h1[key], h2[key], rtol=1e-4)


class BadInputTest(testing.TestCase):
    def test_constructor_errors(self):
        model = models.tiny_cnn()
        with self.assertRaisesRegex(ValueError, "Unknown objective 'sarkar'. Did you mean 'sarkar2021'"):
            RobustModel(model, "sarkar")
        with self.assertRaisesRegex(ValueError, r"`weights\['cacr'\]` must be a finite number >= 0. "
                                                r"Received: weights\['cacr'\]=-0.1"):
            RobustModel(model, "sarkar2021", weights={"cacr": -0.1})
        with self.assertRaisesRegex(ValueError, "Unknown weight name.*'cacrr'. Did you mean 'cacr'"):
            RobustModel(model, "sarkar2021", weights={"cacrr": 0.1})
        for eps in (0.0, -0.1):
            with self.assertRaisesRegex(ValueError,
                                        f"`epsilon` must be a finite number > 0. Received: epsilon={eps}"):
                RobustModel(model, "madry", epsilon=eps)
        RobustModel(model, "natural", epsilon=0.0)  # no inner attack: ε is unused
        with self.assertRaisesRegex(ValueError, "Unknown loss_reduction 'avg'"):
            RobustModel(model, "natural", loss_reduction="avg")
        with self.assertRaisesRegex(ValueError, "`attack_steps` must be an integer >= 0"):
            RobustModel(model, "madry", attack_steps=1.5)
        with self.assertRaisesRegex(ValueError, "Unknown method 'riemann'. Did you mean 'riemann_left'"):
            RobustModel(model, "natural", ig_method="riemann")
        with self.assertRaisesRegex(ValueError, "`surrogate_beta` must be a finite number > 0"):
            RobustModel(model, "madry", surrogate_beta=-1.0)

    def test_model_without_rank2_logits(self):
        inp = keras.Input((8, 8, 1))
        maps = keras.Model(inp, keras.layers.Conv2D(3, 3)(inp))
        with self.assertRaisesRegex(ValueError, r"`model` must return logits of shape \(N, num_classes\). "
                                                r"Received: .*\(1, 6, 6, 3\)"):
            RobustModel(maps, "natural")
        pair = keras.Model(inp, [keras.layers.Dense(3)(keras.layers.Flatten()(inp))] * 2)
        with self.assertRaisesRegex(ValueError, "must return logits of shape"):
            RobustModel(pair, "natural")
        one = keras.Model(inp, keras.layers.Dense(1)(keras.layers.Flatten()(inp)))
        with self.assertRaisesRegex(ValueError, "at least 2 classes"):
            RobustModel(one, "natural")

        class Unbuilt(keras.Model):
            def call(self, inputs):
                return inputs

        with self.assertRaisesRegex(ValueError, "must be a built Keras model"):
            RobustModel(Unbuilt(), "natural")

    def test_compile_errors(self):
        x, y = _data(n=8)
        robust = _build("natural")
        robust.compile("adam", "sparse_categorical_crossentropy")
        with self.assertRaisesRegex(ValueError, "`loss` must take logits"):
            robust.fit(x, y, verbose=0)
        robust = _build("natural", loss_reduction="sum")
        with self.assertRaisesRegex(ValueError, "loss_reduction='sum'.*reduction='sum_over_batch_size'"):
            robust.fit(x, y, verbose=0)
        with self.assertRaisesRegex(ValueError, r"`y` must be integer class indices of shape \(N,\)"):
            _build("natural").fit(x, keras.utils.to_categorical(y, 3), verbose=0)

    def test_labels_out_of_range_fail_before_any_update(self):
        x, y = _data(n=8)
        robust = _build("ig_norm")
        before = robust.get_weights()
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                    r"`y` \(labels\) must hold class indices in \[0, 2\]"):
            robust.fit(x, np.where(np.arange(8) == 3, 7, y), batch_size=8, verbose=0)
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "negative label"):
            robust.fit(x, np.where(np.arange(8) == 3, -1, y), batch_size=8, verbose=0)
        self.assertEqual(_max_diff(before, robust.get_weights()), 0.0)

    def test_nan_batch_fails_before_the_update_and_keeps_the_checkpoint(self):
        x, y = _data(n=16)
        robust = _build("ig_norm", attack_steps=1)
        path = os.path.join(self.get_temp_dir(), "ckpt.keras")
        checkpoint = keras.callbacks.ModelCheckpoint(path)
        robust.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[checkpoint])
        saved = os.path.getmtime(path), robust.get_weights()
        bad = x.copy()
        bad[2, 3, 3, 0] = np.nan
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "The input batch `x` must be finite"):
            robust.fit(bad, y, batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=[checkpoint])
        self.assertEqual(_max_diff(saved[1], robust.get_weights()), 0.0)  # the NaN batch was the first
        self.assertEqual(os.path.getmtime(path), saved[0])
        reloaded = keras.models.load_model(path)
        self.assertEqual(_max_diff(reloaded.get_weights(), saved[1]), 0.0)
        self.assertEqual(sorted(os.listdir(self.get_temp_dir())), ["ckpt.keras"])
