"""Statistics of comparisons between two models evaluated on the same test images.

Two models' per-model means each carry their own sampling noise; on the same images most of it is shared, so
the difference is measured per image and averaged (a paired comparison). `paired_difference` pairs the
images by their test-set index, keeps those attacked in both models (correct in both, a label-preserving
iterate found in both, a finite metric in both: the honest "exclude" scoring) and returns the mean difference
with a 95 % percentile bootstrap interval over the pairs (Efron & Tibshirani 1993, ch. 13; resampling pairs,
not the two samples independently). Natural accuracy pairs every image evaluated in both.
"""
import numpy as np

from attr_robust_tf import evaluation
from attr_robust_tf.reproduction.names import BASELINE, paired_baseline
from attr_robust_tf.reproduction.records import PER_IMAGE_OPTIONAL

__all__ = ["paired_difference", "paired_comparisons", "PAIRED_METRICS"]

PAIRED_METRICS = ("natural_accuracy", "topk", "kendall", "lens_topk")
OPTIONAL = PER_IMAGE_OPTIONAL  # compared only when both cells hold the per-image values (cells evaluated with LENS)
_STREAMS = {"natural_accuracy": 201, "topk": 202, "kendall": 203, "lens_topk": 204}  # bootstrap seeds


def _values(per_image, metric):
    """(index, values, usable) arrays of one model's per-image record for `metric`."""
    missing = [k for k in ("index", "clean_correct") + (() if metric == "natural_accuracy" else ("found", metric))
               if k not in per_image]
    if missing:
        raise ValueError(f"`per_image` must hold {', '.join(missing)} (result.json of a cell). Received keys: "
                         f"{', '.join(sorted(per_image))}.")
    index = np.asarray(per_image["index"], np.int64)
    correct = np.asarray(per_image["clean_correct"], bool)
    if metric == "natural_accuracy":
        return index, correct.astype(np.float64), np.ones(index.shape, bool)
    values = np.array([np.nan if v is None else v for v in per_image[metric]], np.float64)
    usable = correct & np.asarray(per_image["found"], bool) & np.isfinite(values)
    return index, values, usable


def paired_difference(first, second, metric, *, samples=1000, seed=0, level=0.95):
    """Mean of (first − second) over the images usable in both models, with a paired bootstrap interval.

    Args:
      first, second: per-image records {"index", "clean_correct", "found", metric: [...]} (result.json's
        `per_image`); the images are matched by `index`, so the two may cover different subsets.
      metric: "topk", "kendall", "lens_topk" (over images attacked in both with a label-preserving iterate) or
        "natural_accuracy" (over every image evaluated in both).
      samples, seed, level: the percentile bootstrap of the mean difference (`evaluation.bootstrap_interval`).

    Returns:
      {"mean", "ci_low", "ci_high", "n", "first", "second"}: the mean difference, its interval, the number
      of pairs and each model's mean over the same pairs (None where there is no pair).
    """
    if metric not in PAIRED_METRICS:
        raise ValueError(f"`metric` must be one of {', '.join(PAIRED_METRICS)}. Received: metric={metric!r}.")
    i1, v1, u1 = _values(first, metric)
    i2, v2, u2 = _values(second, metric)
    for name, index in (("first", i1), ("second", i2)):
        if len(np.unique(index)) != len(index):
            raise ValueError(f"`{name}` must list each image index once. Received: duplicated indices.")
    shared, p1, p2 = np.intersect1d(i1[u1], i2[u2], assume_unique=True, return_indices=True)
    if not shared.size:
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0, "first": None, "second": None}
    a, b = v1[u1][p1], v2[u2][p2]  # aligned by image index (intersect1d sorts them)
    lo, hi = evaluation.bootstrap_interval(a - b, samples=samples, seed=seed, level=level)
    return {"mean": float(np.mean(a - b)), "ci_low": lo, "ci_high": hi, "n": int(shared.size),
            "first": float(a.mean()), "second": float(b.mean())}


def paired_comparisons(cells, baseline=BASELINE, *, samples=None):
    """{dataset: {entry: {metric: paired_difference(entry, its baseline)}}} for every cell with per-image values.

    Each cell is paired with `names.paired_baseline(entry)`: `baseline` trained with the cell's seed override,
    so a seed replicate ("sarkar2021@seed=1") is compared within its seed and the baseline's own replicate
    ("ig_sum_norm@seed=1") with the baseline, which measures the difference two training seeds make. A cell
    whose seed-matched baseline is missing is left out rather than compared across seeds.
    The `OPTIONAL` metrics are there only when both cells hold their per-image values.
    Cells are result dicts of `run_cell`; a dataset without a `baseline` cell (or without per-image values)
    is left out. The bootstrap uses the protocol's `bootstrap_samples` and seed unless `samples` is given.
    """
    out = {}
    for dataset in dict.fromkeys(c["dataset"] for c in cells):
        group = {c["entry"]: c for c in cells if c["dataset"] == dataset and c.get("per_image")}
        if baseline not in group:
            continue
        out[dataset] = {}
        for entry, cell in group.items():
            base = group.get(paired_baseline(entry, baseline))
            if entry == baseline or base is None:
                continue
            protocol = cell.get("protocol") or {}
            n = protocol.get("bootstrap_samples", 1000) if samples is None else samples
            out[dataset][cell["entry"]] = {
                metric: paired_difference(cell["per_image"], base["per_image"], metric, samples=n,
                                          seed=protocol.get("seed", 0) + _STREAMS[metric])
                for metric in PAIRED_METRICS
                if metric not in OPTIONAL or (metric in cell["per_image"] and metric in base["per_image"])}
    return out
