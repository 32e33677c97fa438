"""Warnings of attr_robust_tf, each with a code documented in docs/warnings.md."""


class AttrRobustWarning(UserWarning):
    """Base class of every warning this package emits."""

    code = "AR000"


class TrainingModeWarning(AttrRobustWarning):
    """AR001: attributions or evaluation requested with training=True."""

    code = "AR001"


class ProbabilityOutputWarning(AttrRobustWarning):
    """AR002: the model outputs look like probabilities where logits are required."""

    code = "AR002"


class ZeroAttackGradientWarning(AttrRobustWarning):
    """AR003: the attack gradient is zero (ReLU network attacked without a smooth surrogate)."""

    code = "AR003"


class CompletenessWarning(AttrRobustWarning):
    """AR004: the IG completeness gap is large (too few steps)."""

    code = "AR004"


class NoLabelPreservingIterateWarning(AttrRobustWarning):
    """AR005: the attack found no label-preserving iterate for some examples."""

    code = "AR005"


class LargeEpsilonWarning(AttrRobustWarning):
    """AR006: ε > 1 with images in [0, 1]."""

    code = "AR006"
