"""Why a row's pixel top-k is what it is: the structure of its maps and of its first layer (docs/method.md §15).

Per finished cell, from the saved evaluation chunks (clean and attacked maps) and the trained model:

    peak_share   mean over the first convolution's filters of  max_t a_t / Σ_t a_t,  a_t = Σ_c |w[t, c]|
                 over the spatial taps t (1/9 for a flat 3×3 filter, 1 for a filter that reads one pixel)
    peaked       filters with a peak share above 1/2 ("one-pixel" filters)
    support      pixels that hold 80 % of a clean map's mass (mean over images)
    block_topk   the top-(k/b²) intersection of the maps summed over b×b blocks aligned with the image origin
                 (for `cpu_cnn`, the cells of its first 2×2 max-pool)
    threshold    median over the one-pixel filters of  −b / w_peak,  the input level at which  ReLU(w_peak·x + b)
                 starts to fire (Madry et al. 2018 found PGD-trained MNIST filters thresholding at ε)
    switched     share of the first max-pool's active windows (clean maximum > 0, per channel) whose arg-max
                 position differs between the clean and the attacked image: the max-pool's input gradient reaches
                 only that position, so a switched winner moves the map's mass inside the window
    active       share of the first max-pool's windows (per channel) that are active on the clean image
    switch_rho   Spearman's ρ over the images between their `switched` share and their pixel top-k (SciPy)
    lit          first-conv filters whose black-patch firing level  −b / Σ max(w, 0)  lies below ε: the attack,
                 raising black pixels by at most ε, can make them fire (`background_levels`)
    black_mass   mean over the images of the attacked map's share of |mass| on the clean image's black pixels
                 (value 0): attribution the attack creates where the clean map is zero

A map whose mass moves by one pixel inside a pooling cell keeps its block top-k and its LENS recall while its
pixel top-k falls; a map whose mass moves across the image loses all three.
"""
import os

import keras
import numpy as np
import scipy.stats
import tensorflow as tf

from attr_robust_tf import _checks, metrics
from attr_robust_tf.reproduction.records import _read_json, _write_json, chunk_files, file_sha256

BLOCK = 2  # the pooling cell of the models the study trains (cpu_cnn: MaxPooling2D(2) after the first conv)
MASS_SHARE = 0.8
FILE = "structure.json"  # the cached record in the cell folder, reused while the model and the chunks are the same
VERSION = 4  # of the record's fields; a cache of another version is recomputed when the chunks are there


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


def first_conv(model):
    """The model's first Conv2D (searched through nested models); ValueError without one."""
    conv = next(_conv_layers(model), None)
    if conv is None:
        raise ValueError("`model` must contain a Conv2D. Received: a model without one.")
    return conv


def _peak_taps(conv):
    """(peak tap per filter, its share of Σ_t a_t, a_t = Σ_c |w[t, c]|) of a Conv2D, float64 arrays (c_out,)."""
    taps = np.abs(np.asarray(conv.kernel.numpy(), np.float64)).sum(axis=2)  # (kh, kw, c_out)
    taps = taps.reshape(-1, taps.shape[-1])  # (kh·kw, c_out)
    total = taps.sum(axis=0)
    share = np.divide(taps.max(axis=0), total, out=np.zeros_like(total), where=total > 0)
    return taps.argmax(axis=0), share


def first_conv_peak_share(model):
    """(mean peak share, peaked filters, filters) of the model's first Conv2D; None when it has none."""
    conv = next(_conv_layers(model), None)
    if conv is None:
        return None
    _, share = _peak_taps(conv)
    return float(share.mean()), int(np.sum(share > 0.5)), int(share.size)


def first_conv_threshold(model):
    """Median over the first Conv2D's one-pixel filters (peak share > 1/2) of  −b / w_peak  (w_peak: the peak
    tap's weight summed over input channels); None without such filters or a bias."""
    conv = next(_conv_layers(model), None)
    if conv is None or not conv.use_bias:
        return None
    peak, share = _peak_taps(conv)
    kernel = np.asarray(conv.kernel.numpy(), np.float64)
    w_peak = kernel.sum(axis=2).reshape(-1, kernel.shape[-1])[peak, np.arange(peak.size)]  # signed
    peaked = (share > 0.5) & (w_peak != 0)
    if not np.any(peaked):
        return None
    bias = np.asarray(conv.bias.numpy(), np.float64)
    return float(np.median(-bias[peaked] / w_peak[peaked]))


def _positive_sums(conv):
    """Σ_{t,c} max(w[t, c], 0) per filter of a Conv2D, float64 (c_out,)."""
    positive = np.clip(np.asarray(conv.kernel.numpy(), np.float64), 0, None)
    return positive.reshape(-1, positive.shape[-1]).sum(axis=0)


def background_levels(conv):
    """Per filter of a Conv2D, the black-patch firing level  L = −b / Σ_{t,c} max(w[t, c], 0)  (float64, (c_out,)).

    On a patch of black pixels (value 0) that an ℓ∞ attack may raise to at most ε, the largest pre-activation is
    ε·Σ max(w, 0) + b, so the filter can fire exactly when L < ε. A filter with b ≥ 0 fires on black (L = 0);
    one that no such patch can fire gets +inf.
    """
    if not conv.use_bias:
        raise ValueError(f"`conv` must have a bias for a firing level. Received: {conv.name} with use_bias=False.")
    positive = _positive_sums(conv)
    bias = np.asarray(conv.bias.numpy(), np.float64)
    level = np.divide(-bias, positive, out=np.full(bias.shape, np.inf), where=positive > 0)
    return np.where(bias >= 0, 0.0, level)


def checkpoint_levels(model, paths):
    """{file name: `background_levels` of the first Conv2D} for each weights file in `paths` (e.g. a training's
    `checkpoints/epoch-*.weights.h5`), loaded into `model`; the model's own weights are restored afterwards.

    Shows whether the levels sit on ε and cross it between epochs (docs/method.md §15, black patches).
    """
    conv = first_conv(model)
    paths = list(paths)
    names = [os.path.basename(p) for p in paths]
    if len(set(names)) < len(names):
        raise ValueError(f"`paths` must have distinct file names (the keys of the result). Received: {paths}.")
    own, out = [w.numpy() for w in model.weights], {}
    try:
        for path in paths:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"`paths` must name weights files. Received: {path!r}, which does not exist.")
            model.load_weights(path)
            out[os.path.basename(path)] = background_levels(conv)
    finally:
        for variable, value in zip(model.weights, own):
            variable.assign(value)
    return out


def black_mass(clean_images, adv_maps):
    """Per image, the attacked map's share of |mass| on the pixels that are 0 in every channel of the clean image
    (NaN for an all-zero map), float64 (N,)."""
    black = np.all(np.asarray(clean_images) == 0, axis=-1)
    mass = np.abs(np.asarray(adv_maps, np.float64)).reshape(len(black), -1)
    total = mass.sum(axis=1)
    on_black = (mass * black.reshape(len(black), -1)).sum(axis=1)
    return np.divide(on_black, total, out=np.full(total.shape, np.nan), where=total > 0)


def _first_conv_pool(layer):
    """(functional parent, first Conv2D, the MaxPooling2D applied to its output) or None."""
    subs = list(getattr(layer, "layers", None) or ())
    for i, sub in enumerate(subs):
        if isinstance(sub, keras.layers.Conv2D):
            pool = subs[i + 1] if i + 1 < len(subs) else None
            if (isinstance(pool, keras.layers.MaxPooling2D) and getattr(layer, "inputs", None) is not None
                    and pool.padding == "valid" and tuple(pool.strides) == tuple(pool.pool_size)
                    and pool.input is sub.output):
                return layer, sub, pool
            return None
        found = _first_conv_pool(sub)
        if found is not None or next(_conv_layers(sub), None) is not None:
            return found
    return None


def _windows(features, size):
    """(N, H, W, C) → (N, H/ph, W/pw, C, ph·pw): the max-pool windows (valid padding; the remainder is dropped)."""
    (ph, pw), (n, h, w, c) = size, features.shape
    f = features[:, :h - h % ph, :w - w % pw]
    f = f.reshape(n, h // ph, ph, w // pw, pw, c)
    return f.transpose(0, 1, 3, 5, 2, 4).reshape(n, h // ph, w // pw, c, ph * pw)


def first_pool_switches(model, clean_images, adversarial_images, per_image=False):
    """(switched, active) at the model's first Conv2D → MaxPooling2D pair (module docstring); None without one.

    Windows are taken per image and channel; the arg-max is NumPy's (the first maximum in row-major order, as
    TensorFlow's max-pool gradient routes it). `switched` is None when no window is active. With `per_image`, both
    are float64 arrays (N,), `switched` NaN for an image without an active window.
    """
    clean_images, adversarial_images = np.asarray(clean_images), np.asarray(adversarial_images)
    if clean_images.shape != adversarial_images.shape:
        raise ValueError("`adversarial_images` must have the shape of `clean_images`. Received: shapes "
                         f"{clean_images.shape} and {adversarial_images.shape}.")
    found = _first_conv_pool(model)
    if found is None:
        return None
    parent, conv, pool = found
    inputs = parent.inputs[0] if len(parent.inputs) == 1 else parent.inputs
    features = keras.Model(inputs, conv.output)
    size = tuple(pool.pool_size)
    clean = _windows(np.asarray(features(clean_images.astype(np.float32)), np.float64), size)
    adv = _windows(np.asarray(features(adversarial_images.astype(np.float32)), np.float64), size)
    active = clean.max(axis=-1) > 0
    switched = (clean.argmax(axis=-1) != adv.argmax(axis=-1)) & active
    if per_image:
        n_active, n_switched = active.sum(axis=(1, 2, 3)), switched.sum(axis=(1, 2, 3))
        share = np.divide(n_switched, n_active, out=np.full(len(active), np.nan), where=n_active > 0)
        return share, active.mean(axis=(1, 2, 3))
    if not np.any(active):
        return None, 0.0
    return float(switched.sum() / active.sum()), float(active.mean())


def _switch_entries(switched, active, topk):
    """The record's first-pool entries from per-image switch shares, active shares and pixel top-k."""
    ok = np.isfinite(switched)
    entries = {"switched": None, "active": float(np.mean(active)), "switch_rho": None}
    if np.any(ok):
        entries["switched"] = float(np.sum(switched[ok] * active[ok]) / np.sum(active[ok]))
    if np.sum(ok) > 2 and np.ptp(switched[ok]) > 0 and np.ptp(topk[ok]) > 0:
        entries["switch_rho"] = float(scipy.stats.spearmanr(switched[ok], topk[ok])[0])
    return entries


def _chunk_arrays(paths, names):
    """The arrays `names` concatenated over the chunks that hold the first of them; None when none does."""
    parts = {name: [] for name in names}
    for path in paths:
        with np.load(path) as z:
            if names[0] in z.files and len(z[names[0]]):
                for name in names:
                    if name in z.files:
                        parts[name].append(z[name])
    if not parts[names[0]]:
        return None
    return {name: np.concatenate(v) if len(v) == len(parts[names[0]]) else None for name, v in parts.items()}


def map_structure(folder, k, block=BLOCK, epsilon=None):
    """The structure record of one cell folder (`cells.cell_dir`), or None when it has no saved maps.

    Returns {"images", "k", "block", "topk", "block_topk", "support", "peak_share", "peaked", "filters",
    "threshold", "switched", "active", "switch_rho", "lit", "black_mass"} (module docstring; means over the
    attacked images; `lit` needs the protocol's `epsilon`; the
    first-conv entries are None for a model without a Conv2D, the first-pool ones without a Conv2D → MaxPooling2D
    pair or saved images). Every attacked image of the saved chunks counts, those without a label-preserving iterate
    included (their maps are the last iterate's), so `topk` can differ slightly from the table's. The record is
    cached in `FILE` next to the cell's result and reused while the model file, k, the block, ε and the chunk files
    (names and SHA-256) and `VERSION` are unchanged, or when the chunks are gone (a checkout that keeps only the
    durable files of a cell).
    """
    model_path = os.path.join(folder, "train", "model.keras")
    sha = file_sha256(model_path) if os.path.exists(model_path) else None
    paths = chunk_files(folder)
    chunks = [[os.path.basename(p), file_sha256(p)] for p in paths]
    cache_path = os.path.join(folder, FILE)
    cached = _read_json(cache_path)
    if cached is not None:
        if (cached.get("model_sha256") == sha and cached["k"] == int(k) and cached["block"] == int(block)
                and cached.get("epsilon") == epsilon
                and (not chunks or (cached.get("chunks") == chunks and cached.get("version") == VERSION))):
            return cached["record"]
    arrays = _chunk_arrays(paths, ("clean_maps", "adversarial_maps", "clean_images", "adversarial_images"))
    if arrays is None:
        return None
    clean, adv = arrays["clean_maps"], arrays["adversarial_maps"]
    topk = np.asarray(metrics.topk_intersection(clean, adv, k), np.float64)
    h, w = clean.shape[1:3]
    record = {"images": int(len(clean)), "k": int(k), "block": int(block),
              "topk": float(np.mean(topk)),
              "block_topk": (float(np.mean(block_topk_intersection(clean, adv, k, block)))
                             if h % block == 0 and w % block == 0 else None),
              "support": float(np.mean(mass_support(clean))),
              "peak_share": None, "peaked": None, "filters": None, "threshold": None, "switched": None,
              "active": None, "switch_rho": None, "lit": None,
              "black_mass": (float(np.nanmean(black_mass(arrays["clean_images"], adv)))
                             if arrays["clean_images"] is not None else None)}
    if sha is not None:
        model = keras.models.load_model(model_path, compile=False)
        peak = first_conv_peak_share(model)
        if peak is not None:
            record["peak_share"], record["peaked"], record["filters"] = peak
            record["threshold"] = first_conv_threshold(model)
            conv = next(_conv_layers(model))
            if epsilon is not None and conv.use_bias:
                record["lit"] = int(np.sum(background_levels(conv) < epsilon))
        images = arrays["clean_images"], arrays["adversarial_images"]
        pool = (first_pool_switches(model, *images, per_image=True)
                 if images[0] is not None and images[1] is not None else None)
        if pool is not None:
            record.update(_switch_entries(*pool, topk))
    _write_json(cache_path, {"version": VERSION, "model_sha256": sha, "k": int(k), "block": int(block),
                             "epsilon": epsilon, "chunks": chunks, "record": record})
    return record
