"""Pareto fronts of NA against top-k (attr_robust_tf.pareto) and their rendering in RESULTS.md.

Oracles: the definition of dominance checked pair by pair in plain Python, and hand-computed fronts.
"""
import itertools
import os

import numpy as np

import testing
from attr_robust_tf import pareto, reproduction
from attr_robust_tf.reproduction import figures, pages


def trial(i, na, topk, **values):
    return {"trial_id": str(i), "status": "COMPLETED", "natural_accuracy": na, "topk": topk,
            "values": values or {"robust.weights.cacr": 0.1 * (i + 1)}}


class FrontTest(testing.TestCase):
    def test_non_dominated_matches_the_definition(self):
        rng = np.random.default_rng(0)
        points = np.round(rng.uniform(0, 1, (40, 2)), 1)  # coarse grid: many ties and duplicates
        points[3] = [np.nan, 2.0]  # never on the front, and dominates nothing
        front = pareto.non_dominated(points)

        def dominates(p, q):
            return all(a >= b for a, b in zip(p, q)) and any(a > b for a, b in zip(p, q))

        finite = [i for i in range(40) if np.all(np.isfinite(points[i]))]
        expected = [i for i in finite if not any(dominates(points[j], points[i]) for j in finite)]
        self.assertEqual(front, expected)
        self.assertNotIn(3, front)
        for i, j in itertools.combinations(front, 2):
            self.assertFalse(dominates(points[i], points[j]) or dominates(points[j], points[i]))
        with self.assertRaisesRegex(ValueError, r"`points` must be a \(n, d\) array"):
            pareto.non_dominated([1.0, 2.0])

    def test_front_at_and_compare(self):
        low = [{"natural_accuracy": 0.80, "topk": 0.70}, {"natural_accuracy": 0.90, "topk": 0.50}]
        high = [{"natural_accuracy": 0.85, "topk": 0.75}, {"natural_accuracy": 0.88, "topk": 0.60}]
        self.assertEqual(pareto.front_at(low, 0.85), 0.50)
        self.assertEqual(pareto.front_at(low, 0.80), 0.70)
        self.assertIsNone(pareto.front_at(low, 0.95))
        cmp = pareto.compare_fronts(high, low, points=4)  # NA grid 0.85, 0.86, 0.87, 0.88 (common range)
        self.assertAllClose([cmp["na_low"], cmp["na_high"]], [0.85, 0.88])
        self.assertEqual(cmp["above"], 1.0)  # 0.75 or 0.60 against 0.50
        self.assertAllClose([cmp["max_gain"], cmp["max_loss"]], [0.25, -0.10])
        self.assertIsNone(pareto.compare_fronts(high, [{"natural_accuracy": 0.5, "topk": 0.9}]))
        self.assertIsNone(pareto.compare_fronts([], low))

    def test_write_read_and_render(self):
        folder = self.get_temp_dir()
        records = {}
        for label, objective, trials in (
                ("IG-SUM-NORM", "ig_sum_norm", [trial(0, 0.80, 0.60), trial(1, 0.85, 0.55), trial(2, 0.79, 0.50)]),
                ("Sarkar 2021", "sarkar2021", [trial(0, 0.82, 0.66), trial(1, 0.86, 0.58)])):
            path = os.path.join(folder, objective, pareto.FILE)
            record = pareto.write_pareto(path, trials, label=label, extra={"objective": objective})
            self.assertEqual(pareto.read_pareto(path), record)
            records[label] = record
        self.assertEqual(records["IG-SUM-NORM"]["front_ids"], ["0", "1"])  # trial 2 is dominated by trial 0
        self.assertEqual([t["trial_id"] for t in records["IG-SUM-NORM"]["front"]], ["0", "1"])
        lines = "\n".join(pages._pareto_section(records, "fronts.png"))
        self.assertIn("| IG-SUM-NORM | 3 | 80.0% / 60.0% (cacr 0.1); 85.0% / 55.0% (cacr 0.2) |", lines)
        self.assertIn("- Sarkar 2021 vs IG-SUM-NORM: over NA 82.0–85.0% (covered by both), the best top-k at equal "
                      "or higher NA lies above IG-SUM-NORM's", lines)
        image = figures.figure_array(figures.fronts_figure(records))
        self.assertEqual((image.ndim, image.shape[2], image.dtype), (3, 3, np.uint8))
        # the page: the fronts' figure is written next to RESULTS.md
        cells = [reproduction_cell()]
        out = os.path.join(folder, "page", "RESULTS.md")
        reproduction.write_results(cells, out, scale="cpu", pareto_dirs=[os.path.join(folder, "ig_sum_norm"),
                                                                         os.path.join(folder, "sarkar2021")])
        self.assertEqual(sorted(os.listdir(os.path.dirname(out))), ["RESULTS-pareto.png", "RESULTS.md",
                                                                    "RESULTS.png"])
        with open(out) as f:
            self.assertIn("![Pareto fronts of NA against top-k intersection](RESULTS-pareto.png)", f.read())
        with self.assertRaisesRegex(FileNotFoundError, "`pareto_dirs` must name folders"):
            reproduction.write_results(cells, out, scale="cpu", pareto_dirs=[folder])


def reproduction_cell():
    from test_reproduce import fake_cell

    return fake_cell("fashion_mnist", "natural", 0.9, 0.1, 0.5, 0.4)
