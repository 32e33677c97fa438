"""Evaluation protocol presets: the attribution attack, PGD and image selection of each dataset.

`<dataset>:reference` are the settings of the RAR / Sarkar evaluation code (docs/method.md §4.6 for the attack,
§5 for PGD, §6 for the metrics). `<dataset>:cpu` keep ε, the step sizes and k but shrink what dominates the
cost (IG points, iterations, restarts, images) so that a 2-core CPU finishes in minutes; `<dataset>:medium`
(MNIST, Fashion-MNIST) are the cpu presets with 1,000 images and 3 restarts; each preset's
`note` says what it shrinks and why. `tiny` is for tests and smoke runs.
"""
import dataclasses

from attr_robust_tf import _checks

FAILED_ATTACK = ("exclude", "reference")
# the members of `<dataset>:cpu_ensemble` and of `tools/evaluate.py --ensemble`
DEFAULT_ENSEMBLE = ("topk", "mass_center", "random_sign")
LENS_WINDOW = 3  # attr_robust_tf.metrics.LENS_WINDOW (not imported here: metrics imports TensorFlow)
# fields added after the first results were published: `to_dict` leaves them out at their default, so a
# protocol that does not use them has the same dict (and the same cached chunks and cells) as before
_OPTIONAL_FIELDS = {"ensemble": None, "lens_window": LENS_WINDOW, "bounds": (0.0, 1.0)}


@dataclasses.dataclass(frozen=True)
class Protocol:
    """One evaluation protocol (all pixel quantities in [0, 1] units, docs/method.md §1).

    Attributes:
      name: the preset name, e.g. "fmnist:cpu".
      dataset, split: what `attr_robust_tf.data.load` reads ("mnist", "fashion_mnist", "gtsrb", "flower17").
      num_images: evaluate the first `num_images` images of the split from `offset` (None: all).
      offset: index of the first image (also seeds the restarts: see `AttributionAttack`).
      method, epsilon, step_size, steps, restarts, k_attack, k_eval, ig_steps, surrogate_beta, quantize:
        the attribution attack (docs/method.md §4).
      pgd_epsilon, pgd_step_size, pgd_steps: PGD on pure cross-entropy for adversarial accuracy (§5).
      failed_attack: "exclude" (default: images without a label-preserving iterate are left out of the means
        and counted) or "reference" (they score (1, 1, 1) as in the reference code, docs/method.md §9 quirk 1).
        Both summaries are always computed; this picks the headline.
      bootstrap_samples: resamples of the 95 % percentile bootstrap interval of each mean.
      chunk_size: images per saved chunk (the unit of resuming).
      seed: seeds the restarts, PGD's random start and the bootstrap.
      note: what the preset changes relative to the reference, and why.
      ensemble: None (one attack, `method`), or attack methods ("topk", "mass_center", "random_sign") run as
        an `AttackEnsemble`: per image and metric the worst label-preserving result over the members, each
        with this protocol's settings. Left out of `to_dict` when None.
      bounds: (lo, hi), the pixel range of the model's inputs; ε and step sizes are in its units. Left out of
        `to_dict` at its default (0, 1).
      lens_window: side of the square neighbourhood of the LENS metrics (reported next to IN/τ/ρ, computed
        from the stored maps; 3 as in Kamath et al. 2024). Left out of `to_dict` at its default 3.
    """

    name: str
    dataset: str
    epsilon: float
    step_size: float
    steps: int
    restarts: int
    k_attack: int
    k_eval: int
    pgd_epsilon: float
    pgd_step_size: float
    pgd_steps: int
    ig_steps: int = 100
    num_images: int = None
    offset: int = 0
    split: str = "test"
    method: str = "topk"
    surrogate_beta: float = 1.0
    quantize: int = None
    failed_attack: str = "exclude"
    bootstrap_samples: int = 1000
    chunk_size: int = 100
    seed: int = 0
    note: str = ""
    ensemble: tuple = None
    lens_window: int = LENS_WINDOW
    bounds: tuple = (0.0, 1.0)

    def __post_init__(self):
        for name in ("steps", "restarts", "k_attack", "k_eval", "ig_steps", "pgd_steps", "chunk_size"):
            _checks.check_positive_int(getattr(self, name), f"protocol.{name}",
                                       minimum=0 if name == "pgd_steps" else 1)
        for name in ("epsilon", "step_size", "pgd_epsilon", "pgd_step_size"):
            _checks.check_nonnegative(getattr(self, name), f"protocol.{name}")
        _checks.check_positive_int(self.offset, "protocol.offset", minimum=0)
        _checks.check_positive_int(self.bootstrap_samples, "protocol.bootstrap_samples", minimum=0)
        if self.num_images is not None:
            _checks.check_positive_int(self.num_images, "protocol.num_images")
        if self.quantize is not None:
            _checks.check_positive_int(self.quantize, "protocol.quantize")
        if self.failed_attack not in FAILED_ATTACK:
            _checks.did_you_mean("protocol.failed_attack", self.failed_attack, FAILED_ATTACK)
        if self.ensemble is not None:
            members = (self.ensemble,) if isinstance(self.ensemble, str) else self.ensemble
            if not isinstance(members, (tuple, list)) or not members:
                raise ValueError("`protocol.ensemble` must be None or a non-empty tuple of attack methods, e.g. "
                                 f"{DEFAULT_ENSEMBLE}. Received: ensemble={self.ensemble!r}.")
            for m in members:
                _checks.lookup("ensemble member", m, {k: k for k in ("topk", "mass_center", "random_sign")})
            object.__setattr__(self, "ensemble", tuple(members))  # frozen: lists from JSON become tuples
        object.__setattr__(self, "bounds", _checks.check_bounds(self.bounds, "protocol.bounds"))
        window = _checks.check_positive_int(self.lens_window, "protocol.lens_window")
        if window % 2 == 0:
            raise ValueError(f"`protocol.lens_window` must be odd (1, 3, 5, ...). Received: lens_window={window}.")

    def attack(self, **overrides):
        """The `AttributionAttack` of this protocol (keyword arguments override its settings)."""
        from attr_robust_tf.attacks.attribution import AttributionAttack

        settings = dict(method=self.method, epsilon=self.epsilon, step_size=self.step_size, steps=self.steps,
                        k_attack=self.k_attack, k_eval=self.k_eval, ig_steps=self.ig_steps,
                        restarts=self.restarts, surrogate_beta=self.surrogate_beta, seed=self.seed,
                        quantize=self.quantize, bounds=self.bounds)
        settings.update(overrides)
        if self.ensemble is not None:
            from attr_robust_tf.attacks.ensemble import AttackEnsemble

            settings.pop("method")
            return AttackEnsemble(self.ensemble, lens_window=self.lens_window, **settings)
        return AttributionAttack(**settings)

    def to_dict(self):
        """The settings as a dict; `ensemble` and `lens_window` only when they differ from their default."""
        data = dataclasses.asdict(self)
        for name, default in _OPTIONAL_FIELDS.items():
            if data[name] == default:
                del data[name]
        return data

    def replace(self, **overrides):
        """A copy with some fields changed; unknown fields raise a did-you-mean ValueError."""
        fields = {f.name for f in dataclasses.fields(self)}
        for key in overrides:
            if key not in fields:
                _checks.did_you_mean("protocol field", key, fields)
        return dataclasses.replace(self, **overrides)


# Reference settings: RAR configs (docs/method.md §4.6, §5); ε and steps of GTSRB/Flower divided by 255.
_MNIST = dict(dataset="mnist", epsilon=0.3, step_size=0.01, steps=100, restarts=3, k_attack=200, k_eval=100,
              pgd_epsilon=0.3, pgd_step_size=0.01, pgd_steps=40)
_FMNIST = dict(dataset="fashion_mnist", epsilon=0.1, step_size=0.01, steps=100, restarts=3, k_attack=100,
               k_eval=100, pgd_epsilon=0.1, pgd_step_size=0.01, pgd_steps=20)
_GTSRB = dict(dataset="gtsrb", epsilon=8 / 255, step_size=1 / 255, steps=50, restarts=3, k_attack=100,
              k_eval=100, pgd_epsilon=8 / 255, pgd_step_size=2 / 255, pgd_steps=7,
              quantize=255)  # the reference casts iterates to int32 on 0–255 (docs/method.md §9 quirk 3)
_FLOWER = dict(dataset="flower17", epsilon=8 / 255, step_size=1 / 255, steps=100, restarts=3, k_attack=1000,
               k_eval=1000, pgd_epsilon=8 / 255, pgd_step_size=2 / 255, pgd_steps=7, quantize=255)

_REFERENCE_NOTE = ("Reference settings (RAR/Sarkar evaluation code, docs/method.md §4.6, §5): {what}. Honest scoring "
                   "(docs/method.md §9): failed attacks excluded and counted, random restarts, stable ties.")

PRESETS = {
    "mnist:reference": Protocol(
        name="mnist:reference", num_images=10000, **_MNIST,
        note=_REFERENCE_NOTE.format(what="all 10,000 test images, 100 iterations × 3 runs, 100 IG points; "
                                         "about 40 s per image on 2 CPU cores (docs/method.md §11.3)")),
    "mnist:cpu": Protocol(
        name="mnist:cpu", **{**_MNIST, "steps": 40, "restarts": 1}, ig_steps=20, num_images=200,
        note="CPU shrink of mnist:reference: first 200 test images (not 10,000), 40 iterations (not 100; "
             "30 sign steps of 0.01 already reach ε = 0.3), 1 run (not 3), 20 IG points (not 100) in every "
             "map. ε, step, k_attack = 200, k_eval = 100 and PGD are unchanged. About 1/300 of the cost."),
    "fmnist:reference": Protocol(
        name="fmnist:reference", num_images=10000, **_FMNIST,
        note=_REFERENCE_NOTE.format(what="all 10,000 test images, 100 iterations × 3 runs, 100 IG points")),
    "fmnist:cpu": Protocol(
        name="fmnist:cpu", **{**_FMNIST, "steps": 20, "restarts": 1}, ig_steps=20, num_images=200,
        note="CPU shrink of fmnist:reference: first 200 test images (not 10,000), 20 iterations (not 100; "
             "10 sign steps of 0.01 already reach ε = 0.1), 1 run (not 3), 20 IG points (not 100) in every "
             "map. ε, step, k = 100 and PGD are unchanged. About 1/600 of the cost."),
    "mnist:medium": Protocol(
        name="mnist:medium", **{**_MNIST, "steps": 40}, ig_steps=20, num_images=1000,
        note="Medium shrink of mnist:reference: first 1,000 test images (not 10,000), 40 iterations (not 100) "
             "× 3 runs (restart 0 from x, the others from random points), 20 IG points (not 100). ε, step, "
             "k_attack = 200, k_eval = 100 and PGD are unchanged."),
    "fmnist:medium": Protocol(
        name="fmnist:medium", **{**_FMNIST, "steps": 20}, ig_steps=20, num_images=1000,
        note="Medium shrink of fmnist:reference: first 1,000 test images (not 10,000), 20 iterations (not 100) "
             "× 3 runs (restart 0 from x, the others from random points), 20 IG points (not 100). ε, step, "
             "k = 100 and PGD are unchanged."),
    "gtsrb:reference": Protocol(
        name="gtsrb:reference", num_images=12630, **_GTSRB,
        note=_REFERENCE_NOTE.format(what="all 12,630 test images, 50 iterations × 3 runs, 100 IG points, "
                                         "iterates on the 0–255 grid")),
    "gtsrb:cpu": Protocol(
        name="gtsrb:cpu", **{**_GTSRB, "steps": 20, "restarts": 1}, ig_steps=20, num_images=100,
        note="CPU shrink of gtsrb:reference: first 100 test images (not 12,630), 20 iterations (not 50; 8 "
             "steps of 1/255 reach ε = 8/255), 1 run (not 3), 20 IG points (not 100). ε, step, k, the 0–255 "
             "grid and PGD are unchanged."),
    "flower17:reference": Protocol(
        name="flower17:reference", num_images=136, **_FLOWER,
        note=_REFERENCE_NOTE.format(what="all 136 test images, 100 iterations × 3 runs, 100 IG points, "
                                         "k = 1,000 of 16,384 pixels; GPU work in practice (docs/method.md §11.3)")),
    "flower17:cpu": Protocol(
        name="flower17:cpu", **{**_FLOWER, "steps": 10, "restarts": 1}, ig_steps=10, num_images=17,
        chunk_size=4,
        note="CPU shrink of flower17:reference: first 17 test images (not 136), 10 iterations (not 100; 8 "
             "steps of 1/255 reach ε = 8/255), 1 run (not 3), 10 IG points (not 100) on 128×128 maps. ε, "
             "step, k = 1,000, the 0–255 grid and PGD are unchanged. A smoke test, not a result."),
    "tiny": Protocol(
        name="tiny", dataset="fashion_mnist", epsilon=0.1, step_size=0.02, steps=3, restarts=2, k_attack=20,
        k_eval=20, pgd_epsilon=0.1, pgd_step_size=0.02, pgd_steps=3, ig_steps=4, num_images=8,
        bootstrap_samples=200, chunk_size=4,
        note="Smoke-test protocol for tests and CI: 8 Fashion-MNIST test images, 3 iterations × 2 runs, 4 IG "
             "points, k = 20, 3 PGD steps. Exercises every code path in seconds; its numbers mean nothing."),
}

for _name in ("mnist", "fmnist", "gtsrb", "flower17"):
    _cpu = PRESETS[f"{_name}:cpu"]
    PRESETS[f"{_name}:cpu_ensemble"] = _cpu.replace(
        name=f"{_name}:cpu_ensemble", ensemble=DEFAULT_ENSEMBLE,
        note=f"{_name}:cpu with the worst case over an attack ensemble ({', '.join(DEFAULT_ENSEMBLE)}, each with "
             f"the settings of {_name}:cpu): per image and metric the lowest label-preserving result over the "
             "members (the largest center shift). About 3× the cost of the cpu preset.")

ALIASES = {"fashion_mnist": "fmnist", "flower": "flower17", "flowers17": "flower17"}


def get_protocol(name, **overrides):
    """The preset `name` ("mnist:reference", "fmnist:cpu", "gtsrb:cpu", "tiny", ...) with field overrides.

    A `Protocol` is returned unchanged (with the overrides applied). Unknown names and fields raise a
    did-you-mean ValueError.

    Example:
      >>> get_protocol("fmnist:cpu", num_images=50).num_images
      50
    """
    if isinstance(name, Protocol):
        protocol = name
    else:
        if isinstance(name, str) and ":" in name:
            head, tail = name.split(":", 1)
            name = f"{ALIASES.get(head, head)}:{tail}"
        protocol = _checks.lookup("protocol", name, PRESETS)
    return protocol.replace(**overrides) if overrides else protocol


def parse_overrides(items):
    """["restarts=1", "epsilon=0.05", "quantize=None"] → {"restarts": 1, "epsilon": 0.05, "quantize": None}.

    Values are Python literals where they parse as one (numbers, None, True), else strings.
    """
    import ast

    out = {}
    for item in items:
        key, sep, text = str(item).partition("=")
        if not sep or not key.strip():
            raise ValueError(f"A protocol override must look like field=value. Received: {item!r}.")
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            value = text.strip()
        out[key.strip()] = value
    return out
