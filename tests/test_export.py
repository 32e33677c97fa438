"""SavedModel export: reload without the package, compare with the in-memory model and closed forms."""
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import tensorflow as tf
import pytest

from attr_robust_tf import attributions, export
from attr_robust_tf.robust_model import RobustModel
from testing import TestCase, linear_model, quadratic_model, small_cnn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 4
BATCHES = (1, 5)  # two batch sizes: the batch dimension of the signatures is free

# Runs in a fresh interpreter: TensorFlow only. It fails if anything imported attr_robust_tf.
RELOAD_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    inputs = np.load(sys.argv[1])
    results = {}
    for name in sys.argv[3:]:
        loaded = tf.saved_model.load(inputs[name + "_dir"].item())
        results[name + "_signatures"] = np.array(sorted(loaded.signatures.keys()))
        for b in %r:
            x = tf.constant(inputs[name + "_x%%d" %% b])
            t = tf.constant(inputs[name + "_t%%d" %% b])
            for key, value in loaded.signatures["serving_default"](images=x).items():
                results["%%s_default%%d_%%s" %% (name, b, key)] = value.numpy()
            for key, value in loaded.serve(x).items():
                results["%%s_serve%%d_%%s" %% (name, b, key)] = value.numpy()
            for key, value in loaded.signatures["explain"](images=x, target=t).items():
                results["%%s_explain%%d_%%s" %% (name, b, key)] = value.numpy()
    assert not any(m.startswith("attr_robust_tf") for m in sys.modules), "package was imported"
    np.savez(sys.argv[2], **results)
""" % (BATCHES,))


def _run(args, **kwargs):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=300,
                          **kwargs)


def _images(rng, n, shape=(8, 8, 1)):
    return rng.uniform(0.0, 1.0, (n,) + shape).astype("float32")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Three exports, reloaded together in one fresh process (one TensorFlow start-up)."""
    root = tmp_path_factory.mktemp("exports")
    rng = np.random.default_rng(0)
    w = rng.normal(size=(64, 3)).astype("float32")
    baseline = np.full((8, 8, 1), 0.25, "float32")
    cases = {
        "cnn": (small_cnn(), dict(ig_steps=STEPS)),
        "gauss": (small_cnn(seed=1), dict(ig_steps=STEPS, method="gausslegendre", score="probability",
                                          baseline=baseline)),
        "linear": (linear_model(w, input_shape=(8, 8, 1)), dict(ig_steps=STEPS, baseline=baseline)),
    }
    inputs = {}
    for name, (model, kwargs) in cases.items():
        inputs[name + "_dir"] = np.array(export.export_saved_model(model, root / name, **kwargs))
        for b in BATCHES:
            inputs[f"{name}_x{b}"] = _images(rng, b)
            # −1 (predicted class) mixed with explicit classes
            inputs[f"{name}_t{b}"] = np.array([-1, 0, 2, -1, 1][:b], "int32")
    np.savez(root / "inputs.npz", **inputs)
    script = root / "reload.py"
    script.write_text(RELOAD_SCRIPT)
    proc = _run([str(script), str(root / "inputs.npz"), str(root / "outputs.npz"), *cases], cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outputs = dict(np.load(root / "outputs.npz"))
    return dict(cases=cases, inputs=inputs, outputs=outputs, w=w, baseline=baseline)


class ExportTest(TestCase):
    @pytest.fixture(autouse=True)
    def _inject(self, exported, tmp_path):
        self.ex = exported
        self.tmp = tmp_path

    def test_signatures(self):
        for name in self.ex["cases"]:
            self.assertEqual(list(self.ex["outputs"][name + "_signatures"]),
                             ["explain", "serve", "serving_default"])

    def test_serve_matches_model(self):
        out = self.ex["outputs"]
        for name, (model, _) in self.ex["cases"].items():
            for b in BATCHES:
                x = self.ex["inputs"][f"{name}_x{b}"]
                logits = model.predict(x, verbose=0)
                for prefix in ("serve", "default"):
                    self.assertAllClose(out[f"{name}_{prefix}{b}_logits"], logits, atol=1e-5, rtol=1e-5)
                    p = np.exp(logits - logits.max(-1, keepdims=True))
                    self.assertAllClose(out[f"{name}_{prefix}{b}_probabilities"], p / p.sum(-1, keepdims=True),
                                        atol=1e-5, rtol=1e-5)
                    np.testing.assert_array_equal(out[f"{name}_{prefix}{b}_classes"], logits.argmax(-1))

    def test_explain_matches_integrated_gradients(self):
        out = self.ex["outputs"]
        for name, (model, kwargs) in self.ex["cases"].items():
            for b in BATCHES:
                x = self.ex["inputs"][f"{name}_x{b}"]
                t = self.ex["inputs"][f"{name}_t{b}"]
                logits = model.predict(x, verbose=0)
                resolved = np.where(t < 0, logits.argmax(-1), t)
                np.testing.assert_array_equal(out[f"{name}_explain{b}_target"], resolved)
                np.testing.assert_array_equal(out[f"{name}_explain{b}_classes"], logits.argmax(-1))
                self.assertAllClose(out[f"{name}_explain{b}_logits"], logits, atol=1e-5, rtol=1e-5)
                ig = attributions.integrated_gradients(
                    model, x, resolved, steps=kwargs["ig_steps"], method=kwargs.get("method", "riemann_right"),
                    score=kwargs.get("score", "logit"), baseline=kwargs.get("baseline"))
                self.assertAllClose(out[f"{name}_explain{b}_attributions"], ig, atol=1e-5, rtol=1e-5)
                self.assertAllClose(out[f"{name}_explain{b}_saliency"], attributions.saliency_map(ig),
                                    atol=1e-5, rtol=1e-5)

    def test_explain_linear_closed_form(self):
        # Linear logits: IG_i = (x_i − x0_i)·w[i, c] exactly, for any rule and step count.
        out, w, x0 = self.ex["outputs"], self.ex["w"], self.ex["baseline"]
        for b in BATCHES:
            x = self.ex["inputs"][f"linear_x{b}"]
            c = out[f"linear_explain{b}_target"]
            expected = (x - x0) * w[:, c].T.reshape(b, 8, 8, 1)
            self.assertAllClose(out[f"linear_explain{b}_attributions"], expected, atol=1e-5, rtol=1e-5)
            s = np.abs(expected).sum(-1)
            self.assertAllClose(out[f"linear_explain{b}_saliency"], 64 * s / s.sum((1, 2), keepdims=True),
                                atol=1e-4, rtol=1e-5)

    def test_metadata(self):
        meta = export.read_metadata(self.ex["inputs"]["gauss_dir"].item())
        self.assertEqual(meta["image_shape"], [8, 8, 1])
        self.assertEqual(meta["num_classes"], 3)
        self.assertEqual(meta["integrated_gradients"]["steps"], STEPS)
        self.assertEqual(meta["integrated_gradients"]["method"], "gausslegendre")
        self.assertEqual(meta["integrated_gradients"]["score"], "probability")
        self.assertEqual(np.asarray(meta["integrated_gradients"]["baseline"]["values"]).shape, (8, 8, 1))
        with self.assertRaisesRegex(FileNotFoundError, "export_dir"):
            export.read_metadata(self.tmp)

    def test_saved_model_cli_lists_both_signatures(self):
        cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
        proc = subprocess.run([cli, "show", "--all", "--dir", self.ex["inputs"]["cnn_dir"].item()],
                              capture_output=True, text=True, timeout=300)
        self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
        for name in ("serving_default", "serve", "explain"):
            self.assertIn(f"signature_def['{name}']", proc.stdout)
        self.assertIn("inputs['images'] tensor_info", proc.stdout)
        self.assertIn("inputs['target'] tensor_info", proc.stdout)
        self.assertIn("shape: (-1, 8, 8, 1)", proc.stdout)
        for key in ("attributions", "saliency", "probabilities", "classes"):
            self.assertIn(f"outputs['{key}']", proc.stdout)

    def test_subclassed_quadratic_closed_form(self):
        # s(x) = ½ xᵀAx (a subclassed model built by one call): right-Riemann IG with S points is exactly
        # (S+1)/(2S)·x ⊙ (Ax) for A symmetric (docs/method.md §2.2, docs/conventions.md §10).
        rng = np.random.default_rng(3)
        b = rng.normal(size=(16, 16))
        a = (b + b.T) / 2
        model = quadratic_model(a, (4, 4, 1))
        path = export.export_saved_model(model, self.tmp / "quadratic", ig_steps=STEPS)
        loaded = tf.saved_model.load(path)
        x = rng.uniform(size=(3, 4, 4, 1)).astype("float32")
        out = loaded.explain(tf.constant(x), tf.constant([0, 0, 0], tf.int32))
        v = x.reshape(3, 16)
        expected = (STEPS + 1) / (2 * STEPS) * v * (v @ a.T)
        self.assertAllClose(out["attributions"].numpy().reshape(3, 16), expected, atol=1e-5, rtol=1e-4)
        self.assertAllClose(loaded.serve(tf.constant(x))["logits"][:, 0], 0.5 * np.sum(v * (v @ a.T), -1),
                            atol=1e-5, rtol=1e-5)

    def test_robust_model_is_unwrapped(self):
        base = small_cnn()
        robust = RobustModel(base, "ig_norm", ig_steps=2, inner_ig_steps=2, attack_steps=1)
        path = export.export_saved_model(robust, self.tmp / "robust", ig_steps=2)
        loaded = tf.saved_model.load(path)
        # only the inference network: no regularizer-weight variables, no trackers
        self.assertEqual(sorted(v.shape.as_list() for v in loaded.variables),
                         sorted(list(w.shape) for w in base.weights))
        x = _images(np.random.default_rng(4), 2)
        self.assertAllClose(loaded.serve(tf.constant(x))["logits"], base(x), atol=1e-5, rtol=1e-5)
        self.assertEqual(export.read_metadata(path)["model_name"], base.name)

    def test_bad_target_fails_the_request(self):
        loaded = tf.saved_model.load(self.ex["inputs"]["cnn_dir"].item())
        x = tf.constant(_images(np.random.default_rng(1), 2))
        for bad in ([-2, 0], [0, 3]):
            with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "target"):
                loaded.explain(x, tf.constant(bad, tf.int32))


class ExportDirectoryTest(TestCase):
    @pytest.fixture(autouse=True)
    def _inject(self, tmp_path):
        self.tmp = tmp_path

    def _siblings(self):
        return sorted(p.name for p in self.tmp.iterdir())

    def test_refuses_non_empty_dir_unless_overwrite(self):
        model = small_cnn()
        target = self.tmp / "out"
        target.mkdir()
        (target / "keep.txt").write_text("x")
        with self.assertRaisesRegex(FileExistsError, r"`export_dir` must be empty or new\. Received: "):
            export.export_saved_model(model, target, ig_steps=2)
        self.assertEqual(os.listdir(target), ["keep.txt"])
        export.export_saved_model(model, target, ig_steps=2, overwrite=True)
        self.assertNotIn("keep.txt", os.listdir(target))
        self.assertIn("saved_model.pb", os.listdir(target))
        self.assertEqual(self._siblings(), ["out"])  # no temporary directories left behind

    def test_empty_existing_dir_is_accepted(self):
        (self.tmp / "out").mkdir()
        export.export_saved_model(small_cnn(), self.tmp / "out", ig_steps=2)
        self.assertEqual(export.read_metadata(self.tmp / "out")["integrated_gradients"]["steps"], 2)

    def test_failed_export_leaves_nothing(self):
        original = keras.export.ExportArchive

        def failing_archive():
            archive = original()

            def write_out(path, **kwargs):
                with open(os.path.join(path, "saved_model.pb"), "w") as f:
                    f.write("partial")  # something half-written, then a crash
                raise OSError("disk full")

            archive.write_out = write_out
            return archive

        keras.export.ExportArchive = failing_archive
        try:
            with self.assertRaisesRegex(OSError, "disk full"):
                export.export_saved_model(small_cnn(), self.tmp / "new", ig_steps=2)
            self.assertEqual(self._siblings(), [])
            # A failed overwrite keeps the previous export intact.
            keras.export.ExportArchive = original
            export.export_saved_model(small_cnn(), self.tmp / "old", ig_steps=2)
            before = sorted(os.listdir(self.tmp / "old"))
            keras.export.ExportArchive = failing_archive
            with self.assertRaisesRegex(OSError, "disk full"):
                export.export_saved_model(small_cnn(), self.tmp / "old", ig_steps=2, overwrite=True)
        finally:
            keras.export.ExportArchive = original
        self.assertEqual(self._siblings(), ["old"])
        self.assertEqual(sorted(os.listdir(self.tmp / "old")), before)
        self.assertEqual(export.read_metadata(self.tmp / "old")["integrated_gradients"]["steps"], 2)

    def test_bad_arguments(self):
        model = small_cnn()
        out = self.tmp / "out"
        with self.assertRaisesRegex(ValueError, r"`ig_steps` must be an integer >= 1\. Received: ig_steps=0"):
            export.export_saved_model(model, out, ig_steps=0)
        with self.assertRaisesRegex(ValueError, "Did you mean 'riemann_right'"):
            export.export_saved_model(model, out, method="riemann_rigth")
        with self.assertRaisesRegex(ValueError, "Did you mean 'logit'"):
            export.export_saved_model(model, out, score="logits")
        with self.assertRaisesRegex(ValueError, r"`baseline` must be broadcastable .*\(8, 8, 1\).*\(7,\)"):
            export.export_saved_model(model, out, baseline=np.zeros(7))
        with self.assertRaisesRegex(TypeError, "`model` must be a keras.Model"):
            export.export_saved_model(lambda x: x, out)
        with self.assertRaisesRegex(TypeError, "`overwrite` must be a bool"):
            export.export_saved_model(model, out, overwrite="yes")
        (self.tmp / "file").write_text("x")
        with self.assertRaisesRegex(FileExistsError, "which is a file"):
            export.export_saved_model(model, self.tmp / "file")
        inp = keras.Input((None, None, 1))
        dynamic = keras.Model(inp, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(inp)))
        with self.assertRaisesRegex(ValueError, r"static shape \(None, H, W, C\)"):
            export.export_saved_model(dynamic, out)

        class Lazy(keras.Model):
            def call(self, x):
                return x

        with self.assertRaisesRegex(ValueError, "must be built"):
            export.export_saved_model(Lazy(), out)
        self.assertEqual(self._siblings(), ["file"])


class ExportToolTest(TestCase):
    @pytest.fixture(autouse=True)
    def _inject(self, tmp_path):
        self.tmp = tmp_path

    def test_cli_round_trip(self):
        model = small_cnn()
        model.save(self.tmp / "model.keras")
        args = [os.path.join(REPO, "tools", "export.py"), f"--model={self.tmp / 'model.keras'}",
                f"--export_dir={self.tmp / 'export'}", "--ig_steps=3"]
        proc = _run(args)
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        loaded = tf.saved_model.load(str(self.tmp / "export"))
        x = _images(np.random.default_rng(2), 3)
        self.assertAllClose(loaded.serve(tf.constant(x))["logits"], model(x), atol=1e-5, rtol=1e-5)
        got = loaded.explain(tf.constant(x), tf.constant([-1, -1, -1]))["attributions"]
        ig = attributions.integrated_gradients(model, x, "predicted", steps=3)
        self.assertAllClose(got, ig, atol=1e-5, rtol=1e-5)
        self.assertEqual(json.loads((self.tmp / "export" / export.METADATA_FILE).read_text())
                         ["integrated_gradients"]["steps"], 3)
        # A second export to the same directory is refused with a usage error, then allowed with --overwrite.
        proc = _run(args)
        self.assertEqual(proc.returncode, 1)
        self.assertIn("--overwrite", proc.stderr)
        proc = _run(args + ["--overwrite", "--ig_steps=2"])
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        self.assertEqual(export.read_metadata(self.tmp / "export")["integrated_gradients"]["steps"], 2)
