"""Attacks: ℓ∞ PGD, the training-time inner attack, and the attribution attack of Ghorbani et al."""
from attr_robust_tf.attacks.pgd import pgd_linf, project, uniform_start
from attr_robust_tf.attacks.inner import InnerAttack  # noqa: F401
from attr_robust_tf.attacks.attribution import AttackResult, AttributionAttack  # noqa: F401

__all__ = ["pgd_linf", "project", "uniform_start"]
