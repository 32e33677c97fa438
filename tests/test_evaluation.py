"""Evaluation protocol (evaluation.py, evaluation_report.py, protocols.py).

Oracles: the reference settings table of docs/method.md §4.6/§5, NumPy recomputations of accuracies and means
from the per-example arrays, the normal-approximation interval for the bootstrap, and file round trips.
"""
import functools
import json
import os

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

import testing
from attr_robust_tf import data, evaluation, evaluation_report, models, protocols
from attr_robust_tf.attacks.pgd import pgd_linf
from attr_robust_tf.robust_model import RobustModel

# A fast 8×8 protocol for the synthetic set (3 classes): every code path, a fraction of a second per chunk.
SMALL = protocols.get_protocol("tiny", epsilon=0.15, step_size=0.05, pgd_epsilon=0.15, pgd_step_size=0.05,
                               k_attack=8, k_eval=8, num_images=12, chunk_size=5, bootstrap_samples=100)


@functools.lru_cache(maxsize=None)
def trained_tiny():
    """tiny_cnn trained for a few epochs on the synthetic 8×8 set (well above chance)."""
    keras.utils.set_random_seed(0)
    x, y = data.synthetic(300, seed=1, as_arrays=True)
    model = models.tiny_cnn()
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=30, epochs=5, verbose=0)
    return model


def holdout(n=12):
    return data.synthetic(n, seed=7, as_arrays=True)


class ProtocolTest(testing.TestCase):
    def test_reference_presets_match_method_md(self):
        # docs/method.md §4.6 (attack) and §5 (PGD): ε, step, iterations, runs, k_attack, k_eval, IG points, images
        table = {
            "mnist": (0.3, 0.01, 100, 3, 200, 100, 100, 10000, 0.3, 40, 0.01, None),
            "fmnist": (0.1, 0.01, 100, 3, 100, 100, 100, 10000, 0.1, 20, 0.01, None),
            "gtsrb": (8 / 255, 1 / 255, 50, 3, 100, 100, 100, 12630, 8 / 255, 7, 2 / 255, 255),
            "flower17": (8 / 255, 1 / 255, 100, 3, 1000, 1000, 100, 136, 8 / 255, 7, 2 / 255, 255),
        }
        for name, expected in table.items():
            p = protocols.get_protocol(f"{name}:reference")
            got = (p.epsilon, p.step_size, p.steps, p.restarts, p.k_attack, p.k_eval, p.ig_steps, p.num_images,
                   p.pgd_epsilon, p.pgd_steps, p.pgd_step_size, p.quantize)
            self.assertAllClose(got[:-1], expected[:-1], msg=name)
            self.assertEqual(got[-1], expected[-1])
            cpu = protocols.get_protocol(f"{name}:cpu")
            # the CPU presets keep the threat model and k, shrink only the cost, and say so
            for field in ("epsilon", "step_size", "k_attack", "k_eval", "pgd_epsilon", "pgd_steps", "quantize"):
                self.assertEqual(getattr(cpu, field), getattr(p, field), msg=f"{name}:cpu {field}")
            self.assertLess(cpu.num_images, p.num_images)
            self.assertLess(cpu.ig_steps, p.ig_steps)
            self.assertIn("not 100", cpu.note)
            self.assertEqual(cpu.failed_attack, "exclude")

    def test_names_aliases_and_overrides(self):
        self.assertEqual(protocols.get_protocol("fashion_mnist:cpu").name, "fmnist:cpu")
        p = protocols.get_protocol("mnist:cpu", num_images=5, restarts=2)
        self.assertEqual((p.num_images, p.restarts, p.epsilon), (5, 2, 0.3))
        self.assertIs(protocols.get_protocol(p), p)
        with self.assertRaisesRegex(ValueError, r"Unknown protocol 'fmnist:cpuu'. Did you mean 'fmnist:cpu'\?"):
            protocols.get_protocol("fmnist:cpuu")
        with self.assertRaisesRegex(ValueError, r"Unknown protocol field 'restart'. Did you mean 'restarts'\?"):
            protocols.get_protocol("tiny", restart=2)
        with self.assertRaisesRegex(ValueError, r"`protocol.epsilon` must be a finite number >= 0"):
            protocols.get_protocol("tiny", epsilon=-1.0)
        with self.assertRaisesRegex(ValueError, r"Unknown protocol.failed_attack 'refrence'"):
            protocols.get_protocol("tiny", failed_attack="refrence")

    def test_parse_overrides(self):
        self.assertEqual(protocols.parse_overrides(["restarts=1", "epsilon=0.05", "quantize=None", "method=topk"]),
                         {"restarts": 1, "epsilon": 0.05, "quantize": None, "method": "topk"})
        with self.assertRaisesRegex(ValueError, "must look like field=value"):
            protocols.parse_overrides(["restarts"])

    def test_attack_from_protocol(self):
        attack = protocols.get_protocol("gtsrb:reference").attack()
        self.assertEqual((attack.quantize, attack.restarts, attack.k_attack), (255, 3, 100))


class SummaryTest(testing.TestCase):
    def test_bootstrap_interval_matches_the_normal_approximation(self):
        values = np.random.default_rng(0).normal(2.0, 1.0, 2000)
        lo, hi = evaluation.bootstrap_interval(values, samples=2000, seed=0)
        half = 1.96 * values.std() / np.sqrt(values.size)
        self.assertAllClose([lo, hi], [values.mean() - half, values.mean() + half], atol=0.15 * half)
        self.assertEqual(evaluation.bootstrap_interval(np.full(5, 0.3)), (0.3, 0.3))
        self.assertTrue(np.isnan(evaluation.bootstrap_interval([])[0]))

    def test_failed_attacks_are_excluded_or_scored_like_the_reference(self):
        examples = {
            "clean_correct": np.array([True, True, True, False, True]),
            "found": np.array([True, False, True, False, True]),
            "topk": np.array([0.2, 1.0, 0.4, np.nan, 0.6]),
            "kendall": np.array([0.1, 1.0, 0.3, np.nan, np.nan]),  # last: undefined (constant map)
            "spearman": np.array([0.2, 1.0, 0.5, np.nan, 0.7]),
            "center_shift": np.array([2.0, 0.0, 1.0, np.nan, 3.0]),
        }
        honest = evaluation.summarize(examples, bootstrap_samples=50)
        reference = evaluation.summarize(examples, failed_attack="reference", bootstrap_samples=50)
        self.assertEqual(honest["num_failed"], 1)
        self.assertAllClose(honest["topk"]["mean"], np.mean([0.2, 0.4, 0.6]))
        self.assertEqual(honest["topk"]["n"], 3)
        self.assertAllClose(honest["kendall"]["mean"], 0.2)
        self.assertEqual(honest["num_undefined"]["kendall"], 1)
        self.assertAllClose(reference["topk"]["mean"], np.mean([0.2, 1.0, 0.4, 0.6]))
        self.assertAllClose(reference["center_shift"]["mean"], np.mean([2.0, 0.0, 1.0, 3.0]))
        self.assertGreater(reference["kendall"]["mean"], honest["kendall"]["mean"])  # failures look robust


class EvaluateTest(testing.TestCase):
    def test_report_agrees_with_a_recomputation(self):
        model = trained_tiny()
        x, y = holdout()
        report = evaluation.evaluate_robustness(model, (x, y), SMALL)
        ex = report.examples
        pred = np.argmax(model(x).numpy(), axis=-1)
        self.assertEqual(report.num_images, 12)
        self.assertAllClose(report.natural_accuracy, np.mean(pred == y))
        self.assertGreater(report.natural_accuracy, 0.5)
        self.assertAllEqual(ex["index"], np.arange(12))
        self.assertAllEqual(ex["clean_prediction"], pred)
        # PGD: the adversarial predictions, recomputed per chunk with the documented seed (seed, first index)
        pgd_pred = []
        for start in range(0, 12, SMALL.chunk_size):
            sl = slice(start, start + SMALL.chunk_size)
            adv = pgd_linf(model, x[sl], y[sl], epsilon=0.15, step_size=0.05, steps=SMALL.pgd_steps,
                           seed=tf.constant([SMALL.seed, start], tf.int64))
            pgd_pred.append(np.argmax(model(adv).numpy(), axis=-1))
        self.assertAllEqual(ex["pgd_prediction"], np.concatenate(pgd_pred))
        self.assertAllClose(report.pgd_accuracy, np.mean(np.concatenate(pgd_pred) == y))
        self.assertLess(report.pgd_accuracy, report.natural_accuracy)
        # only correct images are attacked; their metrics are recomputed from the stored maps
        correct = pred == y
        self.assertEqual(report.num_attacked, correct.sum())
        self.assertAllEqual(ex["attacked_positions"], np.flatnonzero(correct))
        self.assertTrue(np.all(np.isnan(ex["topk"][~correct])))
        self.assertFalse(ex["found"][~correct].any())
        self.assertEqual(report.num_failed, int(np.sum(correct & ~ex["found"])))
        keep = correct & ex["found"]
        for name in evaluation.METRICS:
            self.assertAllClose(report.summaries["exclude"][name]["mean"], np.mean(ex[name][keep]), rtol=1e-5)
            stat = report.summaries["exclude"][name]
            self.assertLessEqual(stat["ci_low"], stat["mean"] + 1e-9)
            self.assertGreaterEqual(stat["ci_high"], stat["mean"] - 1e-9)
        self.assertLessEqual(np.abs(ex["adversarial_images"] - ex["clean_images"]).max(), 0.15 + 1e-6)
        self.assertAllClose(ex["clean_images"], x[correct])
        self.assertLess(report.metric("topk"), 1.0)

    def test_datasets_batched_unbatched_and_arrays_agree(self):
        model = trained_tiny()
        x, y = holdout(6)
        p = SMALL.replace(num_images=None, chunk_size=4)
        a = evaluation.evaluate_robustness(model, (x, y), p)
        b = evaluation.evaluate_robustness(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(5), p)
        c = evaluation.evaluate_robustness(model, tf.data.Dataset.from_tensor_slices((x, y)), p)
        for other in (b, c):
            self.assertEqual(other.to_dict()["summaries"], a.to_dict()["summaries"])
            self.assertEqual(other.pgd_accuracy, a.pgd_accuracy)

    def test_robust_model_is_unwrapped(self):
        model = trained_tiny()
        x, y = holdout(5)
        wrapped = RobustModel(model, "natural")
        plain = evaluation.evaluate_robustness(model, (x, y), SMALL)
        robust = evaluation.evaluate_robustness(wrapped, (x, y), SMALL)
        self.assertEqual(robust.model_name, model.name)
        self.assertEqual(robust.to_dict()["summaries"], plain.to_dict()["summaries"])

    def test_resume_from_saved_chunks(self):
        model = trained_tiny()
        x, y = holdout()
        chunk_dir = os.path.join(self.get_temp_dir(), "chunks")
        first = evaluation.evaluate_robustness(model, (x, y), SMALL, chunk_dir=chunk_dir)
        files = sorted(os.listdir(chunk_dir))
        self.assertEqual(files, ["chunk_00000.npz", "chunk_00001.npz", "chunk_00002.npz"])
        stamps = {f: os.stat(os.path.join(chunk_dir, f)).st_mtime_ns for f in files}
        os.remove(os.path.join(chunk_dir, "chunk_00001.npz"))  # as if interrupted before this chunk
        second = evaluation.evaluate_robustness(model, (x, y), SMALL, chunk_dir=chunk_dir)
        self.assertEqual(second.to_dict()["summaries"], first.to_dict()["summaries"])
        self.assertEqual(os.stat(os.path.join(chunk_dir, "chunk_00000.npz")).st_mtime_ns, stamps["chunk_00000.npz"])
        for key in ("found", "kendall", "adversarial_images"):
            self.assertAllClose(second.examples[key], first.examples[key])
        # more images: the partial last chunk (2 of 5) is recomputed, the full ones are reused
        more = evaluation.evaluate_robustness(model, holdout(14), SMALL.replace(num_images=14), chunk_dir=chunk_dir)
        self.assertEqual(more.num_images, 14)
        self.assertAllEqual(more.examples["found"][:10], first.examples["found"][:10])
        # other settings may not reuse the chunks
        with self.assertRaisesRegex(ValueError, r"chunk_00000.npz differs in epsilon"):
            evaluation.evaluate_robustness(model, (x, y), SMALL.replace(epsilon=0.1), chunk_dir=chunk_dir)
        self.assertFalse([f for f in os.listdir(chunk_dir) if "tmp" in f])

    def test_bad_inputs(self):
        model = trained_tiny()
        x, y = holdout(4)
        with self.assertRaisesRegex(ValueError, r"`dataset` must yield \(images, labels\) pairs"):
            evaluation.evaluate_robustness(model, tf.data.Dataset.from_tensor_slices(x), SMALL)
        with self.assertRaisesRegex(ValueError, r"`dataset` images must be float32 in \[0, 1\]. Received: dtype=uint8"):
            evaluation.evaluate_robustness(model, ((x * 255).astype(np.uint8), y), SMALL)
        probs = keras.Model(model.inputs[0], keras.layers.Softmax()(model.outputs[0]))
        with self.assertRaisesRegex(ValueError, r"`model` must return logits .* look like probabilities"):
            evaluation.evaluate_robustness(probs, (x, y), SMALL)
        with self.assertRaisesRegex(ValueError, r"Unknown protocol 'tinny'. Did you mean 'tiny'\?"):
            evaluation.evaluate_robustness(model, (x, y), "tinny")


class CallbackTest(testing.TestCase):
    def test_metrics_are_logged_at_chosen_epochs(self):
        keras.utils.set_random_seed(0)
        x, y = data.synthetic(60, seed=2, as_arrays=True)
        model = models.tiny_cnn()
        model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        callback = evaluation.RobustnessCallback(x[:6], y[:6], SMALL, epochs=[2])
        history = model.fit(x, y, batch_size=20, epochs=2, verbose=0, callbacks=[callback])
        self.assertEqual(list(callback.reports), [2])
        for key in ("attr_topk", "attr_kendall", "attr_natural_accuracy", "attr_pgd_accuracy", "attr_failed"):
            self.assertLen(history.history[key], 1)
        report = callback.reports[2]
        self.assertAllClose(history.history["attr_topk"][0], report.metric("topk"))
        self.assertAllClose(history.history["attr_natural_accuracy"][0],
                            np.mean(np.argmax(model(x[:6]).numpy(), -1) == y[:6]))


class ReportTest(testing.TestCase):
    def test_json_markdown_and_png(self):
        model = trained_tiny()
        x, y = holdout()
        report = evaluation.evaluate_robustness(model, (x, y), SMALL)
        workdir = self.get_temp_dir()
        evaluation_report.write_report(report, workdir, count=3)
        with open(os.path.join(workdir, "report.json")) as f:
            saved = json.load(f)
        self.assertEqual(saved["num_images"], 12)
        self.assertEqual(saved["protocol"]["name"], "tiny")
        self.assertEqual(set(saved["summaries"]), {"exclude", "reference"})
        self.assertAllClose(saved["summaries"]["exclude"]["topk"]["mean"], report.metric("topk"))
        with open(os.path.join(workdir, "report.md")) as f:
            text = f.read()
        self.assertIn(f"{100 * report.natural_accuracy:.2f}%", text)
        self.assertIn(f"{report.metric('kendall'):.4f}", text)
        self.assertIn("| model | images | NA | AA (PGD) |", text)
        image = np.asarray(Image.open(os.path.join(workdir, "attacks.png")))
        rows = min(3, int(report.examples["found"].sum()))
        self.assertEqual(image.ndim, 3)
        self.assertGreaterEqual(image.shape[0], rows * 112)
        self.assertFalse([f for f in os.listdir(workdir) if "tmp" in f])

    def test_nan_becomes_null_and_heat_ramp(self):
        report = evaluation.RobustnessReport(
            protocol={}, model_name="m", num_images=1, num_correct=0, natural_accuracy=0.0, pgd_accuracy=0.0,
            num_attacked=0, num_failed=0, failed_attack="exclude", summaries={"exclude": {"x": float("nan")}},
            seconds=0.0)
        self.assertIsNone(report.to_dict()["summaries"]["exclude"]["x"])
        ramp = evaluation_report.heat(np.array([0.0, 1.0]))
        self.assertAllEqual(ramp[0], [0, 0, 4])
        self.assertAllEqual(ramp[1], [252, 255, 164])

    def test_map_panel_marks_the_topk_pixels(self):
        saliency = np.arange(16, dtype=np.float32).reshape(4, 4)
        panel = evaluation_report.map_panel(saliency, k=3, scale=4)
        marked = np.all(panel == (0, 255, 255), axis=-1).reshape(4, 4, 4, 4).any(axis=(1, 3))
        self.assertAllEqual(np.flatnonzero(marked.ravel()), [13, 14, 15])
