"""tools/reproduce.py and tools/demo.py end to end at the tiny scale, and the RESULTS.md rendering.

The end-to-end runs write into temporary folders (never docs/). Oracles: the natural accuracy recomputed from the
saved model on the synthetic test draw, the per-image minimum over restarts, file modification times for
resuming, and pixel counts of the bar chart.
"""
import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
from PIL import Image

import testing
from attr_robust_tf import data, reproduction

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(tool, *flags):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow")
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", tool), *flags], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=900)


def mtimes(folder):
    """{relative path: mtime} of every file under `folder`."""
    out = {}
    for base, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(base, name)
            out[os.path.relpath(path, folder)] = os.stat(path).st_mtime_ns
    return out


def table_rows(text, heading):
    """The rows of the first Markdown table after `heading`."""
    part = text.split(heading, 1)[1]
    rows = []
    for line in part.split("\n"):
        if line.startswith("| ") and not line.startswith("| objective"):
            rows.append(line)
        elif rows and not line.startswith("|"):
            break
    return rows


def stat(mean, lo=None, hi=None, n=100):
    return {"mean": mean, "ci_low": mean - 0.02 if lo is None else lo, "ci_high": mean + 0.02 if hi is None else hi,
            "n": n}


def fake_cell(dataset, objective, na, aa, topk, kendall, *, failed=0, synthetic=False):
    """A cell result shaped like `reproduction.run_cell`'s, with chosen numbers."""
    summary = {"topk": stat(topk), "kendall": stat(kendall), "spearman": stat(kendall + 0.1),
               "center_shift": stat(1.0), "num_failed": failed, "num_undefined": {}}
    reference = {**summary, "topk": stat(min(1.0, topk + 0.05)), "kendall": stat(min(1.0, kendall + 0.05))}
    config = json.loads(reproduction.config_utils.to_json(reproduction.load_config(dataset, objective, "cpu")))
    return {"dataset": dataset, "objective": objective.partition("@")[0], "entry": objective, "scale": "cpu",
            "synthetic": synthetic, "config": config,
            "protocol": reproduction.protocols.get_protocol("fmnist:cpu").to_dict(), "num_images": 200,
            "num_correct": 150, "num_failed": failed, "natural_accuracy": stat(na), "pgd_accuracy": stat(aa),
            "failed_attack": "exclude", "summaries": {"exclude": summary, "reference": reference},
            "restart_study": None, "train_seconds": 61.0, "eval_wall_seconds": 30.0}


class NamesTest(testing.TestCase):
    def test_datasets_aliases_order_and_typos(self):
        self.assertEqual(reproduction.parse_datasets("mnist,fmnist,fashion_mnist"), ("mnist", "fashion_mnist"))
        self.assertEqual(reproduction.parse_datasets(["flower", "gtsrb"]), ("flower17", "gtsrb"))
        with self.assertRaisesRegex(ValueError, "Did you mean 'mnist'"):
            reproduction.parse_datasets("mnsit")
        with self.assertRaisesRegex(ValueError, "`datasets` must name at least one"):
            reproduction.parse_datasets(" , ")

    def test_objectives(self):
        self.assertEqual(reproduction.parse_objectives("all"), reproduction.OBJECTIVES)
        self.assertLen(reproduction.OBJECTIVES, 9)
        self.assertEqual(reproduction.parse_objectives("sarkar2021,natural,natural"), ("sarkar2021", "natural"))
        with self.assertRaisesRegex(ValueError, "Did you mean 'ig_norm'"):
            reproduction.parse_objectives("ig_nrom")

    def test_dataset_prefix_restricts_an_entry(self):
        objectives = reproduction.parse_objectives("natural,fmnist:madry@seed=1,mnist:all,fashion_mnist:madry@seed=1")
        self.assertEqual(objectives[:2], ("natural", "fashion_mnist:madry@seed=1"))
        self.assertEqual(objectives[2:], tuple(f"mnist:{o}" for o in reproduction.OBJECTIVES))
        self.assertEqual(reproduction.entry_dataset("fashion_mnist:madry@seed=1"), ("fashion_mnist", "madry@seed=1"))
        self.assertEqual(reproduction.entry_dataset("sarkar2021@eval.protocol=mnist:medium"),
                         (None, "sarkar2021@eval.protocol=mnist:medium"))
        self.assertEqual(reproduction.entries_for(objectives, "fashion_mnist"), ("natural", "madry@seed=1"))
        self.assertEqual(reproduction.entries_for(objectives, "mnist"), reproduction.OBJECTIVES)
        self.assertEqual(reproduction.entries_for(objectives, "gtsrb"), ("natural",))
        with self.assertRaisesRegex(ValueError, "Did you mean 'mnist'"):
            reproduction.parse_objectives("mnsit:madry")
        with self.assertRaisesRegex(ValueError, "must look like dataset:objective. Received: ':madry'"):
            reproduction.parse_objectives(":madry")
        with self.assertRaisesRegex(ValueError, "Did you mean 'madry'"):
            reproduction.parse_objectives("mnist:mdary")
        with self.assertRaisesRegex(ValueError, "must name one of the datasets mnist. Received: fashion_mnist:madry."):
            reproduction.reproduce("mnist", "natural,fmnist:madry", "tiny", self.get_temp_dir())
        reproduction.check_prefixes(objectives, ("mnist", "fashion_mnist"))

    def test_variants_carry_config_overrides(self):
        entry = "sarkar2021@robust.weights.cacr=1+train.epochs=3"
        self.assertEqual(reproduction.parse_objectives(f"ig_sum_norm,{entry}"), ("ig_sum_norm", entry))
        self.assertEqual(reproduction.split_entry(entry), ("sarkar2021", ("robust.weights.cacr=1", "train.epochs=3")))
        self.assertEqual(reproduction.title(entry), "Sarkar et al. 2021 [robust.weights.cacr=1, train.epochs=3]")
        config = reproduction.load_config("fmnist", entry, "cpu")
        base = reproduction.load_config("fmnist", "sarkar2021", "cpu")
        self.assertEqual((config.robust.weights.cacr, config.robust.weights.wacr), (1.0, 0.1))
        self.assertEqual((config.train.epochs, base.train.epochs), (3, 2))
        with self.assertRaisesRegex(ValueError, "Did you mean 'robust.weights.cacr'"):
            reproduction.load_config("fmnist", "sarkar2021@robust.weights.carc=1", "cpu")
        with self.assertRaisesRegex(ValueError, "must look like key=value. Received: 'train.epochs'"):
            reproduction.parse_objectives("sarkar2021@train.epochs")
        with self.assertRaisesRegex(ValueError, "Did you mean 'sarkar2021'"):
            reproduction.parse_objectives("sarkar2012@train.epochs=3")

    def test_configs_per_scale(self):
        tiny = reproduction.load_config("fmnist", "sarkar2021", "tiny")
        cpu = reproduction.load_config("fashion_mnist", "sarkar2021", "cpu")
        ref = reproduction.load_config("mnist", "ig_norm", "reference")
        self.assertEqual((tiny.data.name, tiny.eval.protocol), ("synthetic", "tiny"))
        self.assertEqual((cpu.data.name, cpu.eval.protocol), ("fashion_mnist", "fmnist:cpu"))
        self.assertEqual((ref.train.epochs, ref.eval.protocol), (91, "mnist:reference"))
        with self.assertRaisesRegex(ValueError, "Unknown scale .cpuu.. Did you mean .cpu."):
            reproduction.load_config("mnist", "natural", "cpuu")
        with self.assertRaisesRegex(FileNotFoundError, "`config_dir` must hold"):
            reproduction.load_config("mnist", "natural", "cpu", config_dir=self.get_temp_dir())


class MediumScaleTest(testing.TestCase):
    def test_medium_configs(self):
        madry = reproduction.load_config("mnist", "madry", "medium")
        cpu = reproduction.load_config("mnist", "madry", "cpu")
        self.assertEqual((madry.model.name, madry.data.limit, madry.train.epochs), ("cpu_cnn", 20000, 15))
        self.assertEqual((madry.train.early_stopping_patience, madry.robust.epsilon_warmup_epochs), (3, 3))
        self.assertEqual(madry.eval.protocol, "mnist:medium")
        for key in ("lr", "robust.attack_steps", "robust.step_size", "robust.epsilon", "train.batch_size"):
            self.assertEqual(reproduction.config_utils.get(madry, key), reproduction.config_utils.get(cpu, key), key)
        sarkar = reproduction.load_config("fmnist", "sarkar2021", "medium")
        self.assertEqual((sarkar.robust.ig_steps, sarkar.robust.inner_ig_steps), (8, 2))  # the cpu IG points
        self.assertEqual(sarkar.robust.epsilon_warmup_epochs, 0)  # Fashion-MNIST trains at ε = 0.1 from the start
        natural = reproduction.load_config("mnist", "natural", "medium")
        self.assertNotIn("epsilon_warmup_epochs", natural.robust)  # no inner attack, nothing to warm up
        tiny = reproduction.load_config("fmnist", "madry", "tiny")  # CI: the tiny data with medium's features
        self.assertEqual((tiny.train.early_stopping_patience, tiny.robust.epsilon_warmup_epochs), (1, 1))
        with self.assertRaisesRegex(ValueError, "Config variant `medium` must be one of the datasets"):
            reproduction.load_config("gtsrb", "natural", "medium")

    def test_medium_protocols(self):
        for name in ("mnist", "fmnist"):
            medium, cpu = (reproduction.protocols.get_protocol(f"{name}:{s}") for s in ("medium", "cpu"))
            self.assertEqual((medium.num_images, medium.restarts, medium.ig_steps), (1000, 3, 20))
            same = {k: v for k, v in cpu.to_dict().items() if k not in ("name", "note", "num_images", "restarts")}
            self.assertEqual({k: medium.to_dict()[k] for k in same}, same)
        self.assertEqual(reproduction.protocols.get_protocol("fashion_mnist:medium").name, "fmnist:medium")


def with_per_image(cell, topk, *, correct=None, offset=0.0):
    """`cell` with per-image values: top-k and Kendall (top-k + offset) per image 0..n−1."""
    n = len(topk)
    correct = [True] * n if correct is None else correct
    cell = dict(cell, per_image={"index": list(range(n)), "clean_correct": list(correct), "found": [True] * n,
                                 "topk": list(topk), "kendall": [t + offset for t in topk]})
    cell["protocol"] = dict(cell["protocol"], bootstrap_samples=200)
    return cell


class RenderingTest(testing.TestCase):
    def test_paired_claim_lines_closing_note_and_convergence(self):
        rng = np.random.default_rng(5)
        base = rng.uniform(0.3, 0.7, 150)
        cells = [with_per_image(fake_cell("mnist", "ig_sum_norm", 0.9, 0.8, 0.5, 0.3), base),
                 with_per_image(fake_cell("mnist", "sarkar2021", 0.9, 0.8, 0.6, 0.4), base + 0.01)]
        for c, best in zip(cells, (4, 6)):
            c["convergence"] = {"best_epoch": best, "best_val_accuracy": 0.99, "epochs_run": best + 3,
                                "max_epochs": 15, "stopped_early": True, "patience": 3}
        text = reproduction.format_results(cells, scale="medium")
        diff = 0.01  # every image: +1 point, so the paired interval is the point itself
        self.assertIn(f"| Sarkar et al. 2021 | +0.0 points [0.0, 0.0] | +{100 * diff:.1f} points [1.0, 1.0] | "
                      "+0.010 [0.010, 0.010] | 150 / 150 |", text)
        self.assertIn("paired over the 150 images attacked in both", text)
        self.assertIn("Better by ≥ 3 top-k points at NA within 2 points: **no** (the top-k interval lies below +3 "
                      "points)", text)
        self.assertIn("## Closing note", text)
        self.assertIn("- MNIST, Sarkar et al. 2021: **no**: Δ top-k +1.0 points [1.0, 1.0]", text)
        self.assertIn("Per-model comparison (unpaired", text)  # the per-model sentences stay below
        rows = table_rows(text, "## Convergence")
        self.assertEqual(rows[1], "| Sarkar et al. 2021 | 6 | 9 / 15 | 99.0% | x′ (3-step inner attack) | yes | "
                                  "90.0% [88.0, 92.0] | ≥ 93.0% | **no** |")
        self.assertIn("- Sarkar et al. 2021 misses its target (90.0% < 93.0%): validation accuracy peaked at epoch 6 "
                      "and early stopping ended training", text)
        # the black-patch counterfactual: the edited models gain +10 and +9.5 points on the first 100 images
        records = {}
        for c, gain in zip(cells, (0.10, 0.095)):
            edited = {k: v[:100] for k, v in c["per_image"].items()}
            edited["topk"] = [t + gain for t in edited["topk"]]
            edited["kendall"] = list(edited["topk"])
            paired = {m: reproduction.paired_difference(edited, c["per_image"], m, samples=200)
                      for m in ("natural_accuracy", "topk", "kendall")}
            records[("medium", "mnist", c["entry"])] = {
                "num_images": 100, "margin": 5e-4, "band": 0.1, "epsilon": 0.3, "moved": [1, 2], "filters": 16,
                "levels": [0.2995] * 16, "shift": 0.001, "paired": paired, "per_image": edited}
        for c in cells:
            c["scale"] = "medium"
        text = reproduction.format_results(cells, scale="medium", counterfactuals=records)
        self.assertIn("| IG-SUM-NORM (RAR) | 2 of 16 (levels raised by ≤ 0.0010) | ", text)
        self.assertIn("| +10.0 points [10.0, 10.0] | +0.100 [0.100, 0.100] | +0.0 points [0.0, 0.0] | 100 / 100 |",
                      text)
        closed = ("Sarkar et al. 2021 − IG-SUM-NORM (RAR) on the first 100 test images, top-k: +1.0 points "
                  "[1.0, 1.0] as trained (100 images attacked in both), +0.5 points [0.5, 0.5] with the black "
                  "patches of both closed (100 images). Better by ≥ 3 top-k points with them closed: **no**")
        self.assertIn("- " + closed, text)  # in the MNIST section
        self.assertIn("- MNIST: " + closed, text.split("## Closing note")[1])
        cells[1]["convergence"].update(best_epoch=15, epochs_run=15, stopped_early=False)
        text = reproduction.format_results(cells, scale="medium")
        self.assertIn("- Sarkar et al. 2021 misses its target (90.0% < 93.0%): validation accuracy peaked at the "
                      "last of 15 epochs: the run may not have converged", text)
        self.assertIn("- Validation accuracy peaked at the last allowed epoch for Sarkar et al. 2021: these runs may "
                      "still have been improving", text)
        # another scale of the same workdir: its own section, after the settings
        text = reproduction.format_results(cells, scale="medium", extra_scales={"cpu": [dict(cells[0], scale="cpu")]})
        self.assertIn("## Scale `cpu`", text)
        self.assertIn("### MNIST, `cpu`", text)
        self.assertIn("| MNIST (cpu) | IG-SUM-NORM (RAR) |", text)

    def test_wall_times_count_the_chunks_of_cut_sessions(self):
        folder = os.path.join(self.get_temp_dir(), "cell")
        os.makedirs(os.path.join(folder, "eval", "chunks"))
        os.makedirs(os.path.join(folder, "restarts", "r3", "chunks"))
        for path, seconds in (("eval/chunks/chunk_00000.npz", 3.0), ("eval/chunks/chunk_00001.npz", 4.0),
                              ("restarts/r3/chunks/chunk_00000.npz", 2.5)):
            np.savez(os.path.join(folder, path), seconds=np.float64(seconds))
        timing = os.path.join(folder, "timing.json")
        for recorded, expected in ((5.0, 9.5), (12.0, 12.0)):  # a cut session: the chunks know more
            with open(timing, "w") as f:
                json.dump({"eval_seconds": recorded, "train_seconds": 1.0}, f)
            cell = reproduction.records._with_records({"per_image": None}, folder, "natural")
            self.assertAllClose(cell["eval_wall_seconds"], expected)
            self.assertEqual(cell["train_seconds"], 1.0)  # no TensorBoard run: the timer's value

    def test_lens_columns_when_the_cells_report_them(self):
        from attr_robust_tf.reproduction import pages

        plain = fake_cell("fashion_mnist", "natural", 0.8, 0.3, 0.5, 0.55)
        self.assertEqual(pages.lens_table([plain]), "")  # cells evaluated before LENS: no table
        lens = fake_cell("fashion_mnist", "igr", 0.75, 0.55, 0.6, 0.67)
        lens["summaries"]["exclude"].update(lens_topk=stat(0.9), lens_topk_div=stat(0.8), lens_kendall=stat(0.7),
                                            lens_spearman=stat(0.75))
        table = pages.lens_table([plain, lens])
        self.assertIn("3-LENS-recall@100", table.splitlines()[0])
        rows = table.splitlines()[2:]
        self.assertLen(rows, 1)  # only the cell that reports LENS
        self.assertEqual(rows[0], "| IGR | 60.0% [58.0, 62.0] | 90.0% [88.0, 92.0] | 80.0% [78.0, 82.0] | "
                                  "0.700 [0.680, 0.720] | 0.750 [0.730, 0.770] |")

    def test_paired_figure_is_written_when_cells_have_per_image_values(self):
        base = np.linspace(0.2, 0.8, 20)
        cells = [with_per_image(fake_cell("mnist", "ig_sum_norm", 0.9, 0.8, 0.5, 0.3), base),
                 with_per_image(fake_cell("mnist", "madry", 0.9, 0.8, 0.5, 0.3), base - 0.05)]
        path = os.path.join(self.get_temp_dir(), "page", "RESULTS.md")
        reproduction.write_results(cells, path, scale="cpu")
        self.assertEqual(sorted(os.listdir(os.path.dirname(path))), ["RESULTS-paired.png", "RESULTS.md", "RESULTS.png"])
        with open(path) as f:
            self.assertIn("(RESULTS-paired.png)", f.read())
        self.assertEqual(Image.open(os.path.join(os.path.dirname(path), "RESULTS-paired.png")).mode, "RGB")

    def test_paired_figure_gains_a_lens_panel_when_a_pair_has_lens(self):
        stat = {"mean": 0.01, "ci_low": 0.0, "ci_high": 0.02, "n": 10}
        without = {"mnist": {"madry": {"natural_accuracy": stat, "topk": stat, "kendall": stat}}}
        self.assertLen(reproduction.paired_figure(without, "IG-SUM-NORM").axes, 3)
        with_lens = {"mnist": {"madry": dict(without["mnist"]["madry"], lens_topk=stat),
                               "trades": without["mnist"]["madry"]},
                     "fashion_mnist": without["mnist"]}
        figure = reproduction.paired_figure(with_lens, "IG-SUM-NORM")
        self.assertLen(figure.axes, 8)
        self.assertEqual(figure.axes[3].get_xlabel(), "Δ LENS recall (points)")
        self.assertLen(figure.axes[3].lines[0].get_xdata(), 1)  # madry's point; trades has none


    def test_claim_differences_and_recalled_rows(self):
        cells = [fake_cell("fashion_mnist", "natural", 0.85, 0.05, 0.40, 0.45),
                 fake_cell("fashion_mnist", "madry", 0.80, 0.60, 0.55, 0.52),
                 fake_cell("fashion_mnist", "ig_sum_norm", 0.79, 0.58, 0.62, 0.55, failed=3),
                 fake_cell("fashion_mnist", "sarkar2021", 0.78, 0.57, 0.70, 0.50)]
        text = reproduction.format_results(cells, scale="cpu", command="python tools/reproduce.py --scale=cpu")
        rows = table_rows(text, "## Fashion-MNIST")
        self.assertLen(rows, 4)
        self.assertTrue(rows[2].startswith("| IG-SUM-NORM (RAR) | 79.0% [77.0, 81.0] | 58.0% [56.0, 60.0] | "
                                           "62.0% [60.0, 64.0] | 0.550 [0.530, 0.570] | 0.650 [0.630, 0.670] | "
                                           "200 / 150 / 3 |"), rows[2])
        # RAR Table 1 (recalled) beside ours, labelled as such; no recalled row for Sarkar et al.
        self.assertIn("85.44% / 70.26% / 72.08% / 0.6747", rows[2])
        self.assertTrue(rows[3].endswith("| — |"))
        self.assertIn("recalled from memory and not verified", text)
        # top-k: 0.70 vs the best earlier 0.62 → +8.0 points, +12.9 % relative, intervals apart
        self.assertIn("vs IG-SUM-NORM (RAR) (best earlier) 62.0%: +8.0 points, +12.9 % relative, higher; the 95 % "
                      "intervals do not overlap", text)
        # Kendall: 0.50 vs the best earlier 0.55 → not higher
        self.assertIn("vs IG-SUM-NORM (RAR) (best earlier) 0.550: -0.050, -9.1 % relative, not higher", text)
        # failed-attack scoring: ours excludes, the reference scores (1, 1, 1)
        failed = table_rows(text, "### Fashion-MNIST")
        self.assertIn("| IG-SUM-NORM (RAR) | 150 | 3 | 62.0% | 67.0% | 0.550 | 0.600 |", failed)
        self.assertIn("python tools/reproduce.py --scale=cpu", text)
        self.assertIn("| Fashion-MNIST | Sarkar et al. 2021 | 61 s | 30 s |", text)
        self.assertNotIn("synthetic", text.split("## Fashion-MNIST")[0])

    def test_claim_names_the_best_earlier_method_and_ig_sum_norm(self):
        cells = [fake_cell("mnist", "ig_sum_norm", 0.9, 0.8, 0.60, 0.30),
                 fake_cell("mnist", "art", 0.9, 0.7, 0.75, 0.35),
                 fake_cell("mnist", "sarkar2021", 0.9, 0.8, 0.65, 0.40)]
        text = reproduction.format_results(cells, scale="cpu")
        self.assertIn("vs ART (best earlier) 75.0%: -10.0 points", text)
        self.assertIn("vs IG-SUM-NORM (RAR) 60.0%: +5.0 points", text)
        self.assertIn("vs ART (best earlier) 0.350: +0.050", text)

    def test_variants_get_their_own_rows_and_claims(self):
        variant = "sarkar2021@robust.weights.cacr=0+robust.weights.wacr=0"
        cells = [fake_cell("fashion_mnist", "ig_sum_norm", 0.8, 0.6, 0.60, 0.60),
                 fake_cell("fashion_mnist", "sarkar2021", 0.8, 0.6, 0.61, 0.59),
                 fake_cell("fashion_mnist", variant, 0.8, 0.6, 0.58, 0.62)]
        text = reproduction.format_results(cells, scale="cpu")
        rows = table_rows(text, "## Fashion-MNIST")
        self.assertTrue(rows[2].startswith("| Sarkar et al. 2021 [robust.weights.cacr=0, robust.weights.wacr=0] |"))
        self.assertTrue(rows[2].endswith("| — |"))  # a variant has no recalled RAR row
        self.assertIn("- top-k intersection: Sarkar et al. 2021 61.0%", text)
        self.assertIn("- Kendall's τ: Sarkar et al. 2021 [robust.weights.cacr=0, robust.weights.wacr=0] 0.620", text)
        self.assertEqual(reproduction.bar_chart(cells).shape[2], 3)
        # a variant of an earlier method (here another network) does not compete for "best earlier"
        cells.append(fake_cell("fashion_mnist", "madry@model.name=cpu_cnn_avgpool", 0.8, 0.6, 0.75, 0.70))
        text = reproduction.format_results(cells, scale="cpu")
        self.assertIn("vs IG-SUM-NORM (RAR) (best earlier) 60.0%", text)
        self.assertNotIn("cpu_cnn_avgpool] (best earlier)", text)

    def test_synthetic_results_say_so(self):
        cells = [fake_cell("fashion_mnist", "natural", 1.0, 0.5, 0.5, 0.5, synthetic=True)]
        text = reproduction.format_results(cells, scale="tiny")
        self.assertIn("synthetic 8×8 images", text.split("\n\n")[1])
        self.assertIn("## Fashion-MNIST (synthetic stand-in)", text)
        self.assertTrue(table_rows(text, "## Fashion-MNIST")[0].endswith("| — |"))  # no recalled row

    def test_bar_heights_are_proportional_to_values(self):
        cells = [fake_cell("mnist", "natural", 0.8, 0.8, 0.8, 0.8),
                 fake_cell("mnist", "sarkar2021", 0.4, 0.4, 0.4, 0.4)]
        image = reproduction.bar_chart(cells)
        self.assertEqual(image.dtype, np.uint8)
        self.assertEqual(image.shape[2], 3)

        def tallest(color):
            mask = np.all(image == np.array(color, np.uint8), axis=-1)
            return mask.sum(axis=0).max()  # the tallest column of that colour: a bar, not the legend swatch

        natural = tallest(reproduction.PALETTE[0])  # colours follow the order of the entries
        sarkar = tallest(reproduction.PALETTE[1])
        self.assertGreater(sarkar, 40)
        self.assertAllClose(natural / sarkar, 2.0, atol=0.05)

    def test_write_results_writes_both_files(self):
        path = os.path.join(self.get_temp_dir(), "out", "RESULTS.md")
        cells = [fake_cell("mnist", "natural", 0.9, 0.1, 0.5, 0.4)]
        self.assertEqual(reproduction.write_results(cells, path, scale="cpu"),
                         (path, os.path.join(os.path.dirname(path), "RESULTS.png")))
        with open(path) as f:
            self.assertIn("![NA, AA, top-k intersection and Kendall's τ per objective](RESULTS.png)", f.read())
        self.assertEqual(Image.open(os.path.join(os.path.dirname(path), "RESULTS.png")).mode, "RGB")
        self.assertEqual(sorted(os.listdir(os.path.dirname(path))), ["RESULTS.md", "RESULTS.png"])  # no temp files
        with self.assertRaisesRegex(ValueError, "`cells` must hold at least one"):
            reproduction.write_results([], path, scale="cpu")


class ToolTest(testing.TestCase):
    def test_bad_flags_are_usage_errors(self):
        result = run("reproduce.py", "--datasets=mnsit", "--workdir=/tmp/never", "--results=/tmp/never.md")
        self.assertEqual(result.returncode, 1)
        self.assertIn("Did you mean 'mnist'", result.stderr)
        self.assertFalse(os.path.exists("/tmp/never.md"))
        result = run("reproduce.py", "--datasets=mnist", "--objectives=natural,fmnist:madry", "--workdir=/tmp/never",
                     "--results=/tmp/never.md")
        self.assertEqual(result.returncode, 1)
        self.assertIn("A dataset prefix in `objectives` must name one of the datasets mnist", result.stderr)
        self.assertFalse(os.path.exists("/tmp/never"))

    def _check_tiny_run(self, workdir, results, objectives):
        """RESULTS.md has every row; numbers agree with an independent recomputation from the saved model."""
        with open(results) as f:
            text = f.read()
        rows = table_rows(text, "## Fashion-MNIST (synthetic stand-in)")
        self.assertEqual([r.split(" | ")[0][2:] for r in rows],
                         [reproduction.OBJECTIVE_TITLES[o] for o in objectives])
        self.assertIn("Scale `tiny`: synthetic 8×8 images", text)
        self.assertEqual(Image.open(os.path.splitext(results)[0] + ".png").mode, "RGB")
        structure_rows = text.split("Map structure (docs/method.md §15)", 1)[1].split("**The claim**", 1)[0]
        for objective in objectives:
            folder = reproduction.cell_dir(workdir, "tiny", "fashion_mnist", objective)
            with open(os.path.join(folder, "result.json")) as f:
                result = json.load(f)
            with open(os.path.join(folder, "eval", "report.json")) as f:
                report = json.load(f)
            with open(os.path.join(folder, "timing.json")) as f:
                self.assertGreater(json.load(f)["train_seconds"], 0)
            for name in ("report.md", "attacks.png"):
                self.assertTrue(os.path.exists(os.path.join(folder, "eval", name)))
            # NA: the saved model on the synthetic test draw (8 images, seed 0 + 2), recomputed here
            model = keras.models.load_model(os.path.join(folder, "train", "model.keras"), compile=False)
            images, labels = data.synthetic(8, image_shape=(8, 8, 1), num_classes=3, seed=2, as_arrays=True)
            accuracy = np.mean(np.argmax(model.predict(images, verbose=0), axis=-1) == labels)
            self.assertAllClose(result["natural_accuracy"]["mean"], accuracy)
            self.assertAllClose(report["natural_accuracy"], accuracy)
            self.assertEqual(result["summaries"], report["summaries"])
            self.assertIn(f"{100 * accuracy:.1f}%", rows[objectives.index(objective)])
            # map structure: the first conv's one-pixel filters, from the saved kernel in NumPy
            kernel = np.abs(next(v.numpy() for v in model.weights if len(v.shape) == 4)).sum(axis=2)
            taps = kernel.reshape(-1, kernel.shape[-1])
            share = taps.max(axis=0) / taps.sum(axis=0)
            self.assertIn(f"| {reproduction.OBJECTIVE_TITLES[objective]} | {int(np.sum(share > 0.5))} of "
                          f"{share.size} | {share.mean():.2f} | ", structure_rows)
            # restarts: restart 0 is the 1-run attack, so the kept τ can only go down
            study = result["restart_study"]
            if objective not in reproduction.STUDY_OBJECTIVES:
                self.assertIsNone(study)
                continue
            one, many = study["r1"], study["r3"]
            both = np.array(one["found"]) & np.array(many["found"])
            self.assertTrue(np.all(np.array(many["kendall"])[both] <= np.array(one["kendall"])[both] + 1e-6))

    def _check_medium_paths(self, workdir, results):
        """Per-image values, the early-stopping record, the ε warm-up key and the paired lines of a tiny run."""
        def result(objective):
            with open(os.path.join(reproduction.cell_dir(workdir, "tiny", "fashion_mnist", objective),
                                   "result.json")) as f:
                return json.load(f)

        ours, base = result("sarkar2021"), result("ig_sum_norm")
        for r in (ours, base):
            self.assertEqual(r["per_image"]["index"], list(range(8)))
            self.assertEqual(r["config"]["train"]["early_stopping_patience"], 1)
        self.assertEqual(result("madry")["config"]["robust"]["epsilon_warmup_epochs"], 1)
        state = reproduction.records.early_stopping.read_state(
            os.path.join(reproduction.cell_dir(workdir, "tiny", "fashion_mnist", "sarkar2021"), "train"))
        self.assertEqual(state["best_epoch"], reproduction.records.early_stopping.decide(state["history"], 1)[0])
        madry = reproduction.records.early_stopping.read_state(
            os.path.join(reproduction.cell_dir(workdir, "tiny", "fashion_mnist", "madry"), "train"))
        self.assertEqual((madry["warmup"], madry["best_epoch"]), (1, 2))  # epoch 1 (the ε warm-up) is never the best
        # the paired top-k difference, recomputed from the two per-image records
        a, b = ours["per_image"], base["per_image"]
        both = [i for i in range(8) if a["clean_correct"][i] and a["found"][i] and b["clean_correct"][i]
                and b["found"][i] and a["topk"][i] is not None and b["topk"][i] is not None]
        with open(results) as f:
            text = f.read()
        paired_part = text.split("Paired differences to", 1)[1]
        row = next(line for line in paired_part.split("\n") if line.startswith("| Sarkar et al. 2021 | "))
        if both:
            diff = np.mean([a["topk"][i] - b["topk"][i] for i in both])
            self.assertIn(f" | {100 * diff:+.1f} points [", row)
            self.assertTrue(row.endswith(f" / {len(both)} |"), row)
        self.assertIn("## Closing note", text)
        self.assertIn(f"| Sarkar et al. 2021 | {state['best_epoch']} | {max(state['history'])} / 2 |", text)
        self.assertTrue(os.path.exists(os.path.splitext(results)[0] + "-paired.png"))
        # per-image LENS recall: its mean over the attacked images is the report's; a result written without it
        # gets it back from the saved chunks, with the same values
        with open(os.path.join(reproduction.cell_dir(workdir, "tiny", "fashion_mnist", "sarkar2021"), "eval",
                               "report.json")) as f:
            summary = json.load(f)["summaries"]["exclude"]["lens_topk"]
        lens = [v for v, c, f in zip(a["lens_topk"], a["clean_correct"], a["found"]) if c and f and v is not None]
        if lens:
            self.assertAllClose(np.mean(lens), summary["mean"])
        folder = reproduction.cell_dir(workdir, "tiny", "fashion_mnist", "sarkar2021")
        stripped = dict(ours, per_image={k: v for k, v in a.items() if k != "lens_topk"})
        with open(os.path.join(folder, "result.json"), "w") as f:
            json.dump(stripped, f)
        cell = next(c for c in reproduction.finished_cells(workdir, "tiny") if c["entry"] == "sarkar2021")
        self.assertAllClose(np.array(cell["per_image"]["lens_topk"], float), np.array(a["lens_topk"], float))
        self.assertEqual(result("sarkar2021")["per_image"]["lens_topk"], cell["per_image"]["lens_topk"])

    def test_tiny_every_objective_resume_and_demo(self):
        # about 1.5–3 minutes on 2 busy cores: 7 tiny trainings and evaluations, then 3 quick reruns
        workdir = os.path.join(self.get_temp_dir(), "repro")
        results = os.path.join(self.get_temp_dir(), "out", "RESULTS.md")
        flags = ["--datasets=fmnist", "--objectives=all", "--scale=tiny", f"--workdir={workdir}",
                 f"--results={results}", "--noprogress"]
        first = run("reproduce.py", *flags, "--counterfactual_images=4")
        self.assertEqual(first.returncode, 0, first.stderr[-3000:])
        self._check_tiny_run(workdir, results, list(reproduction.OBJECTIVES))
        for objective in reproduction.OBJECTIVES:  # the black-patch counterfactual of every cell, on the page
            folder = reproduction.cell_dir(workdir, "tiny", "fashion_mnist", objective)
            self.assertEqual(reproduction.counterfactual.read(folder)["num_images"], 4)
        with open(results) as f:
            self.assertIn("Black-patch counterfactual (docs/method.md §15)", f.read())
        self._check_medium_paths(workdir, results)
        with open(results) as f:
            text = f.read()
        before = mtimes(workdir)

        second = run("reproduce.py", *flags)  # resumes: nothing is trained or evaluated again
        self.assertEqual(second.returncode, 0, second.stderr[-3000:])
        self.assertEqual(mtimes(workdir), before)
        self.assertEqual(second.stderr.count("reusing"), 2 * len(reproduction.OBJECTIVES))
        self.assertNotIn("Epoch 1/2", second.stdout)
        with open(results) as f:
            again = f.read()
        self.assertEqual(again.split("## Fashion-MNIST")[1].split("## Wall times")[0],
                         text.split("## Fashion-MNIST")[1].split("## Wall times")[0])

        # --render_only: the page of the finished cells, the others named as pending; nothing runs
        partial = os.path.join(self.get_temp_dir(), "partial", "RESULTS.md")
        # (a dataset prefix restricts an entry: fmnist:madry is neither shown nor pending for MNIST)
        render = run("reproduce.py", "--datasets=fmnist,mnist", "--objectives=natural,fmnist:madry,mnist:trades",
                     "--scale=tiny", f"--workdir={workdir}", f"--results={partial}", "--render_only", "--noprogress")
        self.assertEqual(render.returncode, 0, render.stderr[-3000:])
        self.assertEqual(mtimes(workdir), before)
        with open(partial) as f:
            page = f.read()
        self.assertIn("> **Partial page: 2 cells of this run are not finished yet** and not shown: MNIST × Natural, "
                      "MNIST × TRADES.", page)
        self.assertEqual([r.split(" | ")[0][2:] for r in table_rows(page, "## Fashion-MNIST (synthetic stand-in)")],
                         ["Natural", "Madry et al. (PGD-AT)"])
        empty = run("reproduce.py", "--datasets=mnist", "--scale=tiny", f"--workdir={workdir}",
                    f"--results={partial}", "--render_only", "--noprogress")
        self.assertNotEqual(empty.returncode, 0)
        self.assertIn("`render_only` needs at least one finished tiny cell", empty.stderr)

        # an evaluation cut short: the report is gone, the saved chunks are reused, the model is not retrained
        folder = reproduction.cell_dir(workdir, "tiny", "fashion_mnist", "sarkar2021")
        os.remove(os.path.join(folder, "result.json"))
        os.remove(os.path.join(folder, "eval", "report.json"))
        third = run("reproduce.py", *flags)
        self.assertEqual(third.returncode, 0, third.stderr[-3000:])
        now = mtimes(workdir)
        chunks = [k for k in before if "chunk_" in k or k.endswith("model.keras")]
        self.assertEqual({k: now[k] for k in chunks}, {k: before[k] for k in chunks})
        self.assertTrue(os.path.exists(os.path.join(folder, "result.json")))

        # the demo reuses the same cells and prints the table and both paths
        demo = run("demo.py", "--scale=tiny", f"--workdir={workdir}")
        self.assertEqual(demo.returncode, 0, demo.stderr[-3000:])
        self.assertEqual({k: mtimes(workdir)[k] for k in chunks}, {k: before[k] for k in chunks})
        self.assertRegex(demo.stdout, r"\| Natural \| \d+\.\d% \[")
        self.assertIn("| Sarkar et al. 2021 |", demo.stdout)
        paths = dict(re.findall(r"^(Report|Attacks): +(\S+)$", demo.stdout, re.M))
        self.assertEqual(paths, {"Report": os.path.join(workdir, "report.md"),
                                 "Attacks": os.path.join(workdir, "attacks.png")})
        with open(paths["Report"]) as f:
            self.assertIn("## Sarkar et al. 2021 (fashion_mnist)", f.read())
        self.assertEqual(Image.open(paths["Attacks"]).mode, "RGB")
