"""The scalar that is attributed: `fn(logits (N, K), target (N,)) -> (N,)` (docs/method.md §2.4)."""
import tensorflow as tf

from attr_robust_tf import _checks


def _take(values, target):
    # values (N, K), target (N,) -> (N,)
    return tf.gather(values, tf.cast(target, tf.int32), axis=1, batch_dims=1)


def _tensor(logits):
    # NumPy or list logits work too; float64 stays float64
    return tf.convert_to_tensor(logits)


def logit(logits, target):
    """f_y(z): evaluation maps and the attribution attack (RAR, Sarkar, Ghorbani)."""
    return _take(_tensor(logits), target)


def probability(logits, target):
    """p_y(z): Sarkar et al. 2021 B (code eq 7) and A_T."""
    return _take(tf.nn.softmax(_tensor(logits), axis=-1), target)


def log_probability(logits, target):
    """log p_y(z) via log_softmax: Sarkar et al. 2021 ΔA (code eq 8)."""
    return _take(tf.nn.log_softmax(_tensor(logits), axis=-1), target)


def cross_entropy(logits, target):
    """−log p_y(z): RAR's IG-NORM / IG-SUM-NORM loss (stable log_softmax, docs/method.md §9 quirk 6)."""
    return -log_probability(logits, target)


def _other_mask(logits, target):
    # (N, K) boolean mask that is False only at the target class
    k = tf.shape(logits)[-1]
    return tf.logical_not(tf.cast(tf.one_hot(tf.cast(target, tf.int32), k), tf.bool))


def strongest_other_probability(logits, target):
    """p_n(z), n = argmax_{c≠y} p_c(z), re-selected per input (Sarkar et al. 2021 A_N)."""
    logits = _tensor(logits)
    probs = tf.nn.softmax(logits, axis=-1)
    return tf.reduce_max(tf.where(_other_mask(logits, target), probs, tf.zeros_like(probs) - 1.0), axis=-1)


def strongest_other_logit(logits, target):
    """max_{c≠y} f_c(z): ART's negative-class gradient (Singh et al. 2020)."""
    logits = _tensor(logits)
    lowest = tf.fill(tf.shape(logits), tf.cast(logits.dtype.min, logits.dtype))
    return tf.reduce_max(tf.where(_other_mask(logits, target), logits, lowest), axis=-1)


SCORES = {
    "logit": logit,
    "probability": probability,
    "log_probability": log_probability,
    "cross_entropy": cross_entropy,
    "strongest_other_probability": strongest_other_probability,
    "strongest_other_logit": strongest_other_logit,
}


def get(score):
    """Returns the score function for a name (or a callable unchanged)."""
    if callable(score):
        return score
    return _checks.lookup("score", score, SCORES)
