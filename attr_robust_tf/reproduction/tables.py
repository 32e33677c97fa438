"""Markdown tables of RESULTS.md: results, LENS, evaluation differences, settings, convergence, map structure."""
import numpy as np

from attr_robust_tf import objectives
from attr_robust_tf.reproduction.names import RAR_TABLE1, title

# Targets to report against (not tuned towards), issue "converged scale": NA of natural and robust objectives.
TARGETS = {"mnist": {"natural": 0.985, "robust": 0.93}, "fashion_mnist": {"natural": 0.88, "robust": 0.78}}


def _fmt(stat, percent, ci=True):
    if stat is None or stat.get("mean") is None:
        return "n/a"
    mean, lo, hi = stat["mean"], stat.get("ci_low"), stat.get("ci_high")
    text = f"{100 * mean:.1f}%" if percent else f"{mean:.3f}"
    if ci and lo is not None and hi is not None:
        text += f" [{100 * lo:.1f}, {100 * hi:.1f}]" if percent else f" [{lo:.3f}, {hi:.3f}]"
    return text


def _headline(cell):
    return cell["summaries"][cell["failed_attack"]]


def results_table(cells, *, spearman=True, images=True, rar=False, ci=True):
    """Markdown table, one row per cell: NA, AA, top-k, Kendall (and Spearman, counts, RAR's recalled row)."""
    k = cells[0]["protocol"]["k_eval"] if cells else 100
    head = ["objective", "NA", "AA (PGD)", f"IN (top-{k})", "CO (Kendall τ)"]
    head += ["Spearman ρ"] if spearman else []
    head += ["images / attacked / no label-preserving iterate"] if images else []
    head += ["RAR Table 1 NA / AA / IN / CO (recalled, unverified)"] if rar else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cell in cells:
        summary = _headline(cell)
        row = [title(cell["entry"]),
               _fmt(cell["natural_accuracy"], True, ci), _fmt(cell["pgd_accuracy"], True, ci),
               _fmt(summary["topk"], True, ci), _fmt(summary["kendall"], False, ci)]
        row += [_fmt(summary["spearman"], False, ci)] if spearman else []
        row += [f"{cell['num_images']} / {cell['num_correct']} / {cell['num_failed']}"] if images else []
        if rar:
            ref = RAR_TABLE1.get((cell["dataset"], cell["entry"]))  # variants have no recalled row
            row.append("—" if ref is None or cell.get("synthetic") else
                       f"{100 * ref[0]:.2f}% / {100 * ref[1]:.2f}% / {100 * ref[2]:.2f}% / {ref[3]:.4f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


LENS_COLUMNS = (("lens_topk", "{w}-LENS-recall@{k}"), ("lens_topk_div", "{w}-LENS-recall@{k}-div"),
                ("lens_kendall", "{w}-LENS-Kendall"), ("lens_spearman", "{w}-LENS-Spearman"))


def lens_table(cells, *, ci=True):
    """Markdown table of the locality-sensitive metrics (Kamath et al. 2024; docs/evaluation.md) of the cells that
    report them; "" when none does (cells evaluated before the metrics existed)."""
    cells = [c for c in cells if "lens_topk" in _headline(c)]
    if not cells:
        return ""
    k, w = cells[0]["protocol"]["k_eval"], cells[0]["protocol"].get("lens_window", 3)
    head = ["objective", f"IN (top-{k})"] + [label.format(w=w, k=k) for _, label in LENS_COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cell in cells:
        summary = _headline(cell)
        row = [title(cell["entry"]), _fmt(summary["topk"], True, ci)]
        row += [_fmt(summary[name], name in ("lens_topk", "lens_topk_div"), ci) for name, _ in LENS_COLUMNS]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def differences_table(cells):
    """The failed-attack scoring table (honest vs reference (1, 1, 1)) and the restart study table."""
    lines = ["| objective | attacked | no label-preserving iterate | IN ours (excluded) | IN reference (scored 1) "
             "| τ ours | τ reference |", "|---|---|---|---|---|---|---|"]
    for c in cells:
        ex, ref = c["summaries"]["exclude"], c["summaries"]["reference"]
        lines.append(f"| {title(c['entry'])} | {c['num_correct']} | {c['num_failed']} | "
                     f"{_fmt(ex['topk'], True, False)} | {_fmt(ref['topk'], True, False)} | "
                     f"{_fmt(ex['kendall'], False, False)} | {_fmt(ref['kendall'], False, False)} |")
    studies = [c for c in cells if c.get("restart_study")]
    if studies:
        r = max(int(k[1:]) for k in studies[0]["restart_study"] if k.startswith("r"))
        lines += ["", f"Restart study on the first {studies[0]['restart_study']['images']} test images (top-k "
                  f"attack, honest scoring): 1 run, as in the reference code, vs {r} restarts (restart 0 from x, "
                  "the others from random points in the ε-ball).", "",
                  f"| objective | IN, 1 run | IN, {r} restarts | τ, 1 run | τ, {r} restarts | images with a lower τ "
                  f"| failed (1 run → {r}) |", "|---|---|---|---|---|---|---|"]
        for c in studies:
            s = c["restart_study"]
            one, many = s["r1"], s[f"r{r}"]
            t1, tr = np.array(one["kendall"], float), np.array(many["kendall"], float)
            both = np.array(one["found"], bool) & np.array(many["found"], bool)
            lower = int(np.sum(tr[both] < t1[both] - 1e-6))
            e1, er = one["summaries"]["exclude"], many["summaries"]["exclude"]
            lines.append(f"| {title(c['entry'])} | {_fmt(e1['topk'], True, False)} | "
                         f"{_fmt(er['topk'], True, False)} | {_fmt(e1['kendall'], False, False)} | "
                         f"{_fmt(er['kendall'], False, False)} | {lower} of {int(both.sum())} | "
                         f"{e1['num_failed']} → {er['num_failed']} |")
    return lines


def settings_table(cells):
    lines = ["| objective | model | train images | epochs × batch | early stopping | lr | inner attack ε / steps / "
             "step | ε warm-up | IG points (outer / inner) | weights | reduction |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        cfg = c["config"]
        d, r, t = cfg["data"], cfg["robust"], cfg["train"]
        images = d.get("num_examples") or d.get("limit") or "all"
        attack = (f"{r['epsilon']:.4g} / {r['attack_steps']} / {r['step_size']:.4g}" if "epsilon" in r else "—")
        ig = f"{r.get('ig_steps', '—')} / {r.get('inner_ig_steps', '—')}"
        weights = ", ".join(f"{k} {v:g}" for k, v in sorted((r.get("weights") or {}).items())) or "—"
        if r.get("inner_weight") is not None:
            weights += f"; inner {r['inner_weight']:g}"
        patience = t.get("early_stopping_patience") or 0
        stopping = f"patience {patience} (val. acc.)" if patience else "—"
        n = r.get("epsilon_warmup_epochs")
        warmup = f"{n} epoch{'s' if n > 1 else ''}, linear" if n else "—"
        lines.append(f"| {title(c['entry'])} | {cfg['model']['name']} | {images} | {t['epochs']} × "
                     f"{t['batch_size']} | {stopping} | {cfg['lr']:g} | {attack} | {warmup} | {ig} | {weights} | "
                     f"{r['loss_reduction']} |")
    return lines


def _seconds(value):
    if value is None:
        return "—"
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min"


def _validated_on(cell):
    """What the early-stopping accuracy measures: the objective's task input (clean x, or the inner attack's x′)."""
    try:
        adv = objectives.get(cell["objective"]).task_input == "adv"
    except (KeyError, ValueError):
        return "—"
    steps = ((cell.get("config") or {}).get("robust") or {}).get("attack_steps")
    return f"x′ ({steps}-step inner attack)" if adv and steps else "x′ (inner attack)" if adv else "clean x"


def _miss_reason(conv):
    """Why a cell's NA misses its target, from its convergence record."""
    if not conv or conv.get("best_epoch") is None:
        return "no convergence record"
    if conv.get("stopped_early"):
        return (f"validation accuracy peaked at epoch {conv['best_epoch']} and early stopping ended training: the "
                "accuracy this objective reaches with its weights and ε, not a lack of epochs")
    if conv["best_epoch"] >= (conv.get("max_epochs") or 0):
        return (f"validation accuracy peaked at the last of {conv['max_epochs']} epochs: the run may not have "
                "converged within the epoch budget")
    return (f"validation accuracy peaked at epoch {conv['best_epoch']} of {conv.get('epochs_run')} without "
            "stopping early")


def convergence_table(cells, scale):
    """Per cell: the epoch at which validation accuracy peaked, epochs run, the test NA and (medium) the target,
    with the reason for a miss generated from the convergence record."""
    targets = scale == "medium"
    head = ("| objective | best epoch | epochs run / max | best validation accuracy | measured on | stopped early | "
            "test NA |")
    lines = [head + (" target NA | meets target |" if targets else ""),
             "|---|---|---|---|---|---|---|" + ("---|---|" if targets else "")]
    misses = []
    for c in cells:
        conv = c.get("convergence") or {}
        row = [title(c["entry"]), str(conv.get("best_epoch", "—")),
               f"{conv.get('epochs_run', '—')} / {conv.get('max_epochs', '—')}",
               "—" if conv.get("best_val_accuracy") is None else f"{100 * conv['best_val_accuracy']:.1f}%",
               _validated_on(c), {True: "yes", False: "no"}.get(conv.get("stopped_early"), "—"),
               _fmt(c["natural_accuracy"], True)]
        if targets:
            target = TARGETS.get(c["dataset"], {}).get("natural" if c["objective"] == "natural" else "robust")
            if target is None or c.get("synthetic"):
                row += ["—", "—"]
            else:
                met = c["natural_accuracy"]["mean"] >= target
                row += [f"≥ {100 * target:.1f}%", "yes" if met else "**no**"]
                if not met:
                    misses.append(f"- {title(c['entry'])} misses its target ({_fmt(c['natural_accuracy'], True, False)}"
                                  f" < {100 * target:.1f}%): {_miss_reason(conv)}.")
        lines.append("| " + " | ".join(row) + " |")
    rising = [title(c["entry"]) for c in cells if (c.get("convergence") or {}).get("best_epoch") is not None
              and c["convergence"]["best_epoch"] >= (c["convergence"].get("max_epochs") or float("inf"))]
    if rising:
        misses.append(f"- Validation accuracy peaked at the last allowed epoch for {', '.join(rising)}: these runs "
                      "may still have been improving when the epoch budget ended.")
    return lines + ([""] + misses if misses else [])


def _share(value):
    return "—" if value is None else f"{100 * value:.1f}%"


def structure_table(cells, records):
    """Markdown lines: per cell its map-structure record (`structure.map_structure`; `records[i]` for `cells[i]`,
    None when the cell has no saved maps), then a sentence generated from the numbers; [] when no cell has one."""
    rows = [(c, r) for c, r in zip(cells, records) if r is not None]
    if not rows:
        return []
    k, b = rows[0][1]["k"], rows[0][1]["block"]
    kb = max(1, int(round(k / b ** 2)))
    eps = rows[0][0]["protocol"].get("epsilon")
    head = ["objective", "first-conv filters with one tap > ½ of \\|w\\|", "mean peak-tap share",
            "their firing level −b/w" + (f" (ε = {eps:g})" if eps is not None else ""),
            "first-pool winners switched (active windows)", "ρ(switched, top-k) over images",
            "filters a black patch raised by ε fires", "attacked-map mass on black pixels",
            "pixels holding 80 % of the map",
            f"IN (top-{k} pixels)", f"IN (top-{kb} of {b}×{b} blocks)",
            f"{rows[0][0]['protocol'].get('lens_window', 3)}-LENS-recall@{k}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c, r in rows:
        lens = _headline(c).get("lens_topk")
        lines.append(f"| {title(c['entry'])} | "
                     + ("—" if r["filters"] is None else f"{r['peaked']} of {r['filters']}") + " | "
                     + ("—" if r["peak_share"] is None else f"{r['peak_share']:.2f}") + " | "
                     + ("—" if r.get("threshold") is None else f"{r['threshold']:.2f}") + " | "
                     + ("—" if r.get("switched") is None else f"{_share(r['switched'])} ({_share(r['active'])})")
                     + " | " + ("—" if r.get("switch_rho") is None else f"{r['switch_rho']:+.2f}")
                     + " | " + ("—" if r.get("lit") is None else f"{r['lit']} of {r['filters']}")
                     + " | " + ("—" if r.get("black_mass") is None else _share(r["black_mass"]))
                     + f" | {r['support']:.0f} | {_share(r['topk'])} | {_share(r['block_topk'])} | "
                     f"{_fmt(lens, True, False) if lens else '—'} |")
    low_cell, low = min(rows, key=lambda cr: cr[1]["topk"])
    natural = next((r for c, r in rows if c["objective"] == "natural"), None)
    sentence = (f"The lowest pixel top-k is {title(low_cell['entry'])}'s, {_share(low['topk'])}, with a {b}×{b}-block "
                f"top-k of {_share(low['block_topk'])}")
    if natural is not None and low is not natural and low["block_topk"] is not None:
        inside = low["block_topk"] >= natural["block_topk"]
        sentence += (f" (Natural: {_share(natural['topk'])} and {_share(natural['block_topk'])}): "
                     + ("below Natural in pixels but not in blocks, so much of what the attack moves stays inside "
                        f"the {b}×{b} pooling cells" if inside else "below Natural in blocks too, so the attack moves "
                        "attribution across the pooling cells, not only inside them"))
        if low["filters"] is not None and natural["filters"] is not None:
            sentence += (f". {low['peaked']} of its {low['filters']} first-layer filters put more than half their "
                         f"weight on one pixel (Natural: {natural['peaked']})")
        if low.get("threshold") is not None:
            sentence += (f", with a median firing level −b/w of {low['threshold']:.2f}"
                         + (f" (ε = {eps:g})" if eps is not None else ""))
        if low.get("switched") is not None and natural.get("switched") is not None:
            sentence += (f". The attack switches the winner of {_share(low['switched'])} of its active first-pool "
                         f"windows (Natural: {_share(natural['switched'])})")
            if low.get("switch_rho") is not None:
                sentence += ("; over its images, the more windows switch, the lower the top-k"
                             if low["switch_rho"] < 0 else "; over its images, more switched windows do not mean a "
                             "lower top-k") + f" (Spearman's ρ = {low['switch_rho']:+.2f})"
    lines += ["", sentence + "."]
    return lines


def counterfactual_table(cells, records):
    """Markdown rows of the black-patch counterfactual (`counterfactual.black_patch` records, None where missing)."""
    rows = [(c, r) for c, r in zip(cells, records) if r is not None]
    if not rows:
        return []
    lines = ["| objective | filters moved above ε (of all) | top-k as trained → edited | Δ top-k | Δ Kendall τ | "
             "Δ NA | images (NA / attacked in both) |", "|---|---|---|---|---|---|---|"]
    for c, r in rows:
        paired = r.get("paired")
        if not paired:
            lines.append(f"| {title(c['entry'])} | 0 of {r['filters']} | nothing to move: the model as trained | — "
                         f"| — | — | {r['num_images']} |")
            continue
        topk = paired["topk"]
        lines.append(f"| {title(c['entry'])} | {len(r['moved'])} of {r['filters']} (levels raised by ≤ "
                     f"{r['shift']:.4f}) | "
                     f"{_share(topk['second'])} → {_share(topk['first'])} | {_points(paired['topk'])} | "
                     f"{_points(paired['kendall'], percent=False)} | {_points(paired['natural_accuracy'])} | "
                     f"{paired['natural_accuracy']['n']} / {topk['n']} |")
    return lines


def _points(stat, percent=True, signed=True):
    """A paired difference as "+1.2 points [0.3, 2.1]" (or "+0.012 [0.003, 0.021]")."""
    if stat is None or stat.get("mean") is None:
        return "n/a"
    scale, unit = (100, " points") if percent else (1, "")
    fmt = "{:+.1f}" if percent else "{:+.3f}"
    text = fmt.format(scale * stat["mean"]) + unit
    if stat.get("ci_low") is not None and stat.get("ci_high") is not None:
        inner = "{:.1f}" if percent else "{:.3f}"
        text += f" [{inner.format(scale * stat['ci_low'])}, {inner.format(scale * stat['ci_high'])}]"
    return text
