"""Bad input at every public entry point: one matrix of cases, one clear error each.

Each case runs a public entry point (RobustModel.fit, also under MirroredStrategy; integrated_gradients, saliency,
smoothgrad; AttributionAttack; pgd_linf; evaluate_robustness) on one kind of bad input and expects a ValueError
whose message names the parameter, what was expected and what was received. uint8 images with declared
`bounds=(0, 255)` must work. The oracle is the message text: a case passes only with the named parameter and
the received values in it.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

import attr_robust_tf as art
from attr_robust_tf import models
from attr_robust_tf.protocols import Protocol

N, SHAPE, K = 8, (8, 8, 1), 3
TINY = dict(epsilon=0.1, step_size=0.05, attack_steps=1, ig_steps=2, inner_ig_steps=2)


def _images(seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (N,) + SHAPE).astype("float32")


def _labels():
    return (np.arange(N) % K).astype("int32")


def _bad(kind):
    """(images, labels) of one bad-input kind, or None for the kinds that are about the model or the data."""
    x, y = _images(), _labels()
    if kind == "float255":
        return x * 255.0, y
    if kind == "uint8":
        return (x * 255).astype("uint8"), y
    if kind == "nan":
        x = x.copy()
        x[1, 2, 3, 0] = np.nan
        return x, y
    if kind == "rank":
        return x[..., 0], y
    if kind == "one_hot":
        return x, np.eye(K, dtype="int32")[y]
    if kind == "label_range":
        return x, np.where(y == 2, 7, y).astype("int32")
    raise KeyError(kind)


# kind → the pattern the error must match (parameter, expectation, received)
PATTERNS = {
    "float255": r"must have values in \[0, 1\].*Received: .*min.*max",
    "uint8": r"(must have values in \[0, 1\].*Received: .*min.*max|must be a float tensor.*Received: .*uint8)",
    "nan": r"must be finite.*(Received|NaN)",
    "rank": r"(must have rank 4|shape \(N, H, W, C\)).*Received",
    "one_hot": r"(integer class indices of shape \(N,\)|must have shape \(N,\)).*Received",
    "label_range": r"class indices in \[0, 2\]",
}


def _probabilities_model():
    inputs = keras.Input(SHAPE)
    logits = models.tiny_cnn(SHAPE, K)(inputs)
    return keras.Model(inputs, keras.layers.Softmax()(logits))


def _compiled(model=None, strategy=None, **settings):
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        robust = art.RobustModel(model or models.tiny_cnn(SHAPE, K), "ig_sum_norm", **{**TINY, **settings})
        robust.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                       jit_compile=False)
    return robust


def _fit(images, labels, strategy=None, **settings):
    robust = _compiled(strategy=strategy, **settings)
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(N)
    return robust.fit(ds, epochs=1, verbose=0)


ENTRY_POINTS = {
    "fit": lambda x, y: _fit(x, y),
    "integrated_gradients": lambda x, y: art.integrated_gradients(models.tiny_cnn(SHAPE, K), x, y, steps=2,
                                                                  bounds=(0.0, 1.0)),
    "saliency": lambda x, y: art.saliency(models.tiny_cnn(SHAPE, K), x, y, bounds=(0.0, 1.0)),
    "smoothgrad": lambda x, y: art.smoothgrad(models.tiny_cnn(SHAPE, K), x, y, samples=2, seed=0,
                                              bounds=(0.0, 1.0)),
    "attack": lambda x, y: art.AttributionAttack(epsilon=0.05, step_size=0.02, steps=1, k_attack=8, k_eval=8,
                                                 ig_steps=2)(models.tiny_cnn(SHAPE, K), x, y),
    "pgd_linf": lambda x, y: art.pgd_linf(models.tiny_cnn(SHAPE, K), x, y, epsilon=0.1, step_size=0.05, steps=1),
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("kind", sorted(PATTERNS))
def test_bad_input_raises_a_value_error_naming_it(entry, kind):
    x, y = _bad(kind)
    with pytest.raises(ValueError, match=PATTERNS[kind]):
        ENTRY_POINTS[entry](x, y)


def test_fit_error_is_also_the_tensorflow_error():
    # a ValueError for users, and still the InvalidArgumentError that callers of earlier releases caught
    x, y = _bad("float255")
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"`x` must have values in \[0, 1\]"):
        _fit(x, y)


@pytest.mark.parametrize("kind", sorted(PATTERNS))
def test_fit_under_mirrored_strategy(kind):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    x, y = _bad(kind)
    with pytest.raises(ValueError, match=PATTERNS[kind]):
        _fit(x, y, strategy=strategy)


def test_uint8_with_declared_bounds_works_and_equals_the_float_images():
    x = (_images() * 255).astype("uint8")
    y = _labels()
    history = _fit(x, y, bounds=(0, 255), epsilon=25.5, step_size=12.75)
    assert np.isfinite(history.history["loss"][0])
    model = models.tiny_cnn(SHAPE, K)
    got = art.integrated_gradients(model, x, y, steps=4, bounds=(0, 255))
    want = art.integrated_gradients(model, x.astype("float32"), y, steps=4)
    np.testing.assert_array_equal(got.numpy(), want.numpy())  # cast once, nothing else changes
    adv = art.pgd_linf(model, x, y, epsilon=8.0, step_size=2.0, steps=2, bounds=(0, 255), seed=0)
    assert adv.dtype == tf.float32
    assert float(tf.reduce_max(tf.abs(adv - x.astype("float32")))) <= 8.0 + 1e-4
    assert float(tf.reduce_min(adv)) >= 0.0 and float(tf.reduce_max(adv)) <= 255.0
    attack = art.AttributionAttack(epsilon=8.0, step_size=2.0, steps=1, k_attack=8, k_eval=8, ig_steps=2,
                                   bounds=(0, 255))
    result = attack(model, x, y)
    assert np.max(np.abs(result.adversarial_images - x.astype("float32"))) <= 8.0 + 1e-4


def test_probabilities_model_is_refused_everywhere():
    model = _probabilities_model()
    x, y = _images(), _labels()
    pattern = r"must return logits.*Received: outputs that look like probabilities"
    with pytest.raises(ValueError, match=pattern):
        art.RobustModel(model, "natural")
    with pytest.raises(ValueError, match=pattern):
        art.integrated_gradients(model, x, y, steps=2)
    with pytest.raises(ValueError, match=pattern):
        art.AttributionAttack(epsilon=0.05, step_size=0.02, steps=1, k_attack=8, k_eval=8, ig_steps=2)(model, x, y)


def _protocol(**overrides):
    settings = dict(name="bad", dataset="synthetic", epsilon=0.05, step_size=0.02, steps=1, restarts=1, k_attack=8,
                    k_eval=8, pgd_epsilon=0.1, pgd_step_size=0.05, pgd_steps=1, ig_steps=2, chunk_size=N,
                    bootstrap_samples=10)
    return Protocol(**{**settings, **overrides})


def test_evaluate_robustness_checks_bounds_and_empty_data():
    model = models.tiny_cnn(SHAPE, K)
    x, y = _bad("float255")
    with pytest.raises(ValueError, match=PATTERNS["float255"]):
        art.evaluate_robustness(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(N), _protocol())
    empty = tf.data.Dataset.from_tensor_slices((_images()[:0], _labels()[:0])).batch(N)
    with pytest.raises(ValueError, match=r"`dataset`.*(empty|no images|at least one)"):
        art.evaluate_robustness(model, empty, _protocol())
    ok = tf.data.Dataset.from_tensor_slices(((_images() * 255).astype("uint8"), _labels())).batch(N)
    report = art.evaluate_robustness(model, ok, _protocol(bounds=(0, 255), epsilon=8.0, step_size=2.0,
                                                           pgd_epsilon=8.0, pgd_step_size=2.0))
    assert report.num_images == N


def test_bounds_argument_is_checked():
    with pytest.raises(ValueError, match=r"`bounds` must be a pair \(lo, hi\).*Received: bounds=\(1, 0\)"):
        art.RobustModel(models.tiny_cnn(SHAPE, K), "madry", bounds=(1, 0))
    with pytest.raises(ValueError, match=r"`bounds` must be a pair"):
        art.pgd_linf(models.tiny_cnn(SHAPE, K), _images(), _labels(), epsilon=0.1, step_size=0.05, steps=1,
                     bounds="0-1")


def _empty_inputs(kind):
    """(x, y) holding no image: arrays with no rows, a dataset of cardinality 0, a filtered dataset (unknown)."""
    x, y = _images()[:0], _labels()[:0]
    if kind == "arrays":
        return x, y
    full = tf.data.Dataset.from_tensor_slices((_images(), _labels()))
    if kind == "empty_dataset":
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(N), None
    return full.filter(lambda image, label: label > K).batch(N), None  # unknown cardinality, yields nothing


@pytest.mark.parametrize("mirrored", [False, True])
@pytest.mark.parametrize("kind", ["arrays", "empty_dataset", "filtered_dataset"])
def test_fit_on_data_without_a_batch_raises(kind, mirrored):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]) if mirrored else None
    robust = _compiled(strategy=strategy)
    x, y = _empty_inputs(kind)
    before = [v.numpy().copy() for v in robust.model.trainable_variables]
    with pytest.raises(ValueError, match=r"`x` must .*at least one .*Received: .*(empty|shape=\(0,|none)"):
        robust.fit(x, y, epochs=2, verbose=0)
    for want, variable in zip(before, robust.model.trainable_variables, strict=True):
        np.testing.assert_array_equal(variable.numpy(), want)  # nothing trained


def test_fit_with_no_epochs_to_run_is_not_an_error():
    robust = _compiled()
    ds = tf.data.Dataset.from_tensor_slices((_images(), _labels())).batch(N)
    robust.fit(ds, epochs=1, verbose=0)
    history = robust.fit(ds, epochs=1, initial_epoch=1, verbose=0)  # resumed after its last epoch: nothing to run
    assert history.history == {}


def test_predict_and_call_check_the_bounds_as_fit_does():
    robust = _compiled()
    x = _images()
    expected = robust.model(x, training=False).numpy()
    np.testing.assert_allclose(robust.predict(x, verbose=0), expected, atol=1e-6)
    np.testing.assert_allclose(robust(x).numpy(), expected, atol=1e-6)
    for images in ((x * 255).astype("uint8"), x * 255.0):
        with pytest.raises(ValueError, match=r"`inputs`.*max=2"):
            robust(images)
        with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match=r"`inputs`"):
            robust.predict(images, verbose=0)
    pixels = art.RobustModel(models.tiny_cnn(SHAPE, K), "natural", bounds=(0, 255))
    raw = (x * 255).astype("uint8")
    np.testing.assert_array_equal(pixels(raw).numpy(), pixels.model(raw.astype("float32"), training=False).numpy())
