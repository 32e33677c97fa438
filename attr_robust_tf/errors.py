"""Warnings of attr_robust_tf, each with a code documented in docs/warnings.md.

Emitted: AR001, AR003, AR006. Reserved (declared so the codes stay stable, never emitted): AR002, AR004, AR005.
"""


class AttrRobustWarning(UserWarning):
    """Base class of every warning this package emits."""

    code = "AR000"


class TrainingModeWarning(AttrRobustWarning):
    """AR001: attributions or evaluation requested with training=True."""

    code = "AR001"


class ProbabilityOutputWarning(AttrRobustWarning):
    """AR002, reserved: outputs that look like probabilities raise a ValueError instead (every score would be wrong)."""

    code = "AR002"


class ZeroAttackGradientWarning(AttrRobustWarning):
    """AR003: the attack gradient is zero (ReLU network attacked without a smooth surrogate)."""

    code = "AR003"


class CompletenessWarning(AttrRobustWarning):
    """AR004, reserved (not emitted): the IG completeness gap is large (too few steps)."""

    code = "AR004"


class NoLabelPreservingIterateWarning(AttrRobustWarning):
    """AR005, reserved: images without a label-preserving iterate are counted in every report instead."""

    code = "AR005"


class LargeEpsilonWarning(AttrRobustWarning):
    """AR006: ε > 1 with images in [0, 1]."""

    code = "AR006"
