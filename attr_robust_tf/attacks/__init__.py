"""Attacks: ℓ∞ PGD, the training-time inner attack, and the attribution attack of Ghorbani et al."""
from attr_robust_tf.attacks.attribution import AttackResult, AttributionAttack
from attr_robust_tf.attacks.inner import InnerAttack
from attr_robust_tf.attacks.pgd import pgd_linf, project, uniform_start

__all__ = ["AttackResult", "AttributionAttack", "InnerAttack", "pgd_linf", "project", "uniform_start"]
