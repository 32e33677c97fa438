"""tools/evaluate.py and tools/explain.py, run as subprocesses on a small model trained on real Fashion-MNIST."""
import functools
import json
import os
import subprocess
import sys
import tempfile

import keras
import numpy as np
import pytest
from PIL import Image

import testing
from attr_robust_tf import data, models
from attr_robust_tf.robust_model import RobustModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@functools.lru_cache(maxsize=None)
def saved_models():
    """(plain .keras path, RobustModel .keras path) of cpu_cnn trained 1 epoch on 2,000 Fashion-MNIST images."""
    keras.utils.set_random_seed(0)
    x, y = data.arrays("fashion_mnist", "train", limit=2000)
    model = models.cpu_cnn()
    model.compile(keras.optimizers.Adam(2e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x.astype(np.float32) / 255.0, y, batch_size=50, epochs=1, verbose=0)
    folder = tempfile.mkdtemp(prefix="attr_robust_tools_")
    plain = os.path.join(folder, "model.keras")
    model.save(plain)
    robust = RobustModel(model, "natural")
    robust.compile(keras.optimizers.Adam(), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    wrapped = os.path.join(folder, "robust.keras")
    robust.save(wrapped)
    return plain, wrapped


def run(tool, *flags, cwd=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow")
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", tool), *flags], capture_output=True,
                          text=True, env=env, cwd=cwd or ROOT, timeout=300)


def mtimes(folder):
    return {f: os.stat(os.path.join(folder, f)).st_mtime_ns for f in sorted(os.listdir(folder))}


class EvaluateToolTest(testing.TestCase):
    def test_writes_the_three_reports_and_resumes(self):
        plain, _ = saved_models()
        workdir = os.path.join(self.get_temp_dir(), "eval")
        flags = [f"--model={plain}", "--protocol=tiny", f"--workdir={workdir}", "--limit=6", "--noprogress"]
        first = run("evaluate.py", *flags)
        self.assertEqual(first.returncode, 0, first.stderr[-3000:])
        self.assertEqual(sorted(os.listdir(workdir)), ["attacks.png", "chunks", "report.json", "report.md"])
        with open(os.path.join(workdir, "report.json")) as f:
            report = json.load(f)
        self.assertEqual(report["num_images"], 6)
        self.assertEqual(report["protocol"]["num_images"], 6)
        self.assertEqual(report["model_name"], "cpu_cnn")
        self.assertGreater(report["natural_accuracy"], 0.3)
        with open(os.path.join(workdir, "report.md")) as f:
            self.assertIn("| cpu_cnn | 6 |", f.read())
        self.assertIn("| cpu_cnn | 6 |", first.stdout)  # the table is printed too
        self.assertEqual(Image.open(os.path.join(workdir, "attacks.png")).mode, "RGB")
        chunks = mtimes(os.path.join(workdir, "chunks"))
        self.assertEqual(list(chunks), ["chunk_00000.npz", "chunk_00001.npz"])  # tiny: 4 images per chunk

        second = run("evaluate.py", *flags)  # resumes: every chunk is reused, the report is the same
        self.assertEqual(second.returncode, 0, second.stderr[-3000:])
        self.assertEqual(mtimes(os.path.join(workdir, "chunks")), chunks)
        with open(os.path.join(workdir, "report.json")) as f:
            again = json.load(f)
        self.assertEqual(again["summaries"], report["summaries"])

        # a saved RobustModel is evaluated through its .model; other settings may not reuse the chunks
        _, wrapped = saved_models()
        flags = [f"--model={wrapped}", "--protocol=tiny", f"--workdir={workdir}", "--limit=4", "--noprogress",
                 "--set=restarts=1"]
        changed = run("evaluate.py", *flags)
        self.assertEqual(changed.returncode, 1)
        self.assertIn("differs in restarts", changed.stderr)
        fresh = run("evaluate.py", *flags, "--offset=10", "--overwrite")
        self.assertEqual(fresh.returncode, 0, fresh.stderr[-3000:])
        self.assertEqual(list(mtimes(os.path.join(workdir, "chunks"))), ["chunk_00000.npz"])
        with open(os.path.join(workdir, "report.json")) as f:
            report = json.load(f)
        self.assertEqual((report["model_name"], report["num_images"]), ("cpu_cnn", 4))
        self.assertEqual((report["protocol"]["offset"], report["protocol"]["restarts"]), (10, 1))

    @pytest.mark.slow
    def test_fmnist_cpu_protocol_end_to_end(self):
        # the cpu preset itself (20 iterations, 20 IG points, k = 100) on 100 real test images
        plain, _ = saved_models()
        workdir = os.path.join(self.get_temp_dir(), "cpu")
        result = run("evaluate.py", f"--model={plain}", "--protocol=fmnist:cpu", f"--workdir={workdir}",
                     "--limit=100", "--noprogress")
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        with open(os.path.join(workdir, "report.json")) as f:
            report = json.load(f)
        self.assertGreater(report["natural_accuracy"], 0.6)
        self.assertLess(report["pgd_accuracy"], report["natural_accuracy"])
        summary = report["summaries"]["exclude"]
        self.assertLess(summary["topk"]["mean"], 0.9)
        self.assertLess(summary["kendall"]["mean"], 0.9)
        self.assertEqual(summary["topk"]["n"] + report["num_failed"], report["num_attacked"])

    def test_usage_errors(self):
        missing = run("evaluate.py", "--model=/nonexistent.keras", "--workdir=/tmp/x")
        self.assertEqual(missing.returncode, 1)
        self.assertIn("`--model` must be an existing .keras file", missing.stderr)
        plain, _ = saved_models()
        typo = run("evaluate.py", f"--model={plain}", "--protocol=fmnist:cpuu",
                   f"--workdir={self.get_temp_dir()}")
        self.assertEqual(typo.returncode, 1)
        self.assertIn("Did you mean 'fmnist:cpu'?", typo.stderr)


class ExplainToolTest(testing.TestCase):
    def test_dataset_indices_and_files(self):
        plain, _ = saved_models()
        folder = self.get_temp_dir()
        x, _ = data.arrays("fashion_mnist", "test", limit=2)
        np.save(os.path.join(folder, "bag.npy"), x[0])
        Image.fromarray(x[1][..., 0]).save(os.path.join(folder, "shoe.png"))
        out = os.path.join(folder, "maps")
        result = run("explain.py", f"--model={plain}", "--images=fashion_mnist:test:0,1," + ",".join(
            os.path.join(folder, f) for f in ("bag.npy", "shoe.png")), "--methods=ig,saliency", "--ig_steps=8",
            f"--out_dir={out}")
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        self.assertEqual(sorted(os.listdir(out)), ["bag.png", "fashion_mnist_test_0.png",
                                                   "fashion_mnist_test_1.png", "maps.npz", "shoe.png"])
        with np.load(os.path.join(out, "maps.npz")) as saved:
            self.assertEqual(saved["ig"].shape, (4, 28, 28))
            # the same image from the dataset and from the .npy file gets the same map
            self.assertAllClose(saved["ig"][0], saved["ig"][2], atol=1e-5)
            self.assertAllClose(saved["ig"].sum(axis=(1, 2)), np.full(4, 28 * 28), rtol=1e-4)
        bad = run("explain.py", f"--model={plain}", "--images=fashion_mnist:test:0", "--methods=gradcam",
                  f"--out_dir={out}")
        self.assertEqual(bad.returncode, 1)
        self.assertIn("`--methods` must be among", bad.stderr)


class EnsembleFlagTest(testing.TestCase):
    @pytest.mark.slow
    def test_ensemble_flag(self):
        plain, _ = saved_models()
        workdir = os.path.join(self.get_temp_dir(), "eval_ensemble")
        result = run("evaluate.py", f"--model={plain}", "--protocol=tiny", f"--workdir={workdir}", "--limit=4",
                     "--noprogress", "--ensemble")
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        with open(os.path.join(workdir, "report.json")) as f:
            report = json.load(f)
        self.assertEqual(report["protocol"]["ensemble"], ["topk", "mass_center", "random_sign"])
        self.assertEqual(set(report["ensemble_wins"]["kendall"]), {"topk", "mass_center", "random_sign"})
        self.assertIn("lens_topk", report["summaries"]["exclude"])
        with open(os.path.join(workdir, "report.md")) as f:
            self.assertIn("## Attack ensemble", f.read())
