"""Running cells: train a dataset × objective if its model is missing, evaluate it if its result is missing.

Layout of a cell, `<workdir>/<scale>/<dataset>/<objective>/`:

    train/        experiment.run_train's workdir (config.json, checkpoints/, metrics.csv, model.keras)
    eval/         report.json, report.md, attacks.png and chunks/ (evaluation_report.write_report)
    restarts/     the restart study on a subset (r1/, r3/ chunk folders)
    result.json   the cell's numbers: NA/AA with bootstrap intervals, both attack summaries, settings, and the
                  per-image values (image index, correct, found, top-k, Kendall) that paired comparisons need
    timing.json   seconds spent training and evaluating, added up when the work actually runs
    counterfactual.json, counterfactual/   the black-patch counterfactual, when asked for (`counterfactual`)

A second run reuses every finished piece: training is skipped when `train/model.keras` exists for the same
config, evaluation when `result.json` names the same model file (sha256) and protocol. Training itself resumes
from its per-epoch checkpoints, early stopping included (`attr_robust_tf.early_stopping`).
"""
import json
import os
import shutil
import time

import keras
import numpy as np

from attr_robust_tf import config_utils, data, evaluation, evaluation_report, experiment
from attr_robust_tf.reproduction import counterfactual
from attr_robust_tf.reproduction.names import (STUDY_IMAGES, STUDY_OBJECTIVES, _check_scale, cell_dir, check_prefixes,
                                               entries_for, load_config, parse_datasets, parse_objectives, split_entry)
from attr_robust_tf.reproduction.records import (_fresh, _json_safe, _read_json, _same_config, _with_records,
                                                 _write_json, cell_protocol, file_sha256, finished_cell,
                                                 finished_cells, per_image)


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
    """Top-k attack with 1 run (the reference: its 3 top-k runs start at x and are identical, docs/method.md §9
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
            "restart_study": None, "per_image": per_image(examples),
        }
        if study_images:
            log(f"  restart study on {min(study_images, protocol.num_images)} images")
            model, result["restart_study"] = _restart_study(model, model_path, test_set, protocol,
                                                            os.path.join(folder, "restarts"), study_images,
                                                            progress)
        _add_time(folder, "eval_seconds", time.perf_counter() - start)
        result = _json_safe(result)
        _write_json(result_path, result)
    return _with_records(result, folder, entry)


def reproduce(datasets, objectives, scale, workdir, *, results=None, limit=None, study_objectives=STUDY_OBJECTIVES,
              study_images=None, command=None, strategy=None, verbose=1, progress=True, config_dir=None, log=None,
              include_scales=None, pareto_dirs=None, render_only=False, counterfactual_images=0):
    """Runs every dataset × objective cell (resuming) and, if `results` is a path, writes RESULTS.md there.

    With `render_only`, nothing is trained or evaluated: the page holds the cells that are finished
    (`finished_cell`) and names the others as pending.

    `study_images` defaults to `STUDY_IMAGES[scale]` (0 turns the restart study off); the study runs for the
    objectives in both `objectives` and `study_objectives`. `include_scales` adds the finished cells of other
    scales found under `workdir` to the page (e.g. the quick `cpu` tables beside `medium`), `pareto_dirs` the
    fronts of `tools/tune.py --pareto` runs (their pareto.json). With `counterfactual_images` > 0 every cell
    also gets its black-patch counterfactual on that many test images (`counterfactual.black_patch`; the page
    shows the records found, also under `render_only`). Returns the list of cell results.
    """
    from attr_robust_tf.reproduction.pages import write_results

    datasets, objectives, scale = parse_datasets(datasets), parse_objectives(objectives), _check_scale(scale)
    study_images = STUDY_IMAGES[scale] if study_images is None else study_images
    log = log or (lambda message: None)
    start = time.perf_counter()
    cells, pending = [], []
    check_prefixes(objectives, datasets)
    grid = {dataset: entries_for(objectives, dataset) for dataset in datasets}
    total = sum(len(entries) for entries in grid.values())
    for dataset, entries in grid.items():
        for entry in entries:
            study = study_images if split_entry(entry)[0] in study_objectives else None
            if render_only:
                cell = finished_cell(dataset, entry, scale, workdir, limit=limit, study_images=study,
                                     config_dir=config_dir)
                if cell is None:
                    pending.append((dataset, entry))
                else:
                    cells.append(cell)
                continue
            log(f"[{len(cells) + 1}/{total}] {dataset} × {entry} ({scale})")
            cells.append(run_cell(dataset, entry, scale, workdir, limit=limit, strategy=strategy,
                                  study_images=study, verbose=verbose, progress=progress, config_dir=config_dir,
                                  log=log))
            if counterfactual_images:
                config = load_config(dataset, entry, scale, config_dir=config_dir)
                counterfactual.black_patch(cells[-1], config, counterfactual_images, progress=progress, log=log,
                                           test_set=_test_set(config, cell_protocol(config, counterfactual_images)))
    if render_only and not cells:
        raise ValueError(f"`render_only` needs at least one finished {scale} cell of the requested datasets and "
                         f"objectives under `workdir`. Received: workdir={workdir!r} with none finished.")
    if results:
        extra = {}
        for other in include_scales or ():
            if _check_scale(other) != scale:
                found = finished_cells(workdir, other, datasets)
                if found:
                    extra[other] = found
                else:
                    log(f"  no finished {other} cells under {workdir}; leaving that scale out of the page")
        write_results(cells, results, scale=scale, command=command,
                      wall_seconds=None if render_only else time.perf_counter() - start, extra_scales=extra,
                      pareto_dirs=pareto_dirs, pending=pending)
    return cells
