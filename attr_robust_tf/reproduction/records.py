"""Reading a cell back: its result, convergence record, wall times and whether it is finished (nothing runs here).

A cell is finished when `train/model.keras` was trained with today's config (train/config.json) and `result.json`
names that model file (sha256) and today's protocol; `cells.run_cell` reuses exactly those. Layout: `cells`.
"""
import csv
import glob
import hashlib
import json
import os

import numpy as np

from attr_robust_tf import _checks, config_utils, early_stopping, evaluation_report, metrics, protocols, tensorboard
from attr_robust_tf.reproduction.names import _check_scale, cell_dir, load_config, parse_datasets

PER_IMAGE = ("index", "clean_correct", "found", "topk", "kendall")  # per-image values kept in result.json
PER_IMAGE_OPTIONAL = ("lens_topk",)  # kept too when the evaluation has them (LENS recall, paired comparisons)


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


def _same_config(path, config):
    saved = _read_json(path)
    return saved is not None and saved == json.loads(config_utils.to_json(config))


def cell_protocol(config, limit=None):
    """The config's evaluation protocol, with at most `limit` images if given."""
    protocol = protocols.get_protocol(config.eval.protocol)
    if tuple(config.data.get("bounds", protocol.bounds)) != protocol.bounds:
        protocol = protocol.replace(bounds=tuple(config.data.bounds))  # the data's pixel range
    if limit is not None:
        _checks.check_positive_int(limit, "limit")
        protocol = protocol.replace(num_images=min(limit, protocol.num_images or limit))
    return protocol


def per_image(examples):
    """{name: list} of the `PER_IMAGE` (and present `PER_IMAGE_OPTIONAL`) values of an evaluation's examples (NaN →
    None in JSON)."""
    return {name: np.asarray(examples[name]).tolist() for name in PER_IMAGE + PER_IMAGE_OPTIONAL
            if name in PER_IMAGE or name in examples}


def _fresh(result, sha, protocol, study_images):
    if result is None or result.get("model_sha256") != sha:
        return False
    if "per_image" not in result:  # written before paired comparisons: re-read from the saved chunks
        return False
    if result.get("protocol") != _json_safe(protocol.to_dict()):
        return False
    study = result.get("restart_study")
    return (study or {}).get("images") == study_images if study_images else True


def chunk_files(folder):
    """The saved evaluation chunks of a cell folder, in order (`evaluation.evaluate_robustness(chunk_dir=)`)."""
    return sorted(glob.glob(os.path.join(folder, "eval", "chunks", "chunk_*.npz")))


def _backfill_lens(result, folder):
    """A result written before per-image LENS recall was kept gets it from the saved chunks' maps (the values of
    the report's LENS table), and result.json is rewritten; without the chunks the result stays as it is."""
    per = result.get("per_image")
    protocol = result.get("protocol") or {}
    if not per or "lens_topk" in per or "k_eval" not in protocol:
        return result
    paths = chunk_files(folder)
    values = {}
    for path in paths:
        with np.load(path) as z:
            if "clean_maps" not in z.files:
                return result
            index, positions = z["index"], z["attacked_positions"]
            if len(positions):
                lens = metrics.lens_metrics(z["clean_maps"], z["adversarial_maps"], protocol["k_eval"],
                                            protocol.get("lens_window", metrics.LENS_WINDOW))["lens_topk"]
                values.update(zip(index[positions].tolist(), np.asarray(lens, np.float64).tolist()))
    attacked = [i for i, c in zip(per["index"], per["clean_correct"]) if c]
    if not paths or any(i not in values for i in attacked):
        return result  # the chunks do not cover the evaluation (removed, or another run's)
    per["lens_topk"] = [values.get(i) for i in per["index"]]
    _write_json(os.path.join(folder, "result.json"), result)
    return result


def convergence(train_dir):
    """When validation accuracy peaked: {"best_epoch", "best_val_accuracy", "epochs_run", "max_epochs",
    "stopped_early", "patience"} from the early-stopping record, else from metrics.csv; None if neither."""
    config = _read_json(os.path.join(train_dir, "config.json")) or {}
    max_epochs = (config.get("train") or {}).get("epochs")
    state = early_stopping.read_state(train_dir)
    if state is not None:
        history = state["history"]
        return {"best_epoch": state["best_epoch"], "best_val_accuracy": state["best_value"],
                "epochs_run": max(history), "max_epochs": max_epochs,
                "stopped_early": state["stopped_epoch"] is not None and state["stopped_epoch"] < (max_epochs or 0),
                "patience": state["patience"]}
    path = os.path.join(train_dir, "metrics.csv")
    if not os.path.exists(path):
        return None
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val_accuracy") not in (None, "")]
    if not rows:
        return None
    values = [float(r["val_accuracy"]) for r in rows]
    best = int(np.argmax(values))  # the first epoch reaching the maximum
    return {"best_epoch": int(rows[best]["epoch"]) + 1, "best_val_accuracy": values[best], "epochs_run": len(rows),
            "max_epochs": max_epochs, "stopped_early": False, "patience": 0}


def _chunk_seconds(folder):
    """Seconds recorded in the saved evaluation chunks of a cell (evaluation and restart study), or None."""
    paths = chunk_files(folder) + glob.glob(os.path.join(folder, "restarts", "**", "chunk_*.npz"), recursive=True)
    seconds = []
    for path in paths:
        with np.load(path) as z:
            if "seconds" in z.files:
                seconds.append(float(z["seconds"]))
    return sum(seconds) if seconds else None


def _with_records(result, folder, entry):
    """A result plus what is read fresh from the cell folder: its path, wall times and the convergence record
    (and, once, the per-image LENS recall of a result written before it was kept). Training time is the larger of
    timing.json's (sessions that finished) and the TensorBoard event times' (every finished epoch); evaluation
    time the larger of timing.json's and the sum of the saved chunks' own times (every finished chunk)."""
    result = _backfill_lens(result, folder)
    timing = _read_json(os.path.join(folder, "timing.json")) or {}
    train_seconds = timing.get("train_seconds")
    logged = tensorboard.training_wall_seconds(os.path.join(folder, "train", "tb", "train"))
    if logged is not None and (train_seconds is None or logged > train_seconds):
        train_seconds = logged  # sessions killed after finishing epochs: only the event times kept them
    eval_seconds = timing.get("eval_seconds")
    chunked = _chunk_seconds(folder)
    if chunked is not None and (eval_seconds is None or chunked > eval_seconds):
        eval_seconds = chunked  # chunks finished in sessions that were cut later
    return {**result, "entry": entry, "folder": folder, "train_seconds": train_seconds,
            "eval_wall_seconds": eval_seconds, "convergence": convergence(os.path.join(folder, "train"))}


def finished_cell(dataset, entry, scale, workdir, *, limit=None, study_images=None, config_dir=None):
    """The result of one cell if it is finished for today's config and protocol (what `run_cell` would reuse without
    training or evaluating), else None. Reads files only."""
    config = load_config(dataset, entry, scale, config_dir=config_dir)
    folder = cell_dir(workdir, scale, dataset, entry)
    model_path = os.path.join(folder, "train", "model.keras")
    if not (os.path.exists(model_path) and _same_config(os.path.join(folder, "train", "config.json"), config)):
        return None
    result = _read_json(os.path.join(folder, "result.json"))
    if not _fresh(result, file_sha256(model_path), cell_protocol(config, limit), study_images):
        return None
    return _with_records(result, folder, entry)


def finished_cells(workdir, scale, datasets=None):
    """The results of every finished cell of `scale` under `workdir` (nothing is trained or evaluated), in
    dataset order, then objective order (`OBJECTIVES`, variants after their objective)."""
    from attr_robust_tf.reproduction.names import DATASETS, OBJECTIVES

    datasets = parse_datasets(datasets) if datasets else tuple(DATASETS)
    out = []
    for dataset in datasets:
        root = os.path.join(workdir, _check_scale(scale), dataset)
        if not os.path.isdir(root):
            continue
        entries = [e for e in os.listdir(root) if os.path.exists(os.path.join(root, e, "result.json"))]
        order = {o: i for i, o in enumerate(OBJECTIVES)}
        entries.sort(key=lambda e: (order.get(e.partition("@")[0], len(order)), e))
        for entry in entries:
            out.append(_with_records(_read_json(os.path.join(root, entry, "result.json")), os.path.join(root, entry),
                                     entry))
    return out
