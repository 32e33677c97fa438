"""Smooth surrogates: each counterpart against the closed form of its activation, layer mapping, keras.applications."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from attr_robust_tf import RobustModel, objectives, surrogate
from attr_robust_tf.surrogate import SmoothActivation, softplus_surrogate
from testing import TestCase

# x grid (float64) with every kink of the activations below on it
GRID = np.unique(np.concatenate([np.linspace(-12.0, 12.0, 24001), [-3.0, 0.0, 3.0, 4.0, 6.0]]))


def _relu6(x):
    return np.clip(x, 0.0, 6.0)


def _hard_sigmoid(x):
    return np.clip(x / 6.0 + 0.5, 0.0, 1.0)


def _capped_leaky(x, a=0.1, cap=4.0):
    return np.where(x < 0, a * x, np.minimum(x, cap))


# (smooth counterpart, closed form of the original, sup-error constant C: max |smooth − original| = C/β)
CASES = {
    "relu6": (lambda z, b: surrogate.smooth_relu(z, 0.0, 6.0, b), _relu6, math.log(2.0)),
    "relu_max4_leaky0.1": (lambda z, b: surrogate.smooth_relu(z, 0.1, 4.0, b), _capped_leaky, math.log(2.0)),
    "hard_sigmoid": (surrogate.smooth_hard_sigmoid, _hard_sigmoid, math.log(2.0) / 6.0),
    "hard_silu": (surrogate.smooth_hard_silu, lambda x: x * _hard_sigmoid(x), math.log(2.0) / 2.0),
}


class SmoothCounterpartTest(TestCase):
    def test_max_error_is_c_over_beta(self):
        # The sup distance is attained at the kinks (softplus_β(0) = log 2/β); the other softplus term adds
        # only e^{−6β}/β there. So max error · β → C, and the error → 0 as β → ∞.
        x = tf.constant(GRID, tf.float64)
        for name, (smooth, exact, c) in CASES.items():
            errors = []
            for beta in (3.0, 10.0, 100.0, 1000.0):
                err = np.abs(smooth(x, beta).numpy() - exact(GRID)).max()
                errors.append(err)
                if beta >= 10.0:
                    self.assertAllClose(err * beta, c, rtol=1e-6, msg=f"{name}, beta={beta}")
            self.assertTrue(np.all(np.diff(errors) < 0), f"{name}: {errors}")

    def test_derivative_converges_away_from_the_kinks(self):
        x = tf.constant(GRID[np.min(np.abs(GRID[:, None] - [-3.0, 0.0, 3.0, 4.0, 6.0]), axis=1) > 0.5])
        for name, (smooth, exact, _) in CASES.items():
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = smooth(x, 200.0)
            h = 1e-6
            numeric = (exact(x.numpy() + h) - exact(x.numpy() - h)) / (2 * h)
            self.assertAllClose(tape.gradient(y, x), numeric, atol=1e-5, msg=name)

    def test_float32_layer_matches_the_function(self):
        x = tf.constant(GRID[::50], tf.float32)
        for kind, fn in (("hard_sigmoid", surrogate.smooth_hard_sigmoid), ("hard_silu", surrogate.smooth_hard_silu)):
            self.assertAllClose(SmoothActivation(beta=5.0, kind=kind)(x), fn(tf.cast(x, tf.float64), 5.0),
                                rtol=1e-5, atol=1e-6)
        layer = SmoothActivation(0.1, 5.0, max_value=4.0)
        self.assertAllClose(layer(x), surrogate.smooth_relu(tf.cast(x, tf.float64), 0.1, 4.0, 5.0),
                            rtol=1e-5, atol=1e-6)
        again = SmoothActivation.from_config(layer.get_config())
        self.assertEqual((again.slope, again.beta, again.max_value, again.kind), (0.1, 5.0, 4.0, "relu"))
        with self.assertRaisesRegex(ValueError, r"`kind` must be one of .*Received: kind='relu6'"):
            SmoothActivation(kind="relu6")


def _mixed_model():
    """One layer of every supported piecewise-linear activation, and a smooth one."""
    keras.utils.set_random_seed(1)
    inp = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu6", name="conv_relu6")(inp)
    h = keras.layers.Conv2D(4, 3, padding="same", name="conv")(h)
    h = keras.layers.ReLU(max_value=6.0, name="relu_cap")(h)
    h = keras.layers.Activation("hard_swish", name="hswish")(h)
    h = keras.layers.Activation("hard_sigmoid", name="hsigmoid")(h)
    h = keras.layers.Activation("swish", name="swish")(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(8, activation="hard_silu", name="dense_hsilu")(h)
    h = keras.layers.LeakyReLU(0.3, name="leaky")(h)
    return keras.Model(inp, keras.layers.Dense(3, name="logits")(h))


class LayerMappingTest(TestCase):
    def test_every_supported_activation_is_replaced_and_weights_are_shared(self):
        model = _mixed_model()
        smooth = softplus_surrogate(model, beta=2.0)
        kinds = {layer.name: (layer.kind, layer.max_value, layer.slope)
                 for layer in smooth.layers if isinstance(layer, SmoothActivation)}
        self.assertEqual(kinds, {"relu_cap_smooth": ("relu", 6.0, 0.0), "hswish_smooth": ("hard_silu", None, 0.0),
                                 "hsigmoid_smooth": ("hard_sigmoid", None, 0.0),
                                 "leaky_smooth": ("relu", None, pytest.approx(0.3))})
        self.assertIs(smooth.get_layer("swish"), model.get_layer("swish"))  # smooth: kept
        self.assertEqual({id(v) for v in smooth.trainable_variables}, {id(v) for v in model.trainable_variables})
        x = tf.random.stateless_uniform((3, 6, 6, 2), [1, 2], minval=-1.0, maxval=1.0)
        self.assertNotAllClose(model(x), smooth(x))
        self.assertAllClose(model(x), softplus_surrogate(model, beta=1e5)(x), atol=1e-4, rtol=1e-4)
        # the original layers keep their activations after the surrogate ran
        self.assertEqual(model.get_layer("conv_relu6").activation.__name__, "relu6")

    def test_the_surrogate_layer_computes_the_smooth_counterpart(self):
        model = _mixed_model()
        beta = 3.0
        smooth = softplus_surrogate(model, beta=beta)
        x = tf.random.stateless_uniform((2, 6, 6, 2), [3, 4], minval=-1.0, maxval=1.0)
        conv = model.get_layer("conv_relu6")
        pre = tf.nn.conv2d(x, conv.kernel, 1, "SAME") + conv.bias
        probe = keras.Model(smooth.inputs, smooth.get_layer("conv_relu6_smooth").output)
        self.assertAllClose(probe(x), surrogate.smooth_relu(pre, 0.0, 6.0, beta), rtol=1e-5, atol=1e-6)

    def test_activations_without_a_surrogate_raise(self):
        def build(layer):
            inp = keras.Input((4,))
            return keras.Model(inp, keras.layers.Dense(2)(layer(inp)))

        cases = {
            "hard_tanh": build(keras.layers.Activation("hard_tanh", name="ht")),
            "threshold": build(keras.layers.ReLU(threshold=0.5, name="thr")),
            "PReLU": build(keras.layers.PReLU(name="prelu")),
            "custom": build(keras.layers.Dense(3, activation=lambda z: tf.maximum(z, 0.1 * z), name="custom")),
        }
        for what, model in cases.items():
            with self.assertRaisesRegex(ValueError, r"`model` layer '\w+' uses .*no smooth surrogate.*"
                                                    r"Pass `surrogate=` explicitly", msg=what):
                softplus_surrogate(model)


def _mobilenet_v3_small():
    keras.utils.set_random_seed(0)
    # images in [0, 1]: no built-in [0, 255] rescaling; no dropout, so training-mode calls are deterministic
    return keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), weights=None, classes=3, classifier_activation=None, include_preprocessing=False,
        dropout_rate=0.0)


class KerasApplicationsTest(TestCase):
    def test_mobilenet_v3_small_surrogate_converges_to_the_network(self):
        model = _mobilenet_v3_small()
        x = tf.random.stateless_uniform((4, 32, 32, 3), [5, 6])
        # training=True: BatchNorm normalises with the batch statistics, so activations are O(1) (with fresh
        # moving statistics an inference call shrinks them to ~1e−11 and hides the smoothing error)
        exact = model(x, training=True)
        errors = {}
        for beta in (1e2, 1e4):
            smooth = softplus_surrogate(model, beta=beta)
            errors[beta] = float(tf.reduce_max(tf.abs(smooth(x, training=True) - exact)))
        scale = float(tf.reduce_max(tf.abs(exact)))
        self.assertLess(errors[1e4], 1e-3 * scale)
        self.assertLess(errors[1e4], errors[1e2] / 10)
        kinds = {(layer.kind, layer.max_value) for layer in smooth.layers if isinstance(layer, SmoothActivation)}
        self.assertEqual(kinds, {("relu", None), ("relu", 6.0), ("hard_silu", None)})
        self.assertEqual({id(v) for v in smooth.trainable_variables}, {id(v) for v in model.trainable_variables})

    @pytest.mark.slow
    def test_mobilenet_v3_small_trains_one_step_with_every_objective(self):
        rng = np.random.default_rng(0)
        x = rng.uniform(size=(4, 32, 32, 3)).astype("float32")
        y = np.array([0, 1, 2, 1], "int32")
        for name in objectives.names():
            model = _mobilenet_v3_small()
            robust = RobustModel(model, name, epsilon=0.05, step_size=0.02, attack_steps=1, ig_steps=2,
                                 inner_ig_steps=2, surrogate_beta=10.0, ig_batch_size=4, top_k=20)
            robust.compile(keras.optimizers.SGD(0.01),
                           keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=False)
            before = [w.numpy() for w in model.trainable_weights]
            logs = robust.train_on_batch(x, y, return_dict=True)
            self.assertTrue(np.isfinite(logs["loss"]), name)
            moved = max(np.abs(a - w.numpy()).max() for a, w in zip(before, model.trainable_weights))
            self.assertGreater(moved, 0.0, name)
