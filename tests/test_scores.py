"""Scores (the attributed scalar) against SciPy, Keras losses and closed-form gradients."""
import keras
import numpy as np
import tensorflow as tf
from scipy import special

from attr_robust_tf import integrated_gradients, scores
from testing import TestCase, linear_model


def _logits(n=6, k=5, seed=0):
    return np.random.default_rng(seed).normal(scale=3.0, size=(n, k))


class ScoreValuesTest(TestCase):
    def setUp(self):
        super().setUp()
        self.z = _logits()
        self.t = np.array([0, 1, 2, 3, 4, 0], "int32")
        self.idx = np.arange(6)

    def test_against_scipy(self):
        p = special.softmax(self.z, axis=1)
        expected = {
            "logit": self.z[self.idx, self.t],
            "probability": p[self.idx, self.t],
            "log_probability": special.log_softmax(self.z, axis=1)[self.idx, self.t],
            "cross_entropy": -special.log_softmax(self.z, axis=1)[self.idx, self.t],
        }
        for name, value in expected.items():
            self.assertAllClose(scores.get(name)(self.z, self.t), value, rtol=1e-10, msg=name)

    def test_cross_entropy_equals_keras_loss_and_is_stable(self):
        keras_ce = keras.losses.sparse_categorical_crossentropy(self.t, self.z, from_logits=True)
        self.assertAllClose(scores.cross_entropy(self.z, self.t), keras_ce, rtol=1e-6)
        huge = np.array([[1000.0, -1000.0]])
        self.assertAllClose(scores.cross_entropy(huge, [1]), [2000.0])  # a clipped log would give 23.03

    def test_strongest_other_against_loop(self):
        p = special.softmax(self.z, axis=1)
        other_p, other_z = [], []
        for n, y in enumerate(self.t):
            others = [c for c in range(5) if c != y]
            other_p.append(max(p[n, c] for c in others))
            other_z.append(max(self.z[n, c] for c in others))
        self.assertAllClose(scores.strongest_other_probability(self.z, self.t), other_p, rtol=1e-10)
        self.assertAllClose(scores.strongest_other_logit(self.z, self.t), other_z, rtol=1e-10)

    def test_strongest_other_when_target_is_the_maximum(self):
        z = np.array([[5.0, 1.0, 2.0]])
        self.assertAllClose(scores.strongest_other_logit(z, [0]), [2.0])
        self.assertAllClose(scores.strongest_other_probability(z, [0]), special.softmax(z, axis=1)[:, 2])


class ScoreGradientTest(TestCase):
    """The strongest-other scores are piecewise: the gradient flows only through the selected class."""

    def _grad(self, fn, z, t):
        z = tf.constant(z)
        with tf.GradientTape() as tape:
            tape.watch(z)
            s = tf.reduce_sum(fn(z, t))
        return tape.gradient(s, z).numpy()

    def test_strongest_other_logit_gradient_is_one_hot(self):
        z, t = _logits(seed=1), np.array([0, 1, 2, 3, 4, 1])
        masked = np.where(np.eye(5, dtype=bool)[t], -np.inf, z)
        expected = np.eye(5)[masked.argmax(axis=1)]
        self.assertAllEqual(self._grad(scores.strongest_other_logit, z, t), expected)

    def test_strongest_other_probability_gradient(self):
        # ∂p_n/∂z = p_n (e_n − p) for the selected n only
        z, t = _logits(seed=2), np.array([4, 3, 2, 1, 0, 0])
        p = special.softmax(z, axis=1)
        n = np.where(np.eye(5, dtype=bool)[t], -1.0, p).argmax(axis=1)
        expected = p[np.arange(6), n][:, None] * (np.eye(5)[n] - p)
        self.assertAllClose(self._grad(scores.strongest_other_probability, z, t), expected, rtol=1e-10)

    def test_probability_gradient(self):
        z, t = _logits(seed=3), np.array([0, 1, 2, 3, 4, 2])
        p = special.softmax(z, axis=1)
        py = p[np.arange(6), t][:, None]
        self.assertAllClose(self._grad(scores.probability, z, t), py * (np.eye(5)[t] - p), rtol=1e-10)


class StrongestOtherAlongPathTest(TestCase):
    """IG of p_n with n = argmax_{c≠y} p_c(z) re-chosen at every path point (Sarkar et al. 2021 A_N)."""

    def test_reselected_at_every_path_point(self):
        # Linear softmax model, 3 classes, target 0. Class 1 wins near the baseline (bias), class 2 near
        # x (weights), so the strongest other class switches along the path.
        d = 4
        w = np.zeros((d, 3))
        w[:, 2] = 3.0
        w[:, 0] = 0.5
        b = np.array([0.0, 2.0, 0.0])
        model = linear_model(w, b, input_shape=(2, 2, 1), dtype="float64")
        x = np.full((1, 2, 2, 1), 0.8)
        steps = 20
        alphas, weights = np.arange(1, steps + 1) / steps, np.full(steps, 1.0 / steps)

        def oracle(reselect):
            grad = np.zeros(d)
            chosen = []
            fixed = None
            for a, wt in zip(alphas, weights):
                z = (a * x.reshape(-1)) @ w + b
                p = special.softmax(z)
                n = int(np.argmax(np.where(np.arange(3) == 0, -1.0, p)))
                if not reselect:
                    fixed = n if fixed is None else fixed
                    n = fixed
                chosen.append(n)
                grad += wt * (w @ (p[n] * (np.eye(3)[n] - p)))  # ∇ₓ p_n = W (p_n (e_n − p))
            return (x.reshape(-1) * grad).reshape(x.shape), set(chosen)

        expected, chosen = oracle(reselect=True)
        self.assertEqual(chosen, {1, 2})  # the selection really switches on this path
        ig = integrated_gradients(model, x, np.array([0]), steps=steps, score="strongest_other_probability")
        self.assertAllClose(ig, expected, rtol=1e-10)
        fixed, _ = oracle(reselect=False)
        self.assertGreater(np.abs(fixed - expected).max(), 1e-3)  # a fixed class would be wrong


class GetTest(TestCase):
    def test_names_and_callables(self):
        for name, fn in scores.SCORES.items():
            self.assertIs(scores.get(name), fn)
        custom = lambda logits, target: logits[:, 0]  # noqa: E731
        self.assertIs(scores.get(custom), custom)

    def test_unknown_name(self):
        with self.assertRaisesRegex(ValueError, r"Unknown score 'log_probabilty'. Did you mean "
                                                r"'log_probability'\? Available: cross_entropy, log_probability"):
            scores.get("log_probabilty")
        with self.assertRaisesRegex(ValueError, r"Unknown score 3. Available:"):
            scores.get(3)
