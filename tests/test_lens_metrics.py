"""LENS metrics (Kamath et al. 2024) against brute-force NumPy loops and SciPy, on random and tied maps."""
import numpy as np
from scipy import stats

from attr_robust_tf import metrics
from testing import TestCase


def _order(m):
    """Flat pixel indices by value, largest first, ties to the lower index (independent of np.argsort)."""
    flat = m.reshape(-1)
    return sorted(range(flat.size), key=lambda i: (-flat[i], i))


def _near(p, q, w, width):
    """Pixels p, q (flat) within the w×w square of each other (Chebyshev distance ≤ (w − 1)/2)."""
    return max(abs(p // width - q // width), abs(p % width - q % width)) <= w // 2


def _brute_topk(m, k):
    return _order(m)[:k]


def _brute_div(m, k, w):
    chosen = []
    for p in _order(m):
        if len(chosen) == k:
            break
        if not any(_near(p, q, w, m.shape[1]) for q in chosen):
            chosen.append(p)
    return chosen


def _brute_overlap(sa, sb, w, width, direction):
    if direction == "recall":  # attacked pixels near a clean one
        return sum(any(_near(q, p, w, width) for p in sa) for q in sb) / len(sb)
    return sum(any(_near(p, q, w, width) for q in sb) for p in sa) / len(sa)


def _brute_dilate(m, w):
    h, width = m.shape
    r = w // 2
    return np.array([[m[max(0, i - r):i + r + 1, max(0, j - r):j + r + 1].max() for j in range(width)]
                     for i in range(h)])


def _cases():
    rng = np.random.default_rng(3)
    a = rng.random((3, 9, 11))
    yield "random", a, a + rng.normal(scale=0.3, size=a.shape)
    yield "ties", rng.integers(0, 3, (3, 9, 11)).astype(np.float64), rng.integers(0, 4, (3, 9, 11)).astype(np.float64)
    shifted = np.roll(a, 1, axis=2)
    yield "shifted by one", a, shifted


class LensTopKTest(TestCase):

    def test_matches_brute_force(self):
        for name, a, b in _cases():
            for k in (1, 7, 30):
                for w in (1, 3, 5):
                    for direction in ("recall", "precision"):
                        got = metrics.lens_topk(a, b, k, w, direction=direction).numpy()
                        want = [_brute_overlap(_brute_topk(x, k), _brute_topk(y, k), w, a.shape[2], direction)
                                for x, y in zip(a, b)]
                        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=f"{name} k={k} w={w} {direction}")

    def test_div_matches_brute_force(self):
        for name, a, b in _cases():
            for k in (1, 6, 40):  # 40 > the 12 or so diverse pixels of a 9×11 map at w = 5: smaller sets
                for w in (1, 3, 5):
                    for direction in ("recall", "precision"):
                        got = metrics.lens_topk_div(a, b, k, w, direction=direction).numpy()
                        want = [_brute_overlap(_brute_div(x, k, w), _brute_div(y, k, w), w, a.shape[2], direction)
                                for x, y in zip(a, b)]
                        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=f"{name} k={k} w={w} {direction}")

    def test_diverse_set_has_no_two_pixels_in_one_window(self):
        a = np.random.default_rng(0).random((2, 12, 12))
        mask = metrics.diverse_topk_masks(a, 100, 3)
        for m, x in zip(mask, a):
            rows, cols = np.nonzero(m)
            d = np.maximum(np.abs(rows[:, None] - rows[None]), np.abs(cols[:, None] - cols[None]))
            self.assertTrue(np.all(d[~np.eye(len(rows), dtype=bool)] >= 2))
            self.assertEqual(len(rows), len(_brute_div(x, 100, 3)))
            self.assertLess(len(rows), 100)  # a 12×12 map holds at most 36 pixels two apart

    def test_window_one_is_plain_topk_intersection(self):
        for name, a, b in _cases():
            for k in (1, 10, 99):
                plain = metrics.topk_intersection(a, b, k).numpy()
                for direction in ("recall", "precision"):
                    np.testing.assert_array_equal(metrics.lens_topk(a, b, k, 1, direction=direction).numpy(), plain)
                    np.testing.assert_array_equal(metrics.lens_topk_div(a, b, k, 1, direction=direction).numpy(),
                                                  plain)

    def test_local_shift_is_kept(self):
        # a one-pixel shift of a map: plain top-k loses pixels, 3-LENS keeps them all
        a = np.zeros((1, 10, 10))
        a[0, 3:6, 3:6] = np.arange(1, 10).reshape(3, 3)
        b = np.roll(a, 1, axis=1)
        self.assertLess(float(metrics.topk_intersection(a, b, 9)[0]), 1.0)
        self.assertEqual(float(metrics.lens_topk(a, b, 9)[0]), 1.0)
        self.assertEqual(float(metrics.lens_topk(a, b, 9, direction="precision")[0]), 1.0)

    def test_bad_arguments(self):
        a = np.zeros((1, 4, 4))
        with self.assertRaisesRegex(ValueError, "`window` must be an odd"):
            metrics.lens_topk(a, a, 2, window=2)
        with self.assertRaisesRegex(ValueError, "Did you mean 'recall'"):
            metrics.lens_topk(a, a, 2, direction="recal")
        with self.assertRaisesRegex(ValueError, "`k` must"):
            metrics.lens_topk(a, a, 17)
        with self.assertRaisesRegex(ValueError, r"shape \(N, H, W\)"):
            metrics.lens_topk(a.reshape(1, 16), a.reshape(1, 16), 2)


class LensRankCorrelationTest(TestCase):

    def test_matches_scipy_on_brute_force_dilation(self):
        for name, a, b in _cases():
            for w in (1, 3, 5):
                da = np.array([_brute_dilate(x, w).ravel() for x in a])
                db = np.array([_brute_dilate(y, w).ravel() for y in b])
                tau = [stats.kendalltau(x, y).statistic for x, y in zip(da, db)]
                rho = [stats.spearmanr(x, y).statistic for x, y in zip(da, db)]
                np.testing.assert_allclose(metrics.lens_kendall_tau(a, b, w).numpy(), tau, rtol=1e-5, atol=1e-6,
                                           err_msg=f"{name} w={w}")
                np.testing.assert_allclose(metrics.lens_spearman_rho(a, b, w).numpy(), rho, rtol=1e-5, atol=1e-6,
                                           err_msg=f"{name} w={w}")

    def test_window_one_is_plain(self):
        for name, a, b in _cases():
            np.testing.assert_array_equal(metrics.lens_kendall_tau(a, b, 1).numpy(), metrics.kendall_tau(a, b).numpy())
            np.testing.assert_array_equal(metrics.lens_spearman_rho(a, b, 1).numpy(),
                                          metrics.spearman_rho(a, b).numpy())

    def test_lens_metrics_keys(self):
        a = np.random.default_rng(1).random((2, 8, 8))
        out = metrics.lens_metrics(a, a, 5)
        self.assertEqual(set(out), {"lens_topk", "lens_topk_precision", "lens_topk_div", "lens_kendall",
                                    "lens_spearman"})
        for v in out.values():
            np.testing.assert_allclose(v, 1.0, rtol=1e-6)
