"""The training objectives as rows of data (docs/method.md §7.9, docs/conventions.md §1 rule 13).

Every objective has one shape:

    L(θ) = task_loss(f(x_task), y) + Σ_r λ_r · reduce(R_r(x, x′, y)),   x′ = stop_gradient(argmax J(x′))

A row names the inner maximisation J (weighted terms of `attacks.inner.TERMS`), which input the task loss sees
(`x` or `x′`), the penalties R_r (`penalties.REGULARIZERS`) and its default settings (a `RobustSettings`).
`RobustModel` reads rows only; registering a new objective (`register`) needs no change to its `train_step`.

Row defaults are the RAR MNIST values (`RobustSettings()`, docs/method.md §8.2: ε 0.3, 40 PGD steps of 0.01,
m = 50 outer and m′ = 10 inner IG points; λ 1.0 for IG-NORM and β 0.1 for IG-SUM-NORM); Sarkar et al. 2021
keeps its own IG points (m = 20, m′ = 5) and weights (0.1), ART its own step count, k and surrogate β
(docs/method.md §7.7).
"""
import dataclasses
import types

import tensorflow as tf

from attr_robust_tf import _checks
from attr_robust_tf import penalties as penalties_lib
from attr_robust_tf import settings as settings_lib
from attr_robust_tf.attacks import inner as inner_lib

__all__ = ["Objective", "OBJECTIVES", "register", "get", "names"]

TASK_INPUTS = ("clean", "adv")


@dataclasses.dataclass(frozen=True, init=False)
class Objective:
    """One training method.

    Attributes:
      name: registry key.
      task_input: "clean" (task loss on x) or "adv" (on the inner attack's x′).
      inner: inner-attack terms → weight. A number is a fixed weight; a string names the regularizer whose
        weight variable the term shares (IG-SUM-NORM uses one β inside and outside), so scheduling that
        weight also moves the attack. Empty: no inner attack.
      start: the inner attack's random start ("uniform", "normal" or "none").
      regularizers: names of the penalty terms (keys of `penalties.REGULARIZERS`).
      weights: default weight of each regularizer.
      settings: the row's default `RobustSettings`. The constructor also takes its fields as keywords
        (`Objective("x", ig_steps=20)`), and `row.ig_steps` etc. read them.
      reference: where the formula comes from.
      regularizer_args: regularizer name → extra constructor settings of that penalty (e.g. {"cacr":
        {"temperature": "std"}}); the term keeps its name, weight and metric.
    """

    name: str
    task_input: str = "clean"
    inner: types.MappingProxyType = dataclasses.field(default_factory=dict)
    start: str = "uniform"
    regularizers: tuple = ()
    weights: types.MappingProxyType = dataclasses.field(default_factory=dict)
    settings: settings_lib.RobustSettings = settings_lib.RobustSettings()
    reference: str = ""
    regularizer_args: types.MappingProxyType = dataclasses.field(default_factory=dict)

    def __init__(self, name, task_input="clean", inner=None, start="uniform", regularizers=(), weights=None, *,
                 settings=None, reference="", regularizer_args=None, **defaults):
        base = settings or settings_lib.RobustSettings()
        if isinstance(base, dict):
            base = settings_lib.RobustSettings().replace(**base)
        # freeze the mappings so a registered row cannot change under a traced step
        for key, value in (("name", name), ("task_input", task_input),
                           ("inner", types.MappingProxyType(dict(inner or {}))), ("start", start),
                           ("regularizers", tuple(regularizers)),
                           ("weights", types.MappingProxyType(dict(weights or {}))),
                           ("settings", base.replace(**defaults)), ("reference", reference),
                           ("regularizer_args", types.MappingProxyType(
                               {k: types.MappingProxyType(dict(v)) for k, v in (regularizer_args or {}).items()}))):
            object.__setattr__(self, key, value)
        self._validate()

    def _validate(self):
        if self.task_input not in TASK_INPUTS:
            _checks.did_you_mean("task_input", self.task_input, TASK_INPUTS)
        if self.start not in inner_lib.STARTS:
            _checks.did_you_mean("start", self.start, inner_lib.STARTS)
        for term, weight in self.inner.items():
            _checks.lookup("inner-attack term", term, inner_lib.TERMS)
            if isinstance(weight, str) and weight not in self.regularizers:
                raise ValueError(
                    f"`inner[{term!r}]` must be a number or the name of one of this row's regularizers "
                    f"{list(self.regularizers)}. Received: {weight!r}.")
        for name in self.regularizers:
            penalties_lib.get(name)
            if name not in self.weights:
                raise ValueError(f"`weights` must give a default for every regularizer. Missing: {name!r}.")
            if penalties_lib.get(name).requires_adv and not self.inner:
                raise ValueError(
                    f"Regularizer {name!r} needs the perturbed input x′, but objective {self.name!r} has no "
                    "inner attack. Give the row an `inner` objective.")
        for name, args in self.regularizer_args.items():
            if name not in self.regularizers:
                raise ValueError(f"`regularizer_args` must name regularizers of this row {list(self.regularizers)}. "
                                 f"Received: {name!r}.")
            penalties_lib.get(name)(**args)  # unknown settings or bad values fail here, at registration
        if self.task_input == "adv" and not self.inner:
            raise ValueError(f"`task_input='adv'` needs an inner attack. Received: inner={dict(self.inner)}.")

    def __getattr__(self, name):
        # row.epsilon, row.ig_steps, ...: the row's default settings
        if name in settings_lib.names() and "settings" in self.__dict__:
            return getattr(self.__dict__["settings"], name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def has_inner_attack(self):
        return bool(self.inner)

    @property
    def uses(self):
        """The `RobustSettings` fields this row reads, in field order (declared by the attack, terms, penalties)."""
        used = {"loss_reduction"}
        if self.inner:
            used.update(inner_lib.InnerAttack.uses)
            for term in self.inner:
                used.update(inner_lib.TERM_USES.get(term, ()))
            if any(self._untied(term) for term in self.inner):
                used.add("inner_weight")
        for name in self.regularizers:
            used.update(penalties_lib.get(name).uses)
        return tuple(name for name in settings_lib.names() if name in used)

    def _untied(self, term):
        """True for an attribution term mixed with other terms whose fixed weight `inner_weight` replaces."""
        return term != "cross_entropy" and len(self.inner) > 1 and not isinstance(self.inner[term], str)

    def resolve(self, **overrides):
        """The row's default settings with `overrides` replaced (`None`: the default), validated.

        An objective with an inner attack needs ε > 0 and a > 0; the other checks are `RobustSettings`'.
        """
        if self.inner:
            for name in ("epsilon", "step_size"):
                if overrides.get(name) is not None:
                    _checks.check_nonnegative(overrides[name], name, strict=True)
        resolved = self.settings.replace(**overrides)
        if self.inner:
            for name in ("epsilon", "step_size"):
                _checks.check_nonnegative(getattr(resolved, name), name, strict=True)
        return resolved

    def inner_weights(self, settings):
        """Inner term → weight under `settings`: a number, or the name of the regularizer weight it shares.

        `settings.inner_weight` (if given) replaces the weight of every attribution term that is mixed with
        cross-entropy; a single-term attack ignores it (sign steps do not see the scale).
        """
        mixed = settings.inner_weight is not None and len(self.inner) > 1
        return {term: settings.inner_weight if mixed and term != "cross_entropy" else weight
                for term, weight in self.inner.items()}

    def adversary(self, model, images, labels, *, attack=None, surrogate=None, seed=None, inner_weights=None):
        """x′ = stop_gradient(InnerAttack(x, y)) (Danskin), or None for a row without an inner attack."""
        if attack is None:
            return None
        return tf.stop_gradient(attack(model, images, labels, seed=seed, surrogate=surrogate, weights=inner_weights))

    def terms(self, model, images, labels, *, attack=None, regularizers=None, surrogate=None, seed=None,
              inner_weights=None, adv_images=None):
        """The objective's per-example pieces for one batch.

        Args:
          model: the network (logits).
          images, labels: the clean batch, (N, H, W, C) and int32 (N,).
          attack: the `InnerAttack` built from this row (None if the row has none).
          regularizers: dict name → penalty instance.
          surrogate: smooth copy of `model` sharing its weights, or None.
          seed: stateless seed (2,) of the inner attack's random start.
          inner_weights: optional dict inner term → scalar tensor overriding the attack's term weights.
          adv_images: x′ already computed by `adversary` (e.g. with the training tape paused); None runs it here.

        Returns:
          (x_task, adv_images, {name: (N,) penalty}); adv_images is a constant (Danskin) or None.
        """
        adv = adv_images
        if adv is None:
            adv = self.adversary(model, images, labels, attack=attack, surrogate=surrogate, seed=seed,
                                 inner_weights=inner_weights)
        x_task = adv if self.task_input == "adv" else images
        penalties = {}
        for name, reg in (regularizers or {}).items():
            reg_model = surrogate if reg.uses_surrogate and surrogate is not None else model
            # attribution passes in inference mode: no BatchNorm coupling of path points (docs/conventions.md §12.10)
            penalties[name] = reg(reg_model, images, labels, adv_images=adv, training=False)
        return x_task, adv, penalties


OBJECTIVES = {}


def register(objective, *, overwrite=False):
    """Adds an `Objective` row to the registry and returns it."""
    if not isinstance(objective, Objective):
        raise TypeError(f"`objective` must be an Objective. Received: {type(objective).__name__}.")
    if objective.name in OBJECTIVES and not overwrite:
        raise ValueError(
            f"Objective {objective.name!r} is already registered. Pass overwrite=True to replace it.")
    OBJECTIVES[objective.name] = objective
    return objective


def get(name):
    """The registered row `name` (an `Objective` is returned unchanged); did-you-mean error otherwise."""
    if isinstance(name, Objective):
        return name
    return _checks.lookup("objective", name, OBJECTIVES)


def names():
    return sorted(OBJECTIVES)


register(Objective(
    "natural",
    reference="Cross-entropy on clean inputs (docs/method.md §7.2).",
))
register(Objective(
    "madry",
    task_input="adv",
    inner={"cross_entropy": 1.0},
    reference="PGD adversarial training, Madry et al. 2018 (arXiv 1706.06083) eq. 2.8; docs/method.md §7.3.",
))
register(Objective(
    "trades",
    inner={"trades_kl": 1.0},
    start="normal",  # x + 0.001·N(0, I), TRADES `trades.py`
    regularizers=("trades_kl",),
    weights={"trades_kl": 1.0},  # β = 1/λ; 1.0 is the MNIST script default (docs/method.md §7.4)
    reference="TRADES, Zhang et al. 2019 (arXiv 1901.08573) eq. 5; docs/method.md §7.4.",
))
register(Objective(
    "ig_norm",
    inner={"ig_norm": 1.0},  # sign steps: the scale of a single term is irrelevant
    regularizers=("ig_norm",),
    weights={"ig_norm": 1.0},  # λ, RAR MNIST/FMNIST config
    reference="IG-NORM, Chen et al. 2019 (RAR, arXiv 1905.09957), objective 'ar' / inner 'ar_approx'; "
              "docs/method.md §7.5.",
))
register(Objective(
    "ig_sum_norm",
    task_input="adv",
    inner={"cross_entropy": 1.0, "ig_norm": "ig_norm"},  # the same β inside and outside
    regularizers=("ig_norm",),
    weights={"ig_norm": 0.1},  # β, RAR MNIST/FMNIST config
    reference="IG-SUM-NORM, Chen et al. 2019 (RAR), objective 'adv_ar' / inner 'adv_ar_approx'; "
              "docs/method.md §7.6.",
))
register(Objective(
    "art",
    task_input="adv",
    inner={"art": 1.0},
    regularizers=("art",),
    weights={"art": 0.5},  # ART `cifar_robust_train.py`
    attack_steps=3,  # ART: 3 steps of 5/255 at ε = 8/255; the step keeps ART's ratio a/ε = 5/8
    step_size=0.1875,
    surrogate_beta=50.0,  # softplus β = 50 branch for the gradients (docs/method.md §4.2)
    top_k=1000,
    reference="ART, Singh et al. 2020 (ECCV), `cifar_robust_train.py`, `loss_art.py`; docs/method.md §7.7.",
))
register(Objective(
    "sarkar2021",
    task_input="adv",
    inner={"cross_entropy": 1.0, "ig_norm": 0.1},  # IG-SUM-NORM inner objective with λ = 0.1
    regularizers=("cacr", "wacr"),
    weights={"cacr": 0.1, "wacr": 0.1},  # one λ = 0.1 for both in the released code
    ig_steps=20,  # m = 20 for B, ΔA, A_T, A_N
    inner_ig_steps=5,  # k ∈ {4, 8, 12, 16, 20} of m = 20
    reference="Sarkar et al. 2021 (arXiv 2012.14395), `Flower/model.py`, `train_our.py`; docs/method.md §7.8.",
))
register(Objective(
    "igr",
    task_input="adv",  # as IG-SUM-NORM, whose inner attack the row uses [ours, docs/igr.md]
    inner={"cross_entropy": 1.0, "ig_norm": 0.1},  # IG-SUM-NORM inner objective CE + β‖IG^ℓ(x, x′)‖₁ [ours]
    regularizers=("igr",),
    weights={"igr": 1.0},  # λ [ours]: the penalty 1 − cos lies in [0, 2], on the per-example scale of CE
    reference="IGR, Wang & Kong 2022 (NeurIPS, arXiv 2205.07279), abstract: maximise cos(IG(x), IG(x′)); "
              "inner attack, task input and λ chosen (docs/igr.md).",
))
register(Objective(
    "sarkar2021_scaled",
    task_input="adv",
    inner={"cross_entropy": 1.0, "ig_norm": 0.1},
    regularizers=("cacr", "wacr"),
    weights={"cacr": 0.1, "wacr": 0.1},
    ig_steps=20,
    inner_ig_steps=5,
    regularizer_args={"cacr": {"temperature": "std"}},  # softmax(a / std(a)): unit-variance maps
    reference="`sarkar2021` with CACR on per-map standardised attributions: the faithful KL(U ‖ softmax(a)) ≈ "
              "½·Var(a) ≈ 1e-7 barely reaches the weights (docs/objectives.md, 'Scale-aware CACR').",
))
