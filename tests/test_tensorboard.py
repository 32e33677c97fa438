"""TensorBoard callback: panels against hand-built arrays, events read back from disk."""
import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from attr_robust_tf import models
from attr_robust_tf.robust_model import RobustModel
from attr_robust_tf.tensorboard import SCALARS, AttributionTensorBoard, attribution_panels
from testing import TestCase


def _events(run_dir):
    acc = event_accumulator.EventAccumulator(run_dir, size_guidance={"images": 0, "tensors": 0})
    acc.Reload()
    return acc


def _scalar(acc, tag):
    # tf.summary (TF2) stores scalars as tensor events
    return {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)}


def _images(acc, tag):
    """step → list of decoded uint8 images of a tf.summary.image tag."""
    out = {}
    for e in acc.Tensors(tag):
        blobs = tf.make_ndarray(e.tensor_proto)[2:]  # [width, height, png...]
        out[e.step] = [tf.io.decode_png(b).numpy() for b in blobs]
    return out


class PanelTest(TestCase):
    def test_layout_and_shared_scale(self):
        n, h, w = 2, 3, 4
        rng = np.random.default_rng(0)
        x = rng.uniform(size=(n, h, w, 1)).astype("float32")
        x_adv = rng.uniform(size=(n, h, w, 1)).astype("float32")
        clean = rng.uniform(size=(n, h, w)).astype("float32")
        adv = 3.0 * rng.uniform(size=(n, h, w)).astype("float32")
        adv[1] = 0.0
        panels = attribution_panels(x, clean, x_adv, adv, gap=2)
        self.assertEqual(panels.shape, (n, h, 4 * w + 3 * 2, 1))
        tiles = [panels[:, :, k * (w + 2):k * (w + 2) + w, 0] for k in range(4)]
        seps = [panels[:, :, k * (w + 2) + w:(k + 1) * (w + 2), 0] for k in range(3)]
        np.testing.assert_array_equal(tiles[0], x[..., 0])
        np.testing.assert_array_equal(tiles[2], x_adv[..., 0])
        for i in range(n):
            scale = max(clean[i].max(), adv[i].max())  # one scale for both maps of an example
            np.testing.assert_allclose(tiles[1][i], clean[i] / scale, rtol=1e-6)
            np.testing.assert_allclose(tiles[3][i], adv[i] / scale, rtol=1e-6)
        self.assertEqual(tiles[1][1].max(), 1.0)  # example 1: the clean map holds the maximum
        for s in seps:
            np.testing.assert_array_equal(s, 1.0)

    def test_rgb_and_zero_maps(self):
        x = np.full((1, 2, 2, 3), 0.5, "float32")
        zeros = np.zeros((1, 2, 2), "float32")
        panels = attribution_panels(x, zeros, x, zeros, gap=0)
        self.assertEqual(panels.shape, (1, 2, 8, 3))
        np.testing.assert_array_equal(panels[0, :, 2:4], 0.0)  # all-zero maps stay black, no NaN

    def test_bad_shapes(self):
        x = np.zeros((2, 3, 3, 1), "float32")
        m = np.zeros((2, 3, 3), "float32")
        with self.assertRaisesRegex(ValueError, r"`clean_images` must have shape \(N, H, W, C\) with C = 1 or 3"):
            attribution_panels(x[..., 0], m, x, m)
        with self.assertRaisesRegex(ValueError, r"`adversarial_maps` must have shape \(2, 3, 3\).*\(2, 3\)"):
            attribution_panels(x, m, x, m[:, 0])


class CallbackTest(TestCase):
    @pytest.fixture(autouse=True)
    def _inject(self, tmp_path):
        self.tmp = tmp_path

    def _data(self, model, n=8, seed=0):
        images = np.random.default_rng(seed).uniform(size=(n, 8, 8, 1)).astype("float32")
        labels = np.argmax(model.predict(images, verbose=0), -1).astype("int32")
        labels[-1] = (labels[-1] + 1) % 3  # one misclassified image: not attacked, not in the panels
        return images, labels

    def test_writes_what_the_report_says(self):
        model = models.tiny_cnn()
        images, labels = self._data(model)
        cb = AttributionTensorBoard(str(self.tmp), images, labels, "tiny", max_images=3)
        cb.set_model(model)
        logs = {}
        for epoch in range(2):
            cb.on_epoch_end(epoch, logs)
        cb.on_train_end()
        acc = _events(cb.run_dir)
        for epoch in (0, 1):
            report = cb.reports[epoch + 1]
            self.assertEqual(report.num_attacked, 7)
            expected = {"natural_accuracy": 7 / 8, "pgd_accuracy": report.pgd_accuracy,
                        "failed": report.num_failed,
                        **{k: report.metric(k) for k in ("topk", "kendall", "spearman", "center_shift")}}
            for name in SCALARS:
                if np.isfinite(expected[name]):
                    self.assertAlmostEqual(_scalar(acc, f"robustness/{name}")[epoch], expected[name], places=6)
            ex = report.examples
            panels = attribution_panels(ex["clean_images"], ex["clean_maps"], ex["adversarial_images"],
                                        ex["adversarial_maps"])
            written = _images(acc, "attributions/clean_vs_attacked")[epoch]
            self.assertLen(written, 3)
            for got, want in zip(written, panels[:3]):
                self.assertEqual(got.shape, (8, 4 * 8 + 3, 1))
                # PNGs are uint8: within one quantisation level of the float panel
                np.testing.assert_allclose(got / 255.0, want, atol=1.01 / 255)
        self.assertAlmostEqual(logs["attr_natural_accuracy"], 7 / 8)
        self.assertIn("attr_topk", logs)

    def test_in_fit_with_keras_tensorboard(self):
        model = models.tiny_cnn()
        images, labels = self._data(model, n=16, seed=1)
        robust = RobustModel(model, "natural")
        robust.compile(keras.optimizers.SGD(1e-4), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        log_dir = str(self.tmp / "tb")
        cb = AttributionTensorBoard(log_dir, images[:8], labels[:8], "tiny", epochs=[2])
        history = robust.fit(images, labels, batch_size=8, epochs=2, verbose=0,
                             callbacks=[keras.callbacks.TensorBoard(log_dir), cb])
        self.assertEqual(sorted(cb.reports), [2])  # only the chosen epoch is evaluated
        self.assertEqual(history.history["attr_topk"], [cb.reports[2].metric("topk")])
        acc = _events(cb.run_dir)
        self.assertEqual(sorted(_scalar(acc, "robustness/topk")), [1])  # step = 0-based epoch
        self.assertTrue(glob.glob(os.path.join(log_dir, "train", "events.*")))  # Keras' own run is intact

    def test_bad_arguments(self):
        x = np.zeros((2, 8, 8, 1), "float32")
        y = np.zeros(2, "int32")
        with self.assertRaisesRegex(ValueError, "`log_dir` must be a directory path. Received: log_dir=None"):
            AttributionTensorBoard(None, x, y)
        with self.assertRaisesRegex(ValueError, "`max_images` must be an integer >= 1"):
            AttributionTensorBoard(str(self.tmp), x, y, max_images=0)
        with self.assertRaisesRegex(ValueError, "Unknown protocol 'tinny'. Did you mean 'tiny'"):
            AttributionTensorBoard(str(self.tmp), x, y, "tinny")


class _Sleep(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        import time

        time.sleep(0.5)


def test_training_wall_seconds_sums_the_sessions(tmp_path):
    import time

    from attr_robust_tf.tensorboard import training_wall_seconds

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = np.zeros((8, 3), np.float32), np.zeros(8, np.int64)
    spans = []
    for session in range(2):  # two sessions in one run folder, as a resumed training writes them
        start = time.time()
        model.fit(x, y, epochs=2, verbose=0, callbacks=[_Sleep(), keras.callbacks.TensorBoard(str(tmp_path / "tb"))])
        spans.append(time.time() - start)
    seconds = training_wall_seconds(str(tmp_path / "tb" / "train"))
    # each session: at least its two 0.5 s epochs; at most its span plus the 1 s rounding of the file's timestamp
    assert 2.0 <= seconds <= sum(spans) + 2.0
    assert len(tf.io.gfile.glob(str(tmp_path / "tb" / "train" / "events.out.tfevents.*"))) == 2
    assert training_wall_seconds(str(tmp_path / "missing")) is None
    (tmp_path / "empty").mkdir()
    assert training_wall_seconds(str(tmp_path / "empty")) is None
