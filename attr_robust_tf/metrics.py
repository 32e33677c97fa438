"""Attribution-robustness metrics between two saliency maps (docs/method.md §6), per example, plus Keras wrappers.

Every function takes a clean and an adversarial map batch, each (N, H, W) or (N, P), compares row i of
one with row i of the other over all P = H·W pixels, and returns float32 (N,). None of them is
differentiable (they rank). A metric that is undefined for a row (a constant map for the rank
correlations, an all-zero map for the center of mass) is NaN there, as in SciPy.
"""
import keras
import numpy as np
import tensorflow as tf

from attr_robust_tf import _checks, _tensors

_SMALL = 4  # Kendall: inversions inside blocks of this many entries are counted by direct comparison
# Kendall: entries per group of maps processed together (2 Flower maps). Small groups keep the temporaries
# small enough for the allocator to reuse them instead of faulting fresh pages in on every call (measured
# 1.5-2x faster than groups of 8 Flower maps).
_CHUNK = 2 ** 15
_TABLE_CELLS = 1.0  # Kendall: count by contingency-table cells when (distinct a)·(distinct b) ≤ this·P


def _pair(clean_map, adv_map, *, ranks=(2, 3), nonnegative=False):
    """Validated maps, flattened to (N, P) with a static P, plus the original shape."""
    a = _checks.check_maps(clean_map, "clean_map", ranks=ranks, nonnegative=nonnegative)
    b = _checks.check_maps(adv_map, "adv_map", ranks=ranks, nonnegative=nonnegative)
    if not a.shape.is_compatible_with(b.shape):
        raise ValueError(
            f"`adv_map` must have the shape of `clean_map` = {tuple(a.shape)}. Received: "
            f"adv_map.shape={tuple(b.shape)}.")
    shape = a.shape.merge_with(b.shape)
    if not shape[1:].is_fully_defined():
        raise ValueError(
            f"`clean_map` must have a static map size (H, W) or (P,). Received: "
            f"clean_map.shape={tuple(a.shape)}.")
    p = int(np.prod(shape[1:]))
    dtype = tf.float64 if tf.float64 in (a.dtype, b.dtype) else a.dtype
    n = tf.shape(a)[0]
    # (N, H, W) or (N, P) -> (N, P)
    a = tf.reshape(tf.cast(a, dtype), [n, p])
    b = tf.reshape(tf.cast(b, dtype), [n, p])
    return a, b, shape


# ------------------------------------------------------------------------------------------------
# Top-k intersection (docs/method.md §6.1)
# ------------------------------------------------------------------------------------------------

def topk_intersection(clean_map, adv_map, k):
    """IN_k = |T_k(clean) ∩ T_k(adv)| / k, the share of the k largest pixels the two maps have in common.

    Ties are broken deterministically, lower flat index first (a stable sort of −S; `tf.math.top_k`
    returns equal values in index order), where the reference uses numpy's unstable argsort
    (docs/method.md §6.1).

    Args:
      clean_map, adv_map: maps (N, H, W) or (N, P).
      k: number of top pixels, 1 ≤ k ≤ P.

    Returns:
      float32 (N,) in [0, 1].

    Reference: Chen et al. 2019 (arXiv 1905.09957), "top-k intersection"; Ghorbani et al. 2019
    (arXiv 1710.10547) §3.

    Example:
      >>> float(topk_intersection([[3., 2., 1., 0.]], [[0., 2., 3., 1.]], k=2)[0])
      0.5
    """
    a, b, shape = _pair(clean_map, adv_map)
    p = a.shape[1]
    k = _checks.check_positive_int(k, "k", maximum=p, context=" (the number of pixels per map)")
    _, top_a = tf.math.top_k(a, k=k)  # (N, k) flat indices
    _, top_b = tf.math.top_k(b, k=k)
    top_b = tf.sort(top_b, axis=-1)
    # membership of each of a's indices in b's sorted index set: binary search, then compare
    pos = tf.minimum(tf.searchsorted(top_b, top_a, side="left"), k - 1)
    found = tf.equal(tf.gather(top_b, pos, batch_dims=1), top_a)
    return tf.reduce_sum(tf.cast(found, tf.float32), axis=-1) / float(k)


# ------------------------------------------------------------------------------------------------
# Kendall's τ-b (docs/method.md §6.2): exact, O(P log P) per map, batched over N
# ------------------------------------------------------------------------------------------------

def _new_runs(s):
    """(N, P) bool: True where a row sorted ascending starts a run of equal values."""
    new = np.empty(s.shape, bool)
    new[:, 0] = True
    np.not_equal(s[:, 1:], s[:, :-1], out=new[:, 1:])
    return new


def _tied_pairs(new):
    """Σ_t t(t−1)/2 over the runs of equal values marked by `_new_runs`, per row: (N,) int64."""
    n, p = new.shape
    starts = np.flatnonzero(new)  # flat positions; every row starts a run
    lengths = np.diff(starts, append=n * p)
    return np.bincount(starts // p, weights=lengths * (lengths - 1) // 2, minlength=n).astype(np.int64)


def _dense_ranks(new):
    """Ranks 1, 2, … of the runs marked by `_new_runs` (ties share one), in sorted order: int32."""
    return np.cumsum(new, axis=1, dtype=np.int32)


def _sort_with_order(x):
    """Each row of x (N, P) sorted ascending (as order-preserving keys), and its argsort.

    float32 rows go through one sort of (key << 32 | index) packed into uint64, which is several times
    faster than `np.argsort` on rows with many ties; other dtypes use `np.argsort`.
    """
    if x.dtype == np.float32 and x.shape[1] < 2 ** 32:
        bits = (x + np.float32(0.0)).view(np.uint32)  # + 0.0: −0.0 and +0.0 get one key
        # order-preserving map of IEEE floats to unsigned ints: negatives flip all bits, others the sign
        keys = np.where(bits >> 31, ~bits, bits | np.uint32(0x80000000)).astype(np.uint64)
        packed = np.sort((keys << np.uint64(32)) | np.arange(x.shape[1], dtype=np.uint64), axis=1)
        return packed >> np.uint64(32), (packed & np.uint64(0xFFFFFFFF)).astype(np.intp)
    order = np.argsort(x, axis=1)
    return np.take_along_axis(x, order, axis=1), order


def _inversions(v):
    """#{(i, j): i < j, v_i > v_j} per row of v (N, P) with entries in [0, P), by bottom-up merging.

    Level s merges neighbouring blocks L, R of s entries. Keys 2·v (from L) and 2·v + 1 (from R) sort
    every L entry before an equal R entry, so the R entry with index j among R's entries at merged position
    q has exactly q − j entries of L that are ≤ it, and s − (q − j) that are larger: Σ_R (s − q + j)
    is this level's count. log₂P levels of one vectorised sort each: O(P log P) per row.
    """
    n, p = v.shape
    p2 = max(_SMALL, 1 << max(0, (p - 1).bit_length()))
    small = p2 <= 2 ** 15  # then every Σ of merged positions is < p2·s < 2**31: exact in int32
    x = np.full((n, p2), p, np.int32 if small else np.int64)  # padding p > every entry: no inversion
    x[:, :p] = v
    blocks = x.reshape(n, p2 // _SMALL, _SMALL)
    before, after = np.triu_indices(_SMALL, 1)  # all index pairs i < j inside a block
    total = np.count_nonzero(blocks[:, :, before] > blocks[:, :, after], axis=(1, 2)).astype(np.int64)
    x <<= 1
    s = _SMALL
    while s < p2:
        nb = p2 // (2 * s)
        pairs = x.reshape(n, nb, 2, s)  # (N, blocks, L/R, s)
        pairs[:, :, 1] |= 1
        keys = np.sort(pairs.reshape(n, nb, 2 * s), axis=-1)  # (N, blocks, 2s): merged blocks
        side = keys & 1  # 1 where an R entry landed
        if small:  # Σ_R q, the merged positions of the R entries
            sum_q = np.einsum("nbq,q->n", side, np.arange(2 * s, dtype=np.int32)).astype(np.int64)
        else:  # exact in float64 (< 2**53)
            q = np.tile(np.arange(2 * s, dtype=np.float64), nb)
            sum_q = np.rint(side.reshape(n, -1).astype(np.float64) @ q).astype(np.int64)
        total += nb * s * s - (sum_q - nb * s * (s - 1) // 2)  # Σ_R (s − q + j)
        keys ^= side  # clear the side bit for the next level
        x = keys.reshape(n, p2)
        s *= 2
    return total


def _tau(n0, n1, n2, n3, nd):
    with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 → NaN for a constant map, as SciPy
        num = (n0 - n1 - n2 + n3 - 2 * nd).astype(np.float64)
        return num / (np.sqrt((n0 - n1).astype(np.float64)) * np.sqrt((n0 - n2).astype(np.float64)))


def _discordant_from_table(rank_a, rank_b, da, db):
    """(n₁, n₂, n₃, n_d) from the da × db contingency table of 0-based dense ranks (N, P): O(P + da·db)."""
    n, p = rank_a.shape
    cells = da * db
    flat = (np.arange(n)[:, None] * cells + rank_a * db + rank_b).ravel()  # (N·P,) cell of each pixel
    t = np.bincount(flat, minlength=n * cells).reshape(n, da, db)  # (N, da, db) counts
    above = np.cumsum(t, axis=1) - t  # Σ_{i' < i} t[i', j]
    # Σ_{i' < i, j' > j} t[i', j']: the pixels discordant with those of cell (i, j)
    discordant = np.cumsum(above[:, :, ::-1], axis=2)[:, :, ::-1] - above
    pairs = lambda c: (c * (c - 1) // 2).sum(axis=-1)  # noqa: E731
    return (pairs(t.sum(axis=2)), pairs(t.sum(axis=1)), pairs(t.reshape(n, cells)),
            (t * discordant).sum(axis=(1, 2)))


def _kendall_rows(a, b):
    n, p = a.shape
    n0 = p * (p - 1) // 2
    sorted_a, order_a = _sort_with_order(a)
    runs_a = _new_runs(sorted_a)
    sorted_b, order_b = _sort_with_order(b)
    runs_b = _new_runs(sorted_b)
    rank_b = np.empty((n, p), np.int32)  # dense rank of b, in original order
    np.put_along_axis(rank_b, order_b, _dense_ranks(runs_b), axis=1)
    da, db = int(runs_a.sum(axis=1).max()), int(runs_b.sum(axis=1).max())  # distinct values
    if da * db <= _TABLE_CELLS * p:  # few distinct values (tie-heavy maps): count pairs by cells
        rank_a = np.empty((n, p), np.int32)
        np.put_along_axis(rank_a, order_a, _dense_ranks(runs_a), axis=1)
        return _tau(n0, *_discordant_from_table(rank_a - 1, rank_b - 1, da, db))
    # lexicographic (a, b) order: one sort of (rank_a, rank_b) packed into int64 (ranks ≤ P < 2**31)
    keys = np.sort((_dense_ranks(runs_a).astype(np.int64) << 32)
                   | np.take_along_axis(rank_b, order_a, axis=1), axis=1)
    nd = _inversions((keys & 0xFFFFFFFF) - 1)  # b's ranks 0..P−1 in (a, b) order
    return _tau(n0, _tied_pairs(runs_a), _tied_pairs(runs_b), _tied_pairs(_new_runs(keys)), nd)


def kendall_tau_b(a, b):
    """NumPy core of `kendall_tau`: float64 (N,) from two (N, P) arrays; equals scipy.stats.kendalltau.

    τ_b = (n₀ − n₁ − n₂ + n₃ − 2·n_d) / √((n₀ − n₁)(n₀ − n₂)), with n₀ = P(P−1)/2, n₁ and n₂ the pairs
    tied in a and in b, n₃ the pairs tied in both, and n_d the discordant pairs: the inversions of b's
    ranks once the entries are sorted by (a, b) (Knight 1966), or, when the maps hold few distinct values,
    a sum over the cells of their contingency table.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.dtype not in (np.float32, np.float64):
        a, b = a.astype(np.float64), b.astype(np.float64)
    rows = max(1, _CHUNK // max(1, a.shape[1]))  # a few maps at a time
    return np.concatenate([np.zeros(0)] + [_kendall_rows(a[i:i + rows], b[i:i + rows])
                                           for i in range(0, a.shape[0], rows)])


def kendall_tau(clean_map, adv_map):
    """Kendall's τ-b between the two maps over all pixel pairs, ties as in `scipy.stats.kendalltau`.

    Exact, in O(P log P) per map (Knight's algorithm, merge-counted with vectorised NumPy sorts over all
    maps at once; TF's CPU sort is about 20× slower than NumPy's, which decides whether this beats SciPy
    at Flower size). Inside a `tf.function` it runs through `tf.numpy_function`.

    Args:
      clean_map, adv_map: maps (N, H, W) or (N, P).

    Returns:
      float32 (N,) in [−1, 1]; NaN where a map is constant.

    Reference: Chen et al. 2019 (arXiv 1905.09957), "Kendall's tau rank order correlation" (CO);
    docs/method.md §6.2.

    Example:
      >>> float(kendall_tau([[1., 2., 3.]], [[3., 2., 1.]])[0])
      -1.0
    """
    a, b, _ = _pair(clean_map, adv_map)
    if tf.executing_eagerly():
        return tf.constant(kendall_tau_b(a.numpy(), b.numpy()), tf.float32)
    tau = tf.numpy_function(kendall_tau_b, [a, b], tf.float64, stateful=False)
    tau.set_shape(a.shape[:1])
    return tf.cast(tau, tf.float32)


# ------------------------------------------------------------------------------------------------
# Spearman's ρ (docs/method.md §6.3)
# ------------------------------------------------------------------------------------------------

def _average_ranks(x):
    """1-based ranks (N, P) float64, tied entries sharing the mean of their ranks (scipy.stats.rankdata)."""
    s = tf.sort(x, axis=-1)
    below = tf.searchsorted(s, x, side="left")  # entries < x
    up_to = tf.searchsorted(s, x, side="right")  # entries ≤ x
    return tf.cast(below + up_to + 1, tf.float64) / 2.0


def spearman_rho(clean_map, adv_map):
    """Spearman's ρ: the Pearson correlation of the average ranks of the two maps (`scipy.stats.spearmanr`).

    Returns:
      float32 (N,) in [−1, 1]; NaN where a map is constant.

    Reference: docs/method.md §6.3 (computed and printed by the RAR evaluation code).

    Example:
      >>> float(spearman_rho([[1., 2., 2., 4.]], [[1., 3., 3., 9.]])[0])
      1.0
    """
    a, b, _ = _pair(clean_map, adv_map)
    ra = _average_ranks(tf.cast(a, tf.float64))
    rb = _average_ranks(tf.cast(b, tf.float64))
    ra -= tf.reduce_mean(ra, axis=-1, keepdims=True)
    rb -= tf.reduce_mean(rb, axis=-1, keepdims=True)
    cov = tf.reduce_sum(ra * rb, axis=-1)
    # 0/0 → NaN for a constant map, as SciPy
    rho = cov / tf.sqrt(tf.reduce_sum(ra * ra, axis=-1) * tf.reduce_sum(rb * rb, axis=-1))
    return tf.cast(rho, tf.float32)


# ------------------------------------------------------------------------------------------------
# Center-of-mass shift (docs/method.md §4.3, §6.4)
# ------------------------------------------------------------------------------------------------

def _center(maps):
    """S-weighted mean (row, col) position of each map (N, H, W) -> (N, 2) float64; NaN for a zero map."""
    return _tensors.mass_center(tf.cast(maps, tf.float64), empty=float("nan"))


def center_of_mass_shift(clean_map, adv_map):
    """‖C(clean) − C(adv)‖₂ in pixels, C(S) = Σ_p S_p·(row_p, col_p) / Σ_p S_p, with float centers.

    For maps normalised to sum H·W this is docs/method.md §4.3's C(S) = (Σ S·row, Σ S·col)/(H·W). The
    reference truncates both centers to int first; we do not (docs/method.md §6.4).

    Args:
      clean_map, adv_map: non-negative maps (N, H, W).

    Returns:
      float32 (N,) ≥ 0; NaN where a map sums to 0.

    Reference: Ghorbani et al. 2019 (arXiv 1710.10547) §3, "center of mass"; docs/method.md §6.4.

    Example:
      >>> float(center_of_mass_shift([[[1., 0.], [0., 0.]]], [[[0., 0.], [0., 1.]]])[0])  # doctest: +ELLIPSIS
      1.414...
    """
    a = _checks.check_maps(clean_map, "clean_map", ranks=(3,), nonnegative=True)
    b = _checks.check_maps(adv_map, "adv_map", ranks=(3,), nonnegative=True)
    if not a.shape.is_compatible_with(b.shape):
        raise ValueError(
            f"`adv_map` must have the shape of `clean_map` = {tuple(a.shape)}. Received: "
            f"adv_map.shape={tuple(b.shape)}.")
    shift = tf.norm(_center(a) - _center(b), axis=-1)
    return tf.cast(shift, tf.float32)


# ------------------------------------------------------------------------------------------------
# Locality-sensitive (LENS) metrics (Kamath et al., AAAI 2024, arXiv 2312.10534)
# ------------------------------------------------------------------------------------------------
#
# Read: the authors' code github.com/ksandeshk/LENS, MNIST/eval_with_lens_attribution_attack.py (functions
# `submat`, `addwindowList`, `topkDiv` and the block marked "LENS metric") and scripts/imagenet_topk_div_eps.py
# (3×3, 5×5 and 7×7 windows); the paper's Figure 2 ("3-LENS-recall@k", "3-LENS-recall@k-div") and abstract.
# What we do differently from that code is said in each docstring and in docs/evaluation.md.

LENS_WINDOW = 3  # the authors' MNIST and Flower setting: a 3×3 neighbourhood ("3-LENS")
LENS_DIRECTIONS = ("recall", "precision")


def _lens_maps(clean_map, adv_map):
    """Validated (N, H, W) maps as two NumPy float64 arrays (the LENS metrics need the 2-D layout)."""
    a = _checks.check_maps(clean_map, "clean_map", ranks=(3,))
    b = _checks.check_maps(adv_map, "adv_map", ranks=(3,))
    if not a.shape.is_compatible_with(b.shape):
        raise ValueError(
            f"`adv_map` must have the shape of `clean_map` = {tuple(a.shape)}. Received: "
            f"adv_map.shape={tuple(b.shape)}.")
    if not tf.executing_eagerly():
        raise ValueError("The LENS metrics run eagerly (NumPy): call them outside `tf.function`.")
    return np.asarray(a.numpy(), np.float64), np.asarray(b.numpy(), np.float64)


def _check_window(window, h, w):
    window = _checks.check_positive_int(window, "window")
    if window % 2 == 0:
        raise ValueError(f"`window` must be an odd side length (1, 3, 5, ...) of a square neighbourhood centred on "
                         f"the pixel. Received: window={window}.")
    return window


def _check_direction(direction):
    if direction not in LENS_DIRECTIONS:
        _checks.did_you_mean("LENS direction", direction, LENS_DIRECTIONS)
    return direction


def _shifts(window):
    r = window // 2
    return [(dr, dc) for dr in range(-r, r + 1) for dc in range(-r, r + 1)]


def dilate_mask(mask, window):
    """(N, H, W) bool: True within the `window`×`window` square around any True pixel (no wrap at edges)."""
    mask = np.asarray(mask, bool)
    out = np.zeros_like(mask)
    h, w = mask.shape[1:]
    for dr, dc in _shifts(window):  # out[i, j] |= mask[i − dr, j − dc]
        out[:, max(dr, 0):h + min(dr, 0), max(dc, 0):w + min(dc, 0)] |= \
            mask[:, max(-dr, 0):h + min(-dr, 0), max(-dc, 0):w + min(-dc, 0)]
    return out


def dilate_max(maps, window):
    """(N, H, W): each pixel replaced by the maximum of the map over its `window`×`window` square (cut at edges)."""
    maps = np.asarray(maps)
    out = maps.copy()
    h, w = maps.shape[1:]
    for dr, dc in _shifts(window):
        dst = out[:, max(dr, 0):h + min(dr, 0), max(dc, 0):w + min(dc, 0)]
        np.maximum(dst, maps[:, max(-dr, 0):h + min(-dr, 0), max(-dc, 0):w + min(-dc, 0)], out=dst)
    return out


def topk_masks(maps, k):
    """(N, H, W) bool: the `k` largest pixels of each map, ties to the lower flat index (as `topk_intersection`)."""
    maps = np.asarray(maps)
    n = maps.shape[0]
    flat = maps.reshape(n, -1)
    order = np.argsort(-flat, axis=1, kind="stable")[:, :k]
    mask = np.zeros(flat.shape, bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask.reshape(maps.shape)


def diverse_topk_masks(maps, k, window):
    """(N, H, W) bool: the top-k-div set, k pixels taken greedily by value, none in another's neighbourhood.

    Walks the pixels from the largest value down (ties: lower flat index first) and takes a pixel unless it
    lies in the `window`×`window` square of one already taken, until `k` are taken or none is left (then the
    set is smaller). Kamath et al.'s `topkDiv` (MNIST/eval_with_lens_attribution_attack.py) is this greedy
    walk over the 600 (ImageNet: 6,000+) largest pixels; as written it also drops the second of every two
    accepted candidates (it removes the neighbourhood of the next candidate before taking it), and its flat
    index arithmetic wraps rows and never takes pixel 0. We implement the greedy rule as described, on the
    2-D grid.
    """
    maps = np.asarray(maps, np.float64)
    n, h, w = maps.shape
    flat = maps.reshape(n, h * w)
    available = np.ones((n, h * w), bool)
    chosen = np.zeros((n, h * w), bool)
    rows = np.arange(n)
    dr, dc = np.array(_shifts(window)).T  # (window²,)
    for _ in range(min(k, h * w)):
        idx = np.argmax(np.where(available, flat, -np.inf), axis=1)  # first maximum: lower index on ties
        ok = available[rows, idx]
        if not ok.any():
            break
        chosen[rows[ok], idx[ok]] = True
        r, c = idx[ok] // w, idx[ok] % w
        rr, cc = r[:, None] + dr, c[:, None] + dc  # (n_ok, window²)
        inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        which = np.broadcast_to(rows[ok][:, None], rr.shape)
        available[which[inside], (rr * w + cc)[inside]] = False
    return chosen.reshape(n, h, w)


def _lens_overlap(set_a, set_b, window, direction):
    """recall: |N(A) ∩ B| / |B|; precision: |A ∩ N(B)| / |A|, per row; float64 (N,)."""
    if direction == "recall":
        hits, size = dilate_mask(set_a, window) & set_b, set_b
    else:
        hits, size = set_a & dilate_mask(set_b, window), set_a
    with np.errstate(divide="ignore", invalid="ignore"):
        return hits.sum(axis=(1, 2)) / size.sum(axis=(1, 2)).astype(np.float64)


def lens_topk(clean_map, adv_map, k, window=LENS_WINDOW, *, direction="recall"):
    """w-LENS top-k: top-k intersection in which a pixel counts when it lies within the w×w window of the other set.

    With T_k(S) the k largest pixels and N_w(T) the union of the w×w squares centred on the pixels of T:

      recall    (LENS-recall@k, the paper's headline): |N_w(T_k(clean)) ∩ T_k(adv)| / k, the share of the
                 attacked map's top-k pixels that lie near a clean top-k pixel;
      precision (LENS-prec@k):                         |T_k(clean) ∩ N_w(T_k(adv))| / k, the share of the clean
                 top-k pixels with an attacked top-k pixel nearby.

    The names and the two directions follow the authors' evaluation code (ksandeshk/LENS,
    MNIST/eval_with_lens_attribution_attack.py: `sum_fo_p` printed as "LENS-recall", `sum_o_fp` as
    "LENS-prec"). Their neighbourhood is computed on flat indices (±1, ±W), so it wraps from one row end to
    the next row's start and never contains pixel 0; ours is the square on the 2-D grid, cut at the edges.
    Ties: lower flat index first, as in `topk_intersection`. `window=1` gives `topk_intersection` exactly.

    Args:
      clean_map, adv_map: maps (N, H, W).
      k: number of top pixels, 1 ≤ k ≤ H·W.
      window: odd side of the square neighbourhood (3: the paper's "3-LENS"; 1: no neighbourhood).
      direction: "recall" or "precision".

    Returns:
      float32 (N,) in [0, 1].

    Reference: Kamath et al., "Rethinking Robustness of Model Attributions", AAAI 2024 (arXiv 2312.10534),
    Figure 2 and the authors' code named above.

    Example:
      >>> a = [[[1., 0., 0.], [0., 0., 0.], [0., 0., 0.]]]  # top-1 at (0, 0)
      >>> b = [[[0., 0., 0.], [0., 1., 0.], [0., 0., 0.]]]  # moved to (1, 1): one pixel diagonally
      >>> float(lens_topk(a, b, k=1)[0]), float(lens_topk(a, b, k=1, window=1)[0])
      (1.0, 0.0)
    """
    a, b = _lens_maps(clean_map, adv_map)
    _, h, w = a.shape
    k = _checks.check_positive_int(k, "k", maximum=h * w, context=" (the number of pixels per map)")
    window = _check_window(window, h, w)
    direction = _check_direction(direction)
    return tf.constant(_lens_overlap(topk_masks(a, k), topk_masks(b, k), window, direction), tf.float32)


def lens_topk_div(clean_map, adv_map, k, window=LENS_WINDOW, *, direction="recall"):
    """w-LENS top-k-div: `lens_topk` on the diverse top-k sets D_k (see `diverse_topk_masks`).

      recall    (LENS-recall@k-div): |N_w(D_k(clean)) ∩ D_k(adv)| / |D_k(adv)|
      precision (LENS-prec@k-div):   |D_k(clean) ∩ N_w(D_k(adv))| / |D_k(clean)|

    The same `window` sets the diversity (no two chosen pixels within one window) and the neighbourhood,
    as in the authors' code. When fewer than k diverse pixels exist we divide by the set's size (a choice:
    the authors' code divides by k and would stop with an error there); with k diverse pixels both equal
    the paper's division by k. `window=1` gives `topk_intersection` exactly.

    Returns:
      float32 (N,) in [0, 1].

    Reference: Kamath et al. 2024 (arXiv 2312.10534), Figure 2 "3-LENS-recall@k-div"; ksandeshk/LENS,
    MNIST/eval_with_lens_attribution_attack.py (`topkDiv`, `sum_lfo_fp`, `sum_fo_lfp`).
    """
    a, b = _lens_maps(clean_map, adv_map)
    _, h, w = a.shape
    k = _checks.check_positive_int(k, "k", maximum=h * w, context=" (the number of pixels per map)")
    window = _check_window(window, h, w)
    direction = _check_direction(direction)
    da, db = diverse_topk_masks(a, k, window), diverse_topk_masks(b, k, window)
    return tf.constant(_lens_overlap(da, db, window, direction), tf.float32)


def lens_kendall_tau(clean_map, adv_map, window=LENS_WINDOW):
    """LENS-Kendall: Kendall's τ-b between the two maps after a w×w maximum filter (grey dilation) of each.

    The paper names LENS-Kendall and LENS-Spearman but the public code has no implementation of them and we
    could not find their definition; this is our choice, in the spirit of `lens_topk`: every pixel takes
    the largest value within its window, so a peak that moves by at most (w − 1)/2 pixels keeps high values
    at the pixels it covered. `window=1` gives `kendall_tau` exactly. Exact, ties as in SciPy.

    Returns:
      float32 (N,) in [−1, 1]; NaN where a filtered map is constant.
    """
    a, b = _lens_maps(clean_map, adv_map)
    window = _check_window(window, *a.shape[1:])
    n = a.shape[0]
    return tf.constant(kendall_tau_b(dilate_max(a, window).reshape(n, -1), dilate_max(b, window).reshape(n, -1)),
                       tf.float32)


def lens_spearman_rho(clean_map, adv_map, window=LENS_WINDOW):
    """LENS-Spearman: Spearman's ρ between the two maps after a w×w maximum filter of each (our choice, as
    `lens_kendall_tau`). `window=1` gives `spearman_rho` exactly.

    Returns:
      float32 (N,) in [−1, 1]; NaN where a filtered map is constant.
    """
    a, b = _lens_maps(clean_map, adv_map)
    window = _check_window(window, *a.shape[1:])
    return spearman_rho(dilate_max(a, window), dilate_max(b, window))


def lens_metrics(clean_maps, adv_maps, k, window=LENS_WINDOW):
    """All LENS metrics of `evaluate_robustness` as float32 NumPy arrays (N,), keyed by report name."""
    return {
        "lens_topk": lens_topk(clean_maps, adv_maps, k, window).numpy(),
        "lens_topk_precision": lens_topk(clean_maps, adv_maps, k, window, direction="precision").numpy(),
        "lens_topk_div": lens_topk_div(clean_maps, adv_maps, k, window).numpy(),
        "lens_kendall": lens_kendall_tau(clean_maps, adv_maps, window).numpy(),
        "lens_spearman": lens_spearman_rho(clean_maps, adv_maps, window).numpy(),
    }


# ------------------------------------------------------------------------------------------------
# Keras metric wrappers: the mean over all examples seen, fed update_state(clean_map, adv_map)
# ------------------------------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package="attr_robust_tf")
class TopKIntersection(keras.metrics.MeanMetricWrapper):
    """Mean top-k intersection; `update_state(clean_map, adv_map, sample_weight=None)`.

    Args:
      k: number of top pixels (≤ the pixels per map, checked on update).
      name, dtype: as for every Keras metric.

    Example:
      >>> m = TopKIntersection(k=2)
      >>> m.update_state([[3., 2., 1., 0.]], [[0., 2., 3., 1.]])
      >>> float(m.result())
      0.5
    """

    def __init__(self, k, name="topk_intersection", dtype=None):
        k = _checks.check_positive_int(k, "k")
        super().__init__(fn=topk_intersection, name=name, dtype=dtype, k=k)
        self.k = k

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "k": self.k}


@keras.saving.register_keras_serializable(package="attr_robust_tf")
class KendallTau(keras.metrics.MeanMetricWrapper):
    """Mean Kendall τ-b; `update_state(clean_map, adv_map, sample_weight=None)`. A constant map gives NaN.

    Example:
      >>> m = KendallTau()
      >>> m.update_state([[1., 2., 3.]], [[1., 3., 2.]])
      >>> round(float(m.result()), 4)
      0.3333
    """

    def __init__(self, name="kendall_tau", dtype=None):
        super().__init__(fn=kendall_tau, name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


@keras.saving.register_keras_serializable(package="attr_robust_tf")
class SpearmanRho(keras.metrics.MeanMetricWrapper):
    """Mean Spearman ρ; `update_state(clean_map, adv_map, sample_weight=None)`. A constant map gives NaN."""

    def __init__(self, name="spearman_rho", dtype=None):
        super().__init__(fn=spearman_rho, name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


@keras.saving.register_keras_serializable(package="attr_robust_tf")
class CenterOfMassShift(keras.metrics.MeanMetricWrapper):
    """Mean center-of-mass shift in pixels; `update_state(clean_map, adv_map, sample_weight=None)`."""

    def __init__(self, name="center_of_mass_shift", dtype=None):
        super().__init__(fn=center_of_mass_shift, name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}
