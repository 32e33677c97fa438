"""diagnostics.py: per-term gradient norms against a NumPy closed form and against separate tapes per term; the
callback changes no weight and its values reach History and metrics.csv."""
import csv

import keras
import numpy as np
import pytest
import tensorflow as tf

from attr_robust_tf import config_utils, diagnostics, experiment, models
from attr_robust_tf.data import cache
from attr_robust_tf.robust_model import RobustModel
import testing

TINY = dict(epsilon=0.1, step_size=0.04, attack_steps=2, ig_steps=3, inner_ig_steps=2)


@pytest.fixture
def deterministic():
    """No Grappler rewrites (they reorder float sums between traces), restored afterwards."""
    before = tf.config.optimizer.get_experimental_options()
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    yield
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": False, **before})


def _data(n=16, shape=(8, 8, 1), classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(size=(n,) + shape).astype("float32"), rng.integers(0, classes, n).astype("int32")


def _build(objective, model=None, init_seed=0, **kwargs):
    keras.utils.set_random_seed(init_seed)
    robust = RobustModel(model or models.tiny_cnn(), objective, **{**TINY, **kwargs})
    robust.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   jit_compile=False)
    return robust


def _norm_dot(grads, ref):
    g = np.concatenate([np.ravel(v) for v in grads]).astype(np.float64)
    r = np.concatenate([np.ravel(v) for v in ref]).astype(np.float64)
    return np.linalg.norm(g), g @ r


class InfluenceTest(testing.TestCase):
    def test_task_norm_matches_numpy_closed_form(self):
        # linear softmax model, mean CE with sample weights: ∇W = Xᵀ(w ⊙ (P − Y)) / N, ∇b = Σ w ⊙ (P − Y) / N
        rng = np.random.default_rng(1)
        w, b = rng.normal(size=(8, 3)), rng.normal(size=3)
        robust = _build("natural", model=testing.linear_model(w, b, input_shape=(2, 4, 1)))
        x = rng.uniform(size=(5, 2, 4, 1)).astype("float32")
        y = np.array([0, 2, 1, 1, 0], "int32")
        sw = np.array([1.0, 0.5, 2.0, 1.0, 0.0], "float32")
        got = diagnostics.regularizer_influence(robust, (x, y, sw))
        flat = x.reshape(5, -1).astype(np.float64)
        logits = flat @ w + b
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        d = sw[:, None] * (p - np.eye(3)[y]) / 5
        expected = np.sqrt(np.sum((flat.T @ d) ** 2) + np.sum(d.sum(0) ** 2))
        self.assertEqual(list(got), ["task"])
        self.assertAllClose(got["task"]["norm"], expected, rtol=1e-5)
        self.assertEqual((got["task"]["ratio"], round(got["task"]["cosine"], 12)), (1.0, 1.0))

    def test_terms_match_separate_tapes(self):
        self._check_terms("sarkar2021_scaled")

    @pytest.mark.slow
    def test_terms_match_separate_tapes_tied_weight(self):
        self._check_terms("ig_sum_norm")  # the inner IG term reads the ig_norm weight variable

    def _check_terms(self, objective):
        # the oracle recomputes x′ (same seed), each weighted term and the task loss on its own tape
        x, y = _data(n=6)
        robust = _build(objective, weights={"cacr": 0.3} if objective == "sarkar2021_scaled" else None)
        robust.optimizer.iterations.assign(3)  # the seed of step 3
        got = diagnostics.regularizer_influence(robust, (x, y))
        self.assertEqual(list(got), ["task"] + list(robust.regularizers))
        model, labels = robust.model, tf.constant(y)
        # a tied inner weight is the regularizer's own variable inside the attack
        adv = robust.inner_attack(model, tf.constant(x), labels, seed=tf.constant([0, 3], tf.int64))
        variables = model.trainable_variables
        with tf.GradientTape() as tape:
            ce = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, model(adv)))
        task = tape.gradient(ce, variables)
        task_norm, _ = _norm_dot(task, task)
        self.assertAllClose(got["task"]["norm"], task_norm, rtol=1e-5)
        for name, reg in robust.regularizers.items():
            weight = float(robust.regularizer_weights[name].numpy())
            with tf.GradientTape() as tape:
                value = weight * tf.reduce_sum(reg(model, tf.constant(x), labels, adv_images=adv)) / len(y)
            grads = [np.zeros(v.shape) if g is None else g for g, v in zip(tape.gradient(value, variables),
                                                                              variables)]
            norm, dot = _norm_dot(grads, task)
            self.assertGreater(norm, 0)
            self.assertAllClose(got[name]["norm"], norm, rtol=1e-4)
            self.assertAllClose(got[name]["ratio"], norm / task_norm, rtol=1e-4)
            self.assertAllClose(got[name]["cosine"], dot / (norm * task_norm), atol=1e-4)

    def test_zero_weight_reports_zero(self):
        x, y = _data(n=4)
        got = diagnostics.regularizer_influence(_build("sarkar2021", weights={"cacr": 0.0}), (x, y))
        self.assertEqual(got["cacr"], {"norm": 0.0, "ratio": 0.0, "cosine": 0.0})
        self.assertGreater(got["wacr"]["norm"], 0.0)

    def test_bad_input(self):
        x, y = _data(n=4)
        robust = _build("sarkar2021")
        with self.assertRaisesRegex(ValueError, r"`batch` must be a tuple \(images, labels\).*Received: ndarray"):
            diagnostics.regularizer_influence(robust, x)
        with self.assertRaisesRegex(TypeError, "`robust_model` must be a RobustModel. Received: Functional"):
            diagnostics.regularizer_influence(robust.model, (x, y))
        with self.assertRaisesRegex(ValueError, "`every_n_steps` must be a positive integer. Received: "
                                                "every_n_steps=0"):
            diagnostics.RegularizerInfluence((x, y), every_n_steps=0)


@pytest.mark.parametrize("objective, terms", [
    ("trades", ("trades_kl",)), pytest.param("sarkar2021_scaled", ("cacr", "wacr"), marks=pytest.mark.slow)])
def test_callback_changes_no_weight_and_logs_the_last_record(deterministic, objective, terms):
    x, y = _data(n=16)
    batch = (x[:8], y[:8])
    runs = []
    for with_callback in (False, True):
        robust = _build(objective)
        callbacks = [diagnostics.RegularizerInfluence(batch, every_n_steps=4)] if with_callback else []
        history = robust.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0, callbacks=callbacks)
        runs.append((robust, history.history))
    (plain, _), (watched, logs) = runs
    assert all(np.array_equal(a, b) for a, b in zip(plain.get_weights(), watched.get_weights()))
    for key in ["influence/task_norm"] + [f"influence/{t}{s}" for t in terms for s in ("", "_cosine")]:
        assert len(logs[key]) == 2 and all(np.isfinite(logs[key]))
    # 4 steps per epoch, a record every 4: the second epoch logs the record of the final weights and step
    final = diagnostics.regularizer_influence(watched, batch)
    np.testing.assert_allclose(logs["influence/task_norm"][1], final["task"]["norm"], rtol=1e-4)
    for name in terms:
        np.testing.assert_allclose(logs[f"influence/{name}"][1], final[name]["ratio"], rtol=1e-4)
        np.testing.assert_allclose(logs[f"influence/{name}_cosine"][1], final[name]["cosine"], atol=1e-4)
    assert logs[f"influence/{terms[0]}"][0] != logs[f"influence/{terms[0]}"][1]


@pytest.mark.slow
def test_run_train_writes_influence_to_metrics_csv(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV_CACHE, str(tmp_path / "cache"))
    from attr_robust_tf import configs

    c = config_utils.override(configs.get("fmnist", "sarkar2021_scaled", "tiny"),
                              {"train.influence_every": 4, "train.epochs": 1, "data.num_examples": 32})
    model = experiment.run_train(c, str(tmp_path / "w"), verbose=0)
    with open(tmp_path / "w" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and {"influence/cacr", "influence/wacr", "influence/task_norm"} <= set(rows[0])
    assert float(rows[0]["influence/cacr"]) == model.history.history["influence/cacr"][0] > 0
    with pytest.raises(ValueError, match="`train.influence_every` must be an integer >= 0"):
        config_utils.validate(config_utils.override(c, {"train.influence_every": -1}))
