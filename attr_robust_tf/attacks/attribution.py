"""Attribution attacks: change an image's IG map while its label stays (Ghorbani, Abid & Zou 2019).

Ghorbani et al., AAAI 2019 (arXiv 1710.10547) §3, as implemented in the RAR / Sarkar `ig_attack.py` and
summarised in docs/method.md §4. Per step t, for every (image, restart) row at once:

  d_t      = −∇_{x̃} L(S̃(x̃_t))               (surrogate map S̃; a random sign for `random_sign`)
  x̃_{t+1}  = Π_{x,ε}(x̃_t + a·sign(d_t))       (ℓ∞ ball ∩ valid range, optionally the 1/q grid)
  c_{t+1}  = τ(S(x), S(x̃_{t+1}))  if argmax f(x̃_{t+1}) = y  else +∞      (real-model map S)

and the iterate with the lowest criterion c is kept. Restart 0 starts at x; restarts r ≥ 1 start at a
uniform point of the ball, seeded by (seed, example index, r), so a batched attack equals the same attack
run one image at a time. What we do differently from the reference code is listed in docs/method.md §9.
"""
import warnings
import weakref
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from attr_robust_tf import _checks, _tensors, attributions, errors, metrics
from attr_robust_tf._checks import check_logits_not_probabilities  # noqa: F401 (public here too)
from attr_robust_tf.attacks.pgd import project
from attr_robust_tf.attributions import integrated_gradients, saliency_map
from attr_robust_tf.surrogate import softplus_surrogate

# ---------------------------------------------------------------------------------------------------
# Attack objectives: plain functions on saliency maps (N, H, W) -> (N,). The attack *descends* each loss.
# ---------------------------------------------------------------------------------------------------

def mass_center(maps):
    """C(S) = (Σ_p S_p·row_p, Σ_p S_p·col_p) / Σ_p S_p, float pixel coordinates (N, 2); 0 for a zero map.

    With S normalised to sum H·W this is docs/method.md §4.3's C(S) = (Σ S·row, Σ S·col)/(H·W).
    """
    return _tensors.mass_center(maps)


def topk_mask(maps, k):
    """1 on the `k` largest entries of each map (N, H, W), else 0; ties go to the lower flat index.

    `tf.math.top_k` returns equal values lower index first, so ties are broken as in the metrics
    (docs/method.md §6.1, §9 quirk 7).
    """
    maps = tf.convert_to_tensor(maps)
    n = tf.shape(maps)[0]
    flat = tf.reshape(maps, [n, -1])  # (N, P)
    _, idx = tf.math.top_k(flat, k=k)  # (N, k)
    rows = tf.repeat(tf.range(n), k)  # (N·k,) row index of each selected entry
    where = tf.stack([rows, tf.reshape(idx, [-1])], axis=-1)  # (N·k, 2)
    mask = tf.scatter_nd(where, tf.ones([n * k], maps.dtype), tf.shape(flat))
    return tf.reshape(mask, tf.shape(maps))


def topk_mass(maps, mask):
    """L = Σ_{p∈K} S̃_p: the map mass on the clean top-k pixels K (Ghorbani et al. §3 "top-k attack").

    Descending it moves attribution off the pixels that mattered (docs/method.md §4.3).
    """
    return tf.reduce_sum(maps * mask, axis=[1, 2])


def center_of_mass(maps, center):
    """L = −‖C(S̃) − C₀‖²: descending it pushes the map's center of mass away from C₀ (docs/method.md §4.3).

    `center` (N, 2) is the float center of the clean real-model map; the reference truncates the surrogate's
    center to int, which hides that the gradient vanishes at x̃ = x for a float center of the same map.
    """
    return -tf.reduce_sum(tf.square(mass_center(maps) - center), axis=-1)


def targeted(maps, region):
    """L = −Σ_p T_p S̃_p: descending it moves attribution mass into the region T (N, H, W) (docs/method.md §4.3)."""
    return -tf.reduce_sum(maps * region, axis=[1, 2])


def random_sign(keys, step, shape):
    """A uniformly random ±1 direction per row, seeded by the row key (N, 2) folded with `step`.

    The reference draws d = Σ_j (j/m)·n_j with n_j ~ N(0, I), whose sign is uniform (docs/method.md §4.3). Each row
    has its own stateless stream, so the draw does not depend on which other rows share the batch.
    """
    def draw(key):
        seed = tf.random.experimental.stateless_fold_in(key, step)
        return tf.random.stateless_uniform(shape, seed, -1.0, 1.0)

    u = tf.map_fn(draw, keys, fn_output_signature=tf.TensorSpec(shape, tf.float32))
    return tf.where(u < 0.0, -1.0, 1.0)


METHODS = ("topk", "mass_center", "random_sign", "targeted")


def _loss(method, maps, aux, center):
    if method == "topk":
        return topk_mass(maps, aux)
    if method == "mass_center":
        return center_of_mass(maps, center)
    return targeted(maps, aux)


# ---------------------------------------------------------------------------------------------------
# Result
# ---------------------------------------------------------------------------------------------------

class AttackResult(NamedTuple):
    """Per-image outcome of an `AttributionAttack` (NumPy arrays, first axis N).

    adversarial_images: (N, H, W, C) the kept iterate, or the clean image when `found` is False.
    clean_maps, adversarial_maps: (N, H, W) real-model saliency maps (docs/method.md §3) of both images.
    topk, kendall, spearman, center_shift: (N,) metrics of (clean_maps, adversarial_maps); a failed attack
      keeps the clean image and so scores (1, 1, 1, 0): `evaluate_robustness` excludes it by default.
    found: (N,) bool, some iterate kept the clean prediction.
    clean_correct: (N,) bool, the clean prediction equals the label.
    clean_predictions: (N,) int32, the class whose map is attacked and which every kept iterate keeps.
    restart: (N,) int32, the restart the kept iterate came from (−1 when not found).
    """

    adversarial_images: np.ndarray
    clean_maps: np.ndarray
    adversarial_maps: np.ndarray
    topk: np.ndarray
    kendall: np.ndarray
    spearman: np.ndarray
    center_shift: np.ndarray
    found: np.ndarray
    clean_correct: np.ndarray
    clean_predictions: np.ndarray
    restart: np.ndarray


# ---------------------------------------------------------------------------------------------------
# Compiled pieces, cached per model (one trace per model and structural setting)
# ---------------------------------------------------------------------------------------------------

_STEPS = weakref.WeakKeyDictionary()
_SURROGATES = weakref.WeakKeyDictionary()


def unwrap(model):
    """The plain Keras model inside a `RobustModel` (its `.model`), or `model` itself."""
    inner = getattr(model, "model", None)
    while isinstance(inner, keras.Model) and inner is not model:
        model, inner = inner, getattr(inner, "model", None)
    return model


def default_surrogate(model, beta):
    """`softplus_surrogate(model, beta)`, built once per (model, β)."""
    per_model = _SURROGATES.setdefault(model, {})
    if beta not in per_model:
        per_model[beta] = softplus_surrogate(model, beta=beta)
    return per_model[beta]


def _image_spec(*shape, dtype=tf.float32):
    return tf.TensorSpec((None,) + tuple(shape), dtype)


def attribution_map(model, images, labels, *, ig_steps, explain=None):
    """The (N, H, W) saliency map the attack compares: IG with `ig_steps` points by default, or `explain`.

    `explain(model, images, labels)` returns attributions (N, H, W, C) or maps (N, H, W); both go through
    `saliency_map` (channel-summed |·|, normalised to sum H·W), as the IG attributions do. It must be
    traceable by `tf.function` and differentiable with respect to `images` (the attack differentiates it on
    the surrogate network).
    """
    if explain is None:
        return saliency_map(integrated_gradients(model, images, labels, steps=ig_steps))
    out = tf.convert_to_tensor(explain(model, images, labels))
    if out.shape.rank == 3:
        out = out[..., None]
    if out.shape.rank != 4:
        raise ValueError(f"`explain` must return attributions (N, H, W, C) or maps (N, H, W). Received: a result "
                         f"of shape {tuple(out.shape)}.")
    return saliency_map(tf.cast(out, tf.float32))


def _compiled_maps(model, ig_steps, image_shape, explain=None):
    """(logits, real-model saliency map of the predicted class) for a batch, compiled once."""
    key = ("maps", ig_steps, image_shape) + (() if explain is None else (explain,))
    per_model = _STEPS.setdefault(model, {})
    if key not in per_model:
        @tf.function(input_signature=[_image_spec(*image_shape)])
        def maps(x):
            logits = _checks.check_logits(model(x, training=False))
            pred = tf.argmax(logits, axis=-1, output_type=tf.int32)
            return logits, attribution_map(model, x, pred, ig_steps=ig_steps, explain=explain)

        per_model[key] = maps
    return per_model[key]


def _compiled_step(model, surrogate, method, ig_steps, clip, quantize, image_shape, explain=None):
    """One attack step for a batch of rows, with per-row bookkeeping, compiled once per setting."""
    key = ("step", surrogate, method, ig_steps, clip, quantize, image_shape) + (() if explain is None else (explain,))
    per_model = _STEPS.setdefault(model, {})
    if key in per_model:
        return per_model[key]
    h, w, _ = image_shape
    signature = [
        _image_spec(*image_shape),  # x: clean images
        _image_spec(dtype=tf.int32),  # y: clean predictions
        _image_spec(h, w),  # clean_map
        _image_spec(h, w),  # aux: top-k mask or target region
        _image_spec(2),  # center: clean center of mass
        _image_spec(2, dtype=tf.int64),  # keys: per-row RNG keys
        tf.TensorSpec([], tf.int64),  # step number t ≥ 1
        tf.TensorSpec([], tf.float32),  # epsilon
        tf.TensorSpec([], tf.float32),  # step_size
        _image_spec(*image_shape),  # adv: current iterate
        _image_spec(*image_shape),  # best_adv
        _image_spec(h, w),  # best_map
        _image_spec(),  # best_crit
    ]

    @tf.function(input_signature=signature)
    def step(x, y, clean_map, aux, center, keys, t, epsilon, step_size, adv, best_adv, best_map, best_crit):
        if method == "random_sign":
            direction = random_sign(keys, t, image_shape)
            moved = tf.ones_like(y, tf.bool)
        else:
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(adv)
                smooth = attribution_map(surrogate, adv, y, ig_steps=ig_steps, explain=explain)
                loss = tf.reduce_sum(_loss(method, smooth, aux, center))
            grad = tape.gradient(loss, adv)
            direction = -grad
            moved = tf.reduce_any(tf.not_equal(grad, 0.0), axis=[1, 2, 3])
        adv = project(adv + step_size * tf.sign(direction), x, epsilon, clip, quantize)
        # label check and criterion on the real (ReLU) network (docs/method.md §4.5)
        pred = tf.argmax(model(adv, training=False), axis=-1, output_type=tf.int32)
        adv_map = attribution_map(model, adv, y, ig_steps=ig_steps, explain=explain)
        tau = metrics.kendall_tau(clean_map, adv_map)
        # an undefined τ (constant map) still marks a label-preserving iterate, ranked after any defined τ
        crit = tf.where(tf.equal(pred, y), tf.where(tf.math.is_nan(tau), 2.0, tau), np.inf)
        better = crit < best_crit  # strict: the earliest iterate wins ties
        best_adv = tf.where(better[:, None, None, None], adv, best_adv)
        best_map = tf.where(better[:, None, None], adv_map, best_map)
        best_crit = tf.where(better, crit, best_crit)
        return adv, best_adv, best_map, best_crit, moved

    per_model[key] = step
    return step


@tf.function(input_signature=[tf.TensorSpec([2], tf.int64), _image_spec(dtype=tf.int64),
                              _image_spec(dtype=tf.int64)])
def _row_keys(seed, indices, restarts):
    """Per-row RNG keys from (seed, example index, restart): independent of the batch composition."""
    def fold(pair):
        key = tf.random.experimental.stateless_fold_in(seed, pair[0])
        return tf.cast(tf.random.experimental.stateless_fold_in(key, pair[1]), tf.int64)

    return tf.map_fn(fold, tf.stack([indices, restarts], axis=-1),
                     fn_output_signature=tf.TensorSpec([2], tf.int64))


def _row_uniform(keys, shape):
    """U(−1, 1) noise of `shape` per row, from the row key folded with step 0 (the random start)."""
    def draw(key):
        return tf.random.stateless_uniform(shape, tf.random.experimental.stateless_fold_in(key, 0), -1.0, 1.0)

    return tf.map_fn(draw, keys, fn_output_signature=tf.TensorSpec(shape, tf.float32))


# ---------------------------------------------------------------------------------------------------
# The attack
# ---------------------------------------------------------------------------------------------------

def _activation_floats(model):
    """Floats of activation per input image, summed over layer outputs (a memory estimate)."""
    total = 0
    for layer in getattr(model, "layers", []):
        try:
            outputs = layer.output
        except (AttributeError, ValueError):
            continue
        for out in outputs if isinstance(outputs, (list, tuple)) else [outputs]:
            dims = [d for d in tuple(out.shape)[1:]]
            if all(isinstance(d, int) for d in dims):
                total += int(np.prod(dims))
    return total


@keras.saving.register_keras_serializable(package="attr_robust_tf")
class AttributionAttack:
    """Batched ℓ∞ attribution attack of Ghorbani et al. 2019, with RAR's selection rule and honest scoring.

    Args:
      method: "topk" (move map mass off the clean top-`k_attack` pixels; every reported number in RAR and
        Sarkar et al.), "mass_center" (push the map's center of mass away), "random_sign" (the random
        baseline), or "targeted" (move mass into `region`).
      epsilon: ℓ∞ radius in [0, 1] pixel units (≥ 0).
      step_size: sign-step size a (≥ 0).
      steps: iterations per restart (≥ 1).
      k_attack: size of the attacked top-k set K (docs/method.md §4.6; 200 on MNIST).
      k_eval: k of the reported top-k intersection.
      ig_steps: right-Riemann points m of every IG map (100 in the reference protocol).
      restarts: runs per image; restart 0 starts at x, restarts ≥ 1 at seeded uniform points of the ball.
        The kept iterate over all restarts is the one with the lowest Kendall τ.
      surrogate_beta: β of the default softplus surrogate (1.0 as in RAR; 50 in ART).
      seed: base seed of the random starts and of `random_sign`.
      quantize: e.g. 255 to keep every iterate on the 0–255 grid (reference GTSRB/Flower behaviour,
        docs/method.md §9 quirk 3); None for continuous iterates.
      clip: the valid pixel range (lo, hi).
      region: for "targeted", a target weight map (H, W) or (N, H, W).
      images_per_chunk: images attacked together (all restarts and IG points in one computation per step);
        None derives it from `memory_budget_mb`.
      memory_budget_mb: activation memory one chunk may use (an estimate from the layer output sizes).
      explain: None for the IG map, or any attribution method `explain(model, images, labels) -> maps`
        ((N, H, W, C) attributions or (N, H, W) maps, traceable and differentiable with respect to `images`;
        see `attribution_map` and docs/evaluation.md). It replaces IG everywhere: the clean and attacked maps
        of the real network and the attack direction on the surrogate. Not part of `get_config`.

    Returns (from `__call__(model, images, labels)`): an `AttackResult`.

    Example:
      >>> attack = AttributionAttack("topk", epsilon=0.1, step_size=0.01, steps=3, k_attack=4, k_eval=4,
      ...                            ig_steps=4)  # doctest: +SKIP
      >>> result = attack(model, images, labels)  # doctest: +SKIP

    Reference: Ghorbani, Abid & Zou 2019 (arXiv 1710.10547) §3; Chen et al. 2019 (RAR, arXiv 1905.09957)
    evaluation code `ig_attack.py`; docs/method.md §4 and §9.
    """

    def __init__(self, method="topk", *, epsilon, step_size, steps, k_attack=100, k_eval=100, ig_steps=100,
                 restarts=1, surrogate_beta=1.0, seed=0, quantize=None, clip=(0.0, 1.0), region=None,
                 images_per_chunk=None, memory_budget_mb=1024, explain=None, bounds=None):
        if explain is not None and not callable(explain):
            raise TypeError(f"`explain` must be None or a callable explain(model, images, labels) -> maps. "
                            f"Received: explain={explain!r}.")
        self.explain = explain
        self.method = _checks.lookup("attack method", method, {m: m for m in METHODS})
        if bounds is not None:
            clip = _checks.check_bounds(bounds)
        if not (isinstance(clip, (tuple, list)) and len(clip) == 2 and float(clip[0]) < float(clip[1])):
            raise ValueError(f"`clip` must be a pair (lo, hi) with lo < hi. Received: clip={clip!r}.")
        self.clip = (float(clip[0]), float(clip[1]))
        self.epsilon = _checks.check_nonnegative(epsilon, "epsilon")
        if self.epsilon > self.clip[1] - self.clip[0]:
            warnings.warn(errors.LargeEpsilonWarning(
                f"AR006: `epsilon`={self.epsilon} > hi − lo covers the whole [{self.clip[0]:g}, {self.clip[1]:g}] "
                "pixel range."), stacklevel=2)
        self.step_size = _checks.check_nonnegative(step_size, "step_size")
        self.steps = _checks.check_positive_int(steps, "steps")
        self.k_attack = _checks.check_positive_int(k_attack, "k_attack")
        self.k_eval = _checks.check_positive_int(k_eval, "k_eval")
        self.ig_steps = _checks.check_positive_int(ig_steps, "ig_steps")
        self.restarts = _checks.check_positive_int(restarts, "restarts")
        self.surrogate_beta = _checks.check_nonnegative(surrogate_beta, "surrogate_beta", strict=True)
        self.seed = _checks.check_positive_int(seed, "seed", minimum=0)
        if quantize is not None:
            quantize = _checks.check_positive_int(quantize, "quantize")
        self.quantize = quantize
        if self.method == "targeted" and region is None:
            raise ValueError("`region` must be a target weight map (H, W) or (N, H, W) for method='targeted'. "
                             "Received: region=None.")
        self.region = None if region is None else np.asarray(region, np.float32)
        if images_per_chunk is not None:
            images_per_chunk = _checks.check_positive_int(images_per_chunk, "images_per_chunk")
        self.images_per_chunk = images_per_chunk
        self.memory_budget_mb = _checks.check_nonnegative(memory_budget_mb, "memory_budget_mb", strict=True)

    def get_config(self):
        return {
            "method": self.method, "epsilon": self.epsilon, "step_size": self.step_size, "steps": self.steps,
            "k_attack": self.k_attack, "k_eval": self.k_eval, "ig_steps": self.ig_steps,
            "restarts": self.restarts, "surrogate_beta": self.surrogate_beta, "seed": self.seed,
            "quantize": self.quantize, "clip": list(self.clip),
            "region": None if self.region is None else self.region.tolist(),
            "images_per_chunk": self.images_per_chunk, "memory_budget_mb": self.memory_budget_mb,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def replace(self, **overrides):
        """A copy with some settings changed (the `explain` function is kept unless overridden)."""
        return type(self)(**{**self.get_config(), "explain": self.explain, **overrides})

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "region")
        return f"AttributionAttack({fields})"

    def chunk_images(self, model, image_shape):
        """Images per chunk: `images_per_chunk`, or as many as fit `memory_budget_mb` with all rows."""
        if self.images_per_chunk is not None:
            return self.images_per_chunk
        floats = _activation_floats(model) or 64 * int(np.prod(image_shape))
        # ≈ 8 live copies per path point: surrogate forward, first and second backward, real-model IG
        point_bytes = 8 * 4 * floats
        rows = int(self.memory_budget_mb * 2**20 // (point_bytes * self.ig_steps))
        return max(1, rows // self.restarts)

    def _check_inputs(self, model, images, labels, indices):
        if not isinstance(model, keras.Model) and not callable(model):
            raise ValueError(f"`model` must be a keras.Model returning logits. Received: model={model!r}.")
        images = _checks.check_images(_checks.images_in_bounds(images, self.clip))
        if images.shape[0] is None or None in images.shape[1:]:
            raise ValueError(f"`images` must have a static shape. Received: images.shape={images.shape}.")
        images = tf.cast(images, tf.float32)
        n, h, w, _ = images.shape
        labels = _checks.check_target(labels, n, attributions.num_classes(model, images), name="labels")
        for name in ("k_attack", "k_eval"):
            k = getattr(self, name)
            if k > h * w:
                raise ValueError(
                    f"`{name}` must be at most the number of map pixels H·W = {h}·{w} = {h * w}. "
                    f"Received: {name}={k}.")
        if indices is None:
            indices = np.arange(n, dtype=np.int64)
        indices = np.asarray(indices)
        if indices.shape != (n,) or indices.dtype.kind not in "iu":
            raise ValueError(f"`indices` must be integer example indices of shape ({n},). Received: "
                             f"indices with shape {indices.shape} and dtype {indices.dtype}.")
        region = None
        if self.region is not None:
            region = self.region if self.region.ndim == 3 else np.broadcast_to(self.region, (n,) + self.region.shape)
            if region.shape != (n, h, w):
                raise ValueError(f"`region` must have shape (H, W) = ({h}, {w}) or (N, H, W). Received: "
                                 f"region.shape={self.region.shape}.")
        return images, labels, indices.astype(np.int64), region

    def __call__(self, model, images, labels, *, surrogate=None, indices=None, progress=None):
        """Attacks every image; returns an `AttackResult` (see the class docstring).

        Args:
          model: the real network (logits); a `RobustModel` is unwrapped to its `.model`.
          images: float (N, H, W, C) in `clip`; labels: int (N,) true labels (for `clean_correct`).
          surrogate: the smooth network the attack direction is computed on; default
            `softplus_surrogate(model, beta=surrogate_beta)`. Required for subclassed models.
          indices: (N,) example indices seeding the random starts (default 0..N−1); pass the dataset
            positions so that any batching gives the same result.
          progress: optional callable, called with the number of images finished after each chunk.
        """
        model = unwrap(model)
        images, labels, indices, region = self._check_inputs(model, images, labels, indices)
        if surrogate is None and self.method != "random_sign":
            surrogate = default_surrogate(model, self.surrogate_beta)
        n, h, w, c = images.shape
        image_shape = (h, w, c)
        maps_fn = _compiled_maps(model, self.ig_steps, image_shape, self.explain)
        step_fn = _compiled_step(model, surrogate, self.method, self.ig_steps, self.clip, self.quantize,
                                 image_shape, self.explain)
        chunk = self.chunk_images(model, image_shape)
        parts = []
        zero_gradient = []
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            part, moved = self._attack_chunk(
                maps_fn, step_fn, images[start:stop], labels[start:stop], indices[start:stop],
                None if region is None else region[start:stop])
            parts.append(part)
            zero_gradient.append(moved)
            if progress is not None:
                progress(stop - start)
        if self.method != "random_sign" and self.epsilon > 0 and self.step_size > 0 and n:
            moved = np.concatenate(zero_gradient)
            if not moved.any():
                warnings.warn(errors.ZeroAttackGradientWarning(
                    f"AR003: the attack gradient is exactly zero for all {n} images at the first step, so "
                    "the attack cannot move: the maps are all zero (e.g. black images), or the surrogate's "
                    "map does not depend on the input. Use the default smooth surrogate "
                    "(softplus_surrogate(model)) rather than a ReLU network."), stacklevel=2)
        if not parts:
            empty = np.zeros((0,), np.float32)
            return AttackResult(np.zeros((0,) + image_shape, np.float32), np.zeros((0, h, w), np.float32),
                                np.zeros((0, h, w), np.float32), empty, empty, empty, empty,
                                np.zeros(0, bool), np.zeros(0, bool), np.zeros(0, np.int32),
                                np.zeros(0, np.int32))
        fields = {name: np.concatenate([getattr(p, name) for p in parts]) for name in AttackResult._fields}
        return AttackResult(**fields)

    def _attack_chunk(self, maps_fn, step_fn, x, labels, indices, region):
        n = int(x.shape[0])
        r = self.restarts
        logits, clean_map = maps_fn(x)
        check_logits_not_probabilities(logits.numpy())
        pred = tf.argmax(logits, axis=-1, output_type=tf.int32)
        if self.method == "topk":
            aux = topk_mask(clean_map, self.k_attack)
        elif self.method == "targeted":
            aux = tf.constant(region, tf.float32)
        else:
            aux = tf.zeros_like(clean_map)
        center = mass_center(clean_map)

        # rows are restart-major: row r·n + i is restart r of image i
        def tile(t):
            return tf.tile(t, [r] + [1] * (t.shape.rank - 1))

        x_rows, y_rows, map_rows, aux_rows, center_rows = map(tile, (x, pred, clean_map, aux, center))
        restart_ids = np.repeat(np.arange(r, dtype=np.int64), n)
        keys = _row_keys(tf.constant([self.seed, 0x5EED], tf.int64), np.tile(indices, r), restart_ids)
        adv = x_rows
        if r > 1 and self.epsilon > 0:
            noise = _row_uniform(keys, (x.shape[1], x.shape[2], x.shape[3]))
            start = project(x_rows + self.epsilon * noise, x_rows, self.epsilon, self.clip, self.quantize)
            adv = tf.where((restart_ids > 0)[:, None, None, None], start, x_rows)
        best_adv, best_map = x_rows, map_rows
        best_crit = tf.fill([r * n], np.float32(np.inf))
        eps = tf.constant(self.epsilon, tf.float32)
        size = tf.constant(self.step_size, tf.float32)
        moved_first = None
        for t in range(1, self.steps + 1):
            adv, best_adv, best_map, best_crit, moved = step_fn(
                x_rows, y_rows, map_rows, aux_rows, center_rows, keys, tf.constant(t, tf.int64), eps, size,
                adv, best_adv, best_map, best_crit)
            if moved_first is None:
                moved_first = moved.numpy().reshape(r, n).any(axis=0)

        # worst case over restarts: the lowest criterion; np.argmin keeps the lowest restart on ties
        crit = best_crit.numpy().reshape(r, n)
        pick = np.argmin(crit, axis=0)
        found = np.isfinite(crit[pick, np.arange(n)])
        rows = pick * n + np.arange(n)
        adv_images = tf.gather(best_adv, rows)
        adv_maps = tf.gather(best_map, rows)
        result = AttackResult(
            adversarial_images=adv_images.numpy(),
            clean_maps=clean_map.numpy(),
            adversarial_maps=adv_maps.numpy(),
            topk=metrics.topk_intersection(clean_map, adv_maps, self.k_eval).numpy(),
            kendall=metrics.kendall_tau(clean_map, adv_maps).numpy(),
            spearman=metrics.spearman_rho(clean_map, adv_maps).numpy(),
            center_shift=metrics.center_of_mass_shift(clean_map, adv_maps).numpy(),
            found=found,
            clean_correct=(pred.numpy() == labels.numpy()),
            clean_predictions=pred.numpy().astype(np.int32),
            restart=np.where(found, pick, -1).astype(np.int32),
        )
        return result, moved_first if moved_first is not None else np.zeros(n, bool)

