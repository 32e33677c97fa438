"""Figures of the reproduction with matplotlib (Agg, no display): bars with intervals, paired differences, fronts.

Every function returns a `matplotlib.figure.Figure` or, for `bar_chart`, the rendered uint8 RGB array;
`save_figure` writes a figure as an RGB PNG atomically.
"""
import io

import matplotlib

matplotlib.use("Agg")  # files only; never a window (must precede pyplot)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from PIL import Image  # noqa: E402

from attr_robust_tf import evaluation_report  # noqa: E402
from attr_robust_tf.reproduction.names import TITLES, title  # noqa: E402

__all__ = ["PALETTE", "CHART_METRICS", "results_figure", "bar_chart", "paired_figure", "pareto_figure",
           "fronts_figure", "stacked_images_figure", "read_image", "figure_array", "save_figure"]

# entry i in order of appearance (matplotlib's tab10 order, grey first for the natural baseline)
PALETTE = ((120, 120, 120), (31, 119, 180), (255, 127, 14), (44, 160, 44), (148, 103, 189), (140, 86, 75),
           (214, 39, 40), (227, 119, 194), (188, 189, 34), (23, 190, 207))
CHART_METRICS = (("natural_accuracy", "NA"), ("pgd_accuracy", "AA"), ("topk", "IN (top-k)"),
                 ("kendall", "Kendall τ"))
DPI = 100


def _color(i):
    return tuple(c / 255 for c in PALETTE[i % len(PALETTE)])


def _stat(cell, key):
    if key in ("natural_accuracy", "pgd_accuracy"):
        return cell[key]
    return cell["summaries"][cell["failed_attack"]][key]


def figure_array(figure):
    """The figure rendered to a uint8 (H, W, 3) array (white background); closes the figure."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    plt.close(figure)
    return np.asarray(Image.open(buffer).convert("RGB"))


def save_figure(figure, path):
    """Writes the figure as an RGB PNG at `path` (atomic rename); closes it; returns `path`."""
    evaluation_report.save_png(figure_array(figure), path)
    return path


def results_figure(cells):
    """Grouped bars per dataset: NA, AA, top-k intersection and Kendall's τ of every objective, with 95 %
    bootstrap intervals as error bars. The value axis runs from min(0, lowest value) to 1."""
    datasets = list(dict.fromkeys(c["dataset"] for c in cells))
    entries = list(dict.fromkeys(c["entry"] for c in cells))
    means = [_stat(c, k)["mean"] for c in cells for k, _ in CHART_METRICS]
    low = float(np.floor(min([0.0] + [m for m in means if m is not None]) * 10) / 10)
    width = 0.8 / len(entries)
    figure, axes = plt.subplots(len(datasets), 1, figsize=(9, 3.4 * len(datasets)), squeeze=False)
    for axis, dataset in zip(axes[:, 0], datasets):
        for i, entry in enumerate(entries):
            cell = next((c for c in cells if c["dataset"] == dataset and c["entry"] == entry), None)
            if cell is None:
                continue
            xs, heights, errors = [], [], [[], []]
            for m, (key, _) in enumerate(CHART_METRICS):
                stat = _stat(cell, key)
                if stat.get("mean") is None:
                    continue
                xs.append(m - 0.4 + (i + 0.5) * width)
                heights.append(stat["mean"])
                lo, hi = stat.get("ci_low"), stat.get("ci_high")
                errors[0].append(0.0 if lo is None else max(0.0, stat["mean"] - lo))
                errors[1].append(0.0 if hi is None else max(0.0, hi - stat["mean"]))
            axis.bar(xs, heights, width * 0.9, color=_color(i), antialiased=False, linewidth=0, label=title(entry))
            axis.errorbar(xs, heights, yerr=errors, fmt="none", ecolor="black", elinewidth=1, capsize=2)
        axis.set_xticks(range(len(CHART_METRICS)), [label for _, label in CHART_METRICS])
        axis.set_ylim(low, 1.0)
        axis.set_ylabel("value (fraction)")
        axis.set_title(TITLES.get(dataset, dataset))
        axis.axhline(0.0, color="black", linewidth=0.8)
        axis.grid(axis="y", color="0.9")
        axis.set_axisbelow(True)
    handles = [Patch(color=_color(i), label=title(e)) for i, e in enumerate(entries)]
    figure.legend(handles=handles, loc="center left", bbox_to_anchor=(0.74, 0.5), fontsize=8, frameon=False)
    figure.subplots_adjust(left=0.08, right=0.73, hspace=0.35)
    return figure


def bar_chart(cells, **_):
    """`results_figure` rendered to a uint8 RGB array (bars in `PALETTE` colours, in the order of the entries)."""
    return figure_array(results_figure(cells))


def paired_figure(comparisons, baseline_title, entries=None):
    """Paired differences to the baseline per dataset: one panel per metric (NA, top-k, Kendall's τ and, when any
    pair has it, LENS recall), a point per method with its 95 % paired bootstrap interval; `comparisons` is
    `comparisons.paired_comparisons`' output. `entries` (every entry in page order) keeps the colours of
    `results_figure`."""
    order = list(entries or dict.fromkeys(e for v in comparisons.values() for e in v))
    metrics = [("natural_accuracy", "Δ NA (points)", 100), ("topk", "Δ top-k intersection (points)", 100),
               ("kendall", "Δ Kendall τ", 1)]
    if any((v.get("lens_topk") or {}).get("mean") is not None for d in comparisons.values() for v in d.values()):
        metrics.append(("lens_topk", "Δ LENS recall (points)", 100))  # cells evaluated with LENS
    datasets = list(comparisons)
    figure, axes = plt.subplots(len(datasets), len(metrics), figsize=(3.7 * len(metrics), 0.5 + 0.42 * max(
        [len(v) for v in comparisons.values()] + [3]) * len(datasets) + 0.8 * len(datasets)), squeeze=False)
    for row, dataset in enumerate(datasets):
        entries = list(comparisons[dataset])
        for col, (metric, label, scale) in enumerate(metrics):
            axis = axes[row, col]
            for y, entry in enumerate(entries):
                stat = comparisons[dataset][entry].get(metric)
                if stat is None or stat["mean"] is None:
                    continue
                lo = stat["ci_low"] if stat["ci_low"] is not None else stat["mean"]
                hi = stat["ci_high"] if stat["ci_high"] is not None else stat["mean"]
                axis.errorbar([scale * stat["mean"]], [y], xerr=[[scale * (stat["mean"] - lo)],
                                                                 [scale * (hi - stat["mean"])]],
                              fmt="o", color=_color(order.index(entry) if entry in order else y), capsize=3)
            axis.axvline(0.0, color="black", linewidth=0.8)
            if metric == "topk":
                axis.axvline(3.0, color="0.5", linewidth=0.8, linestyle="--")  # the claimed +3 points
            axis.set_yticks(range(len(entries)), [title(e) for e in entries] if col == 0 else [""] * len(entries))
            axis.set_ylim(-0.7, len(entries) - 0.3)
            axis.invert_yaxis()
            axis.set_xlabel(label)
            axis.grid(axis="x", color="0.9")
            if col == 1:
                axis.set_title(f"{TITLES.get(dataset, dataset)}: method − {baseline_title}, paired over the same "
                               "images (95 % bootstrap)", fontsize=9)
    figure.tight_layout()
    return figure


def pareto_figure(trials, front_ids, *, label, x="natural_accuracy", y="topk"):
    """Scatter of every trial (NA against top-k) with the non-dominated ones joined and highlighted."""
    figure, axis = plt.subplots(figsize=(6, 4.5))
    xs = np.array([np.nan if t.get(x) is None else t[x] for t in trials], np.float64)
    ys = np.array([np.nan if t.get(y) is None else t[y] for t in trials], np.float64)
    on = np.array([t["trial_id"] in front_ids for t in trials], bool)
    axis.scatter(100 * xs[~on], 100 * ys[~on], color="0.6", label="trial", zorder=2)
    order = np.argsort(xs[on])
    axis.plot(100 * xs[on][order], 100 * ys[on][order], "o-", color=_color(1), label="non-dominated", zorder=3)
    axis.set_xlabel("natural accuracy on the validation subset (%)")
    axis.set_ylabel("top-k intersection (%)")
    axis.set_title(f"{label}: {len(trials)} trials, {int(on.sum())} non-dominated")
    axis.grid(color="0.9")
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def fronts_figure(fronts, *, title_text="Pareto fronts: accuracy against attribution robustness"):
    """Several Pareto fronts in one axes: {label: pareto.json record}; all trials faint, fronts as lines."""
    figure, axis = plt.subplots(figsize=(7, 5))
    for i, (label, record) in enumerate(fronts.items()):
        color = _color(i + 1)
        trials = [t for t in record["trials"] if t.get("natural_accuracy") is not None and t.get("topk") is not None]
        axis.scatter([100 * t["natural_accuracy"] for t in trials], [100 * t["topk"] for t in trials], color=color,
                     alpha=0.3, s=18)
        front = sorted(record["front"], key=lambda t: t["natural_accuracy"])
        axis.plot([100 * t["natural_accuracy"] for t in front], [100 * t["topk"] for t in front], "o-", color=color,
                  label=f"{label} ({len(front)} of {len(trials)} trials)")
    axis.set_xlabel("natural accuracy on the validation subset (%)")
    axis.set_ylabel("top-k intersection (%)")
    axis.set_title(title_text, fontsize=10)
    axis.grid(color="0.9")
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def read_image(path):
    """An image file as a uint8 RGB array."""
    return np.asarray(Image.open(path).convert("RGB"))


def stacked_images_figure(named_images):
    """Images one above the other at their own resolution, each under its name: [(name, uint8 RGB array)]."""
    width = max(image.shape[1] for _, image in named_images)
    heights = [image.shape[0] + 24 for _, image in named_images]
    figure = plt.figure(figsize=(width / DPI, sum(heights) / DPI), dpi=DPI)
    top = 1.0
    for (name, image), height in zip(named_images, heights):
        frac = height / sum(heights)
        axis = figure.add_axes([0, top - frac, image.shape[1] / width, (image.shape[0] / sum(heights))])
        axis.imshow(image, interpolation="nearest")
        axis.set_axis_off()
        figure.text(0.005, top - 2 / sum(heights), name, va="top", ha="left", fontsize=10)
        top -= frac
    return figure
