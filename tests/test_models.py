"""Reference architectures: parameter counts, forward passes against naive re-implementations, surrogates."""
import os

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from attr_robust_tf import models, surrogate
import testing


def _naive_mnist_cnn(weights, x):
    """conv5×5-32 → pool → conv5×5-64 → pool → fc1024 → logits, written with raw TF ops."""
    k1, b1, k2, b2, w3, b3, w4, b4 = weights
    h = tf.nn.relu(tf.nn.conv2d(x, k1, 1, "SAME") + b1)
    h = tf.nn.max_pool2d(h, 2, 2, "SAME")
    h = tf.nn.relu(tf.nn.conv2d(h, k2, 1, "SAME") + b2)
    h = tf.nn.max_pool2d(h, 2, 2, "SAME")
    h = tf.reshape(h, [x.shape[0], -1])
    h = tf.nn.relu(h @ w3 + b3)
    return h @ w4 + b4


def _naive_resnet(weights, x, units):
    """The RAR pre-activation ResNet (docs/method.md §8.3) from its weight list, with raw TF ops."""
    act = lambda t: tf.nn.leaky_relu(t, 0.1)  # noqa: E731
    kernels = list(weights[:-2])
    h = x * 255.0
    n = tf.cast(tf.reduce_prod(h.shape[1:]), h.dtype)
    mean = tf.reduce_mean(h, axis=[1, 2, 3], keepdims=True)
    std = tf.math.reduce_std(h, axis=[1, 2, 3], keepdims=True)
    h = (h - mean) / tf.maximum(std, 1.0 / tf.sqrt(n))
    h = tf.nn.conv2d(h, kernels.pop(0), 1, "SAME")
    in_f = 16
    for stage, (filters, stride) in enumerate([(16, 1), (32, 2), (64, 2)]):
        for unit in range(units):
            s = stride if unit == 0 else 1
            if stage == 0 and unit == 0:
                h = act(h)
                short = h
            else:
                short = h
                h = act(h)
            h = tf.nn.conv2d(h, kernels.pop(0), s, "SAME")
            h = tf.nn.conv2d(act(h), kernels.pop(0), 1, "SAME")
            if in_f != filters:
                short = tf.nn.avg_pool2d(short, s, s, "VALID")
                p = (filters - in_f) // 2
                short = tf.pad(short, [[0, 0], [0, 0], [0, 0], [p, p]])
            h = h + short
            in_f = filters
    h = tf.reduce_mean(act(h), axis=[1, 2])
    return h @ weights[-2] + weights[-1]


class ModelsTest(testing.TestCase):
    @parameterized.named_parameters(
        ("mnist_cnn", "mnist_cnn", {}, 3_274_634, 10),
        ("gtsrb_resnet", "gtsrb_resnet", {}, 173_723, 43),
        ("flower_resnet", "flower_resnet", {}, 75_265, 17),
    )
    def test_reference_parameter_counts(self, name, kwargs, count, classes):
        # docs/method.md §8.3: counts measured on the reference architectures
        model = models.get(name, **kwargs)
        self.assertEqual(model.count_params(), count)
        self.assertEqual(model.output_shape, (None, classes))

    def test_mnist_cnn_matches_naive_forward_and_reference_init(self):
        model = models.mnist_cnn()
        x = tf.random.stateless_uniform((3, 28, 28, 1), [1, 2])
        weights = [tf.constant(w) for w in model.get_weights()]
        self.assertAllClose(model(x), _naive_mnist_cnn(weights, x), atol=1e-4, rtol=1e-4)
        kernels = [w for w in model.get_weights() if w.ndim > 1]
        biases = [w for w in model.get_weights() if w.ndim == 1]
        for b in biases:
            self.assertAllClose(b, np.full_like(b, 0.1))  # constant 0.1 biases
        for k in kernels:
            self.assertLessEqual(np.abs(k).max(), 0.2 + 1e-6)  # truncated at 2 std
            self.assertAllClose(k.std(), 0.088, atol=0.01)  # std of N(0, 0.1) truncated at ±2σ

    @parameterized.parameters(("gtsrb_resnet", 2), ("flower_resnet", 1))
    def test_resnets_match_naive_forward(self, name, units):
        model = models.get(name, input_shape=(16, 16, 3), num_classes=5)
        x = tf.random.stateless_uniform((2, 16, 16, 3), [3, 4])
        weights = [tf.constant(w) for w in model.get_weights()]
        self.assertAllClose(model(x), _naive_resnet(weights, x, units), atol=1e-4, rtol=1e-4)

    def test_resnet_is_scale_invariant_through_the_standardisation(self):
        # docs/method.md §2.6: once α·std(255x) ≥ 1/√(HWC) the logits are invariant to x → αx
        model = models.gtsrb_resnet()
        x = tf.random.stateless_uniform((2, 32, 32, 3), [5, 6])
        self.assertAllClose(model(x), model(0.25 * x), atol=1e-4, rtol=1e-4)

    def test_weight_decay_is_the_reference_l2_loss_on_kernels(self):
        model = models.flower_resnet(input_shape=(16, 16, 3), num_classes=4, weight_decay=2e-4)
        kernels = [w for w in model.trainable_weights if len(w.shape) > 1]
        expected = 2e-4 * sum(float(tf.nn.l2_loss(k)) for k in kernels)  # w_d·Σ‖W‖²/2 (docs/method.md §7.8)
        self.assertAllClose(float(sum(model.losses)), expected, rtol=1e-5)
        self.assertEqual(len(model.losses), len(kernels))  # no bias is decayed

    @parameterized.parameters("mnist_cnn", "gtsrb_resnet", "cpu_cnn", "tiny_cnn")
    def test_softplus_surrogate_shares_weights_and_smooths(self, name):
        shape = {"mnist_cnn": (28, 28, 1), "gtsrb_resnet": (16, 16, 3), "cpu_cnn": (28, 28, 1),
                 "tiny_cnn": (8, 8, 1)}[name]
        model = models.get(name, input_shape=shape, num_classes=3)
        smooth = models.softplus_surrogate(model, beta=1.0)
        self.assertIs(models.softplus_surrogate, surrogate.softplus_surrogate)
        ids = {id(v) for v in model.trainable_variables}
        self.assertEqual({id(v) for v in smooth.trainable_variables}, ids)
        x = tf.random.stateless_uniform((2,) + shape, [7, 8])
        self.assertNotAllClose(model(x), smooth(x))
        # as β → ∞ softplus_β → ReLU, so the surrogate converges to the network
        sharp = models.softplus_surrogate(model, beta=1e4)
        self.assertAllClose(model(x), sharp(x), atol=2e-3, rtol=2e-3)

    def test_small_cnns(self):
        cpu = models.cpu_cnn()
        self.assertEqual(cpu.output_shape, (None, 10))
        self.assertLess(cpu.count_params(), 150_000)
        tiny = models.tiny_cnn(dtype="float64")
        out = tiny(np.zeros((2, 8, 8, 1)))
        self.assertEqual(out.dtype, tf.float64)
        self.assertEqual(tuple(out.shape), (2, 3))
        self.assertEqual(models.tiny_cnn(input_shape=(4, 4, 2), num_classes=5).output_shape, (None, 5))

    def test_cpu_cnn_avgpool_spreads_the_gradient_over_the_pooling_cell(self):
        # one-pixel first-layer filters (docs/method.md §15): after a max-pool only the brightest pixel of each
        # 2×2 cell gets a gradient; after an average pool every pixel does
        nets = {p: models.get(name) for p, name in (("max", "cpu_cnn"), ("avg", "cpu_cnn_avgpool"))}
        self.assertEqual(nets["max"].count_params(), nets["avg"].count_params())
        self.assertEqual([type(layer).__name__ for layer in nets["avg"].layers if "Pooling" in type(layer).__name__],
                         ["AveragePooling2D", "AveragePooling2D"])
        kernel = np.zeros((3, 3, 1, 16), np.float32)
        kernel[1, 1, 0, :] = 1.0
        x = tf.constant(np.random.default_rng(0).uniform(0.1, 1.0, (1, 28, 28, 1)), tf.float32)
        winners = np.zeros((28, 28), bool)
        cells = x.numpy()[0, :, :, 0].reshape(14, 2, 14, 2).transpose(0, 2, 1, 3).reshape(14, 14, 4)
        for (i, j), w in np.ndenumerate(np.argmax(cells, axis=-1)):
            winners[2 * i + w // 2, 2 * j + w % 2] = True
        grads = {}
        for pooling, net in nets.items():
            net.layers[1].set_weights([kernel, np.zeros(16, np.float32)])
            with tf.GradientTape() as tape:
                tape.watch(x)
                out = tf.reduce_sum(net(x) ** 2)
            grads[pooling] = tape.gradient(out, x).numpy()[0, :, :, 0] != 0
        self.assertFalse(np.any(grads["max"] & ~winners))  # nothing outside the winners
        self.assertGreater(grads["max"].sum(), 0)
        self.assertGreater(grads["avg"].sum(), 2 * winners.sum())
        with self.assertRaisesRegex(ValueError, "`pooling` must be one of max, avg. Received: pooling='min'"):
            models.cpu_cnn(pooling="min")

    def test_keras_file_round_trip(self):
        model = models.flower_resnet(input_shape=(16, 16, 3), num_classes=4)
        path = os.path.join(self.get_temp_dir(), "m.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        x = tf.random.stateless_uniform((2, 16, 16, 3), [9, 9])
        self.assertAllClose(model(x), loaded(x))
        self.assertIsInstance(loaded.layers[2], models.PerImageStandardization)

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "Unknown model 'mnist_cn'. Did you mean 'mnist_cnn'"):
            models.get("mnist_cn")
        with self.assertRaisesRegex(ValueError,
                                    r"`input_shape` must be a tuple \(H, W, C\).*input_shape=\(28, 28\)"):
            models.cpu_cnn(input_shape=(28, 28))
        with self.assertRaisesRegex(ValueError, "`num_classes` must be an integer >= 2.*num_classes=1"):
            models.tiny_cnn(num_classes=1)
        with self.assertRaisesRegex(ValueError, "`weight_decay` must be a finite number >= 0"):
            models.gtsrb_resnet(weight_decay=-1.0)
