"""Attributions against independent oracles: closed forms, quadrature identities, tf-explain, finite differences."""
import contextlib
import gc
import weakref

import keras
import numpy as np
import pytest
import tensorflow as tf

from attr_robust_tf import attributions, errors, path_chunks
from attr_robust_tf.attributions import (
    input_x_gradient,
    integrated_gradients,
    saliency,
    saliency_map,
    smoothgrad,
)
from testing import TestCase, linear_model, quadratic_model, small_cnn, softplus_mlp

METHODS = attributions.METHODS
SHAPE = (4, 4, 1)
P = 16


def _rng(seed=0):
    return np.random.default_rng(seed)


def _images(n, shape=SHAPE, seed=0, dtype="float32"):
    return _rng(seed).uniform(0.0, 1.0, (n,) + tuple(shape)).astype(dtype)


def _sums(t):
    return np.asarray(t).reshape(len(t), -1).sum(axis=1)


# --------------------------------------------------------------------------------------------
# Quadrature rules
# --------------------------------------------------------------------------------------------

class QuadratureTest(TestCase):
    def test_weights_sum_to_one_and_nodes_in_unit_interval(self):
        for method in METHODS:
            for steps in (2, 3, 10, 50):
                nodes, weights = attributions.quadrature(method, steps)
                self.assertLen(nodes, steps)
                self.assertAllClose(weights.sum(), 1.0, atol=1e-12)
                self.assertTrue(np.all((nodes >= 0) & (nodes <= 1)), method)

    def test_rules_integrate_monomials_as_their_order_predicts(self):
        # ∫₀¹ α^d dα = 1/(d+1). Right/left Riemann: exact for d = 0 only; midpoint and trapezoid for
        # d ≤ 1; Gauss–Legendre with m nodes for d ≤ 2m − 1.
        exact_up_to = {"riemann_right": 0, "riemann_left": 0, "riemann_middle": 1,
                       "riemann_trapezoid": 1, "gausslegendre": 2 * 5 - 1}
        for method, top in exact_up_to.items():
            nodes, weights = attributions.quadrature(method, 5)
            for d in range(top + 1):
                self.assertAllClose(np.dot(weights, nodes ** d), 1.0 / (d + 1), atol=1e-12, msg=method)
            self.assertGreater(abs(np.dot(weights, nodes ** (top + 1)) - 1.0 / (top + 2)), 1e-6, method)

    def test_right_riemann_nodes_are_j_over_m(self):
        nodes, weights = attributions.quadrature("riemann_right", 4)
        self.assertAllClose(nodes, [0.25, 0.5, 0.75, 1.0])
        self.assertAllClose(weights, [0.25] * 4)
        nodes, weights = attributions.quadrature("riemann_trapezoid", 3)
        self.assertAllClose(nodes, [0.0, 0.5, 1.0])
        self.assertAllClose(weights, [0.25, 0.5, 0.25])


# --------------------------------------------------------------------------------------------
# Closed forms: linear and quadratic models
# --------------------------------------------------------------------------------------------

class LinearModelTest(TestCase):
    def setUp(self):
        super().setUp()
        self.w = _rng(1).normal(size=(P, 3)).astype("float32")
        self.model = linear_model(self.w, input_shape=SHAPE)
        self.x = _images(5)
        self.t = np.array([0, 1, 2, 1, 0], "int32")
        self.w_t = self.w[:, self.t].T.reshape((5,) + SHAPE)  # (N, H, W, C) weight of each target

    def test_ig_is_delta_times_weight_for_every_rule_and_baseline(self):
        per_image = _images(5, seed=3)
        one_image = _images(1, seed=4)[0]
        for method in METHODS:
            for baseline in (None, 0.5, one_image, per_image):
                x0 = 0.0 if baseline is None else baseline
                ig = integrated_gradients(self.model, self.x, self.t, baseline=baseline, steps=3,
                                          method=method)
                self.assertAllClose(ig, (self.x - x0) * self.w_t, atol=1e-6, msg=method)

    def test_gradient_methods(self):
        self.assertAllClose(saliency(self.model, self.x, self.t), self.w_t, atol=1e-6)
        self.assertAllClose(input_x_gradient(self.model, self.x, self.t), self.x * self.w_t, atol=1e-6)
        # the gradient is constant, so averaging it over noisy copies changes nothing
        self.assertAllClose(smoothgrad(self.model, self.x, self.t, noise=0.5, samples=4, seed=1),
                            self.w_t, atol=1e-6)

    def test_double_backprop_of_l1_norm_has_closed_form(self):
        # ‖IG‖₁ = Σ |x ⊙ w_t| → ∂/∂w[:, c] = Σ_{n: t_n = c} |x_n| ⊙ sign(w[:, c]); the bias has no effect
        kernel, bias = self.model.layers[-1].kernel, self.model.layers[-1].bias
        with tf.GradientTape() as tape:
            ig = integrated_gradients(self.model, self.x, self.t, steps=4)
            loss = tf.reduce_sum(tf.abs(ig))
        g_kernel, g_bias = tape.gradient(loss, [kernel, bias])
        expected = np.zeros_like(self.w)
        for n, c in enumerate(self.t):
            expected[:, c] += np.abs(self.x[n].reshape(-1)) * np.sign(self.w[:, c])
        self.assertAllClose(g_kernel, expected, atol=1e-5)
        self.assertTrue(g_bias is None or np.allclose(g_bias, 0.0))


class QuadraticModelTest(TestCase):
    """s(x) = ½ xᵀAx with A symmetric: ∇s(z) = Az, so IG = (x − x₀) ⊙ (Ax₀ + ᾱ·A(x − x₀)), ᾱ = Σ w_j α_j."""

    def setUp(self):
        super().setUp()
        b = _rng(2).normal(size=(P, P))
        self.a = ((b + b.T) / 2).astype("float32")
        self.model = quadratic_model(self.a, SHAPE)
        self.x = _images(3)
        self.t = np.zeros(3, "int32")

    def _ax(self, v):
        return (v.reshape(len(v), -1) @ self.a).reshape(v.shape)

    def test_zero_baseline_closed_forms(self):
        x, ax = self.x, self._ax(self.x)
        steps = 5
        mean_alpha = {"riemann_right": (steps + 1) / (2 * steps), "riemann_left": (steps - 1) / (2 * steps),
                      "riemann_middle": 0.5, "riemann_trapezoid": 0.5, "gausslegendre": 0.5}
        for method, alpha in mean_alpha.items():
            ig = integrated_gradients(self.model, x, self.t, steps=steps, method=method)
            self.assertAllClose(ig, alpha * x * ax, rtol=1e-5, atol=1e-6, msg=method)

    def test_nonzero_baseline_closed_form(self):
        x0 = _images(3, seed=9) * 0.5
        delta = self.x - x0
        for method in METHODS:
            nodes, weights = attributions.quadrature(method, 4)
            expected = delta * (self._ax(x0) + np.dot(weights, nodes) * self._ax(delta))
            ig = integrated_gradients(self.model, self.x, self.t, baseline=x0, steps=4, method=method)
            self.assertAllClose(ig, expected, rtol=1e-5, atol=1e-6, msg=method)

    def test_saliency_is_ax(self):
        self.assertAllClose(saliency(self.model, self.x, self.t), self._ax(self.x), rtol=1e-5, atol=1e-6)

    def test_subclassed_model_target_range_is_checked(self):
        with self.assertRaisesRegex(ValueError, r"`target` must hold class indices in \[0, 1\]"):
            integrated_gradients(self.model, self.x, np.array([0, 2, 0]), steps=2)


# --------------------------------------------------------------------------------------------
# Completeness and convergence on smooth networks
# --------------------------------------------------------------------------------------------

class CompletenessTest(TestCase):
    def test_gauss_legendre_64_on_small_cnn_within_one_percent(self):
        model = small_cnn((8, 8, 1), classes=3)
        x = _images(4, (8, 8, 1))
        for target in range(3):
            t = np.full(4, target, "int32")
            ig = integrated_gradients(model, x, t, steps=64, method="gausslegendre")
            gap = model(x).numpy()[:, target] - model(np.zeros_like(x)).numpy()[:, target]
            self.assertAllClose(_sums(ig), gap, rtol=0.01, atol=0.0)

    def test_per_image_baseline_completeness(self):
        model = small_cnn((8, 8, 1), classes=3)
        x, x0 = _images(3, (8, 8, 1)), _images(3, (8, 8, 1), seed=5)
        t = np.array([2, 0, 1], "int32")
        ig = integrated_gradients(model, x, t, baseline=x0, steps=64, method="gausslegendre")
        idx = np.arange(3)
        gap = model(x).numpy()[idx, t] - model(x0).numpy()[idx, t]
        self.assertAllClose(_sums(ig), gap, rtol=0.01, atol=0.0)

    def test_gap_rates_first_and_second_order(self):
        # float64 MLP: the completeness gap halves per doubling for right/left Riemann (O(1/S)) and
        # quarters for midpoint and trapezoid (O(1/S²)).
        model = softplus_mlp(dtype="float64")
        x = _images(3, dtype="float64", seed=1)
        t = np.zeros(3, "int32")
        gap = model(x).numpy()[:, 0] - model(np.zeros_like(x)).numpy()[:, 0]
        for method, ratio in [("riemann_right", 2.0), ("riemann_left", 2.0), ("riemann_middle", 4.0),
                              ("riemann_trapezoid", 4.0)]:
            errs = [np.abs(_sums(integrated_gradients(model, x, t, steps=s, method=method)) - gap).max()
                    for s in (32, 64)]
            self.assertBetween(errs[0] / errs[1], 0.85 * ratio, 1.15 * ratio)

    def test_all_rules_converge_to_the_same_map(self):
        model = softplus_mlp(dtype="float64")
        x = _images(2, dtype="float64", seed=2)
        t = np.array([1, 2], "int32")
        reference = integrated_gradients(model, x, t, steps=64, method="gausslegendre").numpy()
        scale = np.abs(reference).max()
        for method in METHODS:
            errs = [np.abs(integrated_gradients(model, x, t, steps=s, method=method).numpy() - reference).max()
                    for s in (4, 16, 64)]
            self.assertLess(errs[2], errs[0], method)
            self.assertLess(errs[2], 0.02 * scale, method)

    def test_loss_scores_are_complete(self):
        # Σ IG = s(x) − s(x₀) for the probability-type scores too (scores.py, docs/method.md §2.4)
        model = small_cnn((8, 8, 1), classes=3)
        x = _images(3, (8, 8, 1), seed=7)
        t = np.array([0, 1, 2], "int32")
        logits, logits0 = model(x).numpy(), model(np.zeros_like(x)).numpy()

        def log_softmax(z):
            z = z - z.max(axis=1, keepdims=True)
            return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

        idx = np.arange(3)
        expected = {
            "probability": np.exp(log_softmax(logits))[idx, t] - np.exp(log_softmax(logits0))[idx, t],
            "log_probability": log_softmax(logits)[idx, t] - log_softmax(logits0)[idx, t],
            "cross_entropy": -(log_softmax(logits)[idx, t] - log_softmax(logits0)[idx, t]),
        }
        for score, gap in expected.items():
            ig = integrated_gradients(model, x, t, steps=32, method="gausslegendre", score=score)
            self.assertAllClose(_sums(ig), gap, rtol=1e-3, atol=1e-6, msg=score)


# --------------------------------------------------------------------------------------------
# tf-explain
# --------------------------------------------------------------------------------------------

class TfExplainTest(TestCase):
    def test_trapezoid_ig_from_tf_explain_mean_gradients(self):
        # tf-explain's raw IG: the mean logit gradient over n nodes j/(n−1), j = 0..n−1, no (x − x₀)
        # factor. Our trapezoid rule uses the same nodes with end weights halved, so exactly
        #   IG_trap(n) = x ⊙ (n·G_n − G_2) / (n − 1),  G_n = tf-explain's mean gradient with n steps
        # (G_2 is the mean of the two end-point gradients).
        pytest.importorskip("cv2")
        from tf_explain.core.integrated_gradients import IntegratedGradients

        model = small_cnn((8, 8, 1), classes=3, activation="relu")
        x = _images(3, (8, 8, 1), seed=11)
        n = 10
        for class_index in (0, 2):
            g = {steps: IntegratedGradients.get_integrated_gradients(
                IntegratedGradients.generate_interpolations(x, steps), model, class_index, steps).numpy()
                for steps in (2, n)}
            expected = x * (n * g[n] - g[2]) / (n - 1)
            ig = integrated_gradients(model, x, np.full(3, class_index), steps=n, method="riemann_trapezoid")
            self.assertAllClose(ig, expected, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------
# Double backprop: against float64 central finite differences
# --------------------------------------------------------------------------------------------

def _ig_objective(model, x, t, r, **kwargs):
    """A smooth scalar of the IG map: Σ r ⊙ IG + Σ IG²."""
    ig = integrated_gradients(model, x, t, **kwargs)
    return tf.reduce_sum(r * ig) + tf.reduce_sum(ig * ig)


class DoubleBackpropTest(TestCase):
    def setUp(self):
        super().setUp()
        self.model = softplus_mlp(dtype="float64")
        self.x = _images(3, dtype="float64", seed=4)
        self.t = np.array([0, 2, 1], "int32")
        self.r = _rng(5).normal(size=self.x.shape)

    @staticmethod
    def _central(f, h=1e-5):
        return (f(h) - f(-h)) / (2 * h)

    def test_weight_gradient_matches_finite_difference(self):
        kernel = self.model.layers[2].kernel  # first Dense layer, (16, 8)
        for kwargs in (dict(steps=4, method="gausslegendre"), dict(steps=5, method="riemann_right", batch_size=4)):
            with tf.GradientTape() as tape:
                loss = _ig_objective(self.model, self.x, self.t, self.r, **kwargs)
            grad = tape.gradient(loss, kernel).numpy()
            base = kernel.numpy()
            for (i, j) in [(0, 0), (5, 3), (15, 7)]:
                def f(h):
                    w = base.copy()
                    w[i, j] += h
                    kernel.assign(w)
                    return float(_ig_objective(self.model, self.x, self.t, self.r, **kwargs))
                fd = self._central(f)
                kernel.assign(base)
                self.assertAllClose(grad[i, j], fd, rtol=1e-6, atol=1e-9)

    def test_image_gradient_matches_finite_difference(self):
        x = tf.constant(self.x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = _ig_objective(self.model, x, self.t, self.r, steps=4, method="riemann_middle")
        grad = tape.gradient(loss, x).numpy()
        for idx in [(0, 0, 0, 0), (1, 2, 3, 0), (2, 3, 1, 0)]:
            def f(h):
                xh = self.x.copy()
                xh[idx] += h
                return float(_ig_objective(self.model, xh, self.t, self.r, steps=4, method="riemann_middle"))
            self.assertAllClose(grad[idx], self._central(f), rtol=1e-6, atol=1e-9)

    def test_relu_net_mixed_derivative_is_nonzero_and_input_hessian_zero(self):
        # ReLU: ∂(∇ₓs)/∂θ ≠ 0 (regularizers work), ∂(∇ₓs)/∂x = 0 (attacks need a surrogate)
        relu = small_cnn((8, 8, 1), classes=3, activation="relu")
        smooth = small_cnn((8, 8, 1), classes=3, activation="softplus")
        x = tf.constant(_images(2, (8, 8, 1)))
        t = np.array([0, 1], "int32")
        grads = {}
        for name, model in (("relu", relu), ("softplus", smooth)):
            with tf.GradientTape(persistent=False) as tape:
                tape.watch(x)
                loss = tf.reduce_sum(tf.square(saliency(model, x, t)))
            grads[name] = tape.gradient(loss, [x, model.layers[1].kernel])
        self.assertAllEqual(grads["relu"][0], np.zeros_like(x))
        self.assertGreater(np.abs(grads["relu"][1]).max(), 0.0)
        self.assertGreater(np.abs(grads["softplus"][0]).max(), 0.0)


# --------------------------------------------------------------------------------------------
# Batching, targets, compiled path
# --------------------------------------------------------------------------------------------

class BatchingTest(TestCase):
    def setUp(self):
        super().setUp()
        self.model = small_cnn((8, 8, 1), classes=3)
        self.x = _images(5, (8, 8, 1), seed=8)
        self.t = np.array([0, 1, 2, 0, 1], "int32")

    def test_batch_size_chunking_is_invariant(self):
        full = integrated_gradients(self.model, self.x, self.t, steps=6)
        for batch_size in (7, 29, 1000):  # uneven last chunk, several chunks, one chunk
            self.assertAllClose(integrated_gradients(self.model, self.x, self.t, steps=6, batch_size=batch_size),
                                full, rtol=1e-5, atol=1e-7)
        sg = smoothgrad(self.model, self.x, self.t, samples=3, seed=3)
        self.assertAllClose(smoothgrad(self.model, self.x, self.t, samples=3, seed=3, batch_size=4), sg,
                            rtol=1e-5, atol=1e-7)
        self.assertAllClose(saliency(self.model, self.x, self.t, batch_size=2),
                            saliency(self.model, self.x, self.t), rtol=1e-5, atol=1e-7)

    def test_examples_do_not_interact(self):
        together = integrated_gradients(self.model, self.x, self.t, steps=5)
        alone = np.concatenate([integrated_gradients(self.model, self.x[i:i + 1], self.t[i:i + 1], steps=5)
                                for i in range(5)])
        self.assertAllClose(together, alone, rtol=1e-5, atol=1e-7)

    def test_predicted_target_is_the_argmax(self):
        argmax = np.argmax(self.model(self.x).numpy(), axis=1)
        self.assertAllClose(integrated_gradients(self.model, self.x, "predicted", steps=4),
                            integrated_gradients(self.model, self.x, argmax, steps=4))
        self.assertAllClose(saliency(self.model, self.x, "predicted"), saliency(self.model, self.x, argmax))

    def test_compiled_and_taped_paths_agree_and_trace_once(self):
        eager = integrated_gradients(self.model, self.x, self.t, steps=4)
        with tf.GradientTape():  # a recording tape forces the plain (differentiable) path
            taped = integrated_gradients(self.model, self.x, self.t, steps=4)
        self.assertAllClose(eager, taped, rtol=1e-6, atol=1e-7)
        cached = len(attributions._COMPILED[self.model])
        integrated_gradients(self.model, self.x[:2], self.t[:2], steps=4)  # new N, same setting
        self.assertLen(attributions._COMPILED[self.model], cached)

    def test_compiled_cache_does_not_keep_models_alive(self):
        model = small_cnn((8, 8, 1), classes=3, seed=3)
        integrated_gradients(model, self.x, self.t, steps=2)
        self.assertIn(model, attributions._COMPILED)
        ref = weakref.ref(model)
        del model
        gc.collect()
        self.assertIsNone(ref())

    def test_inside_tf_function_with_free_batch(self):
        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1]), tf.TensorSpec([None], tf.int32)])
        def explain(x, t):
            return saliency_map(integrated_gradients(self.model, x, t, steps=4, batch_size=8))

        self.assertAllClose(explain(self.x, self.t),
                            saliency_map(integrated_gradients(self.model, self.x, self.t, steps=4)),
                            rtol=1e-5, atol=1e-6)

    def test_smoothgrad_seed(self):
        a = smoothgrad(self.model, self.x, self.t, samples=3, seed=7)
        self.assertAllEqual(a, smoothgrad(self.model, self.x, self.t, samples=3, seed=7))
        self.assertNotAllClose(a, smoothgrad(self.model, self.x, self.t, samples=3, seed=8))
        self.assertNotAllClose(smoothgrad(self.model, self.x, self.t, samples=3),
                               smoothgrad(self.model, self.x, self.t, samples=3))
        self.assertAllClose(smoothgrad(self.model, self.x, self.t, noise=0.0, samples=2),
                            saliency(self.model, self.x, self.t), rtol=1e-5, atol=1e-7)


class SaliencyMapTest(TestCase):
    def test_against_numpy(self):
        a = _rng(3).normal(size=(3, 5, 4, 3)).astype("float32")
        raw = np.abs(a).sum(axis=-1)
        expected = 20.0 * raw / raw.sum(axis=(1, 2), keepdims=True)
        self.assertAllClose(saliency_map(a), expected, rtol=1e-6)
        self.assertAllClose(saliency_map(a, normalize=False), raw, rtol=1e-6)
        self.assertAllClose(np.sum(saliency_map(a), axis=(1, 2)), [20.0] * 3, rtol=1e-6)

    def test_zero_attribution_gives_zero_map(self):
        self.assertAllEqual(saliency_map(np.zeros((2, 3, 3, 1), "float32")), np.zeros((2, 3, 3)))

    def test_bad_attributions(self):
        with self.assertRaisesRegex(ValueError, r"`attributions` must have rank 4.*Received: "
                                                r"attributions.shape=\(2, 3, 3\)"):
            saliency_map(np.zeros((2, 3, 3), "float32"))


# --------------------------------------------------------------------------------------------
# Bad input: every error names the parameter, the expectation and what was received
# --------------------------------------------------------------------------------------------

class BadInputTest(TestCase):
    def setUp(self):
        super().setUp()
        self.model = small_cnn((8, 8, 1), classes=3)
        self.x = _images(2, (8, 8, 1))
        self.t = np.array([0, 1], "int32")

    def _raises(self, pattern, **kwargs):
        args = dict(model=self.model, images=self.x, target=self.t)
        args.update(kwargs)
        with self.assertRaisesRegex(ValueError, pattern):
            integrated_gradients(args.pop("model"), args.pop("images"), args.pop("target"), **args)

    def test_images(self):
        self._raises(r"`images` must have rank 4.*Received: images.shape=\(2, 8, 8\)", images=self.x[..., 0])
        self._raises(r"`images` must be a float tensor.*Received: images.dtype=uint8",
                     images=(self.x * 255).astype("uint8"))
        self._raises(r"`images` must be a float tensor.*Received: images.dtype=int32",
                     images=tf.constant((self.x * 255).astype("int32")))
        nan = self.x.copy()
        nan[0, 0, 0, 0] = np.nan
        self._raises(r"`images` must be finite. Received: images with 1 NaN/Inf", images=nan)
        self._raises(r"`images` must have values in \[0, 1\]. Received: images with min=0.*max=2",
                     images=self.x * 2.0 + 0.01, check_range=True)
        integrated_gradients(self.model, self.x * 2.0, self.t, steps=2)  # the range is opt-in

    def test_target(self):
        self._raises(r"`target` must hold class indices in \[0, 2\]. Received: target with min=0, max=3",
                     target=np.array([0, 3]))
        self._raises(r"`target` must hold class indices in \[0, 2\]. Received: target with min=-1",
                     target=np.array([-1, 0]))
        self._raises(r"`target` must have shape \(N,\) with N = images.shape\[0\] = 2. Received: "
                     r"target.shape=\(2, 1\)", target=np.array([[0], [1]]))
        self._raises(r"`target` must be integer class indices.*Received: target.dtype=float", target=[0.0, 1.0])
        self._raises(r"`target` must be integer class indices.*or the string 'predicted'. Received: "
                     r"target='argmax'", target="argmax")

    def test_names_with_did_you_mean(self):
        self._raises(r"Unknown method 'riemann_rigth'. Did you mean 'riemann_right'\? Available: "
                     r"gausslegendre, ", method="riemann_rigth")
        self._raises(r"Unknown score 'logits'. Did you mean 'logit'\?", score="logits")
        with self.assertRaisesRegex(ValueError, r"Unknown score 'probabilty'. Did you mean 'probability'"):
            saliency(self.model, self.x, self.t, score="probabilty")

    def test_numbers(self):
        self._raises(r"`steps` must be an integer >= 1. Received: steps=0", steps=0)
        self._raises(r"`steps` must be an integer >= 1. Received: steps=2.5", steps=2.5)
        self._raises(r"`steps` must be an integer >= 2. Received: steps=1", steps=1, method="riemann_trapezoid")
        self._raises(r"`batch_size` must be an integer >= 1. Received: batch_size=0", batch_size=0)
        with self.assertRaisesRegex(ValueError, r"`samples` must be an integer >= 1. Received: samples=0"):
            smoothgrad(self.model, self.x, self.t, samples=0)
        with self.assertRaisesRegex(ValueError, r"`noise` must be a finite number >= 0. Received: noise=-0.1"):
            smoothgrad(self.model, self.x, self.t, noise=-0.1)

    def test_baseline(self):
        self._raises(r"`baseline` must be broadcastable to images.shape=\(2, 8, 8, 1\).*Received: "
                     r"baseline.shape=\(3, 8, 8, 1\)", baseline=np.zeros((3, 8, 8, 1), "float32"))
        self._raises(r"`baseline` must be finite", baseline=np.full((8, 8, 1), np.nan, "float32"))

    def test_model_output(self):
        inp = keras.Input((8, 8, 1))
        flat = keras.layers.Flatten()(inp)
        two = keras.Model(inp, [keras.layers.Dense(3)(flat), keras.layers.Dense(2)(flat)])
        self._raises(r"The model must return a single logits tensor", model=two)
        spatial = keras.Model(inp, keras.layers.Conv2D(3, 1)(inp))
        self._raises(r"logits of shape \(N, num_classes\). Received: shape=\(", model=spatial)

    def test_training_mode_warns(self):
        with pytest.warns(errors.TrainingModeWarning, match="AR001"):
            integrated_gradients(self.model, self.x, self.t, steps=2, training=True)


# --------------------------------------------------------------------------------------------
# Recomputed chunks: memory bounded by batch_size, same first and second derivatives
# --------------------------------------------------------------------------------------------

def _ig_l1(model, x, t, **kwargs):
    """‖IG‖₁ summed over the batch: the IG-norm penalty of the objectives."""
    return tf.reduce_sum(tf.abs(integrated_gradients(model, x, t, **kwargs)))


class _CountingLayer(keras.layers.Layer):
    """Identity that counts how often it is run (eagerly) or traced (in a graph)."""

    calls = 0

    def call(self, inputs):
        type(self).calls += 1
        return inputs


class RecomputedChunksTest(TestCase):
    def _assert_grads_close(self, chunked, full, msg=None):
        for a, b in zip(chunked, full, strict=True):
            self.assertEqual(a is None, b is None, msg)  # the logit bias does not reach an input gradient
            if b is not None:
                self.assertAllClose(a, b, rtol=1e-5, atol=1e-6, msg=msg)

    def setUp(self):
        super().setUp()
        self.model = small_cnn((8, 8, 1), classes=3)
        self.x = tf.constant(_images(5, (8, 8, 1), seed=11))
        self.t = np.array([2, 0, 1, 1, 0], "int32")

    def _grads(self, batch_size, compiled=False, **kwargs):
        """∂‖IG‖₁/∂(images, weights) with 6 steps × 5 images = 30 path points."""
        model, variables = self.model, self.model.trainable_variables

        def run(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = _ig_l1(model, x, self.t, steps=6, batch_size=batch_size, **kwargs)
            return tape.gradient(loss, [x] + variables)

        return tf.function(run, autograph=False)(self.x) if compiled else run(self.x)

    def test_first_and_second_order_equal_the_unchunked_ones(self):
        full = self._grads(None)
        for batch_size, compiled in ((7, False), (29, False), (1000, False), (7, True), (30, True)):
            self._assert_grads_close(self._grads(batch_size, compiled), full, f"batch_size={batch_size}")
        self.assertGreater(np.abs(full[0].numpy()).max(), 0.0)  # the input Hessian of the smooth net is not 0

    def test_gradient_through_a_baseline_that_depends_on_the_images(self):
        # ART's ΔA = IG(x′; baseline x): both ends of the path carry gradient (∂z/∂x = α, ∂z/∂x₀ = 1 − α)
        r = tf.constant(_rng(8).normal(size=self.x.shape), tf.float32)
        variables = self.model.trainable_variables

        def grads(batch_size, compiled):
            def run(x):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    shifted = tf.clip_by_value(x + 0.1 * r, 0.0, 1.0)
                    loss = _ig_objective(self.model, shifted, self.t, r, baseline=0.5 * x, steps=6,
                                         batch_size=batch_size)
                return tape.gradient(loss, [x] + variables)
            return tf.function(run, autograph=False)(self.x) if compiled else run(self.x)

        full = grads(None, False)
        for batch_size, compiled in ((7, False), (4, True)):
            self._assert_grads_close(grads(batch_size, compiled), full, f"batch_size={batch_size}")

    def test_input_gradients_only_gives_the_same_image_gradient_and_no_weight_gradient(self):
        for fn in (lambda: _ig_l1(self.model, self.x, self.t, steps=6, batch_size=7),
                   lambda: tf.reduce_sum(tf.square(saliency(self.model, self.x, self.t, batch_size=2)))):
            grads = {}
            for only in (False, True):
                with tf.GradientTape(persistent=True) as tape:
                    tape.watch(self.x)
                    with path_chunks.input_gradients_only() if only else contextlib.nullcontext():
                        loss = fn()
                grads[only] = tape.gradient(loss, [self.x] + self.model.trainable_variables)
            self.assertAllClose(grads[True][0], grads[False][0], rtol=1e-6, atol=1e-7)
            self.assertTrue(all(g is None for g in grads[True][1:]))
            self.assertTrue(any(g is not None for g in grads[False][1:]))

    @pytest.mark.slow
    def test_chunk_loop_compiles_under_xla_with_the_same_gradients(self):
        variables = self.model.trainable_variables

        def run(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = _ig_l1(self.model, x, self.t, steps=6, batch_size=7)  # 30 points: a partial last chunk
            return tape.gradient(loss, [x] + variables)

        xla = tf.function(run, jit_compile=True, autograph=False)(self.x)
        self._assert_grads_close(xla, run(self.x))

    def test_other_scores_rules_and_gradient_methods(self):
        for kwargs in (dict(score="cross_entropy", method="gausslegendre"), dict(score="probability")):
            self._assert_grads_close(self._grads(4, **kwargs), self._grads(None, **kwargs), str(kwargs))
        for fn in (saliency, input_x_gradient):
            grads = {}
            for batch_size in (None, 2):
                with tf.GradientTape() as tape:
                    tape.watch(self.x)
                    loss = tf.reduce_sum(tf.square(fn(self.model, self.x, self.t, batch_size=batch_size)))
                grads[batch_size] = tape.gradient(loss, [self.x] + self.model.trainable_variables)
            self._assert_grads_close(grads[2], grads[None], fn.__name__)

    def test_chunks_are_recomputed_in_backprop_only_when_batch_size_is_set(self):
        inputs = keras.Input((8, 8, 1))
        counted = keras.Model(inputs, self.model(_CountingLayer()(inputs)))
        for batch_size, forward, backward in ((None, 1, 0), (12, 3, 3), (30, 1, 1)):
            _CountingLayer.calls = 0
            with tf.GradientTape() as tape:
                loss = _ig_l1(counted, self.x, self.t, steps=6, batch_size=batch_size)
            self.assertEqual(_CountingLayer.calls, forward, batch_size)
            tape.gradient(loss, counted.trainable_variables)
            self.assertEqual(_CountingLayer.calls - forward, backward, batch_size)

    def test_recorded_values_are_those_of_the_plain_path(self):
        plain = integrated_gradients(self.model, self.x, self.t, steps=6, batch_size=7)  # compiled, no tape
        with tf.GradientTape():
            taped = integrated_gradients(self.model, self.x, self.t, steps=6, batch_size=7)
        self.assertAllClose(taped, plain, rtol=1e-6, atol=1e-7)

    def test_float64_second_order_matches_finite_difference(self):
        model = softplus_mlp(dtype="float64")
        x = _images(3, dtype="float64", seed=4)
        t = np.array([0, 2, 1], "int32")
        r = _rng(5).normal(size=x.shape)
        kernel = model.layers[2].kernel
        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            loss = _ig_objective(model, xt, t, r, steps=5, method="riemann_middle", batch_size=4)
        g_x, g_w = (g.numpy() for g in tape.gradient(loss, [xt, kernel]))

        def objective(xh):
            return float(_ig_objective(model, xh, t, r, steps=5, method="riemann_middle", batch_size=4))

        for idx in [(0, 0, 0, 0), (1, 2, 3, 0), (2, 3, 1, 0)]:
            def f(h):
                xh = x.copy()
                xh[idx] += h
                return objective(xh)
            self.assertAllClose(g_x[idx], DoubleBackpropTest._central(f), rtol=1e-6, atol=1e-9)
        base = kernel.numpy()
        for (i, j) in [(0, 0), (7, 5)]:
            def f(h):
                w = base.copy()
                w[i, j] += h
                kernel.assign(w)
                return objective(x)
            fd = DoubleBackpropTest._central(f)
            kernel.assign(base)
            self.assertAllClose(g_w[i, j], fd, rtol=1e-6, atol=1e-9)

    @pytest.mark.slow
    def test_training_step_is_that_of_the_unchunked_step(self):
        from attr_robust_tf import RobustModel, models  # noqa: PLC0415

        x = _images(6, (8, 8, 1), seed=2)
        y = np.array([0, 1, 2, 2, 1, 0], "int32")
        weights = {}
        for batch_size in (None, 5):
            keras.utils.set_random_seed(0)
            robust = RobustModel(models.tiny_cnn(), "sarkar2021", epsilon=0.1, step_size=0.04, attack_steps=2,
                                 ig_steps=3, inner_ig_steps=2, surrogate_beta=1.0, ig_batch_size=batch_size)
            robust.compile(keras.optimizers.SGD(0.5), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                           jit_compile=False)
            robust.train_on_batch(x, y)
            weights[batch_size] = [w.numpy() for w in robust.model.weights]
        moved = max(np.abs(a - b).max() for a, b in zip(weights[None], [w.numpy() for w in models.tiny_cnn().weights]))
        self.assertGreater(moved, 0.0)
        for a, b in zip(weights[5], weights[None]):
            self.assertAllClose(a, b, rtol=1e-5, atol=1e-6)
