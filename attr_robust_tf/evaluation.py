"""The field's robustness protocol: natural and PGD accuracy, then attribution attacks on correct images.

Ghorbani et al. 2019 (arXiv 1710.10547) as used by RAR (Chen et al. 2019, arXiv 1905.09957) and Sarkar et al.
2021 (arXiv 2012.14395); docs/method.md §4–§6. Per image of the first N test images:

* natural accuracy (NA): clean prediction = label; adversarial accuracy (AA): prediction on ℓ∞ PGD of pure
  cross-entropy in inference mode, on the same images (docs/method.md §5, §9 quirk 4);
* every correctly classified image is attacked (`AttributionAttack`), and top-k intersection, Kendall's τ,
  Spearman's ρ and the center-of-mass shift of its worst-case iterate are recorded.

Means (with 95 % percentile-bootstrap intervals) are over correctly classified images. An image without a
label-preserving iterate is counted and, by default, left out of the means; the reference code scored it
(1, 1, 1), which `failed_attack="reference"` reproduces (docs/method.md §9 quirk 1). Both summaries are reported.
"""
import dataclasses
import hashlib
import json
import os
import time

import keras
import numpy as np
import tensorflow as tf

from attr_robust_tf import _checks
from attr_robust_tf.attacks.attribution import check_logits_not_probabilities, unwrap
from attr_robust_tf.attacks.pgd import pgd_linf
from attr_robust_tf.protocols import FAILED_ATTACK, get_protocol

METRICS = ("topk", "kendall", "spearman", "center_shift")
# locality-sensitive metrics (Kamath et al. 2024, `metrics.lens_metrics`), computed from the stored maps when the
# report is made, so that chunks saved before they existed still load and nothing in the protocol changes
LENS_METRICS = ("lens_topk", "lens_topk_precision", "lens_topk_div", "lens_kendall", "lens_spearman")
ALL_METRICS = METRICS + LENS_METRICS
# what a failed attack scores under the reference rule (docs/method.md §4.5): IN = τ = ρ = 1, no shift; the
# LENS metrics of the unchanged clean map are 1 too
REFERENCE_FAILED_SCORE = {"topk": 1.0, "kendall": 1.0, "spearman": 1.0, "center_shift": 0.0,
                          **{name: 1.0 for name in LENS_METRICS}}
# the protocol fields a saved chunk depends on (not the presentation fields or the image count)
_CHUNK_FIELDS = ("dataset", "split", "offset", "method", "epsilon", "step_size", "steps", "restarts", "k_attack",
                 "k_eval", "ig_steps", "surrogate_beta", "quantize", "pgd_epsilon", "pgd_step_size",
                 "pgd_steps", "chunk_size", "seed")


def bootstrap_interval(values, *, samples=1000, seed=0, level=0.95):
    """Percentile bootstrap interval (lo, hi) of the mean of `values`; (nan, nan) if empty or samples = 0."""
    values = np.asarray(values, np.float64)
    n = values.size
    if n == 0 or samples == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    block = max(1, 2**22 // n)  # bound the (block, n) index matrix to ~32 MB
    for start in range(0, samples, block):
        stop = min(samples, start + block)
        means[start:stop] = values[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return float(lo), float(hi)


def summarize(examples, *, failed_attack="exclude", bootstrap_samples=1000, seed=0):
    """Means and 95 % bootstrap intervals of the attack metrics over correctly classified images.

    Args:
      examples: dict of per-example arrays with keys `clean_correct`, `found` and the `METRICS` (and any of
        the `LENS_METRICS`, summarised when present).
      failed_attack: "exclude" leaves images without a label-preserving iterate out (and counts them);
        "reference" scores them (1, 1, 1, 0) like the reference code.

    Returns:
      {metric: {"mean", "ci_low", "ci_high", "n"}} plus "num_failed" and "num_undefined" (images whose
      metric is NaN, e.g. a constant map; left out of that metric's mean).
    """
    if failed_attack not in FAILED_ATTACK:
        _checks.did_you_mean("failed_attack", failed_attack, FAILED_ATTACK)
    correct = np.asarray(examples["clean_correct"], bool)
    found = np.asarray(examples["found"], bool) & correct
    out = {"num_failed": int(np.sum(correct & ~found)), "num_undefined": {}}
    for i, name in enumerate(ALL_METRICS):
        if name not in examples:
            continue
        values = np.asarray(examples[name], np.float64).copy()
        if failed_attack == "reference":
            values[correct & ~found] = REFERENCE_FAILED_SCORE[name]
            keep = correct.copy()
        else:
            keep = found.copy()
        undefined = keep & ~np.isfinite(values)
        out["num_undefined"][name] = int(np.sum(undefined))
        chosen = values[keep & ~undefined]
        lo, hi = bootstrap_interval(chosen, samples=bootstrap_samples, seed=seed + i)
        out[name] = {"mean": float(chosen.mean()) if chosen.size else float("nan"), "ci_low": lo,
                     "ci_high": hi, "n": int(chosen.size)}
    return out


@dataclasses.dataclass
class RobustnessReport:
    """The outcome of `evaluate_robustness`.

    Attributes:
      protocol: the protocol's settings (dict), including its `note`.
      model_name: the evaluated model's name.
      num_images, num_correct: images evaluated and correctly classified.
      natural_accuracy, pgd_accuracy: fractions in [0, 1] over all `num_images`.
      num_attacked: images attacked (= num_correct).
      num_failed: attacked images without a label-preserving iterate (never scored as perfect by default).
      failed_attack: which summary is the headline ("exclude" or "reference").
      summaries: {"exclude": summary, "reference": summary} as returned by `summarize`.
      seconds: compute time, summed over chunks (resumed chunks count their original time).
      ensemble_wins: for an attack ensemble, {metric: {member: images whose kept value came from it}}; None
        otherwise (and then left out of `to_dict`).
      examples: per-example arrays (not part of the JSON): index, label, clean_prediction, pgd_prediction,
        clean_correct, found, restart, the metrics, and for attacked images `attacked_positions`,
        `clean_images`, `adversarial_images`, `clean_maps`, `adversarial_maps`.
    """

    protocol: dict
    model_name: str
    num_images: int
    num_correct: int
    natural_accuracy: float
    pgd_accuracy: float
    num_attacked: int
    num_failed: int
    failed_attack: str
    summaries: dict
    seconds: float
    ensemble_wins: dict = None
    examples: dict = dataclasses.field(default_factory=dict, repr=False)

    @property
    def summary(self):
        """The headline summary (`summaries[failed_attack]`)."""
        return self.summaries[self.failed_attack]

    def metric(self, name):
        """The headline mean of one metric ("topk", "kendall", "spearman", "center_shift")."""
        return self.summary[name]["mean"]

    def to_dict(self):
        """JSON-ready dict (NaN becomes None); the per-example arrays are left out."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "examples"}
        if data["ensemble_wins"] is None:
            del data["ensemble_wins"]
        data["failed_fraction"] = self.num_failed / self.num_attacked if self.num_attacked else None
        return _json_safe(data)


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


# ---------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------

def _as_chunks(dataset, chunk_size, limit, bounds=(0.0, 1.0)):
    """Yields (images float32 NHWC, labels int32) of `chunk_size` images, `limit` images in all.

    Integer images are cast to float32 when the protocol declares their range (`bounds` other than (0, 1));
    under (0, 1) they are almost surely 0–255 pixels and raise.
    """
    if isinstance(dataset, (tuple, list)) and len(dataset) >= 2 and not tf.is_tensor(dataset[0]) \
            and not isinstance(dataset[0], tf.data.Dataset):
        images, labels = np.asarray(dataset[0]), np.asarray(dataset[1])
        dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    elif isinstance(dataset, (tuple, list)) and len(dataset) >= 2:
        dataset = tf.data.Dataset.from_tensor_slices(tuple(dataset[:2]))
    if not isinstance(dataset, tf.data.Dataset):
        raise ValueError(
            "`dataset` must be a tf.data.Dataset of (images, labels) or a pair of arrays (images, labels). "
            f"Received: dataset={type(dataset).__name__}.")
    spec = dataset.element_spec
    if not isinstance(spec, (tuple, list)) or len(spec) < 2:
        raise ValueError(
            "`dataset` must yield (images, labels) pairs: natural accuracy and the choice of attacked images "
            f"need labels. Received: a dataset with element_spec={spec}. Map it to (image, label) pairs.")
    rank = spec[0].shape.rank
    if rank == 4:
        dataset = dataset.unbatch()
    elif rank != 3:
        raise ValueError(
            "`dataset` images must have shape (H, W, C) or batches (N, H, W, C). Received: element_spec="
            f"{spec}.")
    dataset = dataset.map(lambda *item: (item[0], item[1]))
    if limit is not None:
        dataset = dataset.take(limit)
    for images, labels in dataset.batch(chunk_size).as_numpy_iterator():
        if images.dtype.kind != "f" and tuple(bounds) == (0.0, 1.0):
            raise ValueError(f"`dataset` images must be float32 in [0, 1]. Received: dtype={images.dtype}. "
                             "Convert with tf.cast(image, tf.float32) / 255, or declare the pixel range with "
                             "the protocol field bounds=(0, 255).")
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise ValueError("`dataset` labels must be integer class indices (one per image). Received: "
                             f"labels with shape {labels.shape[1:]} per image and dtype {labels.dtype}.")
        yield images.astype(np.float32), labels.astype(np.int32)


def protocol_dataset(protocol, *, data_dir=None):
    """`attr_robust_tf.data.load` of the protocol's split, images `offset` .. `offset + num_images`, served in
    the protocol's `bounds`."""
    from attr_robust_tf import data

    protocol = get_protocol(protocol)
    return data.load(protocol.dataset, protocol.split, data_dir=data_dir, limit=protocol.num_images,
                     offset=protocol.offset, batch_size=protocol.chunk_size, bounds=protocol.bounds)


# ---------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------

def model_fingerprint(model):
    """sha256 of the model's weights (shapes and values, in order): saved chunks belong to one model."""
    digest = hashlib.sha256()
    for w in model.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(w))
        digest.update(f"{value.shape}:{value.dtype}".encode())  # not the path: it depends on wrapping
        digest.update(value.tobytes())
    return digest.hexdigest()


def _explainer_name(explain):
    return f"{getattr(explain, '__module__', '')}.{getattr(explain, '__qualname__', type(explain).__name__)}"


def _fingerprint(protocol, model, explain=None):
    data = protocol.to_dict()
    settings = {k: data[k] for k in _CHUNK_FIELDS}
    if "ensemble" in data:  # only when set: chunks of a single attack keep their fingerprint
        settings["ensemble"] = list(data["ensemble"])
    if explain is not None:
        settings["explain"] = _explainer_name(explain)
    return json.dumps({"protocol": settings, "model": model_fingerprint(model)}, sort_keys=True)


def _evaluate_chunk(model, attack, protocol, surrogate, images, labels, first_index, progress):
    start = time.perf_counter()
    n = len(images)
    index = np.arange(first_index, first_index + n, dtype=np.int64)
    logits = model(images, training=False)
    check_logits_not_probabilities(keras.ops.convert_to_numpy(logits))
    clean_pred = np.argmax(keras.ops.convert_to_numpy(logits), axis=-1).astype(np.int32)
    # PGD on pure CE in inference mode, seeded by (seed, first index of the chunk) (docs/method.md §5)
    adv = pgd_linf(model, images, labels, epsilon=protocol.pgd_epsilon, step_size=protocol.pgd_step_size,
                   steps=protocol.pgd_steps, random_start=True, bounds=protocol.bounds,
                   seed=tf.constant([protocol.seed, first_index], tf.int64), quantize=protocol.quantize)
    pgd_pred = np.argmax(keras.ops.convert_to_numpy(model(adv, training=False)), axis=-1).astype(np.int32)
    correct = clean_pred == labels
    positions = np.flatnonzero(correct)
    result = attack(model, images[positions], labels[positions], surrogate=surrogate, indices=index[positions],
                    progress=progress)
    if progress is not None and n > len(positions):
        progress(n - len(positions))  # misclassified images are done once PGD has run
    out = {
        "index": index, "label": labels, "clean_prediction": clean_pred, "pgd_prediction": pgd_pred,
        "clean_correct": correct, "found": np.zeros(n, bool), "restart": np.full(n, -1, np.int32),
        "attacked_positions": positions.astype(np.int64), "clean_images": images[positions],
        "adversarial_images": result.adversarial_images, "clean_maps": result.clean_maps,
        "adversarial_maps": result.adversarial_maps,
    }
    out["found"][positions] = result.found
    out["restart"][positions] = result.restart
    # an ensemble's LENS values are its per-metric worst case over members (not those of the kept maps), and
    # which member won each metric: stored; a single attack's LENS values are computed from the maps later
    stored = METRICS + tuple(m for m in LENS_METRICS if hasattr(result, m))
    for name in stored:
        values = np.full(n, np.nan, np.float32)
        values[positions] = getattr(result, name)
        out[name] = values
    for name, won in getattr(result, "winners", {}).items():
        values = np.full(n, -1, np.int32)
        values[positions] = won
        out[f"winner_{name}"] = values
    out["seconds"] = np.float64(time.perf_counter() - start)
    return out


def _save_chunk(path, arrays, fingerprint):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        np.savez(f, fingerprint=np.array(fingerprint), **arrays)
    os.replace(tmp, path)  # atomic: a reader never sees a half-written chunk


def _load_chunk(path, fingerprint, expected_index):
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    saved = str(arrays.pop("fingerprint"))
    if saved != fingerprint:
        a, b = json.loads(saved), json.loads(fingerprint)
        changed = sorted(k for k in a["protocol"] if a["protocol"][k] != b["protocol"].get(k))
        if a["model"] != b["model"]:
            changed.append("model weights")
        raise ValueError(
            f"`chunk_dir` holds a chunk from a different evaluation: {path} differs in {', '.join(changed)}. "
            "Use a new directory, or delete the old chunks (tools/evaluate.py --overwrite).")
    if not np.array_equal(arrays["index"], expected_index):
        return None  # e.g. the last chunk was partial and more images are requested now: recompute it
    return arrays


def _concat(chunks):
    out = {}
    offsets = np.cumsum([0] + [len(c["index"]) for c in chunks])[:-1]
    for key in chunks[0]:
        if key == "seconds":
            continue
        parts = [c[key] + off if key == "attacked_positions" else c[key] for c, off in zip(chunks, offsets)]
        out[key] = np.concatenate(parts) if parts[0].ndim else np.array(parts)
    return out


def evaluate_robustness(model, dataset, protocol, *, surrogate=None, chunk_dir=None, progress=False, explain=None):
    """Runs the robustness protocol on `dataset` and returns a `RobustnessReport`.

    Args:
      model: a Keras model returning logits; a `RobustModel` is unwrapped to its `.model`.
      dataset: a tf.data.Dataset of (image, label) (batched or not), or a pair of arrays (images, labels);
        its first element is test image number `protocol.offset` (this numbers and seeds the examples).
        At most `protocol.num_images` images are used.
      protocol: a preset name ("fmnist:cpu", ...) or a `Protocol`.
      surrogate: the smooth network for the attack direction (default: softplus surrogate of `model`).
      chunk_dir: if given, each chunk of `protocol.chunk_size` images is saved there as `chunk_<k>.npz`
        and reused on the next call with the same model and settings (resuming a long evaluation).
      progress: show a tqdm progress bar (True), or a callable called with each number of images done.
      explain: None for the protocol's IG maps, or an attribution method `explain(model, images, labels) ->
        maps` evaluated instead (see `AttributionAttack`; differentiable with respect to the images). Its
        module and name are part of the saved chunks' fingerprint.

    Returns:
      A `RobustnessReport`.

    Reference: docs/method.md §4–§6; failed attacks per §9 quirk 1.
    """
    protocol = get_protocol(protocol)
    model = unwrap(model)
    attack = protocol.attack() if explain is None else protocol.attack(explain=explain)
    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=protocol.num_images, unit="img", desc=f"evaluate {protocol.name}")
        progress = bar.update
    fingerprint = _fingerprint(protocol, model, explain) if chunk_dir else None
    if chunk_dir:
        os.makedirs(chunk_dir, exist_ok=True)
    chunks = []
    try:
        first = protocol.offset
        for k, (images, labels) in enumerate(_as_chunks(dataset, protocol.chunk_size, protocol.num_images,
                                                        protocol.bounds)):
            n = len(images)
            index = np.arange(first, first + n, dtype=np.int64)
            path = os.path.join(chunk_dir, f"chunk_{k:05d}.npz") if chunk_dir else None
            arrays = _load_chunk(path, fingerprint, index) if path and os.path.exists(path) else None
            if arrays is None:
                arrays = _evaluate_chunk(model, attack, protocol, surrogate, images, labels, first,
                                         None if progress in (None, False) else progress)
                if path:
                    _save_chunk(path, arrays, fingerprint)
            elif progress not in (None, False):
                progress(n)
            chunks.append(arrays)
            first += n
    finally:
        if bar is not None:
            bar.close()
    if not chunks:
        raise ValueError("`dataset` must hold at least one image. Received: an empty dataset.")
    return _report(model, protocol, chunks)


def _add_lens(examples, protocol):
    """The LENS metrics of every attacked image from its stored maps, where the chunks do not hold them."""
    from attr_robust_tf import metrics

    n = len(examples["index"])
    positions = examples["attacked_positions"]
    missing = [name for name in LENS_METRICS if name not in examples]
    if not missing:
        return
    computed = (metrics.lens_metrics(examples["clean_maps"], examples["adversarial_maps"], protocol.k_eval,
                                     protocol.lens_window) if len(positions) else {})
    for name in missing:
        values = np.full(n, np.nan, np.float32)
        if len(positions):
            values[positions] = computed[name]
        examples[name] = values


def _ensemble_wins(examples, protocol):
    if protocol.ensemble is None or not any(k.startswith("winner_") for k in examples):
        return None
    from attr_robust_tf.attacks.ensemble import member_names

    names = member_names(protocol.ensemble)
    return {key[len("winner_"):]: {name: int(np.sum(examples[key] == i)) for i, name in enumerate(names)}
            for key in sorted(examples) if key.startswith("winner_")}


def _report(model, protocol, chunks):
    examples = _concat(chunks)
    _add_lens(examples, protocol)
    n = len(examples["index"])
    correct = examples["clean_correct"]
    summaries = {rule: summarize(examples, failed_attack=rule, bootstrap_samples=protocol.bootstrap_samples,
                                 seed=protocol.seed) for rule in FAILED_ATTACK}
    return RobustnessReport(
        protocol=protocol.to_dict(),
        model_name=getattr(model, "name", type(model).__name__),
        num_images=n,
        num_correct=int(correct.sum()),
        natural_accuracy=float(correct.mean()),
        pgd_accuracy=float(np.mean(examples["pgd_prediction"] == examples["label"])),
        num_attacked=int(correct.sum()),
        num_failed=summaries["exclude"]["num_failed"],
        failed_attack=protocol.failed_attack,
        summaries=summaries,
        seconds=float(sum(float(c["seconds"]) for c in chunks)),
        ensemble_wins=_ensemble_wins(examples, protocol),
        examples=examples,
    )


# ---------------------------------------------------------------------------------------------------
# Training-time monitoring
# ---------------------------------------------------------------------------------------------------

class RobustnessCallback(keras.callbacks.Callback):
    """Evaluates a small fixed subset at the end of chosen epochs and adds the metrics to the epoch logs.

    Logged keys (with `prefix`): natural_accuracy, pgd_accuracy, topk, kendall, spearman, center_shift
    (headline means of the protocol) and failed (images without a label-preserving iterate). They reach
    `History`, `CSVLogger` and the progress bar like any other epoch metric.

    Args:
      images, labels: the fixed subset (float (N, H, W, C) in [0, 1], int (N,)).
      protocol: preset name or `Protocol` (its `num_images` caps the subset).
      epochs: 1-based epoch numbers (as printed by `fit`) after which to evaluate; None: every `every`.
      every: evaluate every `every` epochs when `epochs` is None.
      prefix: prefix of the logged keys.
      surrogate: forwarded to the attack (required for subclassed models).

    Example:
      >>> cb = RobustnessCallback(x_val[:16], y_val[:16], "tiny", every=5)  # doctest: +SKIP
      >>> model.fit(x, y, epochs=10, callbacks=[cb])  # doctest: +SKIP
    """

    def __init__(self, images, labels, protocol, *, epochs=None, every=1, prefix="attr_", surrogate=None):
        super().__init__()
        self.images = _checks.check_images(images, check_range=True).numpy().astype(np.float32)
        self.labels = _checks.check_target(labels, self.images.shape[0], name="labels").numpy()
        self.protocol = get_protocol(protocol)
        self.epochs = None if epochs is None else {_checks.check_positive_int(e, "epochs") for e in epochs}
        self.every = _checks.check_positive_int(every, "every")
        self.prefix = prefix
        self.surrogate = surrogate
        self.reports = {}

    def _chosen(self, epoch):
        number = epoch + 1  # Keras passes 0-based epochs; users read 1-based ones in the logs
        return number in self.epochs if self.epochs is not None else number % self.every == 0

    def on_epoch_end(self, epoch, logs=None):
        if not self._chosen(epoch):
            return
        report = evaluate_robustness(self.model, (self.images, self.labels), self.protocol,
                                     surrogate=self.surrogate)
        self.reports[epoch + 1] = report
        values = {"natural_accuracy": report.natural_accuracy, "pgd_accuracy": report.pgd_accuracy,
                  "failed": float(report.num_failed)}
        values.update({name: report.metric(name) for name in METRICS})
        if logs is not None:
            logs.update({self.prefix + k: float(v) for k, v in values.items()})
