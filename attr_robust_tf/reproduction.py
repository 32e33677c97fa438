"""Reproduction of the papers' comparison: every objective trained and evaluated with one protocol.

Sarkar et al. 2021 (arXiv 2012.14395, abstract) claim a 3–9 % gain in attribution robustness over the best earlier
methods on MNIST, Fashion-MNIST, Flower and GTSRB; RAR (Chen et al. 2019, arXiv 1905.09957) Table 1 gives the
earlier rows. This module measures the comparison itself. For each dataset × objective ("cell") it trains if the
model is missing, evaluates if the report is missing (resumable chunk by chunk), then collects everything into
`RESULTS.md` with a bar chart. `tools/reproduce.py` and `tools/demo.py` are thin front ends.

Layout of a cell, `<workdir>/<scale>/<dataset>/<objective>/`:

    train/        experiment.run_train's workdir (config.json, checkpoints/, metrics.csv, model.keras)
    eval/         report.json, report.md, attacks.png and chunks/ (evaluation_report.write_report)
    restarts/     the restart study on a subset (r1/, r3/ chunk folders)
    result.json   the cell's numbers: NA/AA with bootstrap intervals, both attack summaries, settings
    timing.json   seconds spent training and evaluating, added up when the work actually runs

A second run reuses every finished piece: training is skipped when `train/model.keras` exists for the same
config, evaluation when `result.json` names the same model file (sha256) and protocol.

An objective entry may carry config overrides for ablations, `sarkar2021@robust.weights.cacr=1+train.epochs=4`
(keys of configs/common.py joined by "+"); such a variant is a cell of its own, named by the entry.
"""
import datetime
import hashlib
import io
import json
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw

from attr_robust_tf import _checks, config_utils, data, evaluation, evaluation_report, experiment, protocols
from attr_robust_tf.version import __version__

__all__ = ["DATASETS", "OBJECTIVES", "SCALES", "RAR_TABLE1", "parse_datasets", "parse_objectives", "split_entry",
           "title", "load_config", "cell_dir", "run_cell", "reproduce", "results_table", "format_results", "bar_chart",
           "write_results", "write_demo_report"]

# dataset name (and accepted aliases) → the prefix of its configs/<prefix>_<objective>.py files
DATASETS = {"mnist": "mnist", "fashion_mnist": "fmnist", "gtsrb": "gtsrb", "flower17": "flower17"}
ALIASES = {"fmnist": "fashion_mnist", "flower": "flower17", "flowers17": "flower17"}
TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "gtsrb": "GTSRB", "flower17": "Flower-17"}
OBJECTIVES = ("natural", "madry", "trades", "ig_norm", "ig_sum_norm", "art", "sarkar2021", "sarkar2021_scaled")
OBJECTIVE_TITLES = {"natural": "Natural", "madry": "Madry et al. (PGD-AT)", "trades": "TRADES",
                    "ig_norm": "IG-NORM (RAR)", "ig_sum_norm": "IG-SUM-NORM (RAR)", "art": "ART",
                    "sarkar2021": "Sarkar et al. 2021", "sarkar2021_scaled": "Sarkar et al. 2021, scaled CACR"}
EARLIER = ("madry", "trades", "ig_norm", "ig_sum_norm", "art")  # the methods Sarkar et al. compare against
SCALES = ("tiny", "cpu", "reference")
CONFIG_ARGS = {"tiny": "tiny", "cpu": "cpu", "reference": ""}  # scale → the `:arg` variant of configs/common.py
STUDY_OBJECTIVES = ("natural", "ig_sum_norm", "sarkar2021")  # restart study: a baseline, the rival, the claim
STUDY_IMAGES = {"tiny": 4, "cpu": 40, "reference": 100}
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")

# RAR (Chen et al. 2019) Table 1 as recalled in method.md §10: NOT verified against the paper.
# (dataset, objective) → (NA, AA, IN, CO), fractions.
RAR_TABLE1 = {
    ("mnist", "natural"): (0.9917, 0.0000, 0.4661, 0.1758),
    ("mnist", "madry"): (0.9840, 0.9247, 0.6256, 0.2422),
    ("mnist", "ig_norm"): (0.9874, 0.8143, 0.7136, 0.2841),
    ("mnist", "ig_sum_norm"): (0.9834, 0.8817, 0.7245, 0.3111),
    ("fashion_mnist", "natural"): (0.9086, 0.0001, 0.3901, 0.4610),
    ("fashion_mnist", "madry"): (0.8573, 0.7301, 0.4612, 0.6251),
    ("fashion_mnist", "ig_norm"): (0.8513, 0.6595, 0.5922, 0.6171),
    ("fashion_mnist", "ig_sum_norm"): (0.8544, 0.7026, 0.7208, 0.6747),
    ("gtsrb", "natural"): (0.9857, 0.2105, 0.5416, 0.6790),
    ("gtsrb", "madry"): (0.9759, 0.8324, 0.6885, 0.7520),
    ("gtsrb", "ig_norm"): (0.9702, 0.7524, 0.7481, 0.7555),
    ("gtsrb", "ig_sum_norm"): (0.9568, 0.7712, 0.7404, 0.7684),
    ("flower17", "natural"): (0.8676, 0.0000, 0.0812, 0.4978),
    ("flower17", "madry"): (0.8382, 0.4191, 0.5587, 0.7784),
    ("flower17", "ig_norm"): (0.8529, 0.2426, 0.6468, 0.7591),
    ("flower17", "ig_sum_norm"): (0.8235, 0.4706, 0.6633, 0.7974),
}

EXPECTED_RUNTIME = {
    "tiny": "about 1–3 minutes for 7 objectives on 2 CPU cores (synthetic 8×8 data; a test of the tool, not a "
            "result)",
    "cpu": "about 30–60 minutes for MNIST and Fashion-MNIST × 7 objectives on 2 quiet CPU cores, 1–2 hours on "
           "shared ones (estimated from the Fashion-MNIST natural, IG-SUM-NORM and Sarkar et al. 2021 cells: up to "
           "2.5 min of training and 0.5–2 min of evaluation each, plus the restart study; the wall-time table "
           "below has the measured values)",
    "reference": "GPU work: on 2 CPU cores one MNIST IG-NORM training run alone is about 500 h and one "
                 "reference evaluation (10,000 images × 100 iterations × 3 runs) about 110 h (method.md "
                 "§11.3); a single GPU has not been measured, expect days for the full grid",
}


# ---------------------------------------------------------------------------------------------------
# Names and configs
# ---------------------------------------------------------------------------------------------------

def _split(text, name):
    if isinstance(text, str):
        items = [t.strip() for t in text.split(",")]
    else:
        items = [str(t).strip() for t in (text or ())]
    items = [t for t in items if t]
    if not items:
        raise ValueError(f"`{name}` must name at least one entry. Received: {name}={text!r}.")
    return items


def parse_datasets(text):
    """"mnist,fmnist" → ("mnist", "fashion_mnist"): canonical names in the given order, duplicates dropped."""
    out = []
    for item in _split(text, "datasets"):
        item = ALIASES.get(item, item)
        if item not in DATASETS:
            _checks.did_you_mean("dataset in `datasets`", item, list(DATASETS) + list(ALIASES))
        if item not in out:
            out.append(item)
    return tuple(out)


def split_entry(entry):
    """"sarkar2021@robust.weights.cacr=1+train.epochs=4" → ("sarkar2021", ("robust.weights.cacr=1", ...))."""
    objective, _, rest = str(entry).partition("@")
    if objective not in OBJECTIVES:
        _checks.did_you_mean("objective in `objectives`", objective, OBJECTIVES + ("all",))
    overrides = tuple(o for o in rest.split("+") if o) if rest else ()
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"An override in `objectives` must look like key=value. Received: {item!r} in "
                             f"{entry!r}. Example: sarkar2021@robust.weights.cacr=1+train.epochs=4.")
    if rest and not overrides:
        raise ValueError(f"`objectives` entry {entry!r} has '@' but no override. Example: "
                         "sarkar2021@robust.weights.cacr=1.")
    return objective, overrides


def parse_objectives(text):
    """"all" → every objective (in `OBJECTIVES` order); "natural,sarkar2021" → those two; entries may carry
    overrides ("sarkar2021@robust.weights.cacr=1", see `split_entry`)."""
    items = _split(text, "objectives")
    out = []
    for item in items:
        for entry in OBJECTIVES if item == "all" else (item,):
            split_entry(entry)
            if entry not in out:
                out.append(entry)
    return tuple(out)


def title(entry):
    """"IG-SUM-NORM (RAR)"; a variant adds its overrides: "Sarkar et al. 2021 [robust.weights.cacr=1]"."""
    objective, overrides = split_entry(entry)
    return OBJECTIVE_TITLES[objective] + (f" [{', '.join(overrides)}]" if overrides else "")


def _check_scale(scale):
    return _checks.lookup("scale", scale, {s: s for s in SCALES})


def load_config(dataset, entry, scale, *, config_dir=None):
    """The validated ConfigDict of `configs/<prefix>_<objective>.py` in the variant of `scale`, with the
    entry's overrides applied (`split_entry`)."""
    dataset, = parse_datasets(dataset)
    objective, overrides = split_entry(entry)
    config_dir = config_dir or CONFIG_DIR
    path = os.path.join(config_dir, f"{DATASETS[dataset]}_{objective}.py")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"`config_dir` must hold the experiment configs. Received: config_dir={config_dir!r} without "
            f"{os.path.basename(path)}. Run from the repository checkout or pass its configs/ folder.")
    module = config_utils.import_sibling(path, os.path.splitext(os.path.basename(path))[0])
    config = module.get_config(CONFIG_ARGS[_check_scale(scale)])
    if overrides:
        config = config_utils.override(config, list(overrides))
    return config_utils.validate(config)


def cell_dir(workdir, scale, dataset, entry):
    return os.path.join(workdir, scale, dataset, entry)


# ---------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------

def _read_json(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _write_json(path, value):
    evaluation_report.write_atomic(path, json.dumps(_json_safe(value), indent=2, sort_keys=True) + "\n")


def _json_safe(value):
    """Plain JSON values (tuples → lists, NumPy scalars → Python, NaN → None), so that a value read back from
    a file compares equal to one just computed."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _add_time(folder, key, seconds):
    """Adds `seconds` to timing.json's `key` (a resumed run adds the time of each session that finished)."""
    path = os.path.join(folder, "timing.json")
    timing = _read_json(path) or {}
    timing[key] = timing.get(key, 0.0) + float(seconds)
    timing[key.replace("seconds", "sessions")] = timing.get(key.replace("seconds", "sessions"), 0) + 1
    _write_json(path, timing)


def _claim_chunks(chunk_dir, sha):
    """Deletes `chunk_dir` if its chunks belong to another model file, then records `sha` as its owner."""
    owner = os.path.join(os.path.dirname(chunk_dir), f".{os.path.basename(chunk_dir)}.model-sha256")
    if os.path.exists(owner):
        with open(owner) as f:
            if f.read().strip() != sha:
                shutil.rmtree(chunk_dir, ignore_errors=True)
    evaluation_report.write_atomic(owner, sha + "\n")


# ---------------------------------------------------------------------------------------------------
# One cell: train if missing, evaluate if missing
# ---------------------------------------------------------------------------------------------------

def _same_config(path, config):
    saved = _read_json(path)
    return saved is not None and saved == json.loads(config_utils.to_json(config))


def _train(config, folder, strategy, verbose, log):
    """(model or None, model path): trains unless train/model.keras is this config's finished run."""
    train_dir = os.path.join(folder, "train")
    model_path = os.path.join(train_dir, "model.keras")
    if os.path.exists(model_path) and _same_config(os.path.join(train_dir, "config.json"), config):
        log(f"  reusing {model_path}")
        return None, model_path
    log(f"  training {config.robust.objective} ({config.model.name}, {config.train.epochs} epochs) in {train_dir}")
    start = time.perf_counter()
    model = experiment.run_train(config, train_dir, strategy, verbose=verbose)
    _add_time(folder, "train_seconds", time.perf_counter() - start)
    return model, model_path


def cell_protocol(config, limit=None):
    """The config's evaluation protocol, with at most `limit` images if given."""
    protocol = protocols.get_protocol(config.eval.protocol)
    if limit is not None:
        _checks.check_positive_int(limit, "limit")
        protocol = protocol.replace(num_images=min(limit, protocol.num_images or limit))
    return protocol


def _test_set(config, protocol):
    """The protocol's test images; a synthetic config gets a fresh synthetic draw of the same classes."""
    if config.data.name == config_utils.SYNTHETIC:
        # seeds seed and seed + 1 are the training and validation draws (experiment._arrays)
        return data.synthetic(protocol.num_images, image_shape=tuple(config.data.image_shape),
                              num_classes=config.data.num_classes, seed=config.seed + 2, as_arrays=True)
    if protocol.dataset != config.data.name:
        raise ValueError(f"`eval.protocol` must evaluate the training dataset {config.data.name!r}. Received: "
                         f"eval.protocol={config.eval.protocol!r} (dataset {protocol.dataset!r}).")
    return evaluation.protocol_dataset(protocol)


def _accuracy_stat(values, protocol, stream):
    values = np.asarray(values, np.float64)
    lo, hi = evaluation.bootstrap_interval(values, samples=protocol.bootstrap_samples, seed=protocol.seed + stream)
    return {"mean": float(values.mean()), "ci_low": lo, "ci_high": hi, "n": int(values.size)}


def _evaluate(model, model_path, test_set, protocol, chunk_dir, progress):
    _claim_chunks(chunk_dir, file_sha256(model_path))
    if model is None:
        model = keras.models.load_model(model_path, compile=False)
    return model, evaluation.evaluate_robustness(model, test_set, protocol, chunk_dir=chunk_dir,
                                                 progress=progress)


def _restart_study(model, model_path, test_set, protocol, folder, images, progress):
    """Top-k attack with 1 run (the reference: its 3 top-k runs start at x and are identical, method.md §9
    quirk 2) vs 3 restarts (ours: restarts 1, 2 start at random points) on the first `images` images."""
    n = min(images, protocol.num_images)
    study = {"images": n}
    for restarts in (1, max(3, protocol.restarts)):
        subset = protocol.replace(num_images=n, restarts=restarts, chunk_size=min(protocol.chunk_size, n))
        model, report = _evaluate(model, model_path, test_set, subset, os.path.join(folder, f"r{restarts}"),
                                  progress)
        study[f"r{restarts}"] = {
            "restarts": restarts, "summaries": report.summaries, "seconds": report.seconds,
            "found": report.examples["found"].tolist(), "clean_correct": report.examples["clean_correct"].tolist(),
            "kendall": report.examples["kendall"].tolist(), "topk": report.examples["topk"].tolist()}
    return model, study


def _fresh(result, sha, protocol, study_images):
    if result is None or result.get("model_sha256") != sha:
        return False
    if result.get("protocol") != _json_safe(protocol.to_dict()):
        return False
    study = result.get("restart_study")
    return (study or {}).get("images") == study_images if study_images else True


def run_cell(dataset, entry, scale, workdir, *, limit=None, study_images=None, strategy=None, verbose=1,
             progress=True, config_dir=None, log=None):
    """Trains (if missing) and evaluates (if missing) one dataset × objective; returns its result dict.

    Args:
      dataset, entry, scale: e.g. "fashion_mnist", "sarkar2021" (or a variant, `split_entry`), "cpu".
      workdir: the root of all cells (`cell_dir`).
      limit: evaluate at most this many test images (default: the protocol's `num_images`).
      study_images: also run the restart study on this many images (None: no study).
      strategy, verbose: passed to `experiment.run_train` (verbose=1 shows Keras' progress bar).
      progress: a tqdm progress bar per evaluation.
      log: a callable receiving one-line status messages (default: silent).

    Returns:
      The content of the cell's result.json plus its timing.json ("train_seconds", "eval_seconds").
    """
    log = log or (lambda message: None)
    objective, _ = split_entry(entry)
    config = load_config(dataset, entry, scale, config_dir=config_dir)
    folder = cell_dir(workdir, scale, dataset, entry)
    model, model_path = _train(config, folder, strategy, verbose, log)
    protocol = cell_protocol(config, limit)
    sha = file_sha256(model_path)
    result_path = os.path.join(folder, "result.json")
    result = _read_json(result_path)
    if _fresh(result, sha, protocol, study_images):
        log(f"  reusing {result_path}")
    else:
        log(f"  evaluating with protocol {protocol.name} ({protocol.num_images} images)")
        start = time.perf_counter()
        test_set = _test_set(config, protocol)
        eval_dir = os.path.join(folder, "eval")
        model, report = _evaluate(model, model_path, test_set, protocol, os.path.join(eval_dir, "chunks"),
                                  progress)
        evaluation_report.write_report(report, eval_dir)
        examples = report.examples
        result = {
            "dataset": dataset, "objective": objective, "entry": entry, "scale": scale, "model_sha256": sha,
            "config": json.loads(config_utils.to_json(config)), "protocol": protocol.to_dict(),
            "synthetic": config.data.name == config_utils.SYNTHETIC,
            "num_images": report.num_images, "num_correct": report.num_correct, "num_failed": report.num_failed,
            "natural_accuracy": _accuracy_stat(examples["clean_correct"], protocol, 101),
            "pgd_accuracy": _accuracy_stat(examples["pgd_prediction"] == examples["label"], protocol, 102),
            "failed_attack": report.failed_attack, "summaries": report.summaries, "eval_seconds": report.seconds,
            "report_md": os.path.join(eval_dir, "report.md"), "attacks_png": os.path.join(eval_dir, "attacks.png"),
            "restart_study": None,
        }
        if study_images:
            log(f"  restart study on {min(study_images, protocol.num_images)} images")
            model, result["restart_study"] = _restart_study(model, model_path, test_set, protocol,
                                                            os.path.join(folder, "restarts"), study_images,
                                                            progress)
        _add_time(folder, "eval_seconds", time.perf_counter() - start)
        result = _json_safe(result)
        _write_json(result_path, result)
    timing = _read_json(os.path.join(folder, "timing.json")) or {}
    return {**result, "entry": entry, "train_seconds": timing.get("train_seconds"),
            "eval_wall_seconds": timing.get("eval_seconds")}


def reproduce(datasets, objectives, scale, workdir, *, results=None, limit=None, study_objectives=STUDY_OBJECTIVES,
              study_images=None, command=None, strategy=None, verbose=1, progress=True, config_dir=None, log=None):
    """Runs every dataset × objective cell (resuming) and, if `results` is a path, writes RESULTS.md there.

    `study_images` defaults to `STUDY_IMAGES[scale]` (0 turns the restart study off); the study runs for the
    objectives in both `objectives` and `study_objectives`. Returns the list of cell results.
    """
    datasets, objectives, scale = parse_datasets(datasets), parse_objectives(objectives), _check_scale(scale)
    study_images = STUDY_IMAGES[scale] if study_images is None else study_images
    log = log or (lambda message: None)
    start = time.perf_counter()
    cells = []
    total = len(datasets) * len(objectives)
    for dataset in datasets:
        for entry in objectives:
            log(f"[{len(cells) + 1}/{total}] {dataset} × {entry} ({scale})")
            cells.append(run_cell(dataset, entry, scale, workdir, limit=limit, strategy=strategy,
                                  study_images=study_images if split_entry(entry)[0] in study_objectives else None,
                                  verbose=verbose, progress=progress, config_dir=config_dir, log=log))
    if results:
        write_results(cells, results, scale=scale, command=command, wall_seconds=time.perf_counter() - start)
    return cells


# ---------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------

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


def _claim(cells):
    """Sentences comparing Sarkar et al. 2021 (and its variants) with the best earlier method and IG-SUM-NORM."""
    ours = [c for c in cells if c["objective"] == "sarkar2021"]
    if not ours:
        return ["Sarkar et al. 2021 was not part of this run."]
    earlier = [c for c in cells if c["objective"] in EARLIER]
    if not earlier:
        return ["No earlier attributional-robustness method was part of this run."]
    lines = []
    for cell in ours:
        for metric, name, percent in (("topk", "top-k intersection", True), ("kendall", "Kendall's τ", False)):
            mine = _headline(cell)[metric]
            rivals = {c["entry"]: _headline(c)[metric] for c in earlier if _headline(c)[metric]["mean"] is not None}
            if mine["mean"] is None or not rivals:
                lines.append(f"- {name}: undefined for at least one model.")
                continue
            best = max(rivals, key=lambda e: rivals[e]["mean"])
            compared = [best] + (["ig_sum_norm"] if best != "ig_sum_norm" and "ig_sum_norm" in rivals else [])
            parts = []
            for entry in compared:
                other = rivals[entry]
                diff = mine["mean"] - other["mean"]
                unit = f"{100 * diff:+.1f} points" if percent else f"{diff:+.3f}"
                rel = f", {100 * diff / abs(other['mean']):+.1f} % relative" if other["mean"] else ""
                overlap = (mine["ci_low"] is not None and other["ci_low"] is not None
                           and mine["ci_low"] <= other["ci_high"] and other["ci_low"] <= mine["ci_high"])
                parts.append(f"vs {title(entry)}{' (best earlier)' if entry == best else ''} "
                             f"{_fmt(other, percent, False)}: {unit}{rel}, {'higher' if diff > 0 else 'not higher'}; "
                             f"the 95 % intervals {'overlap' if overlap else 'do not overlap'}")
            lines.append(f"- {name}: {title(cell['entry'])} {_fmt(mine, percent)}; " + "; ".join(parts) + ".")
    return lines


def _differences(cells):
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


def _settings(cells):
    lines = ["| objective | model | train images | epochs × batch | lr | inner attack ε / steps / step | IG points "
             "(outer / inner) | weights | reduction |", "|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        cfg = c["config"]
        d, r, t = cfg["data"], cfg["robust"], cfg["train"]
        images = d.get("num_examples") or d.get("limit") or "all"
        attack = (f"{r['epsilon']:.4g} / {r['attack_steps']} / {r['step_size']:.4g}" if "epsilon" in r else "—")
        ig = f"{r.get('ig_steps', '—')} / {r.get('inner_ig_steps', '—')}"
        weights = ", ".join(f"{k} {v:g}" for k, v in sorted((r.get("weights") or {}).items())) or "—"
        if r.get("inner_weight") is not None:
            weights += f"; inner {r['inner_weight']:g}"
        lines.append(f"| {title(c['entry'])} | {cfg['model']['name']} | {images} | {t['epochs']} × "
                     f"{t['batch_size']} | {cfg['lr']:g} | {attack} | {ig} | {weights} | {r['loss_reduction']} |")
    return lines


def _seconds(value):
    if value is None:
        return "—"
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min"


def format_results(cells, *, scale, command=None, chart=None, wall_seconds=None, generated=None):
    """RESULTS.md: one table per dataset, the claim, the evaluation differences, settings and wall times."""
    generated = generated or datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    datasets = list(dict.fromkeys(c["dataset"] for c in cells))
    synthetic = any(c.get("synthetic") for c in cells)
    lines = ["# Results: attributional robustness, measured", ""]
    if synthetic:
        lines += ["> **Scale `tiny`: synthetic 8×8 images, 2-epoch tiny models, the `tiny` protocol. These numbers "
                  "test the tool end to end and mean nothing about the methods.**", ""]
    lines += [f"Generated {generated} by attr_robust_tf {__version__} (TensorFlow {tf.__version__}, Keras "
              f"{keras.__version__}, {os.cpu_count()} CPU cores) at scale `{scale}`."]
    if command:
        lines += ["", "Command:", "", "```bash", command, "```"]
    lines += ["", f"Expected runtime at this scale: {EXPECTED_RUNTIME[scale]}.", "",
              "NA: clean accuracy; AA: accuracy under ℓ∞ PGD on cross-entropy; IN: top-k intersection; CO: "
              "Kendall's τ between the IG maps of the clean and the attacked image (Ghorbani et al. 2019 top-k "
              "attack). Attack metrics are means over correctly classified images that have a label-preserving "
              "iterate; brackets are 95 % percentile-bootstrap intervals; the counts column gives the test "
              "images, the correctly classified (attacked) ones and those without a label-preserving iterate. "
              "The last column repeats RAR's Table 1 as **recalled from memory and not verified against the "
              "paper** (method.md §10); it was measured with the full reference settings (91 epochs, 10,000 test "
              "images, 100-step attacks × 3 runs, 100 IG points), not with this run's settings."]
    if chart:
        lines += ["", f"![NA, AA, top-k intersection and Kendall's τ per objective]({chart})"]
    for dataset in datasets:
        group = [c for c in cells if c["dataset"] == dataset]
        p = group[0]["protocol"]
        lines += ["", f"## {TITLES[dataset]}{' (synthetic stand-in)' if synthetic else ''}", "",
                  results_table(group, rar=True), "",
                  f"Protocol `{p['name']}`: top-k attack ε = {p['epsilon']:.4g}, {p['steps']} steps of "
                  f"{p['step_size']:.4g}, {p['restarts']} run(s), k = {p['k_eval']}, {p['ig_steps']} IG points; "
                  f"PGD ε = {p['pgd_epsilon']:.4g}, {p['pgd_steps']} steps of {p['pgd_step_size']:.4g}. "
                  f"{p['note']}" + (" Here the test images are a fresh synthetic draw of the training classes "
                                    "(seed + 2), not real images." if group[0].get("synthetic") else ""),
                  "", "**The claim** (Sarkar et al. 2021: +3 to +9 % in attribution robustness "
                  "over the best earlier method):", ""]
        lines += _claim(group)
    lines += ["", "## Evaluation choices that differ from the reference code", "",
              "The reference evaluation (`ig_attack.py` of RAR and Sarkar et al.) scores an image whose attack "
              "finds no label-preserving iterate as (IN, τ, ρ) = (1, 1, 1), a perfect score; we leave such images "
              "out of the means and count them (method.md §9 quirk 1). Its top-k attack runs 3 times from the "
              "clean image without a random start, so the 3 runs are identical; our restarts after the first "
              "start at random points of the ε-ball (quirk 2). Ties in the maps are broken by a stable sort "
              "(quirk 7), and AA attacks pure cross-entropy in inference mode for every model (quirk 4). The "
              "tables below give the difference the first two make."]
    for dataset in datasets:
        lines += ["", f"### {TITLES[dataset]}", ""] + _differences([c for c in cells if c["dataset"] == dataset])
    lines += ["", "## Settings"]
    for dataset in datasets:
        lines += ["", f"### {TITLES[dataset]}", ""] + _settings([c for c in cells if c["dataset"] == dataset])
    lines += ["", "## Wall times", "", "Seconds spent in training and evaluation (including the restart study) "
              "when they ran; a resumed piece adds the time of each session that finished.", "",
              "| dataset | objective | training | evaluation |", "|---|---|---|---|"]
    for c in cells:
        lines.append(f"| {TITLES[c['dataset']]} | {title(c['entry'])} | "
                     f"{_seconds(c.get('train_seconds'))} | {_seconds(c.get('eval_wall_seconds'))} |")
    total = sum((c.get("train_seconds") or 0) + (c.get("eval_wall_seconds") or 0) for c in cells)
    lines += ["", f"Total recorded: {_seconds(total)}."
              + (f" This invocation: {_seconds(wall_seconds)}." if wall_seconds is not None else ""), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# Bar chart (Pillow)
# ---------------------------------------------------------------------------------------------------

PALETTE = ((120, 120, 120), (31, 119, 180), (255, 127, 14), (44, 160, 44), (148, 103, 189), (140, 86, 75),
           (214, 39, 40), (227, 119, 194), (188, 189, 34), (23, 190, 207))  # entry i in order of appearance
CHART_METRICS = (("natural_accuracy", "NA"), ("pgd_accuracy", "AA"), ("topk", "IN"), ("kendall", "Kendall"))


def _stat(cell, key):
    return cell[key] if key in ("natural_accuracy", "pgd_accuracy") else _headline(cell)[key]


def bar_chart(cells, *, bar=14, height=220):
    """Grouped bars (NA, AA, IN, Kendall per objective) with 95 % interval whiskers, one panel per dataset.

    Returns a uint8 RGB array. The value axis runs from min(0, lowest value) to 1.
    """
    datasets = list(dict.fromkeys(c["dataset"] for c in cells))
    entries = list(dict.fromkeys(c["entry"] for c in cells))
    values = [_stat(c, k)["mean"] for c in cells for k, _ in CHART_METRICS]
    low = min([0.0] + [v for v in values if v is not None])
    low = float(np.floor(low * 10) / 10)
    left, top, gap = 48, 28, 16
    group = bar * len(entries) + gap
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = left + group * len(CHART_METRICS) + 36 + int(max(measure.textlength(title(e)) for e in entries))
    panel = top + height + 30
    canvas = Image.new("RGB", (width, panel * len(datasets)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)

    for d, dataset in enumerate(datasets):
        y0 = d * panel + top  # pixel row of the value 1.0

        def y(value, y0=y0):
            return y0 + round((1.0 - value) / (1.0 - low) * height)

        draw.text((left, d * panel + 8), TITLES[dataset], fill=(0, 0, 0))
        for tick in np.arange(low, 1.0001, 0.2 if low == 0 else 0.5):
            draw.line([(left - 4, y(tick)), (left + group * len(CHART_METRICS), y(tick))], fill=(225, 225, 225))
            draw.text((4, y(tick) - 6), f"{tick:.1f}", fill=(0, 0, 0))
        draw.line([(left, y(0.0)), (left + group * len(CHART_METRICS), y(0.0))], fill=(0, 0, 0))
        for m, (key, label) in enumerate(CHART_METRICS):
            x_group = left + gap // 2 + m * group
            draw.text((x_group, y(low) + 6), label, fill=(0, 0, 0))
            for i, entry in enumerate(entries):
                cell = next((c for c in cells if c["dataset"] == dataset and c["entry"] == entry), None)
                if cell is None or _stat(cell, key)["mean"] is None:
                    continue
                stat = _stat(cell, key)
                x = x_group + i * bar
                a, b = sorted((y(0.0), y(stat["mean"])))
                draw.rectangle([x, a, x + bar - 2, b], fill=PALETTE[i % len(PALETTE)])
                if stat.get("ci_low") is not None and stat.get("ci_high") is not None:
                    xc = x + (bar - 2) // 2
                    draw.line([(xc, y(stat["ci_high"])), (xc, y(stat["ci_low"]))], fill=(0, 0, 0))
        for i, entry in enumerate(entries):
            yl = d * panel + top + 18 * i
            xl = left + group * len(CHART_METRICS) + 10
            draw.rectangle([xl, yl, xl + 10, yl + 10], fill=PALETTE[i % len(PALETTE)])
            draw.text((xl + 16, yl), title(entry), fill=(0, 0, 0))
    return np.asarray(canvas)


def write_results(cells, path, *, scale, command=None, wall_seconds=None):
    """Writes RESULTS.md at `path` and its bar chart next to it (same name, .png); returns both paths."""
    if not cells:
        raise ValueError("`cells` must hold at least one cell result. Received: an empty list.")
    chart = os.path.splitext(path)[0] + ".png"
    evaluation_report.save_png(bar_chart(cells), chart)
    text = format_results(cells, scale=scale, command=command, chart=os.path.basename(chart),
                          wall_seconds=wall_seconds)
    evaluation_report.write_atomic(path, text)
    return path, chart


# ---------------------------------------------------------------------------------------------------
# Demo
# ---------------------------------------------------------------------------------------------------

def write_demo_report(cells, folder):
    """report.md (the comparison table, then each model's report) and attacks.png (each model's attack
    figure under its name) in `folder`; returns both paths."""
    sections = ["# Demo: natural vs attributionally robust training", "", results_table(cells, rar=False), ""]
    figures = []
    for cell in cells:
        with open(cell["report_md"]) as f:
            report = f.read().split("\n", 1)[1]  # drop the per-model title; ours names the objective
        sections += [f"## {title(cell['entry'])} ({cell['dataset']})", report]
        figures.append((title(cell["entry"]), Image.open(cell["attacks_png"]).convert("RGB")))
    width = max(im.width for _, im in figures)
    canvas = Image.new("RGB", (width, sum(im.height + 20 for _, im in figures)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    y = 0
    for name, im in figures:
        draw.text((6, y + 4), name, fill=(0, 0, 0))
        canvas.paste(im, (0, y + 20))
        y += im.height + 20
    report_path, png_path = os.path.join(folder, "report.md"), os.path.join(folder, "attacks.png")
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    evaluation_report.write_atomic(png_path, buffer.getvalue())
    evaluation_report.write_atomic(report_path, "\n".join(sections))
    return report_path, png_path
