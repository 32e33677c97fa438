"""Pareto fronts of natural accuracy (NA) against attribution robustness (top-k intersection), both maximised.

`tools/tune.py --pareto` records NA and top-k of every trial of a search over the regularizer weights; the
non-dominated trials are the trade-off a user can choose from. A trial dominates another when it is at least
as good in both and better in one.
"""
import json

import numpy as np

from attr_robust_tf import config_utils

__all__ = ["non_dominated", "front_at", "compare_fronts", "write_pareto", "read_pareto", "FILE"]

FILE = "pareto.json"


def non_dominated(points):
    """Indices (ascending) of the points no other point dominates; `points` is (n, d), every column maximised.

    Points with a non-finite coordinate are never on the front. Duplicates of a front point are all kept.
    """
    points = np.asarray(points, np.float64)
    if points.ndim != 2:
        raise ValueError(f"`points` must be a (n, d) array. Received: shape {points.shape}.")
    finite = np.all(np.isfinite(points), axis=1)
    keep = []
    for i in np.flatnonzero(finite):
        others = points[finite]
        dominated = np.any(np.all(others >= points[i], axis=1) & np.any(others > points[i], axis=1))
        if not dominated:
            keep.append(int(i))
    return keep


def front_at(front, na):
    """The best top-k among front points with NA ≥ `na` (the attainable robustness at that accuracy), or None.

    `front` is a list of {"natural_accuracy", "topk"} dicts.
    """
    values = [p["topk"] for p in front if p["natural_accuracy"] >= na]
    return max(values) if values else None


def compare_fronts(first, second, *, points=101):
    """Where `first` lies above `second`: over a grid of NA levels covered by both fronts, the fraction of levels
    at which first's attainable top-k (`front_at`) is higher, the largest gap in each direction, and the grid.

    Returns {"na_low", "na_high", "above", "max_gain", "max_loss"} or None if the fronts share no NA range.
    """
    if not first or not second:
        return None
    low = max(min(p["natural_accuracy"] for p in first), min(p["natural_accuracy"] for p in second))
    high = min(max(p["natural_accuracy"] for p in first), max(p["natural_accuracy"] for p in second))
    if low > high:
        return None
    gaps = np.array([front_at(first, x) - front_at(second, x) for x in np.linspace(low, high, points)])
    return {"na_low": float(low), "na_high": float(high), "above": float(np.mean(gaps > 0)),
            "max_gain": float(gaps.max()), "max_loss": float(-gaps.min())}


def write_pareto(path, trials, *, label, metrics=("natural_accuracy", "topk"), extra=None):
    """Writes pareto.json: every trial, the ids of the non-dominated ones and the front sorted by NA; returns it.

    `trials` is a list of {"trial_id", "values", "natural_accuracy", "topk", ...} dicts.
    """
    points = [[t.get(m) if t.get(m) is not None else np.nan for m in metrics] for t in trials]
    front_ids = [trials[i]["trial_id"] for i in non_dominated(points)] if trials else []
    front = sorted((t for t in trials if t["trial_id"] in front_ids), key=lambda t: t["natural_accuracy"])
    record = {"label": label, "metrics": list(metrics), "trials": trials, "front_ids": front_ids, "front": front,
              **(extra or {})}
    config_utils.write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


def read_pareto(path):
    with open(path) as f:
        return json.load(f)
