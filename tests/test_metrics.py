"""Metrics against SciPy (kendalltau, spearmanr, ndimage.center_of_mass) and naive loops."""
from unittest import mock

import keras
import numpy as np
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import ndimage, stats

from attr_robust_tf import metrics
from testing import TestCase


def _rng(seed=0):
    return np.random.default_rng(seed)


def _scipy(fn, a, b):
    a, b = np.asarray(a).reshape(len(a), -1), np.asarray(b).reshape(len(b), -1)
    return np.array([fn(x, y).statistic for x, y in zip(a, b)])


def _cases():
    """(name, clean, adv) map batches: continuous, tie-heavy, zero-heavy (zero-baseline IG on MNIST)."""
    rng = _rng(0)
    a = rng.random((4, 28, 28)).astype("float32")
    yield "random", a, (a + rng.normal(scale=0.3, size=a.shape)).astype("float32")
    yield "heavy ties", rng.integers(0, 4, (4, 28, 28)).astype("float32"), \
        rng.integers(0, 3, (4, 28, 28)).astype("float32")
    zeros = rng.random((4, 28, 28)) < 0.8
    c = np.where(zeros, 0.0, rng.random((4, 28, 28))).astype("float32")
    d = np.where(rng.random((4, 28, 28)) < 0.8, 0.0, c + rng.random((4, 28, 28))).astype("float32")
    yield "zero heavy", c, d
    yield "odd size", rng.integers(0, 5, (3, 7)).astype("float64"), rng.random((3, 7))
    yield "two pixels", np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([[0.0, 1.0], [0.0, 1.0]])


class RankCorrelationTest(TestCase):
    def test_kendall_equals_scipy(self):
        for name, a, b in _cases():
            self.assertAllClose(metrics.kendall_tau(a, b), _scipy(stats.kendalltau, a, b), atol=1e-6, msg=name)

    def test_spearman_equals_scipy(self):
        for name, a, b in _cases():
            self.assertAllClose(metrics.spearman_rho(a, b), _scipy(stats.spearmanr, a, b), atol=1e-6, msg=name)

    def test_identical_reversed_and_constant(self):
        a = _rng(1).random((2, 8, 8))
        for fn in (metrics.kendall_tau, metrics.spearman_rho):
            self.assertAllClose(fn(a, a), [1.0, 1.0])
            self.assertAllClose(fn(a, -a), [-1.0, -1.0])
            self.assertAllClose(fn(a, a.max() - a), [-1.0, -1.0])  # any decreasing transform
            out = fn(np.stack([np.ones((8, 8)), a[1]]), a).numpy()
            self.assertTrue(np.isnan(out[0]))  # a constant map: undefined, as in SciPy
            self.assertAllClose(out[1], 1.0)

    def test_signed_zeros_negative_values_and_dtypes(self):
        a = np.array([[-0.0, 0.0, -1.5, 2.0, -1e-30, 3e4, -3.0, 0.0, -1.5, 7.0]])
        b = np.array([[1.0, -0.0, 0.0, 2.0, -2.0, 2.0, -3.0, 5.0, 0.0, -1e-20]])
        expected = _scipy(stats.kendalltau, a, b)
        for dtype in ("float16", "float32", "float64", "int64"):
            x, y = a.astype(dtype), b.astype(dtype)
            self.assertAllClose(metrics.kendall_tau(x, y), _scipy(stats.kendalltau, x, y), atol=1e-6, msg=dtype)
        self.assertAllClose(metrics.kendall_tau(a.astype("float32"), b), expected, atol=1e-6)

    def test_flower_size_with_and_without_ties(self):
        rng = _rng(2)
        a = rng.random((1, 128 * 128))
        b = a + rng.random(a.shape)
        ties_a = rng.integers(0, 50, a.shape).astype("float32")
        ties_b = np.where(rng.random(a.shape) < 0.5, 0.0, ties_a + rng.integers(0, 3, a.shape)).astype("float32")
        for x, y in ((a, b), (ties_a, ties_b)):
            self.assertAllClose(metrics.kendall_tau(x, y), _scipy(stats.kendalltau, x, y), atol=1e-6)

    def test_large_maps_use_the_wide_integer_path(self):
        rng = _rng(3)
        a = rng.integers(0, 1000, (1, 40_000)).astype("float32")  # more than 2**15 entries, ties
        b = a + rng.integers(0, 30, a.shape)
        self.assertAllClose(metrics.kendall_tau(a, b), _scipy(stats.kendalltau, a, b), atol=1e-6)

    def test_merge_and_contingency_table_counts_agree(self):
        # maps with few distinct values are counted by table cells; force the merge count too
        for name, a, b in _cases():
            a, b = np.asarray(a).reshape(len(a), -1), np.asarray(b).reshape(len(b), -1)
            expected = _scipy(stats.kendalltau, a, b)
            for cells in (0.0, 1e9):
                with mock.patch.object(metrics, "_TABLE_CELLS", cells):
                    self.assertAllClose(metrics.kendall_tau_b(a, b), expected, atol=1e-12, msg=name)

    def test_inversions_against_naive_count(self):
        rng = _rng(4)
        for p in (1, 2, 3, 5, 8, 31, 64, 100):
            v = rng.integers(0, max(1, p // 2), (3, p))
            naive = [sum(int(r[i] > r[j]) for i in range(p) for j in range(i + 1, p)) for r in v]
            self.assertAllEqual(metrics._inversions(v), naive)

    def test_inside_tf_function_with_free_batch(self):
        rng = _rng(5)
        a, b = rng.random((3, 6, 6)).astype("float32"), rng.random((3, 6, 6)).astype("float32")
        spec = tf.TensorSpec([None, 6, 6])
        for fn, ref in ((metrics.kendall_tau, stats.kendalltau), (metrics.spearman_rho, stats.spearmanr)):
            out = tf.function(fn, input_signature=[spec, spec])(a, b)
            self.assertAllClose(out, _scipy(ref, a, b), atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.int8, st.tuples(st.integers(1, 3), st.integers(2, 40)), elements=st.integers(-3, 3)),
       st.data())
def test_rank_correlations_equal_scipy_on_generated_maps(a, data):
    b = data.draw(hnp.arrays(np.int8, a.shape, elements=st.integers(-3, 3)))
    a, b = a.astype("float32"), b.astype("float32")
    for ours, ref in ((metrics.kendall_tau, stats.kendalltau), (metrics.spearman_rho, stats.spearmanr)):
        with np.errstate(invalid="ignore", divide="ignore"):
            expected = np.array([ref(x, y).statistic if np.ptp(x) and np.ptp(y) else np.nan
                                 for x, y in zip(a, b)])
        np.testing.assert_allclose(ours(a, b).numpy(), expected, atol=1e-6)


class TopKTest(TestCase):
    @staticmethod
    def _oracle(a, b, k):
        a, b = np.asarray(a).reshape(len(a), -1), np.asarray(b).reshape(len(b), -1)
        out = []
        for x, y in zip(a, b):
            top_x = np.argsort(-x, kind="stable")[:k]  # stable: the lower index wins a tie
            top_y = np.argsort(-y, kind="stable")[:k]
            out.append(len(set(top_x) & set(top_y)) / k)
        return np.array(out)

    def test_against_stable_argsort(self):
        for name, a, b in _cases():
            for k in (1, 2, 5, 100):
                k = min(k, np.asarray(a[0]).size)
                self.assertAllClose(metrics.topk_intersection(a, b, k), self._oracle(a, b, k), msg=name)

    def test_ties_go_to_the_lower_index(self):
        flat = np.zeros((1, 10), "float32")
        first = np.zeros((1, 10), "float32")
        first[0, :3] = 1.0
        last = np.zeros((1, 10), "float32")
        last[0, -3:] = 1.0
        self.assertAllClose(metrics.topk_intersection(flat, first, 3), [1.0])
        self.assertAllClose(metrics.topk_intersection(flat, last, 3), [0.0])
        self.assertAllClose(metrics.topk_intersection(first, flat, 3), [1.0])
        self.assertAllClose(metrics.topk_intersection(last, flat, 3), [0.0])

    def test_extremes(self):
        a = _rng(6).random((2, 5, 5))
        self.assertAllClose(metrics.topk_intersection(a, a, 7), [1.0, 1.0])
        self.assertAllClose(metrics.topk_intersection(a, -a, 25), [1.0, 1.0])  # k = P: everything
        self.assertAllClose(metrics.topk_intersection(a, -a, 12), [0.0, 0.0])

    def test_k_is_validated(self):
        a = np.zeros((1, 28, 28), "float32")
        for k in (0, 785, 2.0, True, None):
            with self.assertRaisesRegex(ValueError, r"`k` must be an integer >= 1 and <= 784 \(the number of "
                                                    r"pixels per map\). Received: k="):
                metrics.topk_intersection(a, a, k)


class CenterOfMassTest(TestCase):
    def test_against_scipy_ndimage(self):
        rng = _rng(7)
        a, b = rng.random((3, 9, 5)), rng.random((3, 9, 5)) ** 4
        expected = [np.linalg.norm(np.subtract(ndimage.center_of_mass(x), ndimage.center_of_mass(y)))
                    for x, y in zip(a, b)]
        self.assertAllClose(metrics.center_of_mass_shift(a, b), expected, rtol=1e-6)

    def test_scale_invariant_and_float_centers(self):
        a = np.zeros((1, 4, 4))
        a[0, 0, 0] = a[0, 0, 1] = 1.0  # center (0, 0.5): truncation to int would hide the half pixel
        b = np.zeros((1, 4, 4))
        b[0, 3, 3] = 5.0
        self.assertAllClose(metrics.center_of_mass_shift(a, b), [np.hypot(3.0, 2.5)])
        self.assertAllClose(metrics.center_of_mass_shift(a, 7.0 * a), [0.0])

    def test_zero_map_is_nan_and_bad_maps_raise(self):
        out = metrics.center_of_mass_shift(np.zeros((1, 3, 3)), np.ones((1, 3, 3))).numpy()
        self.assertTrue(np.isnan(out[0]))
        with self.assertRaisesRegex(ValueError, r"`adv_map` must be non-negative"):
            metrics.center_of_mass_shift(np.ones((1, 3, 3)), -np.ones((1, 3, 3)))
        with self.assertRaisesRegex(ValueError, r"`clean_map` must have shape \(N, H, W\). Received: "
                                                r"clean_map.shape=\(1, 9\)"):
            metrics.center_of_mass_shift(np.ones((1, 9)), np.ones((1, 9)))


class BadMapsTest(TestCase):
    def test_errors(self):
        a = np.zeros((2, 4, 4), "float32")
        for fn in (metrics.kendall_tau, metrics.spearman_rho, lambda x, y: metrics.topk_intersection(x, y, 3)):
            with self.assertRaisesRegex(ValueError, r"`adv_map` must have the shape of `clean_map` = \(2, 4, 4\). "
                                                    r"Received: adv_map.shape=\(2, 16\)"):
                fn(a, a.reshape(2, 16))
            with self.assertRaisesRegex(ValueError, r"`clean_map` must have shape \(N, P\) or \(N, H, W\). "
                                                    r"Received: clean_map.shape=\(2, 4, 4, 1\)"):
                fn(a[..., None], a[..., None])
            bad = a.copy()
            bad[1, 2, 3] = np.nan
            with self.assertRaisesRegex(ValueError, r"`adv_map` must be finite. Received: adv_map with 1 NaN"):
                fn(a, bad)
            with self.assertRaisesRegex(ValueError, r"`clean_map` must be a real-valued tensor.*Received: "
                                                    r"clean_map.dtype=bool"):
                fn(a.astype(bool), a)


class MetricWrapperTest(TestCase):
    def setUp(self):
        super().setUp()
        rng = _rng(8)
        self.batches = [(rng.random((3, 5, 5)).astype("float32"), rng.random((3, 5, 5)).astype("float32"))
                        for _ in range(2)]
        self.weights = [np.array([1.0, 0.0, 2.0]), np.array([0.5, 1.0, 1.0])]

    def _wrappers(self):
        return [(metrics.TopKIntersection(4), lambda a, b: metrics.topk_intersection(a, b, 4)),
                (metrics.KendallTau(), metrics.kendall_tau),
                (metrics.SpearmanRho(), metrics.spearman_rho),
                (metrics.CenterOfMassShift(), metrics.center_of_mass_shift)]

    def test_weighted_mean_over_batches(self):
        for metric, fn in self._wrappers():
            values = np.concatenate([fn(a, b).numpy() for a, b in self.batches])
            for (a, b), w in zip(self.batches, self.weights):
                metric.update_state(a, b, sample_weight=w)
            self.assertAllClose(metric.result(), np.average(values, weights=np.concatenate(self.weights)),
                                rtol=1e-5, msg=metric.name)
            metric.reset_state()
            self.assertAllClose(metric.result(), 0.0)

    def test_update_inside_tf_function(self):
        metric = metrics.KendallTau()
        a, b = self.batches[0]

        @tf.function(input_signature=[tf.TensorSpec([None, 5, 5])] * 2)
        def update(x, y):
            metric.update_state(x, y)

        update(a, b)
        self.assertAllClose(metric.result(), np.mean(_scipy(stats.kendalltau, a, b)), atol=1e-6)

    def test_config_round_trip(self):
        for metric, _ in self._wrappers():
            config = metric.get_config()
            self.assertNotIn("fn", config)
            clone = type(metric).from_config(config)
            self.assertEqual(clone.get_config(), config)
            restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric))
            self.assertIsInstance(restored, type(metric))
            self.assertEqual(restored.get_config(), config)
        self.assertEqual(metrics.TopKIntersection(7, name="in7").get_config()["k"], 7)
        self.assertEqual(keras.saving.get_registered_name(metrics.KendallTau), "attr_robust_tf>KendallTau")

    def test_k_validated_at_construction_and_update(self):
        with self.assertRaisesRegex(ValueError, r"`k` must be an integer >= 1. Received: k=0"):
            metrics.TopKIntersection(0)
        metric = metrics.TopKIntersection(30)
        with self.assertRaisesRegex(ValueError, r"`k` must be an integer >= 1 and <= 25"):
            metric.update_state(*self.batches[0])
