"""Rendering of a `RobustnessReport`: JSON, a paper-style Markdown table, and PNG grids of attacked maps.

Every file is written to a temporary name in the target folder and then renamed, so a reader never sees a
half-written report.
"""
import json
import os

import numpy as np
from PIL import Image, ImageDraw

from attr_robust_tf._files import write_atomic  # the one atomic-write helper (str or bytes)
from attr_robust_tf.evaluation import LENS_METRICS, METRICS

_METRIC_TITLES = {
    "topk": "IN (top-{k} intersection)",
    "kendall": "CO (Kendall's τ)",
    "spearman": "Spearman's ρ",
    "center_shift": "center shift (px)",
}
_LENS_TITLES = {
    "lens_topk": "{w}-LENS-recall@{k}",
    "lens_topk_precision": "{w}-LENS-prec@{k}",
    "lens_topk_div": "{w}-LENS-recall@{k}-div",
    "lens_kendall": "{w}-LENS-Kendall",
    "lens_spearman": "{w}-LENS-Spearman",
}


# ---------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------

def write_json(report, path):
    """`report.to_dict()` as indented JSON (NaN → null)."""
    write_atomic(path, json.dumps(report.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n")


def save_png(array, path):
    """Saves a uint8 (H, W) or (H, W, 3) array as PNG."""
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array, np.uint8)).save(buffer, format="PNG")
    write_atomic(path, buffer.getvalue())


# ---------------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------------

def _percent(value):
    return "n/a" if value is None or not np.isfinite(value) else f"{100.0 * value:.2f}%"


def _cell(stat, percent):
    mean, lo, hi = stat["mean"], stat["ci_low"], stat["ci_high"]
    if not np.isfinite(mean):
        return "n/a"
    if percent:
        text = f"{100 * mean:.2f}%"
        return text + (f" [{100 * lo:.1f}, {100 * hi:.1f}]" if np.isfinite(lo) else "")
    text = f"{mean:.4f}"
    return text + (f" [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else "")


def _metric_row(summary, names=METRICS):
    return [_cell(summary[name], percent=name in ("topk", "lens_topk", "lens_topk_precision", "lens_topk_div"))
            for name in names]


def _lens_lines(report):
    """The LENS table (Kamath et al. 2024) and, for an attack ensemble, how often each member won."""
    p = report.protocol
    headline = report.summaries[report.failed_attack]
    names = [m for m in LENS_METRICS if m in headline]
    lines = []
    if names:
        window = p.get("lens_window", 3)
        titles = [_LENS_TITLES[m].format(w=window, k=p["k_eval"]) for m in names]
        lines += [
            "## Locality-sensitive metrics (LENS)",
            "",
            "| model | " + " | ".join(titles) + " |",
            "|---|" + "---|" * len(titles),
            f"| {report.model_name} | " + " | ".join(_metric_row(headline, names)) + " |",
            "",
            f"Kamath et al. 2024 (arXiv 2312.10534), on the same maps and images as the table above: a top-k pixel "
            f"counts when it lies within the {window}×{window} window of the other map's top-k set (recall: the "
            "attacked map's pixels near the clean set; prec: the clean pixels near the attacked set); -div uses "
            "the diverse top-k sets; LENS-Kendall/Spearman compare the maps after a "
            f"{window}×{window} maximum filter. Same scoring rule and intervals as above (docs/evaluation.md).",
            "",
        ]
    if report.ensemble_wins:
        members = list(next(iter(report.ensemble_wins.values())))
        lines += [
            "## Attack ensemble",
            "",
            "Per image and metric the worst label-preserving result over the members is kept. Images whose kept "
            "value came from each member:",
            "",
            "| metric | " + " | ".join(members) + " |",
            "|---|" + "---|" * len(members),
        ]
        lines += [f"| {metric} | " + " | ".join(str(wins[m]) for m in members) + " |"
                  for metric, wins in report.ensemble_wins.items()]
        lines.append("")
    return lines


def _attack_name(p):
    if p.get("ensemble"):
        return "worst case over the ensemble " + ", ".join(f"`{m}`" for m in p["ensemble"])
    return f"`{p['method']}`"


def format_markdown(report):
    """The report as Markdown: the paper-style table, the scoring rule, and the settings."""
    p = report.protocol
    headline = report.summaries[report.failed_attack]
    other = "reference" if report.failed_attack == "exclude" else "exclude"
    titles = [_METRIC_TITLES[m].format(k=p["k_eval"]) for m in METRICS]
    failed = (f"{report.num_failed} of {report.num_attacked} ({100.0 * report.num_failed / report.num_attacked:.1f}%)"
              if report.num_attacked else "0 of 0")
    lines = [
        f"# Attributional robustness: `{report.model_name}` on {p['dataset']} ({p['split']}), "
        f"protocol `{p['name']}`",
        "",
        "| model | images | NA | AA (PGD) | " + " | ".join(titles) + " | no label-preserving iterate |",
        "|---|---|---|---|" + "---|" * len(titles) + "---|",
        f"| {report.model_name} | {report.num_images} | {_percent(report.natural_accuracy)} | "
        f"{_percent(report.pgd_accuracy)} | " + " | ".join(_metric_row(headline)) + f" | {failed} |",
        "",
    ]
    if report.failed_attack == "exclude":
        lines.append(
            f"Attack metrics: means over the {headline['topk']['n']} correctly classified images for which the "
            "attack found a label-preserving iterate, with 95 % percentile-bootstrap intervals in brackets "
            f"({p['bootstrap_samples']} resamples). Images without one ({report.num_failed}) are counted in "
            "the last column and left out of the means.")
    else:
        lines.append(
            f"Attack metrics: means over all {report.num_attacked} correctly classified images; those without "
            f"a label-preserving iterate ({report.num_failed}) are scored (1, 1, 1) as in the reference "
            "code (docs/method.md §9 quirk 1). 95 % percentile-bootstrap intervals in brackets.")
    undefined = {k: v for k, v in headline["num_undefined"].items() if v}
    if undefined:
        lines.append(f"Undefined values (constant maps) left out: {undefined}.")
    lines += [
        "",
        f"With the other scoring rule (`failed_attack=\"{other}\"`): "
        + ", ".join(f"{t.split(' (')[0]} {c}" for t, c in zip(titles, _metric_row(report.summaries[other])))
        + ".",
        "",
        "NA: clean accuracy. AA: accuracy under ℓ∞ PGD on cross-entropy "
        f"(ε = {p['pgd_epsilon']:.4g}, {p['pgd_steps']} steps of {p['pgd_step_size']:.4g}, random start). "
        f"Attack: {_attack_name(p)}, ε = {p['epsilon']:.4g}, {p['steps']} steps of {p['step_size']:.4g}, "
        f"{p['restarts']} restart(s), k_attack = {p['k_attack']}, IG with {p['ig_steps']} right-Riemann points "
        "(logit, zero baseline); metrics on the real network's maps, attack gradients through a softplus "
        f"surrogate (β = {p['surrogate_beta']:g}).",
        "",
    ]
    lines += _lens_lines(report)
    lines += [
        "## Settings",
        "",
        "| setting | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in sorted(p.items()) if k != "note"]
    lines += [f"| compute time | {report.seconds:.1f} s |", "", f"**Protocol note.** {p['note']}", ""]
    return "\n".join(lines)


def write_markdown(report, path):
    write_atomic(path, format_markdown(report))


# ---------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------

# anchor colours of a dark-to-bright heat map (black → purple → orange → light yellow)
_HEAT = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float64)


def heat(values):
    """Maps values in [0, 1] (any shape) to uint8 RGB with a dark-to-bright colour ramp."""
    v = np.clip(np.nan_to_num(np.asarray(values, np.float64)), 0.0, 1.0) * (len(_HEAT) - 1)
    lo = np.floor(v).astype(int)
    hi = np.minimum(lo + 1, len(_HEAT) - 1)
    frac = (v - lo)[..., None]
    return np.round(_HEAT[lo] * (1.0 - frac) + _HEAT[hi] * frac).astype(np.uint8)


def _image_rgb(image):
    image = np.clip(np.asarray(image, np.float64), 0.0, 1.0)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return np.round(255.0 * image).astype(np.uint8)


def _topk_cells(saliency, k):
    flat = np.asarray(saliency).reshape(-1)
    order = np.argsort(-flat, kind="stable")[:k]  # ties: lower index first, as in the metrics
    mask = np.zeros(flat.shape, bool)
    mask[order] = True
    return mask.reshape(np.shape(saliency))


def map_panel(saliency, *, vmax=None, k=None, scale=4):
    """A saliency map (H, W) as an upscaled heat-map panel, with its top-k pixels marked by cyan dots."""
    saliency = np.asarray(saliency, np.float64)
    vmax = np.nanmax(saliency) if vmax is None else vmax
    rgb = heat(saliency / vmax if vmax and np.isfinite(vmax) and vmax > 0 else np.zeros_like(saliency))
    big = np.kron(rgb, np.ones((scale, scale, 1), np.uint8))  # nearest-neighbour upscaling
    if k:
        rows, cols = np.nonzero(_topk_cells(saliency, k))
        size = max(1, scale // 2)  # a centred cyan square covering a quarter of the cell
        lo = (scale - size) // 2
        for r, q in zip(rows, cols):
            big[r * scale + lo:r * scale + lo + size, q * scale + lo:q * scale + lo + size] = (0, 255, 255)
    return big


def image_panel(image, *, scale=4):
    return np.kron(_image_rgb(image), np.ones((scale, scale, 1), np.uint8))


def grid(rows, *, header=None, captions=None, pad=4, text_height=12):
    """Tiles panels (a list of rows, each a list of equal-size RGB arrays) with optional text."""
    ph, pw = rows[0][0].shape[:2]
    ncols = max(len(r) for r in rows)
    top = text_height + pad if header else 0
    side = 0
    if captions:
        side = max(6 * len(c) for c in captions) + 2 * pad
    height = top + len(rows) * (ph + pad) + pad
    width = side + ncols * (pw + pad) + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for j, title in enumerate(header or []):
        draw.text((side + pad + j * (pw + pad), pad // 2), title, fill=(0, 0, 0))
    for i, row in enumerate(rows):
        y = top + pad + i * (ph + pad)
        if captions:
            draw.text((pad, y + ph // 2 - 5), captions[i], fill=(0, 0, 0))
        for j, panel in enumerate(row):
            canvas.paste(Image.fromarray(panel), (side + pad + j * (pw + pad), y))
    return np.asarray(canvas)


def attack_figure(report, *, count=6, scale=None):
    """Rows of (original, attacked image, both IG maps with the top-k pixels marked) for the first
    `count` successfully attacked images in dataset order (not hand-picked), else the first failed ones;
    None if nothing was attacked."""
    ex = report.examples
    positions = ex["attacked_positions"]
    chosen = [j for j, pos in enumerate(positions) if ex["found"][pos]][:count]
    if not chosen:  # show failed attacks rather than nothing; their captions say so
        chosen = list(range(min(count, len(positions))))
    if not chosen:
        return None
    k = report.protocol["k_eval"]
    h = ex["clean_images"].shape[1]
    scale = scale or max(1, 112 // h)
    rows, captions = [], []
    for j in chosen:
        pos = positions[j]
        clean_map, adv_map = ex["clean_maps"][j], ex["adversarial_maps"][j]
        vmax = max(np.nanmax(clean_map), np.nanmax(adv_map))  # one colour scale per row
        rows.append([image_panel(ex["clean_images"][j], scale=scale),
                     image_panel(ex["adversarial_images"][j], scale=scale),
                     map_panel(clean_map, vmax=vmax, k=k, scale=scale),
                     map_panel(adv_map, vmax=vmax, k=k, scale=scale)])
        captions.append(f"#{ex['index'][pos]} y={ex['label'][pos]} IN={ex['topk'][pos]:.2f} "
                        f"tau={ex['kendall'][pos]:.2f}" if ex["found"][pos] else
                        f"#{ex['index'][pos]} y={ex['label'][pos]} no label-preserving iterate")
    header = ["original", "attacked", f"IG map top-{k}", f"attacked IG top-{k}"]
    return grid(rows, header=header, captions=captions)


def write_report(report, workdir, *, count=6):
    """Writes report.json, report.md and attacks.png into `workdir`."""
    write_json(report, os.path.join(workdir, "report.json"))
    write_markdown(report, os.path.join(workdir, "report.md"))
    figure = attack_figure(report, count=count)
    if figure is None:  # nothing was attacked: say so in the image rather than leave it out
        figure = np.full((40, 420, 3), 255, np.uint8)
        canvas = Image.fromarray(figure)
        ImageDraw.Draw(canvas).text((8, 14), "No correctly classified image: nothing was attacked.",
                                    fill=(0, 0, 0))
        figure = np.asarray(canvas)
    save_png(figure, os.path.join(workdir, "attacks.png"))
