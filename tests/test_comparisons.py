"""Paired comparisons of two models on the same test images (attr_robust_tf.reproduction.comparisons).

Oracles: an independent NumPy float64 bootstrap (one resample of pairs at a time, the same generator), the
differences computed by hand on the shared image indices, and SciPy's normal quantile for the width of the
interval of a large sample.
"""
import numpy as np
from scipy import stats as scipy_stats

import testing
from attr_robust_tf import reproduction
from attr_robust_tf.reproduction import comparisons, pages


def record(index, topk, kendall=None, *, correct=None, found=None):
    n = len(index)
    return {"index": list(index), "clean_correct": [True] * n if correct is None else list(correct),
            "found": [True] * n if found is None else list(found), "topk": list(topk),
            "kendall": list(topk if kendall is None else kendall)}


def numpy_paired_bootstrap(a, b, samples, seed, level=0.95):
    """Percentile bootstrap of mean(a − b), resampling pairs one resample at a time."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    rng = np.random.default_rng(seed)
    means = np.array([d[rng.integers(0, d.size, size=d.size)].mean() for _ in range(samples)])
    tail = 100 * (1 - level) / 2
    return np.percentile(means, [tail, 100 - tail])


class PairedDifferenceTest(testing.TestCase):
    def test_matches_an_independent_numpy_bootstrap(self):
        rng = np.random.default_rng(7)
        shared = rng.uniform(0.3, 0.8, 60)  # image difficulty, common to both models
        a = np.clip(shared + 0.05 + rng.normal(0, 0.03, 60), 0, 1)
        b = np.clip(shared + rng.normal(0, 0.03, 60), 0, 1)
        out = comparisons.paired_difference(record(range(60), a), record(range(60), b), "topk", samples=500, seed=11)
        lo, hi = numpy_paired_bootstrap(a, b, 500, 11)
        self.assertAllClose(out["mean"], np.mean(a - b), atol=1e-12)
        self.assertAllClose([out["ci_low"], out["ci_high"]], [lo, hi], atol=1e-12)
        self.assertEqual(out["n"], 60)
        self.assertAllClose([out["first"], out["second"]], [a.mean(), b.mean()])
        # pairing removes the shared image difficulty: far narrower than the per-model intervals' spread
        self.assertLess(hi - lo, 0.5 * (np.std(a) + np.std(b)) / np.sqrt(60) * 2 * 1.96)

    def test_large_sample_width_is_the_normal_one(self):
        rng = np.random.default_rng(0)
        d = rng.normal(0.02, 0.1, 4000)
        out = comparisons.paired_difference(record(range(4000), 0.5 + d), record(range(4000), np.full(4000, 0.5)),
                                            "kendall", samples=2000, seed=3)
        half = scipy_stats.norm.ppf(0.975) * d.std(ddof=1) / np.sqrt(d.size)
        self.assertAllClose(out["ci_high"] - out["ci_low"], 2 * half, rtol=0.1)

    def test_pairs_only_the_shared_attacked_images(self):
        # model 1 evaluated images 0..9, model 2 images 5..14 (another subset); image 6 failed in model 1,
        # image 8 was misclassified by model 2, image 9 has an undefined (None) τ in model 2
        i1, i2 = np.arange(0, 10), np.arange(5, 15)
        t1, t2 = 0.1 * i1 % 1, 0.05 * i2 % 1
        k2 = [None if i == 9 else 0.3 for i in i2]
        first = record(i1, t1, found=[i != 6 for i in i1])
        second = record(i2[::-1], t2[::-1], k2[::-1], correct=[i != 8 for i in i2[::-1]])  # order does not matter
        out = comparisons.paired_difference(first, second, "topk", samples=200, seed=0)
        keep = [5, 7, 9]  # shared: 5..9; minus 6 (not found in 1) and 8 (not correct in 2)
        expected = np.array([t1[i] - t2[i - 5] for i in keep])
        self.assertEqual(out["n"], 3)
        self.assertAllClose(out["mean"], expected.mean(), atol=1e-12)
        self.assertAllClose([out["ci_low"], out["ci_high"]], numpy_paired_bootstrap(
            [t1[i] for i in keep], [t2[i - 5] for i in keep], 200, 0), atol=1e-12)
        kendall = comparisons.paired_difference(first, second, "kendall", samples=200, seed=0)
        self.assertEqual(kendall["n"], 2)  # image 9's τ is undefined in model 2
        accuracy = comparisons.paired_difference(first, second, "natural_accuracy", samples=200, seed=0)
        self.assertEqual(accuracy["n"], 5)  # every shared image, correct or not
        self.assertAllClose(accuracy["mean"], 1 / 5)  # only image 8 differs (1 − 0)
        disjoint = comparisons.paired_difference(record([1, 2], [0.5, 0.5]), record([3], [0.5]), "topk")
        self.assertEqual((disjoint["n"], disjoint["mean"]), (0, None))

    def test_bad_input(self):
        with self.assertRaisesRegex(ValueError, "`metric` must be one of"):
            comparisons.paired_difference(record([0], [1.0]), record([0], [1.0]), "spearman")
        with self.assertRaisesRegex(ValueError, "`first` must list each image index once"):
            comparisons.paired_difference(record([0, 0], [1.0, 1.0]), record([0], [1.0]), "topk")
        with self.assertRaisesRegex(ValueError, "`per_image` must hold found, topk"):
            comparisons.paired_difference({"index": [0], "clean_correct": [True]}, record([0], [1.0]), "topk")


def cell(dataset, objective, topk, correct=None, *, index=None):
    index = list(range(len(topk))) if index is None else index
    correct = [True] * len(topk) if correct is None else correct
    mean = float(np.mean(topk))
    stat = {"mean": mean, "ci_low": mean - 0.01, "ci_high": mean + 0.01, "n": len(topk)}
    summary = {"topk": stat, "kendall": stat, "spearman": stat, "center_shift": stat, "num_failed": 0,
               "num_undefined": {}}
    return {"dataset": dataset, "objective": objective, "entry": objective, "failed_attack": "exclude",
            "summaries": {"exclude": summary, "reference": summary}, "natural_accuracy": stat, "pgd_accuracy": stat,
            "protocol": {"bootstrap_samples": 300, "seed": 0}, "per_image": record(index, topk, correct=correct)}


class ClaimTest(testing.TestCase):
    def test_paired_comparisons_and_verdicts(self):
        rng = np.random.default_rng(1)
        base = rng.uniform(0.4, 0.6, 400)
        cells = [cell("mnist", "ig_sum_norm", base),
                 cell("mnist", "sarkar2021", base + 0.06 + rng.normal(0, 0.01, 400)),  # clearly ≥ 3 points
                 cell("mnist", "madry", base - 0.02),
                 cell("fashion_mnist", "sarkar2021", base)]  # no baseline on this dataset: left out
        paired = reproduction.paired_comparisons(cells)
        self.assertEqual(list(paired), ["mnist"])
        self.assertEqual(list(paired["mnist"]), ["sarkar2021", "madry"])
        self.assertAllClose(paired["mnist"]["madry"]["topk"]["mean"], -0.02, atol=1e-12)
        self.assertEqual(pages.verdict(paired["mnist"]["sarkar2021"])[0], "yes")
        self.assertEqual(pages.verdict(paired["mnist"]["madry"])[0], "no")
        lines = pages.paired_claim(cells[:3], paired["mnist"])
        self.assertLen(lines, 1)
        self.assertIn("paired over the 400 images attacked in both", lines[0])
        self.assertIn("Better by ≥ 3 top-k points at NA within 2 points: **yes**", lines[0])

    def test_lens_recall_is_paired_when_both_cells_hold_it(self):
        rng = np.random.default_rng(2)
        base = rng.uniform(0.4, 0.6, 200)
        cells = [cell("mnist", "ig_sum_norm", base), cell("mnist", "sarkar2021", base + 0.01),
                 cell("mnist", "madry", base - 0.01)]
        lens_base, lens_sarkar = rng.uniform(0.8, 1.0, 200), rng.uniform(0.8, 1.0, 200)
        lens_sarkar[3] = np.nan  # an undefined value leaves its pair out, as for top-k
        cells[0]["per_image"]["lens_topk"] = list(lens_base)
        cells[1]["per_image"]["lens_topk"] = [None if np.isnan(v) else v for v in lens_sarkar]
        paired = reproduction.paired_comparisons(cells)["mnist"]
        self.assertNotIn("lens_topk", paired["madry"])  # madry's record has no LENS values
        keep = np.arange(200) != 3
        out = paired["sarkar2021"]["lens_topk"]
        lo, hi = numpy_paired_bootstrap(lens_sarkar[keep], lens_base[keep], 300, 0 + 204)
        self.assertAllClose(out["mean"], np.mean(lens_sarkar[keep] - lens_base[keep]), atol=1e-12)
        self.assertAllClose([out["ci_low"], out["ci_high"]], [lo, hi], atol=1e-12)
        self.assertEqual(out["n"], 199)
        lines = pages.paired_claim(cells[:2], paired)
        self.assertIn("LENS-recall " + pages._points(out) + ", the interval", lines[0])
        self.assertNotIn("LENS", "\n".join(pages.paired_table(paired)))  # not every row has it: no column
        self.assertIn("Δ LENS-recall", pages.paired_table({"sarkar2021": paired["sarkar2021"]})[0])

    def test_verdict_thresholds(self):
        def stats(topk, na):
            return {"topk": {"mean": np.mean(topk), "ci_low": topk[0], "ci_high": topk[1]},
                    "natural_accuracy": {"mean": np.mean(na), "ci_low": na[0], "ci_high": na[1]}}

        self.assertEqual(pages.verdict(stats((0.035, 0.05), (-0.01, 0.01)))[0], "yes")
        self.assertEqual(pages.verdict(stats((0.01, 0.025), (-0.01, 0.01)))[0], "no")
        self.assertEqual(pages.verdict(stats((0.04, 0.06), (-0.05, -0.03))), ("no", "NA is lower by more than 2 "
                                                                               "points"))
        self.assertEqual(pages.verdict(stats((0.02, 0.05), (-0.01, 0.01)))[0], "unresolved")
        self.assertEqual(pages.verdict(stats((0.04, 0.05), (-0.03, 0.0)))[0], "unresolved")


class SeedReplicateTest(testing.TestCase):
    def test_paired_baseline_matches_the_seed(self):
        from attr_robust_tf.reproduction import names
        self.assertEqual(names.paired_baseline("sarkar2021"), "ig_sum_norm")
        self.assertEqual(names.paired_baseline("madry@model.name=cpu_cnn_avgpool"), "ig_sum_norm")
        self.assertEqual(names.paired_baseline("sarkar2021@seed=1"), "ig_sum_norm@seed=1")
        self.assertEqual(names.paired_baseline("sarkar2021@train.epochs=4+seed=7"), "ig_sum_norm@seed=7")
        self.assertEqual(names.paired_baseline("ig_sum_norm@seed=1"), "ig_sum_norm")
        self.assertEqual(names.paired_baseline("ig_sum_norm@seed=1+model.name=cpu_cnn_avgpool"), "ig_sum_norm@seed=1")
        self.assertIsNone(names.seed_override("sarkar2021@train.epochs=4"))
        self.assertEqual(names.seed_override("sarkar2021@train.epochs=4+seed=7"), "seed=7")

    def test_replicates_are_paired_within_their_seed(self):
        rng = np.random.default_rng(3)
        base, base1 = rng.uniform(0.4, 0.6, 300), rng.uniform(0.4, 0.6, 300)
        sarkar, sarkar1 = base + 0.06 + rng.normal(0, 0.01, 300), base1 + 0.005 + rng.normal(0, 0.01, 300)
        cells = [cell("mnist", "ig_sum_norm", base), cell("mnist", "sarkar2021", sarkar),
                 cell("mnist", "ig_sum_norm", base1), cell("mnist", "sarkar2021", sarkar1),
                 cell("mnist", "madry", base - 0.1)]
        for c, entry in zip(cells[2:], ("ig_sum_norm@seed=1", "sarkar2021@seed=1", "madry@seed=2")):
            c["entry"] = entry
        paired = reproduction.paired_comparisons(cells)["mnist"]
        # madry@seed=2 has no IG-SUM-NORM of seed 2: left out rather than compared across seeds
        self.assertEqual(list(paired), ["sarkar2021", "ig_sum_norm@seed=1", "sarkar2021@seed=1"])
        for entry, a, b in (("sarkar2021", sarkar, base), ("ig_sum_norm@seed=1", base1, base),
                            ("sarkar2021@seed=1", sarkar1, base1)):
            self.assertAllClose(paired[entry]["topk"]["mean"], np.mean(a - b), atol=1e-12)
            lo, hi = numpy_paired_bootstrap(a, b, 300, 202)
            self.assertAllClose([paired[entry]["topk"]["ci_low"], paired[entry]["topk"]["ci_high"]], [lo, hi],
                                atol=1e-12)
        table = "\n".join(pages.paired_table(paired))
        self.assertIn("| Sarkar et al. 2021 [seed=1] (− IG-SUM-NORM (RAR) [seed=1]) |", table)
        claim = pages.paired_claim(cells[:4], paired)
        self.assertIn("Sarkar et al. 2021 [seed=1] − IG-SUM-NORM (RAR) [seed=1], paired", claim[1])
        lines = pages.seed_lines(paired)
        self.assertIn("- Two training seeds of IG-SUM-NORM (RAR) (IG-SUM-NORM (RAR) [seed=1] − IG-SUM-NORM (RAR)): "
                      "top-k " + pages._points(paired["ig_sum_norm@seed=1"]["topk"]), "\n".join(lines))
        self.assertIn(f"{pages._points(paired['sarkar2021']['topk'])} (the configured seed, yes); "
                      f"{pages._points(paired['sarkar2021@seed=1']['topk'])} (seed=1, no). Better by ≥ 3 top-k "
                      "points at NA within 2 points in 1 of 2 seeds.", lines[-1])
        self.assertEqual(pages.seed_lines({"sarkar2021": paired["sarkar2021"]}), [])
        note = pages.closing_note(cells[:4], {"mnist": paired}, ("mnist",))
        self.assertEqual(note[1], "## Closing note")
        self.assertIn("- MNIST, Sarkar et al. 2021 [seed=1]: **no**: Δ top-k "
                      + pages._points(paired["sarkar2021@seed=1"]["topk"]), "\n".join(note))
        self.assertEqual(note[-1], "- MNIST: " + lines[-1][2:])  # the per-seed verdicts, in the closing note too
        self.assertEqual(pages.closing_note(cells[:1], {"mnist": {}}, ("mnist",)), [])
        # per-model lines: a seed replicate is set against the earlier methods of its own seed
        unpaired = pages.unpaired_claim(cells[:4])
        self.assertIn("- top-k intersection: Sarkar et al. 2021 [seed=1] ", unpaired[2])
        self.assertIn("vs IG-SUM-NORM (RAR) [seed=1] (best earlier) "
                      f"{100 * np.mean(base1):.1f}%: {100 * (np.mean(sarkar1) - np.mean(base1)):+.1f} points",
                      unpaired[2])
        self.assertNotIn("Madry", "\n".join(unpaired))  # madry@seed=2 matches neither seed
        self.assertEqual(pages.unpaired_claim([cells[1], cells[3]])[1],
                         "- Sarkar et al. 2021 [seed=1]: no earlier attributional-robustness method trained with "
                         "seed=1 is on this page for this dataset (not run, or not finished yet).")
