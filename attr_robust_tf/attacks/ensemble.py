"""Worst case over an ensemble of attribution attacks, per image and per metric.

Adversarial-robustness evaluation became trustworthy once the worst case over several attacks with restarts
was reported (Croce & Hein 2020, "AutoAttack", arXiv 2003.01690); attribution robustness is usually reported
per attack (Ghorbani et al. 2019, arXiv 1710.10547). `AttackEnsemble` runs every member attack on every image
and keeps, for each metric separately, the worst result among the members' label-preserving iterates:
the lowest top-k intersection, Kendall τ, Spearman ρ and LENS metric, and the largest center-of-mass shift.
An image counts as failed only when no member found a label-preserving iterate (honest scoring, docs/method.md §9).
"""
from typing import NamedTuple

import numpy as np

from attr_robust_tf import metrics
from attr_robust_tf.attacks.attribution import AttributionAttack

ATTACK_METRICS = ("topk", "kendall", "spearman", "center_shift")
LENS_METRICS = ("lens_topk", "lens_topk_precision", "lens_topk_div", "lens_kendall", "lens_spearman")
HIGHER_IS_WORSE = ("center_shift",)


class EnsembleResult(NamedTuple):
    """An `AttackResult` (the same fields first, NumPy arrays with first axis N) plus the ensemble's record.

    adversarial_images, adversarial_maps, restart: those of the member that won on Kendall's τ (the attack's
      own criterion); the other metrics may come from other members (see `winners`).
    topk, kendall, spearman, center_shift, lens_*: per image the worst value over the members that found a
      label-preserving iterate (the LENS metrics with k = the members' `k_eval` and the ensemble's window).
    found: some member found a label-preserving iterate.
    winners: {metric: (N,) int32} index into `members` of the member whose value was kept, −1 where no
      member found an iterate. Ties go to the earlier member.
    members: the members' names (their `method`, numbered when repeated).
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
    lens_topk: np.ndarray
    lens_topk_precision: np.ndarray
    lens_topk_div: np.ndarray
    lens_kendall: np.ndarray
    lens_spearman: np.ndarray
    winners: dict
    members: tuple

    def win_counts(self):
        """{metric: {member name: images it won}} over the images some member attacked successfully."""
        return {m: {name: int(np.sum(w == i)) for i, name in enumerate(self.members)}
                for m, w in self.winners.items()}


def member_names(methods):
    """Member names from their methods, numbered when repeated: ("topk", "topk") -> ("topk", "topk#2")."""
    names, seen = [], {}
    for m in methods:
        seen[m] = seen.get(m, 0) + 1
        names.append(m if seen[m] == 1 else f"{m}#{seen[m]}")
    return tuple(names)


class AttackEnsemble:
    """Runs several `AttributionAttack`s and keeps, per image and metric, the worst label-preserving result.

    Args:
      members: attack methods ("topk", "mass_center", "random_sign") built with `settings`, and/or
        `AttributionAttack` instances used as they are. All must share `k_eval`, `ig_steps` and `explain`,
        so that their clean maps and metrics are comparable.
      restarts: if given, every member runs with this many restarts (instances are copied).
      lens_window: window of the LENS metrics computed per member (`metrics.LENS_WINDOW`).
      explain: attribution function for members built from names (see `AttributionAttack`).
      **settings: `AttributionAttack` arguments for the members given by name (epsilon, step_size, ...).

    Returns (from `__call__(model, images, labels, *, surrogate=None, indices=None, progress=None)`): an
    `EnsembleResult`, which `evaluate_robustness` accepts wherever it accepts an `AttackResult`.

    Members see the same `indices`, so each one's random starts are those of running it alone: the ensemble's
    metric is the minimum over separately run members (tests/test_ensemble.py).

    Example:
      >>> ensemble = AttackEnsemble(["topk", "mass_center", "random_sign"], restarts=2, epsilon=0.1,
      ...                           step_size=0.01, steps=20, k_attack=100, k_eval=100)  # doctest: +SKIP
      >>> result = ensemble(model, images, labels)  # doctest: +SKIP
      >>> result.win_counts()["kendall"]  # doctest: +SKIP
    """

    def __init__(self, members, *, restarts=None, lens_window=metrics.LENS_WINDOW, explain=None, **settings):
        if isinstance(members, (str, AttributionAttack)) or not members:
            raise ValueError("`members` must be a non-empty list of attack methods or AttributionAttack instances. "
                             f"Received: members={members!r}.")
        attacks = []
        for m in members:
            if isinstance(m, AttributionAttack):
                attacks.append(m if restarts is None else m.replace(restarts=restarts))
            elif isinstance(m, str):
                extra = {} if restarts is None else {"restarts": restarts}
                attacks.append(AttributionAttack(m, explain=explain, **settings, **extra))
            else:
                raise TypeError(f"`members` must hold attack methods (str) or AttributionAttack instances. "
                                f"Received: {m!r}.")
        for name in ("k_eval", "ig_steps", "explain"):
            values = {id(getattr(a, name)) if name == "explain" else getattr(a, name) for a in attacks}
            if len(values) > 1:
                raise ValueError(f"Every member of `members` must have the same `{name}` (their maps and metrics "
                                 f"are compared). Received: {[getattr(a, name) for a in attacks]}.")
        self.members = tuple(attacks)
        self.names = member_names([a.method for a in attacks])
        self.lens_window = metrics._check_window(lens_window, 1, 1)
        self.k_eval = attacks[0].k_eval
        self.method = "ensemble"

    def __repr__(self):
        return f"AttackEnsemble({list(self.names)}, lens_window={self.lens_window})"

    def __call__(self, model, images, labels, *, surrogate=None, indices=None, progress=None):
        last = len(self.members) - 1
        results = [a(model, images, labels, surrogate=surrogate, indices=indices,
                     progress=progress if i == last else None) for i, a in enumerate(self.members)]
        return combine(results, self.names, k=self.k_eval, window=self.lens_window)


def combine(results, names, *, k, window=metrics.LENS_WINDOW):
    """The per-image, per-metric worst case over member `AttackResult`s of the same images (an `EnsembleResult`)."""
    first = results[0]
    n = len(first.found)
    found = np.stack([r.found for r in results])  # (M, N)
    values = {m: np.stack([np.asarray(getattr(r, m), np.float64) for r in results]) for m in ATTACK_METRICS}
    if n:
        lens = [metrics.lens_metrics(r.clean_maps, r.adversarial_maps, k, window) for r in results]
    else:
        lens = [{m: np.zeros(0, np.float32) for m in LENS_METRICS} for _ in results]
    values.update({m: np.stack([np.asarray(x[m], np.float64) for x in lens]) for m in LENS_METRICS})
    columns = np.arange(n)
    any_found = found.any(axis=0)
    first_found = np.argmax(found, axis=0)  # the first member with an iterate (0 when none)
    kept, winners = {}, {}
    for name, v in values.items():
        key = -v if name in HIGHER_IS_WORSE else v
        key = np.where(found & np.isfinite(key), key, np.inf)
        best = np.argmin(key, axis=0)  # the earliest member on ties
        best = np.where(np.isfinite(key[best, columns]), best, first_found)  # all undefined: first found
        kept[name] = v[best, columns].astype(np.float32)
        winners[name] = np.where(any_found, best, -1).astype(np.int32)
    pick = np.maximum(winners["kendall"], 0)
    stacked = lambda field: np.stack([getattr(r, field) for r in results])  # noqa: E731
    return EnsembleResult(
        adversarial_images=stacked("adversarial_images")[pick, columns],
        clean_maps=first.clean_maps,
        adversarial_maps=stacked("adversarial_maps")[pick, columns],
        found=any_found,
        clean_correct=first.clean_correct,
        clean_predictions=first.clean_predictions,
        restart=stacked("restart")[pick, columns],
        winners=winners,
        members=tuple(names),
        **kept,
    )


__all__ = ["AttackEnsemble", "EnsembleResult", "combine"]
