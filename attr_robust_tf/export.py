"""SavedModel export with a prediction endpoint and an Integrated Gradients endpoint.

The artifact needs only TensorFlow to load (`tf.saved_model.load`, `saved_model_cli`, TF Serving): the IG
computation of `attributions.integrated_gradients` is traced into the `explain` graph with its settings
(steps, rule, score, baseline) frozen at export time (docs/method.md §2; docs/conventions.md §8).
"""
import json
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from attr_robust_tf import _checks, attributions, scores
from attr_robust_tf.robust_model import RobustModel
from attr_robust_tf.version import __version__

METADATA_FILE = "attr_robust_tf_export.json"


def _unwrap(model):
    """The plain Keras model to export: a `RobustModel` is replaced by the model it wraps.

    Training machinery (inner attacks, regularizers, trackers) is not part of an inference artifact.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            "`model` must be a keras.Model (or a RobustModel wrapping one). Received: "
            f"model={type(model).__name__}.")
    return model.model if isinstance(model, RobustModel) else model


def _image_shape(model):
    """(H, W, C) from the model's input shape, all static, or a ValueError."""
    shape = _checks.built_input_shape(model)
    if shape is None:
        raise ValueError(
            "`model` must be built with a known input shape (None, H, W, C). Received: an unbuilt model "
            f"{type(model).__name__}. Call it once on a batch, or build it with model.build((None, H, W, C)).")
    if isinstance(shape, list):
        raise ValueError(
            "`model` must have a single image input (None, H, W, C). Received: model.input_shape="
            f"{shape!r}.")
    shape = tuple(shape)
    shape = (None,) + shape[1:]  # the batch size of the building call is not part of the signature
    if len(shape) != 4 or any(d is None for d in shape[1:]):
        raise ValueError(
            "`model` must take images of static shape (None, H, W, C). Received: model.input_shape="
            f"{shape!r}. Export needs H, W and C fixed; only the batch dimension stays free.")
    return tuple(int(d) for d in shape[1:])


def _num_classes(model, image_shape):
    # One symbolic call gives the logits shape without running the model on data.
    out = model.compute_output_spec(keras.KerasTensor((None,) + image_shape, "float32"))
    if isinstance(out, (list, tuple, dict)) or len(out.shape) != 2 or out.shape[-1] is None:
        raise ValueError(
            "`model` must return one logits tensor of shape (N, num_classes). Received: output spec "
            f"{out!r}.")
    return int(out.shape[-1])


def _check_baseline(baseline, image_shape):
    """None (zeros) or a constant broadcastable to one image (H, W, C); returned as float32 NumPy."""
    if baseline is None:
        return None
    arr = np.asarray(baseline, dtype=np.float32)
    try:
        np.broadcast_to(arr, image_shape)
    except ValueError:
        raise ValueError(
            f"`baseline` must be broadcastable to one image of shape {image_shape} (it is frozen into the "
            f"artifact and shared by every request). Received: baseline.shape={arr.shape}.") from None
    if not np.all(np.isfinite(arr)):
        raise ValueError("`baseline` must be finite. Received: a baseline with NaN/Inf values.")
    return arr


def _check_export_dir(export_dir, overwrite):
    if not isinstance(export_dir, (str, os.PathLike)) or not str(export_dir):
        raise TypeError(f"`export_dir` must be a directory path. Received: export_dir={export_dir!r}.")
    export_dir = os.path.abspath(os.fspath(export_dir))
    if os.path.exists(export_dir):
        if not os.path.isdir(export_dir):
            raise FileExistsError(
                f"`export_dir` must be a directory. Received: export_dir={export_dir!r}, which is a file.")
        if os.listdir(export_dir) and not overwrite:
            raise FileExistsError(
                f"`export_dir` must be empty or new. Received: export_dir={export_dir!r}, which is not "
                "empty. Pass overwrite=True (--overwrite) to replace it, or choose another directory.")
    return export_dir


def _endpoints(model, *, ig_steps, method, score, baseline):
    """The two endpoint functions, closed over `model` and the frozen IG settings."""
    base = None if baseline is None else tf.constant(baseline)

    def serve(images):
        logits = model(images, training=False)
        return {
            "logits": logits,
            "probabilities": tf.nn.softmax(logits, axis=-1),
            "classes": tf.argmax(logits, axis=-1, output_type=tf.int32),
        }

    def explain(images, target):
        logits = model(images, training=False)
        predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
        num_classes = tf.shape(logits, out_type=tf.int32)[-1]
        # A bad target in a request fails the request with this message rather than gathering garbage.
        checks = [
            tf.debugging.assert_greater_equal(
                target, -1, message="`target` must be a class index or -1 (the predicted class)"),
            tf.debugging.assert_less(
                target, num_classes, message="`target` must be smaller than the number of classes"),
        ]
        with tf.control_dependencies(checks):
            resolved = tf.where(target < 0, predicted, target)  # −1 → argmax, per example
        # The library's own IG; the base (None, H, W, C) shape is kept symbolic.
        attr = attributions.integrated_gradients(
            model, images, resolved, baseline=base, steps=ig_steps, method=method, score=score)
        return {
            "attributions": attr,
            "saliency": attributions.saliency_map(attr),
            "target": resolved,
            "logits": logits,
            "classes": predicted,
        }

    return serve, explain


def export_saved_model(model, export_dir, *, ig_steps=50, method="riemann_right", score="logit",
                       baseline=None, overwrite=False, bounds=None):
    """Writes a SavedModel with the endpoints `serve` (= `serving_default`) and `explain`.

    `serve(images)` returns `logits` (N, K), `probabilities` (N, K) and `classes` int32 (N,).
    `explain(images, target)` returns `attributions` (N, H, W, C) (Integrated Gradients, Sundararajan et
    al. 2017 eq. 1, docs/method.md §2.1), `saliency` (N, H, W) (the normalised map of docs/method.md §3), `target`
    (the resolved class, int32 (N,)), `logits` and `classes`. A target of −1 means the predicted class.
    Inputs are float32 `images` (None, H, W, C) in [0, 1] and int32 `target` (None,); the batch
    dimension is free. Next to the artifact, `attr_robust_tf_export.json` records the package version,
    the IG settings, the image shape and the number of classes.

    The artifact is written to a temporary sibling directory and renamed into place, so a failed export
    leaves nothing at `export_dir` (and an existing export is only replaced once the new one is complete).

    Args:
      model: a built `keras.Model` returning logits, or a `RobustModel` (its wrapped `.model` is exported).
      export_dir: directory to create. It must not exist or be empty unless `overwrite=True`.
      ig_steps: number of IG path points m.
      method: quadrature rule (see `attributions.METHODS`).
      score: which scalar is attributed (see `scores.SCORES`).
      baseline: None (black image) or a constant broadcastable to one image (H, W, C).
      overwrite: replace a non-empty `export_dir`.
      bounds: (lo, hi), the pixel range the model expects, recorded in the metadata for clients (None: the
        `RobustModel`'s own `settings.bounds`, else (0, 1)).

    Returns:
      The absolute path of the export directory.

    Example:
      >>> export_saved_model(model, "/tmp/exported", ig_steps=16)  # doctest: +SKIP
      >>> served = tf.saved_model.load("/tmp/exported")  # doctest: +SKIP
      >>> served.explain(images, tf.fill([n], -1))["saliency"]  # doctest: +SKIP
    """
    if bounds is None:
        settings = getattr(model, "settings", None)
        bounds = getattr(settings, "bounds", _checks.DEFAULT_BOUNDS)
    lo, hi = _checks.check_bounds(bounds)
    model = _unwrap(model)
    image_shape = _image_shape(model)
    num_classes = _num_classes(model, image_shape)
    ig_steps = _checks.check_positive_int(ig_steps, "ig_steps")
    attributions.quadrature(method, ig_steps)  # validates `method` (and steps ≥ 2 for the trapezoid)
    if not isinstance(score, str):
        raise TypeError(
            "`score` must be the name of a score (a custom callable cannot be recorded in the metadata). "
            f"Received: score={score!r}. Available: {', '.join(sorted(scores.SCORES))}.")
    scores.get(score)
    baseline = _check_baseline(baseline, image_shape)
    if not isinstance(overwrite, bool):
        raise TypeError(f"`overwrite` must be a bool. Received: overwrite={overwrite!r}.")
    export_dir = _check_export_dir(export_dir, overwrite)

    serve, explain = _endpoints(model, ig_steps=ig_steps, method=method, score=score,
                                baseline=baseline)
    images_spec = tf.TensorSpec((None,) + image_shape, tf.float32, name="images")
    target_spec = tf.TensorSpec((None,), tf.int32, name="target")

    archive = keras.export.ExportArchive()
    archive.track(model)
    # `serve` first: the first endpoint also becomes `serving_default` (TF Serving's default).
    archive.add_endpoint("serve", serve, input_signature=[images_spec])
    archive.add_endpoint("explain", explain, input_signature=[images_spec, target_spec])

    metadata = {
        "attr_robust_tf_version": __version__,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "model_name": model.name,
        "image_shape": list(image_shape),
        "num_classes": num_classes,
        "bounds": [lo, hi],  # the declared pixel range of `images` (ε of the training attack is in its units)
        "signatures": {
            "serving_default": "serve",
            "serve": {"inputs": {"images": f"float32 (None, H, W, C) in [{lo:g}, {hi:g}]"},
                      "outputs": ["logits", "probabilities", "classes"]},
            "explain": {"inputs": {"images": f"float32 (None, H, W, C) in [{lo:g}, {hi:g}]",
                                   "target": "int32 (None,); -1 = predicted class"},
                        "outputs": ["attributions", "saliency", "target", "logits", "classes"]},
        },
        "integrated_gradients": {
            "steps": ig_steps,
            "method": method,
            "score": score,
            "baseline": "zeros" if baseline is None else {"shape": list(baseline.shape),
                                                          "values": baseline.tolist()},
            "saliency": "sum_c |IG|, normalised to sum H*W per image (docs/method.md §3)",
        },
    }

    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    # Same parent directory, so the final rename is atomic on one file system.
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(export_dir)}.tmp-", dir=parent)
    old = None
    try:
        archive.write_out(tmp, verbose=False)
        with open(os.path.join(tmp, METADATA_FILE), "w") as f:
            json.dump(metadata, f, indent=2)
        if os.path.exists(export_dir):
            # An empty directory, or a previous export when overwrite=True: keep it until the new one is in.
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(export_dir)}.old-", dir=parent)
            os.rmdir(old)
            os.rename(export_dir, old)
        os.rename(tmp, export_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not os.path.exists(export_dir):
            os.rename(old, export_dir)
            old = None
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return export_dir


def read_metadata(export_dir):
    """The `attr_robust_tf_export.json` dictionary written next to an exported artifact."""
    path = os.path.join(os.fspath(export_dir), METADATA_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"`export_dir` must hold an artifact written by export_saved_model. Received: "
            f"export_dir={os.fspath(export_dir)!r}, which has no {METADATA_FILE}.")
    with open(path) as f:
        return json.load(f)
