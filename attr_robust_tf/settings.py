"""`RobustSettings`: every robust-training setting in one frozen, validated object.

Design. One dataclass holds the settings of the inner attack, the IG quadratures, the surrogate, the reduction
and the seed. It is validated once, in `__post_init__`; everything downstream reads the validated object.

- Each objective row (`objectives.Objective`) carries its defaults as a `RobustSettings` (`row.settings`) and
  derives the settings it uses (`row.uses`) from its terms: the inner attack and each term or penalty declare
  which fields they read, next to the code that reads them.
- `RobustModel(model, objective, weights=..., **overrides)` is `row.resolve(**overrides)`: the row's defaults
  with the given fields replaced (`None` keeps the row default). `RobustModel.get_config()` is
  `dataclasses.asdict(settings)` plus the objective name, the weights and the model, so the field names are the
  saved keys (unchanged from earlier releases: old `.keras` files load).
- The config layer builds its `robust` block from `names()` and `row.uses`.

A new setting is added in two places: its field here (with its check in `__post_init__`) and the code that
reads it (which lists it in its `uses`).
"""
import dataclasses

import numpy as np

from attr_robust_tf import _checks, attributions

__all__ = ["RobustSettings", "names", "REDUCTIONS"]

REDUCTIONS = ("mean", "sum")


@dataclasses.dataclass(frozen=True)
class RobustSettings:
    """The settings of robust training (defaults: the RAR MNIST values, Chen et al. 2019).

    Attributes:
      loss_reduction: "mean" (Σ/global batch, `tf.nn.compute_average_loss`) or "sum" (the reference code's
        batch sum; compile the task loss with `reduction="sum"` too).
      epsilon, step_size, attack_steps: inner ℓ∞ PGD radius ε, sign-step size a and number of steps K.
      random_start: start the inner attack from the row's random point (False: from x).
      ig_steps: outer IG points m; inner_ig_steps: inner IG points m′ (RAR's m / approx_factor).
      ig_method: quadrature rule of every IG in the objective (reference: "riemann_right").
      ig_batch_size: at most this many path points per forward pass (None: all at once).
      inner_weight: weight of the inner attack's attribution term when it is mixed with cross-entropy (None:
        the row's own weight; for a term that shares a regularizer weight, a number unties it).
      surrogate_beta: β of the softplus surrogate through which the inner attack (and ART's gradients)
        differentiate; 0 disables it.
      top_k: size of ART's inner top-k mask (None: min(1000, H·W·C)).
      seed: the inner random start at step t uses the stateless seed (seed, t), t = `optimizer.iterations`.
      bounds: (lo, hi), the valid pixel range (Foolbox/ART convention, default (0, 1)). Every batch is checked
        against it, every projection and random start uses it, and ε and step sizes are in its units.
    """

    loss_reduction: str = "mean"
    epsilon: float = 0.3
    step_size: float = 0.01
    attack_steps: int = 40
    random_start: bool = True
    ig_steps: int = 50
    inner_ig_steps: int = 10
    ig_method: str = "riemann_right"
    ig_batch_size: int = None
    inner_weight: float = None
    surrogate_beta: float = 0.0
    top_k: int = None
    seed: int = 0
    bounds: tuple = (0.0, 1.0)

    def __post_init__(self):
        if self.loss_reduction not in REDUCTIONS:
            _checks.did_you_mean("loss_reduction", self.loss_reduction, REDUCTIONS)
        if not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool):
            raise ValueError(f"`seed` must be an integer. Received: seed={self.seed!r}.")
        beta = self.surrogate_beta
        values = dict(
            epsilon=_checks.check_nonnegative(self.epsilon, "epsilon"),
            step_size=_checks.check_nonnegative(self.step_size, "step_size"),
            attack_steps=_checks.check_positive_int(self.attack_steps, "attack_steps", minimum=0),
            random_start=bool(self.random_start),
            ig_steps=_checks.check_positive_int(self.ig_steps, "ig_steps"),
            inner_ig_steps=_checks.check_positive_int(self.inner_ig_steps, "inner_ig_steps"),
            ig_batch_size=(None if self.ig_batch_size is None
                           else _checks.check_positive_int(self.ig_batch_size, "ig_batch_size")),
            inner_weight=(None if self.inner_weight is None
                          else _checks.check_nonnegative(self.inner_weight, "inner_weight")),
            # 0, False and None all mean "no surrogate"
            surrogate_beta=(0.0 if beta is None or (not isinstance(beta, str) and beta == 0)
                            else _checks.check_nonnegative(beta, "surrogate_beta", strict=True)),
            top_k=None if self.top_k is None else _checks.check_positive_int(self.top_k, "top_k"),
            seed=int(self.seed),
            bounds=_checks.check_bounds(self.bounds),
        )
        attributions.quadrature(self.ig_method, values["ig_steps"])  # a did-you-mean error for an unknown rule
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def replace(self, **overrides):
        """A copy with `overrides` replaced (validated); `None` keeps the current value; did-you-mean on typos."""
        for name in overrides:
            if name not in _NAMES:
                _checks.did_you_mean("robust setting", name, _NAMES)
        changes = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self, **changes) if changes else self

    def asdict(self):
        """dict field → value, in field order (the keys of `RobustModel.get_config()`)."""
        return dataclasses.asdict(self)

    @staticmethod
    def names():
        return _NAMES


_NAMES = tuple(f.name for f in dataclasses.fields(RobustSettings))


def names():
    """The field names of `RobustSettings`, in order."""
    return _NAMES
