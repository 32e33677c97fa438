"""TensorBoard logging of attribution robustness: clean vs attacked maps and the protocol's metrics.

Each chosen epoch runs the evaluation protocol (`evaluation.evaluate_robustness`: natural and PGD accuracy,
then the Ghorbani et al. 2019 attribution attack on the correctly classified images, docs/method.md §4–§6) on a
fixed subset and writes, next to Keras' own `TensorBoard` runs:

* scalars `robustness/<metric>`: natural_accuracy, pgd_accuracy, topk, kendall, spearman, center_shift,
  failed (attacked images without a label-preserving iterate);
* images `attributions/clean_vs_attacked`: one panel per attacked image, [clean image | clean map |
  attacked image | attacked map], both maps on one scale so their difference is visible.
"""
import os

import numpy as np
import tensorflow as tf

from attr_robust_tf import _checks, distribute
from attr_robust_tf.evaluation import METRICS, RobustnessCallback

SCALARS = ("natural_accuracy", "pgd_accuracy") + METRICS + ("failed",)


def attribution_panels(clean_images, clean_maps, adversarial_images, adversarial_maps, *, gap=1):
    """Side-by-side panels [clean image | clean map | attacked image | attacked map] with values in [0, 1].

    Both maps of an example are divided by the larger of their two maxima (a shared scale), so a map
    that moved shows as a different picture rather than as a rescaled copy.

    Args:
      clean_images, adversarial_images: (N, H, W, C) in [0, 1], C = 1 or 3.
      clean_maps, adversarial_maps: (N, H, W) non-negative saliency maps (docs/method.md §3).
      gap: width in pixels of the white separator between the four tiles.

    Returns:
      float32 NumPy array (N, H, 4·W + 3·gap, C).
    """
    clean_images = np.asarray(clean_images, np.float32)
    adversarial_images = np.asarray(adversarial_images, np.float32)
    clean_maps = np.asarray(clean_maps, np.float32)
    adversarial_maps = np.asarray(adversarial_maps, np.float32)
    if clean_images.ndim != 4 or clean_images.shape[-1] not in (1, 3):
        raise ValueError("`clean_images` must have shape (N, H, W, C) with C = 1 or 3. Received: "
                         f"clean_images.shape={clean_images.shape}.")
    n, h, w, c = clean_images.shape
    for name, value, shape in (("adversarial_images", adversarial_images, (n, h, w, c)),
                               ("clean_maps", clean_maps, (n, h, w)),
                               ("adversarial_maps", adversarial_maps, (n, h, w))):
        if value.shape != shape:
            raise ValueError(f"`{name}` must have shape {shape} to match clean_images. Received: "
                             f"{name}.shape={value.shape}.")
    gap = _checks.check_positive_int(gap, "gap", minimum=0)
    # (N, 1, 1) shared scale per example; an all-zero pair stays black
    scale = np.maximum(clean_maps.max(axis=(1, 2)), adversarial_maps.max(axis=(1, 2)))[:, None, None]
    scale = np.where(scale > 0, scale, 1.0)

    def as_tile(maps):
        return np.repeat((maps / scale)[..., None], c, axis=-1)  # (N, H, W) → (N, H, W, C)

    separator = np.ones((n, h, gap, c), np.float32)
    tiles = [clean_images, as_tile(clean_maps), adversarial_images, as_tile(adversarial_maps)]
    parts = []
    for i, tile in enumerate(tiles):
        parts.append(np.clip(tile, 0.0, 1.0))
        if i < len(tiles) - 1 and gap:
            parts.append(separator)
    return np.concatenate(parts, axis=2)


class AttributionTensorBoard(RobustnessCallback):
    """Writes attribution maps (clean vs attacked) and robustness metrics to TensorBoard.

    A `RobustnessCallback` (the metrics also reach the epoch logs, `History` and `CSVLogger` as
    `attr_<metric>`) that in addition writes scalars `robustness/<metric>` and the image summary
    `attributions/clean_vs_attacked` (see `attribution_panels`) to `log_dir/robustness`, at step = epoch
    (0-based, like `keras.callbacks.TensorBoard`). Only the chief worker writes in a multi-worker run.

    Args:
      log_dir: TensorBoard log directory (the one given to `keras.callbacks.TensorBoard`, if any).
      images, labels: the fixed monitoring subset (float (N, H, W, C) in [0, 1], int (N,)).
      protocol: evaluation preset name or `Protocol` ("tiny" for smoke runs, "<dataset>:cpu" otherwise).
      epochs, every: which epochs to evaluate (1-based epoch numbers, or every `every` epochs).
      max_images: at most this many panels per evaluation.
      prefix: prefix of the keys added to the epoch logs.
      surrogate: forwarded to the attack (required for subclassed models).

    Example:
      >>> cb = AttributionTensorBoard("runs/x/tb", x_val[:8], y_val[:8], "tiny", every=2)  # doctest: +SKIP
      >>> model.fit(x, y, epochs=4, callbacks=[keras.callbacks.TensorBoard("runs/x/tb"), cb])  # doctest: +SKIP

    Reference: attack and metrics of Ghorbani et al. 2019 (arXiv 1710.10547) as in RAR (arXiv 1905.09957);
    docs/method.md §4–§6.
    """

    def __init__(self, log_dir, images, labels, protocol="tiny", *, epochs=None, every=1, max_images=4,
                 prefix="attr_", surrogate=None):
        super().__init__(images, labels, protocol, epochs=epochs, every=every, prefix=prefix,
                         surrogate=surrogate)
        if not isinstance(log_dir, (str, os.PathLike)) or not os.fspath(log_dir):
            raise ValueError(f"`log_dir` must be a directory path. Received: log_dir={log_dir!r}.")
        self.log_dir = os.fspath(log_dir)
        self.max_images = _checks.check_positive_int(max_images, "max_images")
        self._writer = None

    @property
    def run_dir(self):
        """The TensorBoard run directory this callback writes to."""
        return os.path.join(self.log_dir, "robustness")

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        report = self.reports.get(epoch + 1)
        if report is None or not distribute.is_chief():
            return
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.run_dir)
        values = {"natural_accuracy": report.natural_accuracy, "pgd_accuracy": report.pgd_accuracy,
                  "failed": float(report.num_failed)}
        values.update({name: report.metric(name) for name in METRICS})
        ex = report.examples
        with self._writer.as_default(step=epoch):
            for name in SCALARS:
                if np.isfinite(values[name]):  # a metric with no attacked image is undefined, not 0
                    tf.summary.scalar(f"robustness/{name}", values[name])
            if len(ex["clean_maps"]):
                panels = attribution_panels(ex["clean_images"], ex["clean_maps"], ex["adversarial_images"],
                                            ex["adversarial_maps"])
                tf.summary.image("attributions/clean_vs_attacked", panels, max_outputs=self.max_images,
                                 description="clean image | clean map | attacked image | attacked map; "
                                             "both maps share one scale per image")
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def training_wall_seconds(log_dir):
    """Seconds of training logged in a Keras `TensorBoard` run folder (e.g. <train_dir>/tb/train), or None.

    Keras opens one event file per training session, named events.out.tfevents.<creation time>.<host>...; the
    session trained from that time to its last `epoch_*` summary. The sum over the files counts every finished
    epoch of every session, those of sessions that were killed later included (a timer in the process would
    lose them), and leaves out the work of an epoch that never finished.
    """
    if not tf.io.gfile.isdir(log_dir):
        return None
    total, found = 0.0, False
    for name in sorted(tf.io.gfile.listdir(log_dir)):
        parts = name.split(".")
        if not name.startswith("events.out.tfevents.") or len(parts) < 4 or not parts[3].isdigit():
            continue
        last = None
        for record in tf.data.TFRecordDataset(os.path.join(log_dir, name)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            if any(v.tag.startswith("epoch_") for v in event.summary.value):
                last = event.wall_time if last is None else max(last, event.wall_time)
        if last is not None:
            total += max(0.0, last - int(parts[3]))
            found = True
    return total if found else None
