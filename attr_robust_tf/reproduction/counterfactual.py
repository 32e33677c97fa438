"""The black-patch counterfactual of a finished cell (docs/method.md §15).

A first-conv filter whose black-patch firing level  −b / Σ max(w, 0)  lies below ε fires on a black patch the
attack raises by ε, and then passes gradient (and IG mass) to pixels whose clean attribution is zero
(`structure.background_levels`). The counterfactual keeps every trained weight, moves only those filters' biases so
that their level is ε + margin (`raise_background_levels`), and attacks the edited model again with the
cell's own protocol on its first `num_images` test images. The paired differences against the cell's own
per-image record (same images, same attack seeds) say how much of the row's top-k the black patches cost.

Layout, next to the cell's result.json:

    counterfactual.json   the record (`black_patch`), reused while the model file, margin and images are the same
    counterfactual/       the edited model's evaluation chunks (resumable)
"""
import os
import time

import keras
import numpy as np

from attr_robust_tf import _checks, evaluation
from attr_robust_tf.reproduction import comparisons, structure
from attr_robust_tf.reproduction.records import (_json_safe, _read_json, _write_json, cell_protocol, file_sha256,
                                                 per_image)

FILE = "counterfactual.json"
MARGIN = 5e-4  # above ε: a level 0.3005 for ε = 0.3, well inside float32 resolution of the pixels
BAND = 0.1  # only filters with a level in [(1 − BAND)·ε, ε) move: an edit of a hair's width, not a new model
METRICS = ("natural_accuracy", "topk", "kendall")


def raise_background_levels(model, epsilon, margin=MARGIN, band=BAND):
    """Moves every first-conv filter whose black-patch level lies in [(1 − band)·ε, ε) to ε + `margin` by its bias
    alone (b = −(ε + margin)·Σ max(w, 0)), in place; returns the moved filters' indices.

    A counterfactual for docs/method.md §15: the same weights, but no attack within ε can light up a black patch
    through a filter that sits just below ε. Filters firing far below ε (a natural model's) are not edits of a
    hair's width and stay as they are.
    """
    conv = structure.first_conv(model)
    epsilon = _checks.check_nonnegative(epsilon, "epsilon", strict=True)
    margin = _checks.check_nonnegative(margin, "margin")
    band = _checks.check_nonnegative(band, "band")
    positive = structure._positive_sums(conv)
    level = structure.background_levels(conv)
    moved = np.flatnonzero((level < epsilon) & (level >= (1 - band) * epsilon) & (positive > 0))
    bias = np.asarray(conv.bias.numpy(), np.float64)
    bias[moved] = -(epsilon + margin) * positive[moved]
    conv.bias.assign(bias.astype(conv.bias.dtype))
    return moved


def read(folder):
    """The cell's counterfactual record, or None."""
    saved = _read_json(os.path.join(folder, FILE))
    return None if saved is None else saved.get("record")


def black_patch(cell, config, num_images, *, margin=MARGIN, band=BAND, test_set=None, progress=False, log=None):
    """The counterfactual record of one finished cell (a `run_cell` / `finished_cell` result).

    Args:
      cell: the cell's result dict (its "folder" and "per_image").
      config: the cell's config (`names.load_config`): its protocol is built as the cell's was (`cell_protocol`).
      num_images: attack the first this many of the protocol's test images (≥ 1).
      margin, band: the filters with a level in [(1 − band)·ε, ε) move to ε + margin
        (`raise_background_levels`).
      test_set: the cell's test images (`cells._test_set`); default: the protocol's dataset.
      progress, log: as in `run_cell`.

    Returns:
      {"num_images", "margin", "band", "epsilon", "moved", "levels" (per filter, before), "filters", "shift" (the
       largest level change),
       "paired": {metric: `comparisons.paired_difference`(edited, as trained)}, "per_image", "seconds"}.
      With no filter to move the model is unchanged: "paired" is None and nothing is attacked. None for a model
      without a biased Conv2D (nothing to edit).
    """
    log = log or (lambda message: None)
    num_images = _checks.check_positive_int(num_images, "num_images")
    margin = _checks.check_nonnegative(margin, "margin")
    band = _checks.check_nonnegative(band, "band")
    folder = cell["folder"]
    model_path = os.path.join(folder, "train", "model.keras")
    sha = file_sha256(model_path)
    saved = _read_json(os.path.join(folder, FILE))
    if saved and saved.get("model_sha256") == sha and all(saved["record"].get(k) == v for k, v in
                                                          (("num_images", num_images), ("margin", margin),
                                                           ("band", band))):
        log(f"  reusing {os.path.join(folder, FILE)}")
        return saved["record"]
    protocol = cell_protocol(config, num_images)
    model = keras.models.load_model(model_path, compile=False)
    conv = next(structure._conv_layers(model), None)
    if conv is None or not conv.use_bias:
        log(f"  no black-patch counterfactual for {model_path}: its model has no biased Conv2D")
        return None
    levels = structure.background_levels(conv)
    moved = raise_background_levels(model, protocol.epsilon, margin, band)
    record = {"num_images": num_images, "margin": margin, "band": band, "epsilon": protocol.epsilon,
              "moved": moved.tolist(), "levels": levels.tolist(), "filters": int(levels.size),
              "shift": float(max(protocol.epsilon + margin - levels[moved])) if moved.size else 0.0,
              "paired": None, "per_image": None, "seconds": 0.0}
    if moved.size:
        log(f"  black-patch counterfactual: {moved.size} filters moved, attacking {protocol.num_images} images")
        start = time.perf_counter()
        report = evaluation.evaluate_robustness(
            model, test_set if test_set is not None else evaluation.protocol_dataset(protocol), protocol,
            chunk_dir=os.path.join(folder, "counterfactual"), progress=progress)
        edited = per_image(report.examples)
        n = protocol.bootstrap_samples
        record["paired"] = {m: comparisons.paired_difference(edited, cell["per_image"], m, samples=n,
                                                             seed=protocol.seed + 300 + i)
                            for i, m in enumerate(METRICS)}
        record["per_image"] = edited
        record["seconds"] = time.perf_counter() - start
    record = _json_safe(record)  # NaN → None, as read back
    _write_json(os.path.join(folder, FILE), {"model_sha256": sha, "record": record})
    return record


def _subset(record, indices):
    """The entries of a per-image record whose test-image index is in `indices`."""
    wanted = set(indices)
    keep = [i for i, index in enumerate(record["index"]) if index in wanted]
    return {name: [values[i] for i in keep] for name, values in record.items()}


def images(cell, record):
    """(as trained, edited) per-image records of a cell over the counterfactual's images; a model with nothing to
    move is its own edit. None without a record."""
    if record is None:
        return None
    first = sorted(cell["per_image"]["index"])[:record["num_images"]]
    trained = _subset(cell["per_image"], first)
    return trained, record["per_image"] or trained


def between(first, second, metric="topk", *, samples=1000, seed=0):
    """Paired differences first − second of two (cell, record) pairs over the counterfactual images: (as trained,
    edited), each a `comparisons.paired_difference`; None when either record is missing."""
    a, b = images(*first), images(*second)
    if a is None or b is None:
        return None
    return tuple(comparisons.paired_difference(x, y, metric, samples=samples, seed=seed) for x, y in zip(a, b))
