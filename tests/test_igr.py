"""IGR (Wang & Kong 2022): the penalty 1 − cos(IG(x), IG(x′)) against float64 NumPy references, its parameter
gradient against central finite differences, and the `igr` row through RobustModel (config, .keras, fit)."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from attr_robust_tf import config_utils, models, objectives, penalties, regularizers
from attr_robust_tf.robust_model import RobustModel
import testing

SHAPE = (4, 3, 2)
D, K = int(np.prod(SHAPE)), 3


def _batch(n=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n,) + SHAPE)
    adv = np.clip(x + rng.uniform(-0.2, 0.2, x.shape), 0, 1)
    return x, rng.integers(0, K, n).astype("int32"), adv


def _linear(seed=1):
    rng = np.random.default_rng(seed)
    w, b = rng.normal(size=(D, K)), rng.normal(size=K)
    return testing.linear_model(w, b, SHAPE, dtype="float64"), w, b


def _cos_penalty(a, b):
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return 1.0 - np.sum(a * b, 1) / np.sqrt(np.sum(a * a, 1) * np.sum(b * b, 1))


def _softmax(f):
    e = np.exp(f - f.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _ig_numpy(x, y, w, b, score, nodes=200):
    """Zero-baseline IG of a linear model, ∫₀¹ by a 200-node Gauss–Legendre rule (independent of the package)."""
    t, wt = np.polynomial.legendre.leggauss(nodes)
    alphas, weights = (t + 1) / 2, wt / 2
    out = np.zeros((len(x), D))
    for i, (xi, yi) in enumerate(zip(x.reshape(len(x), D), y)):
        e_y = np.eye(K)[yi]
        for a, wa in zip(alphas, weights):
            p = _softmax((a * xi) @ w + b)
            g = {"probability": w @ (p[yi] * (e_y - p)), "cross_entropy": w @ (p - e_y),
                 "log_probability": w @ (e_y - p)}[score]
            out[i] += wa * g
        out[i] *= xi
    return out


class PenaltyTest(testing.TestCase):
    def test_linear_logit_closed_form(self):
        # IG of logit y from 0 is exactly x ⊙ w[:, y]: the penalty is 1 − cos(x ⊙ w_y, x′ ⊙ w_y)
        model, w, _ = _linear()
        x, y, adv = _batch()
        got = penalties.IGRCosine(steps=3)(model, tf.constant(x), tf.constant(y), adv_images=tf.constant(adv)).numpy()
        wy = w[:, y].T  # (N, D)
        want = _cos_penalty(x.reshape(len(x), D) * wy, adv.reshape(len(x), D) * wy)
        self.assertEqual(got.shape, (len(x),))
        self.assertAllClose(got, want, rtol=1e-12, atol=1e-12)
        self.assertGreater(want.min(), 1e-4)  # the batch exercises non-trivial penalties

    def test_probability_and_loss_scores_match_quadrature(self):
        model, w, b = _linear(seed=2)
        x, y, adv = _batch(seed=3)
        for score in ("probability", "cross_entropy", "log_probability"):
            reg = penalties.IGRCosine(steps=24, method="gausslegendre", score=score)
            got = reg(model, tf.constant(x), tf.constant(y), adv_images=tf.constant(adv)).numpy()
            want = _cos_penalty(_ig_numpy(x, y, w, b, score), _ig_numpy(adv, y, w, b, score))
            self.assertAllClose(got, want, rtol=1e-9, atol=1e-10, msg=score)

    def test_direction_not_norm(self):
        # linear logit: IG(c·x) = c·IG(x), so a rescaled input costs nothing (c > 0) or the maximum 2 (c < 0);
        # an ℓ1 penalty such as IG-NORM would charge |c − 1|·‖IG(x)‖₁ instead
        model, _, _ = _linear()
        x, y, _ = _batch()
        reg = penalties.IGRCosine(steps=2)
        for c, want in ((1.0, 0.0), (2.5, 0.0), (-1.0, 2.0)):
            got = reg(model, tf.constant(x), tf.constant(y), adv_images=tf.constant(c * x)).numpy()
            self.assertAllClose(got, np.full(len(x), want), atol=1e-12, msg=c)

    def test_zero_maps_stay_finite(self):
        model, _, _ = _linear()
        x, y, _ = _batch(n=2)
        zeros = tf.zeros((2,) + SHAPE, tf.float64)
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(penalties.IGRCosine(steps=2)(model, zeros, tf.constant(y), adv_images=tf.constant(x)))
        self.assertAllClose(value, 2.0)  # cos(0, ·) = 0 by the eps of `regularizers.cosine`
        grads = tape.gradient(value, model.trainable_variables)
        self.assertTrue(all(np.all(np.isfinite(g)) for g in grads if g is not None))

    def test_parameter_gradient_matches_finite_differences(self):
        model = testing.softplus_mlp(SHAPE, hidden=6, classes=K, seed=4, dtype="float64")
        x, y, adv = (tf.constant(v) for v in _batch(seed=5))
        reg = regularizers.build("igr", steps=4)
        weights = model.trainable_variables
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(reg(model, x, y, adv_images=adv))
        grads = tape.gradient(value, weights)
        self.assertIsNone(grads[-1])  # the output bias leaves every logit gradient unchanged
        self.assertGreater(float(tf.reduce_max(tf.abs(grads[0]))), 1e-6)  # double backprop reaches layer 1
        rng = np.random.default_rng(6)
        direction = [rng.normal(size=v.shape) for v in weights]
        analytic = sum(float(tf.reduce_sum(g * d)) for g, d in zip(grads, direction) if g is not None)
        base = [v.numpy() for v in weights]
        h, values = 1e-6, []
        for sign in (1, -1):
            for v, b, d in zip(weights, base, direction):
                v.assign(b + sign * h * d)
            values.append(float(tf.reduce_sum(reg(model, x, y, adv_images=adv))))
        for v, b in zip(weights, base):
            v.assign(b)
        self.assertAllClose(analytic, (values[0] - values[1]) / (2 * h), rtol=1e-5, atol=1e-9)

    def test_registry_config_and_errors(self):
        reg = regularizers.build("igr", steps=6, method="riemann_middle", weight=0.5)
        self.assertIsInstance(reg, penalties.IGRCosine)
        config = reg.get_config()
        self.assertEqual(config, {"weight": 0.5, "name": "igr", "steps": 6, "method": "riemann_middle",
                                  "batch_size": None, "score": "logit"})
        self.assertEqual(penalties.IGRCosine.from_config(config).get_config(), config)
        self.assertIs(keras.saving.get_registered_object("attr_robust_tf>IGRCosine"), penalties.IGRCosine)
        model, _, _ = _linear()
        x, y, _ = _batch(n=2)
        with self.assertRaisesRegex(ValueError, "`adv_images` must be given"):
            reg(model, tf.constant(x), tf.constant(y))
        with self.assertRaisesRegex(ValueError, "logitt"):
            penalties.IGRCosine(score="logitt")


class ObjectiveRowTest(testing.TestCase):
    def test_row_and_config_knobs(self):
        row = objectives.get("igr")
        self.assertEqual((row.task_input, row.regularizers, dict(row.weights)), ("adv", ("igr",), {"igr": 1.0}))
        # the IG-SUM-NORM inner objective CE + β‖IG^ℓ(x, x′)‖₁ (docs/igr.md)
        self.assertEqual(dict(row.inner), {"cross_entropy": 1.0, "ig_norm": 0.1})
        self.assertIn("inner_weight", config_utils.robust_keys("igr"))
        from attr_robust_tf.reproduction import OBJECTIVES
        self.assertIn("igr", OBJECTIVES)  # joins --objectives=all

    def test_robust_model_round_trip_save_load_and_fit(self):
        rng = np.random.default_rng(0)
        x, y = rng.uniform(size=(8, 8, 8, 1)).astype("float32"), rng.integers(0, 3, 8).astype("int32")
        keras.utils.set_random_seed(0)
        robust = RobustModel(models.tiny_cnn(), "igr", weights={"igr": 0.7}, epsilon=0.1, step_size=0.05,
                             attack_steps=1, ig_steps=2, inner_ig_steps=2)
        robust.compile(keras.optimizers.Adam(1e-2),
                       keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=False)
        before = [w.copy() for w in robust.get_weights()]
        history = robust.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
        self.assertIn("igr", history.history)
        self.assertTrue(0.0 <= history.history["igr"][0] <= 2.0)
        self.assertGreater(max(float(np.max(np.abs(a - b))) for a, b in zip(before, robust.get_weights())), 0.0)
        config = robust.get_config()
        self.assertEqual(config["objective"], "igr")
        self.assertEqual(config["weights"], {"igr": pytest.approx(0.7)})
        clone = RobustModel.from_config(config)
        self.assertEqual(clone.objective.name, "igr")
        self.assertEqual(clone.inner_attack.get_config(), robust.inner_attack.get_config())
        path = os.path.join(self.get_temp_dir(), "igr.keras")
        robust.save(path)
        loaded = keras.models.load_model(path)
        self.assertIsInstance(loaded, RobustModel)
        self.assertEqual(loaded.objective.name, "igr")
        self.assertAllClose(loaded.regularizer_weights["igr"], 0.7)
        self.assertAllClose(loaded.model.predict(x, verbose=0), robust.model.predict(x, verbose=0))


class InnerTermTest(testing.TestCase):
    def test_term_equals_the_penalty_and_the_ascent_raises_it(self):
        from attr_robust_tf.attacks import InnerAttack
        from attr_robust_tf.attacks import inner as inner_lib
        self.assertIn("igr", inner_lib.TERMS)
        model = testing.softplus_mlp(SHAPE, hidden=6, classes=K, seed=7, dtype="float64")
        x, y, adv = (tf.constant(v) for v in _batch(seed=8))
        attack = InnerAttack({"igr": 1.0}, epsilon=0.2, step_size=0.05, steps=6, start="none", ig_steps=4)
        term = attack.objective(model, adv, x, y)
        want = penalties.IGRCosine(steps=4)(model, x, y, adv_images=adv)
        self.assertAllClose(term, want, rtol=1e-12, atol=1e-12)
        # from x′ = x (penalty 0) six sign steps on J = 1 − cos raise the mean penalty
        found = attack(model, x, y)
        self.assertLessEqual(float(tf.reduce_max(tf.abs(found - x))), 0.2 + 1e-12)
        penalty = penalties.IGRCosine(steps=4)(model, x, y, adv_images=found).numpy()
        self.assertGreater(penalty.mean(), 1e-3)
        noise = np.clip(x.numpy() + np.random.default_rng(9).choice([-0.2, 0.2], x.shape), 0, 1)
        random = penalties.IGRCosine(steps=4)(model, x, y, adv_images=tf.constant(noise)).numpy()
        self.assertGreater(penalty.mean(), random.mean())  # stronger than a random corner of the ball
