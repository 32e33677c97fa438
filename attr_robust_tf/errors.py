"""Warnings of attr_robust_tf, each with a code documented in docs/warnings.md.

Emitted: AR001, AR003, AR006. Reserved (declared so the codes stay stable, never emitted): AR002, AR004, AR005.
`InputValueError` is the error of a failed in-graph data check.
"""
import re

import tensorflow as tf


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


class InputValueError(ValueError, tf.errors.InvalidArgumentError):
    """A batch failed a data check inside a compiled step (values out of the declared bounds, NaN, a label out
    of range): a ValueError for callers of `fit`/`evaluate`, and still the InvalidArgumentError TensorFlow raised."""

    def __init__(self, message, cause=None):
        tf.errors.InvalidArgumentError.__init__(self, getattr(cause, "node_def", None), getattr(cause, "op", None),
                                                message)


# the messages of the package's in-graph data checks start like this (`_checks`, `RobustModel`)
_CHECK_PREFIXES = ("`x`", "`y`", "`images`", "The input batch")
_ASSERTION = "assertion failed: ["


def input_value_error(error):
    """`error` (a tf.errors.InvalidArgumentError) as an `InputValueError` if one of the package's data checks
    raised it, with the check's message and the received values on one line; None otherwise."""
    text = getattr(error, "message", "") or str(error)
    if _ASSERTION in text:  # tf.debugging.Assert: "assertion failed: [message] [value] [value]..."
        parts = text[text.index(_ASSERTION) + len(_ASSERTION):].split("\n")[0].split("] [")
        message = " ".join([parts[0]] + [p.strip("[] ") for p in parts[1:] if p.strip("[] ")])
    else:  # tf.debugging.check_numerics: "message : Tensor had NaN values"
        starts = [text.find(p) for p in _CHECK_PREFIXES if p in text]
        message = text[min(starts):].split("\n")[0] if starts else ""
    if not message.startswith(_CHECK_PREFIXES):
        return None
    return InputValueError(message, error)
