"""Rendering pages: RESULTS.md (tables, claim lines, convergence, settings, wall times, figures) and the demo report.

The tables live in `tables`, the sentences about the claim in `claims`, the map-structure records in `structure`;
this module assembles them into pages.
"""
import datetime
import os

import keras
import tensorflow as tf

from attr_robust_tf import evaluation_report, pareto
from attr_robust_tf.reproduction import comparisons, counterfactual, figures, structure
from attr_robust_tf.reproduction.claims import (_points, counterfactual_lines, paired_claim,  # noqa: F401
                                                paired_table, seed_lines, unpaired_claim, verdict)
from attr_robust_tf.reproduction.names import BASELINE, TITLES, is_sarkar, split_entry, title
from attr_robust_tf.reproduction.tables import (_seconds, convergence_table,  # noqa: F401
                                                counterfactual_table, differences_table, lens_table, results_table,
                                                settings_table, structure_table)
from attr_robust_tf.version import __version__

EXPECTED_RUNTIME = {
    "tiny": "about 1–3 minutes for 9 objectives on 2 CPU cores (synthetic 8×8 data; a test of the tool, not a "
            "result)",
    "cpu": "about 30–60 minutes for MNIST and Fashion-MNIST × 9 objectives on 2 quiet CPU cores, 1–2 hours on "
           "shared ones (estimated from the Fashion-MNIST natural, IG-SUM-NORM and Sarkar et al. 2021 cells: up to "
           "2.5 min of training and 0.5–2 min of evaluation each, plus the restart study; the wall-time table "
           "below has the measured values)",
    "medium": "estimated 8–10 hours for MNIST and Fashion-MNIST × 9 objectives on 2 shared CPU cores, resumed "
              "across sessions by rerunning the same command (scaled from the measured cpu cells: 400 steps per "
              "epoch instead of 120, at most 15 epochs, Sarkar et al. 2021 up to about 1 h of training per dataset; "
              "1,000 test images × 3 restarts instead of 200 × 1, 7–30 min of evaluation per cell); the wall-time "
              "table below has the measured values",
    "reference": "GPU work: on 2 CPU cores one MNIST IG-NORM training run alone is about 500 h and one "
                 "reference evaluation (10,000 images × 100 iterations × 3 runs) about 110 h (docs/method.md "
                 "§11.3); a single GPU has not been measured, expect days for the full grid",
}


def _protocol_line(group):
    p = group[0]["protocol"]
    return (f"Protocol `{p['name']}`: top-k attack ε = {p['epsilon']:.4g}, {p['steps']} steps of "
            f"{p['step_size']:.4g}, {p['restarts']} run(s), k = {p['k_eval']}, {p['ig_steps']} IG points; "
            f"PGD ε = {p['pgd_epsilon']:.4g}, {p['pgd_steps']} steps of {p['pgd_step_size']:.4g}. "
            f"{p['note']}" + (" Here the test images are a fresh synthetic draw of the training classes "
                              "(seed + 2), not real images." if group[0].get("synthetic") else ""))


def _key(cell):
    return cell.get("scale"), cell["dataset"], cell["entry"]


def _structure_lines(group, structures):
    """The map-structure table of one dataset (docs/method.md §15); [] without records."""
    lines = structure_table(group, [(structures or {}).get(_key(c)) for c in group])
    if not lines:
        return []
    return ["Map structure (docs/method.md §15): how concentrated the clean maps are, the top-k intersection over "
            "the 2×2 blocks of the first max-pool next to the pixel one, how many first-layer filters read mostly "
            "one pixel and from which input level they fire, and how many active windows of the first max-pool "
            "change their winning position under the attack (the max-pool passes the input gradient to the winner "
            "only). Means over every attacked image with saved maps.", ""] + lines + [""]


def _counterfactual_lines(group, counterfactuals):
    """The black-patch counterfactual of one dataset (docs/method.md §15); [] without records."""
    records = [(counterfactuals or {}).get(_key(c)) for c in group]
    table = counterfactual_table(group, records)
    if not table:
        return []
    first = next(r for r in records if r is not None)
    claims = counterfactual_lines(group, records)
    return ([f"Black-patch counterfactual (docs/method.md §15): the same trained weights with every first-layer "
             f"filter whose black-patch level −b / Σ max(w, 0) lies just below ε = {first['epsilon']:g} (in "
             f"[{1 - first.get('band', 0.1):g} ε, ε): an attack within ε can make it fire on a black patch) moved "
             f"to level ε + {first['margin']:g} by its bias alone, attacked again with the same protocol on the first "
             f"{first['num_images']} test images; differences edited − as trained, paired over the same images, "
             "with 95 % paired bootstrap intervals.", ""] + table + [""] + (claims + [""] if claims else []))


def _dataset_section(group, paired, level="##", suffix="", structures=None, counterfactuals=None):
    """Table, protocol, map structure, paired differences and claim lines of one dataset."""
    synthetic = group[0].get("synthetic")
    lines = ["", f"{level} {TITLES[group[0]['dataset']]}{' (synthetic stand-in)' if synthetic else ''}{suffix}", "",
             results_table(group, rar=True), "", _protocol_line(group), ""]
    lens = lens_table(group)
    if lens:
        w = group[0]["protocol"].get("lens_window", 3)
        lines += ["Locality-sensitive metrics (LENS, Kamath et al. 2024): a top-k pixel of the clean map counts as "
                  f"kept when an attacked top-k pixel lies in its {w}×{w} neighbourhood; -div counts diverse top-k "
                  f"pixels only; LENS-Kendall/Spearman compare the maps after a {w}×{w} maximum filter "
                  "(docs/evaluation.md).", "", lens, ""]
    lines += _structure_lines(group, structures) + _counterfactual_lines(group, counterfactuals)
    lines += [
             "**The claim** (Sarkar et al. 2021: +3 to +9 % in attribution robustness "
             "over the best earlier method):", ""]
    if paired:
        lines += [f"Paired differences to {title(BASELINE)}: the mean per-image difference over the same test "
                  "images (NA: every image evaluated in both; top-k, τ and LENS recall: the images attacked in both "
                  "models with a label-preserving iterate in both), with 95 % paired bootstrap intervals.", ""]
        lines += paired_table(paired) + [""] + paired_claim(group, paired)
        seeds = seed_lines(paired)
        lines += [""] + seeds if seeds else []
        lines += ["", "Per-model comparison (unpaired; each mean with its own interval, as in the table):", ""]
    lines += unpaired_claim(group)
    return lines


def _pareto_section(records, figure):
    """The Pareto fronts of the weight searches: figure, table and the generated comparison at equal NA."""
    lines = ["", "## The weight trade-off (Pareto fronts)", "",
             "Each point is one trial of `tools/tune.py --pareto`: a model trained with regularizer weights drawn "
             "log-uniformly (Sarkar et al.'s two weights separately), scored by NA and the top-k intersection on "
             "a fixed validation subset; the lines join the non-dominated trials.", ""]
    if figure:
        lines += [f"![Pareto fronts of NA against top-k intersection]({figure})", ""]
    lines += ["| search | trials | non-dominated (NA / top-k, with the weights) |", "|---|---|---|"]
    for label, record in records.items():
        front = "; ".join(
            f"{100 * t['natural_accuracy']:.1f}% / {100 * t['topk']:.1f}% ("
            + ", ".join(f"{k.rsplit('.', 1)[-1]} {v:.3g}" for k, v in sorted(t["values"].items())) + ")"
            for t in record["front"])
        lines.append(f"| {label} | {len(record['trials'])} | {front or '—'} |")
    base = next((label for label, r in records.items() if r.get("objective") == BASELINE), None)
    if base is not None and any(is_sarkar(r.get("objective", "")) for r in records.values()):
        lines.append("")
    for label, record in records.items():
        if base is None or label == base or not is_sarkar(record.get("objective", "")):
            continue
        cmp = pareto.compare_fronts(record["front"], records[base]["front"])
        if cmp is None:
            lines.append(f"- {label} vs {base}: the fronts cover no common NA range.")
            continue
        where = ("lies above" if cmp["above"] == 1.0 else "lies below or level with" if cmp["above"] == 0.0
                 else f"lies above on {100 * cmp['above']:.0f} % of")
        lines.append(f"- {label} vs {base}: over NA {100 * cmp['na_low']:.1f}–{100 * cmp['na_high']:.1f}% (covered "
                     f"by both), the best top-k at equal or higher NA {where} {base}'s"
                     f"{' range' if 0 < cmp['above'] < 1 else ''}; largest gain {100 * max(0.0, cmp['max_gain']):.1f} "
                     f"points, largest shortfall {100 * max(0.0, cmp['max_loss']):.1f} points. One search each on "
                     "a validation subset: no interval.")
    return lines


def format_results(cells, *, scale, command=None, chart=None, wall_seconds=None, generated=None, extra_scales=None,
                   paired_chart=None, pareto_records=None, pareto_chart=None, structures=None, pending=None,
                   counterfactuals=None):
    """RESULTS.md: one table per dataset, the claim (paired with IG-SUM-NORM when the cells have per-image
    values), the evaluation differences, convergence, settings and wall times; then the tables of
    `extra_scales` ({scale: cells}), the Pareto fronts (`pareto_records`: {label: pareto.json record}) and the
    map-structure tables (`structures`: {(scale, dataset, entry): `structure.map_structure` record}, and
    `counterfactuals` alike: `counterfactual.black_patch` records). `pending`
    lists the (dataset, entry) cells of the run that are not finished yet (`reproduce(render_only=True)`)."""
    generated = generated or datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    datasets = list(dict.fromkeys(c["dataset"] for c in cells))
    synthetic = any(c.get("synthetic") for c in cells)
    paired = comparisons.paired_comparisons(cells)
    lines = ["# Results: attributional robustness, measured", ""]
    if synthetic:
        lines += ["> **Scale `tiny`: synthetic 8×8 images, 2-epoch tiny models, the `tiny` protocol. These numbers "
                  "test the tool end to end and mean nothing about the methods.**", ""]
    lines += [f"Generated {generated} by attr_robust_tf {__version__} (TensorFlow {tf.__version__}, Keras "
              f"{keras.__version__}, {os.cpu_count()} CPU cores) at scale `{scale}`"
              + (f", with the finished `{'`, `'.join(extra_scales)}` cells of the same workdir" if extra_scales else "")
              + "."]
    if command:
        lines += ["", "Command:", "", "```bash", command, "```"]
    if pending:
        lines += ["", f"> **Partial page: {len(pending)} cell{'s' if len(pending) > 1 else ''} of this run "
                  f"{'are' if len(pending) > 1 else 'is'} not finished yet** and not shown: "
                  + ", ".join(f"{TITLES[d]} × {title(e)}" for d, e in pending)
                  + ". Rerun the command without `--render_only` to finish them (it resumes)."]
    lines += ["", f"Expected runtime at this scale: {EXPECTED_RUNTIME[scale]}.", "",
              "NA: clean accuracy; AA: accuracy under ℓ∞ PGD on cross-entropy; IN: top-k intersection; CO: "
              "Kendall's τ between the IG maps of the clean and the attacked image (Ghorbani et al. 2019 top-k "
              "attack). Attack metrics are means over correctly classified images that have a label-preserving "
              "iterate; brackets are 95 % percentile-bootstrap intervals; the counts column gives the test "
              "images, the correctly classified (attacked) ones and those without a label-preserving iterate. "
              "The last column repeats RAR's Table 1 as **recalled from memory and not verified against the "
              "paper** (docs/method.md §10); it was measured with the full reference settings (91 epochs, 10,000 test "
              "images, 100-step attacks × 3 runs, 100 IG points), not with this run's settings."]
    if chart:
        lines += ["", f"![NA, AA, top-k intersection and Kendall's τ per objective]({chart})"]
    for dataset in datasets:
        lines += _dataset_section([c for c in cells if c["dataset"] == dataset], paired.get(dataset),
                                  structures=structures, counterfactuals=counterfactuals)
    if paired_chart:
        lines += ["", f"![Paired differences to {title(BASELINE)} with 95 % intervals]({paired_chart})"]
    lines += closing_note(cells, paired, datasets, counterfactuals)
    lines += ["", "## Evaluation choices that differ from the reference code", "",
              "The reference evaluation (`ig_attack.py` of RAR and Sarkar et al.) scores an image whose attack "
              "finds no label-preserving iterate as (IN, τ, ρ) = (1, 1, 1), a perfect score; we leave such images "
              "out of the means and count them (docs/method.md §9 quirk 1). Its top-k attack runs 3 times from the "
              "clean image without a random start, so the 3 runs are identical; our restarts after the first "
              "start at random points of the ε-ball (quirk 2). Ties in the maps are broken by a stable sort "
              "(quirk 7), and AA attacks pure cross-entropy in inference mode for every model (quirk 4). The "
              "tables below give the difference the first two make."]
    for dataset in datasets:
        lines += ["", f"### {TITLES[dataset]}", ""] + differences_table([c for c in cells if c["dataset"] == dataset])
    if any(c.get("convergence") for c in cells):
        lines += ["", "## Convergence", "", "The epoch at which validation accuracy peaked (the weights kept when "
                  "early stopping is on), the epochs trained, and the test NA. Validation accuracy is measured on "
                  "each objective's task input: the clean images, or for the rows trained on x′ the inner attack's "
                  "points, so it reads lower than clean accuracy there"
                  + (" against the targets of a converged model (reported against, not tuned towards)"
                     if scale == "medium" else "") + "."]
        for dataset in datasets:
            lines += ["", f"### {TITLES[dataset]}", ""] + convergence_table(
                [c for c in cells if c["dataset"] == dataset], scale)
    lines += ["", "## Settings"]
    for dataset in datasets:
        lines += ["", f"### {TITLES[dataset]}", ""] + settings_table([c for c in cells if c["dataset"] == dataset])
    for other, group_cells in (extra_scales or {}).items():
        other_paired = comparisons.paired_comparisons(group_cells)
        lines += ["", f"## Scale `{other}`", "", f"The finished `{other}` cells of the same workdir "
                  f"(expected runtime: {EXPECTED_RUNTIME[other]})."]
        for dataset in dict.fromkeys(c["dataset"] for c in group_cells):
            lines += _dataset_section([c for c in group_cells if c["dataset"] == dataset], other_paired.get(dataset),
                                      level="###", suffix=f", `{other}`", structures=structures,
                                      counterfactuals=counterfactuals)
    if pareto_records:
        lines += _pareto_section(pareto_records, pareto_chart)
    every = list(cells) + [c for group in (extra_scales or {}).values() for c in group]
    lines += ["", "## Wall times", "", "Seconds spent in training and evaluation (including the restart study), "
              "summed over the sessions that ran them: training from the TensorBoard event times of every "
              "finished epoch (or the process timer when it is larger), evaluation from the times the saved "
              "chunks record (or the process timer when it is larger). Work of a session cut before its "
              "epoch or chunk finished is not counted.", "",
              "| dataset | objective | training | evaluation |", "|---|---|---|---|"]
    for c in every:
        lines.append(f"| {TITLES[c['dataset']]}{'' if c.get('scale', scale) == scale else ' (' + c['scale'] + ')'} | "
                     f"{title(c['entry'])} | {_seconds(c.get('train_seconds'))} | "
                     f"{_seconds(c.get('eval_wall_seconds'))} |")
    total = sum((c.get("train_seconds") or 0) + (c.get("eval_wall_seconds") or 0) for c in cells)
    lines += ["", f"Total recorded at scale `{scale}`: {_seconds(total)}."
              + (f" This invocation: {_seconds(wall_seconds)}." if wall_seconds is not None else ""), ""]
    return "\n".join(lines)


def closing_note(cells, paired, datasets, counterfactuals=None):
    """The page's "Closing note" lines: per dataset and Sarkar row the verdict of the paired intervals
    (`claims.verdict`), the same per training seed when the page has seed replicates (`seed_lines`), and with the
    black patches closed (`counterfactual_lines`); [] without a Sarkar row compared with IG-SUM-NORM."""
    verdicts = [(d, e, verdict(s)) for d in paired for e, s in paired[d].items() if is_sarkar(split_entry(e)[0])]
    if not verdicts:
        return []
    lines = ["", "## Closing note", "",
             f"Does a Sarkar et al. 2021 row beat {title(BASELINE)} by ≥ 3 top-k points at NA within 2 points? "
             "From the paired 95 % intervals above:", ""]
    for dataset, entry, (answer, reason) in verdicts:
        stats = paired[dataset][entry]
        lines.append(f"- {TITLES[dataset]}, {title(entry)}: **{answer}**: Δ top-k {_points(stats['topk'])}, "
                     f"Δ NA {_points(stats['natural_accuracy'])} ({reason}).")
    seeds = [f"- {TITLES[d]}: " + line[2:] for d in paired for line in seed_lines(paired[d]) if line.startswith("- ")]
    if seeds:
        lines += ["", "Across training seeds (each row paired with the IG-SUM-NORM run of its seed; the intervals "
                  "cover the test images, not the seed):", ""] + seeds
    closed = []
    for dataset in datasets:
        group = [c for c in cells if c["dataset"] == dataset]
        closed += [f"- {TITLES[dataset]}: " + line[2:] for line in counterfactual_lines(
            group, [(counterfactuals or {}).get(_key(c)) for c in group])]
    if closed:
        lines += ["", "The same question once the first-layer filters just below ε, which fire on an ε-raised "
                  "black patch, are moved above ε in both models (the black-patch counterfactual of each dataset "
                  "section):", ""]
        lines += closed
    return lines


def write_results(cells, path, *, scale, command=None, wall_seconds=None, extra_scales=None, pareto_dirs=None,
                  pending=None):
    """Writes RESULTS.md at `path` and its figures next to it: the bar chart (same name, .png), the paired
    differences (-paired.png, when the cells have per-image values) and the Pareto fronts (-pareto.png, when
    `pareto_dirs` name folders with a pareto.json). Returns (RESULTS.md, bar chart) paths."""
    if not cells:
        raise ValueError("`cells` must hold at least one cell result. Received: an empty list.")
    stem = os.path.splitext(path)[0]
    chart = stem + ".png"
    figures.save_figure(figures.results_figure(cells), chart)
    paired = comparisons.paired_comparisons(cells)
    paired_chart = None
    if any(paired.values()):
        paired_chart = figures.save_figure(figures.paired_figure(
            {d: v for d, v in paired.items() if v}, title(BASELINE), list(dict.fromkeys(c["entry"] for c in cells))),
            stem + "-paired.png")
    records, pareto_chart = {}, None
    for folder in pareto_dirs or ():
        file = os.path.join(folder, pareto.FILE)
        if not os.path.exists(file):
            raise FileNotFoundError(f"`pareto_dirs` must name folders of tools/tune.py --pareto runs. Received: "
                                    f"{folder!r} without {pareto.FILE}.")
        record = pareto.read_pareto(file)
        records[record.get("label") or os.path.basename(os.path.normpath(folder))] = record
    if records:
        pareto_chart = figures.save_figure(figures.fronts_figure(records), stem + "-pareto.png")
    structures, counterfactuals = {}, {}
    for c in list(cells) + [c for group in (extra_scales or {}).values() for c in group]:
        if c.get("folder"):
            structures[_key(c)] = structure.map_structure(c["folder"], c["protocol"]["k_eval"],
                                                          epsilon=c["protocol"].get("epsilon"))
            counterfactuals[_key(c)] = counterfactual.read(c["folder"])
    name = os.path.basename
    text = format_results(cells, scale=scale, command=command, chart=name(chart), wall_seconds=wall_seconds,
                          extra_scales=extra_scales, paired_chart=paired_chart and name(paired_chart),
                          pareto_records=records, pareto_chart=pareto_chart and name(pareto_chart),
                          structures=structures, pending=pending, counterfactuals=counterfactuals)
    evaluation_report.write_atomic(path, text)
    return path, chart


def write_demo_report(cells, folder):
    """report.md (the comparison table, then each model's report) and attacks.png (each model's attack
    figure under its name, one matplotlib panel per model) in `folder`; returns both paths."""
    sections = ["# Demo: natural vs attributionally robust training", "", results_table(cells, rar=False), ""]
    for cell in cells:
        with open(cell["report_md"]) as f:
            report = f.read().split("\n", 1)[1]  # drop the per-model title; ours names the objective
        sections += [f"## {title(cell['entry'])} ({cell['dataset']})", report]
    report_path, png_path = os.path.join(folder, "report.md"), os.path.join(folder, "attacks.png")
    figures.save_figure(figures.stacked_images_figure(
        [(title(c["entry"]), figures.read_image(c["attacks_png"])) for c in cells]), png_path)
    evaluation_report.write_atomic(report_path, "\n".join(sections))
    return report_path, png_path
