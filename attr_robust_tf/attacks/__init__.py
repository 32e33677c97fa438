"""Attacks: ℓ∞ PGD, the training-time inner attack, the attribution attack of Ghorbani et al., and ensembles."""
from attr_robust_tf.attacks.attribution import AttackResult, AttributionAttack
from attr_robust_tf.attacks.ensemble import AttackEnsemble, EnsembleResult
from attr_robust_tf.attacks.inner import InnerAttack
from attr_robust_tf.attacks.pgd import pgd_linf, project, uniform_start

__all__ = ["AttackEnsemble", "AttackResult", "AttributionAttack", "EnsembleResult", "InnerAttack", "pgd_linf", "project",
           "uniform_start"]
