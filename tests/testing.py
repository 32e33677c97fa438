"""Shared test helpers: a TestCase base and analytic models with closed-form attributions."""
import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized


class TestCase(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(0)


def linear_model(w, b=None, input_shape=None, dtype="float32"):
    """Logits = flatten(x) @ w + b. IG of logit c is exactly (x − x0) ⊙ w[:, c] (reshaped)."""
    w = np.asarray(w, dtype)
    b = np.zeros(w.shape[1], dtype) if b is None else np.asarray(b, dtype)
    input_shape = input_shape or (w.shape[0], 1, 1)
    inp = keras.Input(input_shape, dtype=dtype)
    dense = keras.layers.Dense(w.shape[1], dtype=dtype)
    model = keras.Model(inp, dense(keras.layers.Flatten(dtype=dtype)(inp)))
    dense.set_weights([w, b])
    return model


def quadratic_model(a, input_shape):
    """One logit s(x) = ½ xᵀ A x (flattened x), plus a zero second logit."""
    a = tf.constant(np.asarray(a, "float32"))

    class Quadratic(keras.Model):
        def call(self, x):
            v = tf.reshape(x, [tf.shape(x)[0], -1])
            s = 0.5 * tf.reduce_sum(v * tf.matmul(v, a), axis=-1, keepdims=True)
            return tf.concat([s, tf.zeros_like(s)], axis=-1)

    model = Quadratic()
    model(tf.zeros((1,) + tuple(input_shape)))
    return model


def softplus_mlp(input_shape=(4, 4, 1), hidden=8, classes=3, seed=0, dtype="float32"):
    """A smooth MLP (softplus hidden layer) for completeness and finite-difference tests."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input(input_shape, dtype=dtype)
    h = keras.layers.Flatten(dtype=dtype)(inp)
    h = keras.layers.Dense(hidden, activation="softplus", dtype=dtype)(h)
    return keras.Model(inp, keras.layers.Dense(classes, dtype=dtype)(h))


def small_cnn(input_shape=(8, 8, 1), classes=3, activation="softplus", seed=0, dtype="float32"):
    """A tiny conv net (smooth by default) for completeness tests."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input(input_shape, dtype=dtype)
    h = keras.layers.Conv2D(4, 3, padding="same", activation=activation, dtype=dtype)(inp)
    h = keras.layers.AveragePooling2D(2, dtype=dtype)(h)
    h = keras.layers.Flatten(dtype=dtype)(h)
    h = keras.layers.Dense(8, activation=activation, dtype=dtype)(h)
    return keras.Model(inp, keras.layers.Dense(classes, dtype=dtype)(h))
