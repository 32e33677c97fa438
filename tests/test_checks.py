"""Boundary validation: every error names the parameter, what was expected and what was received."""
import numpy as np
import tensorflow as tf

from attr_robust_tf import _checks
from testing import TestCase


class DidYouMeanTest(TestCase):
    def test_close_match_and_sorted_options(self):
        with self.assertRaisesRegex(ValueError, r"^Unknown method 'gauslegendre'. Did you mean 'gausslegendre'\? "
                                                r"Available: gausslegendre, riemann_right.$"):
            _checks.did_you_mean("method", "gauslegendre", ["riemann_right", "gausslegendre"])

    def test_no_close_match(self):
        with self.assertRaisesRegex(ValueError, r"^Unknown score 'zzz'. Available: a, b.$"):
            _checks.did_you_mean("score", "zzz", ["b", "a"])

    def test_lookup(self):
        table = {"ig_norm": 1, "cacr": 2}
        self.assertEqual(_checks.lookup("regularizer", "cacr", table), 2)
        with self.assertRaisesRegex(ValueError, r"Unknown regularizer 'ig_nrom'. Did you mean 'ig_norm'\?"):
            _checks.lookup("regularizer", "ig_nrom", table)
        with self.assertRaisesRegex(ValueError, r"Unknown regularizer None."):
            _checks.lookup("regularizer", None, table)


class CheckImagesTest(TestCase):
    def test_accepts_numpy_lists_and_tensors(self):
        out = _checks.check_images(np.zeros((1, 2, 2, 1), "float32"))
        self.assertTrue(tf.is_tensor(out))
        self.assertEqual(out.dtype, tf.float32)
        self.assertEqual(_checks.check_images([[[[0.5]]]]).dtype, tf.float64)
        self.assertEqual(_checks.check_images(tf.zeros((2, 1, 1, 3), tf.float16)).dtype, tf.float16)

    def test_dtype(self):
        with self.assertRaisesRegex(ValueError, r"`images` must be a float tensor \(float32\) with values in "
                                                r"\[0, 1\]. Received: images.dtype=uint8. Convert with"):
            _checks.check_images(np.zeros((1, 2, 2, 1), "uint8"))
        with self.assertRaisesRegex(ValueError, r"Received: images.dtype=int64"):
            _checks.check_images(tf.zeros((1, 2, 2, 1), tf.int64))
        with self.assertRaisesRegex(ValueError, r"`x` must be a float tensor. Received: x.dtype=bool.$"):
            _checks.check_images(np.zeros((1, 2, 2, 1), bool), "x", unit_range=False)

    def test_rank(self):
        with self.assertRaisesRegex(ValueError, r"`images` must have rank 4, shape \(N, H, W, C\). Received: "
                                                r"images.shape=\(2, 28, 28\). Add a channel axis"):
            _checks.check_images(np.zeros((2, 28, 28), "float32"))
        with self.assertRaisesRegex(ValueError, r"`images` must be a tensor of shape \(N, H, W, C\). Received: "
                                                r"a tf.data.Dataset."):
            _checks.check_images(tf.data.Dataset.from_tensors(np.zeros((1, 1, 1, 1))))

    def test_values(self):
        x = np.full((2, 2, 2, 1), 0.5, "float32")
        x[0, 0, 0, 0], x[1, 1, 1, 0] = np.nan, np.inf
        with self.assertRaisesRegex(ValueError, r"`images` must be finite. Received: images with 2 NaN/Inf values."):
            _checks.check_images(x)
        _checks.check_images(x, allow_nan=True)
        y = np.full((1, 2, 2, 1), 0.5, "float32")
        y[0, 0, 0, 0] = -0.25
        with self.assertRaisesRegex(ValueError, r"`images` must have values in \[0, 1\]. Received: images with "
                                                r"min=-0.25, max=0.5."):
            _checks.check_images(y, check_range=True)
        _checks.check_images(y)  # the range check is opt-in

    def test_values_are_not_checked_while_tracing(self):
        @tf.function
        def f(x):
            return _checks.check_images(x, check_range=True)

        self.assertAllEqual(f(tf.fill((1, 1, 1, 1), 2.0)), [[[[2.0]]]])


class CheckTargetTest(TestCase):
    def test_ok(self):
        out = _checks.check_target(np.array([0, 2], "int64"), 2, 3)
        self.assertEqual(out.dtype, tf.int32)
        self.assertAllEqual(out, [0, 2])
        self.assertAllEqual(_checks.check_target([1, 1], 2), [1, 1])

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, r"`labels` must be integer class indices of shape \(N,\) or the "
                                                r"string 'predicted'. Received: labels.dtype=float32."):
            _checks.check_target(tf.zeros(2), 2, name="labels")
        with self.assertRaisesRegex(ValueError, r"`target` must have shape \(N,\) with N = images.shape\[0\] = 3. "
                                                r"Received: target.shape=\(2,\)."):
            _checks.check_target([0, 1], 3)
        with self.assertRaisesRegex(ValueError, r"`target` must hold class indices in \[0, 9\]. Received: target "
                                                r"with min=0, max=10."):
            _checks.check_target([0, 10], 2, 10)


class CheckNumbersTest(TestCase):
    def test_positive_int(self):
        self.assertEqual(_checks.check_positive_int(np.int64(3), "steps"), 3)
        for bad in (0, -1, 2.0, True, "3", None):
            with self.assertRaisesRegex(ValueError, r"`steps` must be an integer >= 1. Received: steps="):
                _checks.check_positive_int(bad, "steps")
        with self.assertRaisesRegex(ValueError, r"`k` must be an integer >= 1 and <= 784 \(the number of pixels "
                                                r"per map\). Received: k=785."):
            _checks.check_positive_int(785, "k", maximum=784, context=" (the number of pixels per map)")
        self.assertEqual(_checks.check_positive_int(0, "seed", minimum=0), 0)

    def test_nonnegative(self):
        self.assertEqual(_checks.check_nonnegative("0.5", "noise"), 0.5)
        self.assertEqual(_checks.check_nonnegative(0, "noise"), 0.0)
        for bad in (-1e-9, np.nan, np.inf):
            with self.assertRaisesRegex(ValueError, r"`noise` must be a finite number >= 0. Received: noise="):
                _checks.check_nonnegative(bad, "noise")
        with self.assertRaisesRegex(ValueError, r"`beta` must be a finite number > 0. Received: beta=0"):
            _checks.check_nonnegative(0, "beta", strict=True)
        with self.assertRaisesRegex(ValueError, r"`beta` must be a number. Received: beta='soft'"):
            _checks.check_nonnegative("soft", "beta")

    def test_logits(self):
        _checks.check_logits(tf.zeros((2, 3)))
        with self.assertRaisesRegex(ValueError, r"The model output must be logits of shape \(N, num_classes\). "
                                                r"Received: shape=\(2, 3, 1\)."):
            _checks.check_logits(tf.zeros((2, 3, 1)))


class CheckMapsTest(TestCase):
    def test_ok(self):
        self.assertEqual(_checks.check_maps(np.zeros((2, 3, 3), "float32"), "m").dtype, tf.float32)
        self.assertEqual(_checks.check_maps(np.zeros((2, 9), "int32"), "m").dtype, tf.float64)

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, r"`clean_map` must have shape \(N, P\) or \(N, H, W\). Received: "
                                                r"clean_map.shape=\(2, 3, 3, 1\). Pass saliency maps"):
            _checks.check_maps(np.zeros((2, 3, 3, 1)), "clean_map")
        with self.assertRaisesRegex(ValueError, r"`adv_map` must have shape \(N, H, W\). Received: "
                                                r"adv_map.shape=\(9,\).$"):
            _checks.check_maps(np.zeros(9), "adv_map", ranks=(3,))
        with self.assertRaisesRegex(ValueError, r"`m` must be a real-valued tensor.*Received: m.dtype=bool."):
            _checks.check_maps(np.zeros((1, 2), bool), "m")
        with self.assertRaisesRegex(ValueError, r"`m` must be a real-valued tensor.*Received: m.dtype=complex64."):
            _checks.check_maps(tf.zeros((1, 2), tf.complex64), "m")
        with self.assertRaisesRegex(ValueError, r"`m` must be finite. Received: m with 1 NaN/Inf values."):
            _checks.check_maps(np.array([[0.0, np.nan]]), "m")
        with self.assertRaisesRegex(ValueError, r"`m` must be non-negative.*Received: m with min=-1."):
            _checks.check_maps(np.array([[[0.0, -1.0]]]), "m", nonnegative=True)
