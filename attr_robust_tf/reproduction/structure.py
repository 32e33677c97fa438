"""Why a row's pixel top-k is what it is: the structure of its maps and of its first layer (docs/method.md §15).

Per finished cell, from the saved evaluation chunks (clean and attacked maps) and the trained model:

    peak_share   mean over the first convolution's filters of  max_t a_t / Σ_t a_t,  a_t = Σ_c |w[t, c]|
                 over the spatial taps t (1/9 for a flat 3×3 filter, 1 for a filter that reads one pixel)
    peaked       filters with a peak share above 1/2 ("one-pixel" filters)
    support      pixels that hold 80 % of a clean map's mass (mean over images)
    block_topk   the top-(k/b²) intersection of the maps summed over b×b blocks aligned with the image origin
                 (for `cpu_cnn`, the cells of its first 2×2 max-pool)

A map whose mass moves by one pixel inside a pooling cell keeps its block top-k and its LENS recall while its
pixel top-k falls; a map whose mass moves across the image loses all three.
"""
import os

import keras
import numpy as np
import tensorflow as tf

from attr_robust_tf import _checks, metrics
from attr_robust_tf.reproduction.records import _read_json, _write_json, chunk_files, file_sha256

BLOCK = 2  # the pooling cell of the models the study trains (cpu_cnn: MaxPooling2D(2) after the first conv)
MASS_SHARE = 0.8
FILE = "structure.json"  # the cached record in the cell folder, reused while the model and the chunks are the same


def block_sums(maps, block):
    """(N, H, W) maps → (N, H/b, W/b) sums over non-overlapping b×b blocks starting at the origin."""
    maps = tf.convert_to_tensor(maps)
    if maps.shape.rank != 3:
        raise ValueError(f"`maps` must have shape (N, H, W). Received: shape={tuple(maps.shape)}.")
    h, w = maps.shape[1], maps.shape[2]
    block = _checks.check_positive_int(block, "block")
    if h is None or w is None or h % block or w % block:
        raise ValueError(f"`block` must divide the map size (H, W) = ({h}, {w}). Received: block={block}.")
    return tf.reduce_sum(tf.reshape(maps, [-1, h // block, block, w // block, block]), axis=[2, 4])


def block_topk_intersection(clean_map, adv_map, k, block=BLOCK):
    """IN over b×b blocks: the top-max(1, round(k/b²)) intersection of the block sums (N, H/b, W/b), float32 (N,).

    With block = 1 it is `metrics.topk_intersection`.
    """
    kb = max(1, int(round(_checks.check_positive_int(k, "k") / block ** 2)))
    return metrics.topk_intersection(block_sums(clean_map, block), block_sums(adv_map, block), kb)


def mass_support(maps, share=MASS_SHARE):
    """Per map, the fewest pixels whose values sum to at least `share` of the map's total, int (N,).

    Maps are non-negative (saliency maps); an all-zero map gives 0.
    """
    m = np.asarray(maps, np.float64).reshape(len(maps), -1)
    if np.any(m < 0) or not np.all(np.isfinite(m)):
        raise ValueError("`maps` must be finite and non-negative (saliency maps). Received: negative or non-finite "
                         "values.")
    s = -np.sort(-m, axis=1)
    total = s.sum(axis=1, keepdims=True)
    cum = np.cumsum(s, axis=1)
    return np.where(total[:, 0] > 0, np.sum(cum < share * total, axis=1) + 1, 0)


def _conv_layers(layer):
    for sub in getattr(layer, "layers", None) or ():
        if isinstance(sub, keras.layers.Conv2D):
            yield sub
        yield from _conv_layers(sub)


def first_conv_peak_share(model):
    """(mean peak share, peaked filters, filters) of the model's first Conv2D; None when it has none."""
    conv = next(_conv_layers(model), None)
    if conv is None:
        return None
    kernel = np.abs(np.asarray(conv.kernel.numpy(), np.float64))  # (kh, kw, c_in, c_out)
    taps = kernel.sum(axis=2).reshape(-1, kernel.shape[-1])  # (kh·kw, c_out)
    total = taps.sum(axis=0)
    share = np.divide(taps.max(axis=0), total, out=np.zeros_like(total), where=total > 0)
    return float(share.mean()), int(np.sum(share > 0.5)), int(share.size)


def _chunk_maps(paths):
    clean, adv = [], []
    for path in paths:
        with np.load(path) as z:
            if "clean_maps" in z.files and len(z["clean_maps"]):
                clean.append(z["clean_maps"])
                adv.append(z["adversarial_maps"])
    if not clean:
        return None, None
    return np.concatenate(clean), np.concatenate(adv)


def map_structure(folder, k, block=BLOCK):
    """The structure record of one cell folder (`cells.cell_dir`), or None when it has no saved maps.

    Returns {"images", "k", "block", "topk", "block_topk", "support", "peak_share", "peaked", "filters"} (means
    over the attacked images; the first-conv entries are None for a model without a Conv2D). Every attacked image
    of the saved chunks counts, those without a label-preserving iterate included (their maps are the last
    iterate's), so `topk` can differ slightly from the table's. The record is cached in `FILE` next to the cell's
    result and reused while the model file, k, the block and the chunk files (names and SHA-256) are unchanged, or
    when the chunks are gone (a checkout that keeps only the durable files of a cell).
    """
    model_path = os.path.join(folder, "train", "model.keras")
    sha = file_sha256(model_path) if os.path.exists(model_path) else None
    paths = chunk_files(folder)
    chunks = [[os.path.basename(p), file_sha256(p)] for p in paths]
    cache_path = os.path.join(folder, FILE)
    cached = _read_json(cache_path)
    if cached is not None:
        if (cached.get("model_sha256") == sha and cached["k"] == int(k) and cached["block"] == int(block)
                and (not chunks or cached.get("chunks") == chunks)):
            return cached["record"]
    clean, adv = _chunk_maps(paths)
    if clean is None:
        return None
    h, w = clean.shape[1:3]
    record = {"images": int(len(clean)), "k": int(k), "block": int(block),
              "topk": float(np.mean(metrics.topk_intersection(clean, adv, k))),
              "block_topk": (float(np.mean(block_topk_intersection(clean, adv, k, block)))
                             if h % block == 0 and w % block == 0 else None),
              "support": float(np.mean(mass_support(clean))),
              "peak_share": None, "peaked": None, "filters": None}
    if sha is not None:
        peak = first_conv_peak_share(keras.models.load_model(model_path, compile=False))
        if peak is not None:
            record["peak_share"], record["peaked"], record["filters"] = peak
    _write_json(cache_path, {"model_sha256": sha, "k": int(k), "block": int(block), "chunks": chunks,
                             "record": record})
    return record
