"""Regularizers against closed forms: a ReLU MLP has piecewise-constant input Jacobians, so every IG term is a
finite sum written in NumPy (float64); parameter gradients against central finite differences."""
import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from attr_robust_tf import attributions, regularizers
import testing

SHAPE = (4, 4, 2)  # two channels, so the channel sums of CACR are exercised
D = int(np.prod(SHAPE))
HIDDEN, K = 10, 4


def _mlp(seed=0, dtype="float64", scale=1.0):
    rng = np.random.default_rng(seed)
    params = [scale * rng.normal(0, 0.6, (D, HIDDEN)), rng.normal(0, 0.3, HIDDEN),
              scale * rng.normal(0, 0.6, (HIDDEN, K)), rng.normal(0, 0.3, K)]
    inp = keras.Input(SHAPE, dtype=dtype)
    h = keras.layers.Dense(HIDDEN, activation="relu", dtype=dtype)(keras.layers.Flatten(dtype=dtype)(inp))
    model = keras.Model(inp, keras.layers.Dense(K, dtype=dtype)(h))
    model.set_weights([p.astype(dtype) for p in params])
    return model, params


class NumpyMLP:
    """f(z) = relu(z W1 + b1) W2 + b2 with its exact input Jacobian A(z) = (W1 diag(1[pre > 0]) W2)ᵀ."""

    def __init__(self, params):
        self.w1, self.b1, self.w2, self.b2 = params

    def logits(self, z):
        return np.maximum(z @ self.w1 + self.b1, 0) @ self.w2 + self.b2

    def jacobian(self, z):  # (K, D)
        mask = (z @ self.w1 + self.b1 > 0).astype(float)
        return ((self.w1 * mask) @ self.w2).T

    def probs(self, z):
        f = self.logits(z)
        e = np.exp(f - f.max())
        return e / e.sum()

    def grad(self, z, y, score):
        """∇_z s(z) for one flattened input z (D,)."""
        p, a, f = self.probs(z), self.jacobian(z), self.logits(z)
        e_y = np.eye(K)[y]
        others = [c for c in range(K) if c != y]
        if score == "logit":
            return a.T @ e_y
        if score == "probability":
            return a.T @ (p[y] * (e_y - p))
        if score == "log_probability":
            return a.T @ (e_y - p)
        if score == "cross_entropy":
            return a.T @ (p - e_y)
        if score == "strongest_other_probability":
            n = others[int(np.argmax(p[others]))]
            return a.T @ (p[n] * (np.eye(K)[n] - p))
        if score == "strongest_other_logit":
            n = others[int(np.argmax(f[others]))]
            return a.T @ np.eye(K)[n]
        raise ValueError(score)

    def ig(self, x, y, score, m, baseline=None):
        """Right-Riemann IG, (x − x₀) ⊙ (1/m) Σ_k ∇s(x₀ + (k/m)(x − x₀))."""
        x0 = np.zeros_like(x) if baseline is None else baseline
        g = sum(self.grad(x0 + k / m * (x - x0), y, score) for k in range(1, m + 1)) / m
        return (x - x0) * g


def _cos(u, v, eps=1e-8):
    return u @ v / np.sqrt((u @ u) * (v @ v) + eps ** 2)


def _kl_uniform(a):
    # naive float64: Σ_p U_p log(U_p / P_p), P = softmax(a)
    p = np.exp(a - a.max())
    p /= p.sum()
    u = 1.0 / a.size
    return np.sum(u * np.log(u / p))


def numpy_penalty(name, net, x, y, adv, m):
    """Per-example penalty of regularizer `name` for flattened x, x′ (N, D)."""
    out = []
    for xi, yi, ai in zip(x, y, adv):
        if name == "ig_norm":
            out.append(np.abs(net.ig(ai, yi, "cross_entropy", m, baseline=xi)).sum())
        elif name == "trades_kl":
            p, q = net.probs(xi), net.probs(ai)
            out.append(np.sum(p * (np.log(p) - np.log(q))))
        elif name == "cacr":
            a_t = net.ig(ai, yi, "probability", m).reshape(SHAPE).sum(-1)
            a_n = net.ig(ai, yi, "strongest_other_probability", m).reshape(SHAPE).sum(-1)
            out.append(_kl_uniform(a_n.ravel()) - _kl_uniform(a_t.ravel()))
        elif name == "wacr":
            b = net.ig(xi, yi, "probability", m)
            da = net.ig(ai, yi, "log_probability", m, baseline=xi)
            out.append(np.where(np.sign(b) == np.sign(da), b * da, np.abs(da)).sum())
        elif name == "art":
            rows = [xi, ai]
            pos = [net.grad(r, yi, "logit") for r in rows]
            neg = [net.grad(r, yi, "strongest_other_logit") for r in rows]
            total = 0.0
            for r in rows:
                d_ap = max(1 - _cos(r, g) for g in pos)
                d_an = min(1 - _cos(r, g) for g in neg)
                total += np.log1p(np.exp(d_ap - d_an))
            out.append(0.5 * total)
        elif name == "input_gradient_norm":
            out.append(np.sum(net.grad(xi, yi, "cross_entropy") ** 2))
        elif name == "igr":
            out.append(1 - _cos(net.ig(xi, yi, "logit", m), net.ig(ai, yi, "logit", m)))
    return np.array(out)


def _batch(seed=1, n=3, eps=0.2):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.05, 0.95, (n,) + SHAPE)
    adv = np.clip(x + rng.uniform(-eps, eps, x.shape), 0, 1)
    y = rng.integers(0, K, n).astype("int32")
    return x, y, adv


NAMES = ["ig_norm", "trades_kl", "cacr", "wacr", "art", "input_gradient_norm", "igr"]


class RegularizersTest(testing.TestCase):
    @parameterized.parameters(*NAMES)
    def test_per_example_values_match_numpy_closed_form(self, name):
        model, params = _mlp()
        net = NumpyMLP(params)
        x, y, adv = _batch()
        reg = regularizers.build(name, steps=5)
        got = reg(model, tf.constant(x), tf.constant(y), adv_images=tf.constant(adv))
        self.assertEqual(tuple(got.shape), (3,))
        expected = numpy_penalty(name, net, x.reshape(3, -1), y, adv.reshape(3, -1), 5)
        self.assertAllClose(got, expected, rtol=1e-9, atol=1e-12)

    @parameterized.parameters("ig_norm", "cacr", "wacr", "art")
    def test_parameter_gradient_is_nonzero_and_matches_finite_differences(self, name):
        # ReLU net: input-Hessian 0, but ∂(∇ₓs)/∂θ ≠ 0, so attribution penalties train θ (docs/method.md §2.5)
        model, _ = _mlp(seed=2)
        x, y, adv = (tf.constant(v) for v in _batch(seed=3))
        reg = regularizers.build(name, steps=4)
        weights = model.trainable_variables
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(reg(model, x, y, adv_images=adv))
        grads = tape.gradient(value, weights)
        first_layer = grads[0]
        self.assertIsNotNone(first_layer)
        self.assertGreater(float(tf.reduce_max(tf.abs(first_layer))), 1e-6)
        rng = np.random.default_rng(4)
        direction = [rng.normal(size=w.shape) for w in weights]
        analytic = sum(float(tf.reduce_sum(g * d)) for g, d in zip(grads, direction) if g is not None)
        base = [w.numpy() for w in weights]
        h = 1e-6
        values = []
        for sign in (1, -1):
            for w, b, d in zip(weights, base, direction):
                w.assign(b + sign * h * d)
            values.append(float(tf.reduce_sum(reg(model, x, y, adv_images=adv))))
        for w, b in zip(weights, base):
            w.assign(b)
        numeric = (values[0] - values[1]) / (2 * h)
        self.assertAllClose(analytic, numeric, rtol=1e-5, atol=1e-9)

    def test_input_gradient_norm_closed_form_gradient(self):
        # linear model: ∇ₓ f_y = w_y, so ‖∇ₓ f_y‖² = ‖w_y‖² and its gradient with respect to w_y is 2·w_y
        w = np.random.default_rng(5).normal(size=(6, 3))
        model = testing.linear_model(w, dtype="float64")
        x = tf.constant(np.random.default_rng(6).uniform(size=(2, 6, 1, 1)))
        y = tf.constant([2, 2])
        reg = regularizers.InputGradientNorm(p=2, score="logit")
        with tf.GradientTape() as tape:
            value = reg(model, x, y)
            total = tf.reduce_sum(value)
        self.assertAllClose(value, [np.sum(w[:, 2] ** 2)] * 2)
        grad = tape.gradient(total, model.trainable_variables[0])
        expected = np.zeros_like(w)
        expected[:, 2] = 2 * 2 * w[:, 2]  # two identical examples
        self.assertAllClose(grad, expected)

    def test_cacr_float32_is_accurate_for_small_attributions(self):
        # KL(U‖P) ≈ ½Var(a) ≪ float32 resolution of logsumexp(a) ≈ log(H·W): the stable form keeps ~6 digits
        model64, params = _mlp(seed=7, scale=0.05)
        model32, _ = _mlp(seed=7, dtype="float32", scale=0.05)
        x, y, adv = _batch(seed=8)
        expected = numpy_penalty("cacr", NumpyMLP(params), x.reshape(3, -1), y, adv.reshape(3, -1), 5)
        self.assertLess(np.abs(expected).max(), 1e-4)
        got = regularizers.CACR(steps=5)(model32, tf.constant(x, tf.float32), y,
                                         adv_images=tf.constant(adv, tf.float32))
        self.assertAllClose(got, expected, rtol=2e-3, atol=0)

    def test_kl_uniform_softmax_large_and_small(self):
        rng = np.random.default_rng(9)
        for scale in (1e-4, 1.0, 60.0):  # the last one takes the logsumexp branch
            a = scale * rng.normal(size=(2, 5, 5))
            got = regularizers.kl_uniform_softmax(tf.constant(a))
            self.assertAllClose(got, [_kl_uniform(r.ravel()) for r in a], rtol=1e-9, atol=1e-15)
            with tf.GradientTape() as tape:
                t = tf.constant(a)
                tape.watch(t)
                value = tf.reduce_sum(regularizers.kl_uniform_softmax(t))
            self.assertTrue(np.all(np.isfinite(tape.gradient(value, t))))

    def test_wacr_sign_rule(self):
        # sgn(0) = 0: B = 0 with ΔA ≠ 0 is a mismatch (|ΔA|); matching signs give B·ΔA ≥ 0
        model, params = _mlp(seed=10)
        x, y, adv = _batch(seed=11)
        x[0, :2] = 0.0  # zero pixels: B = 0 there (zero baseline)
        value = regularizers.WACR(steps=3)(model, tf.constant(x), y, adv_images=tf.constant(adv))
        expected = numpy_penalty("wacr", NumpyMLP(params), x.reshape(3, -1), y, adv.reshape(3, -1), 3)
        self.assertAllClose(value, expected)
        self.assertTrue(np.all(value.numpy() >= 0))

    def test_registry_build_and_config_round_trip(self):
        self.assertEqual(sorted(regularizers.REGULARIZERS), sorted(NAMES))
        reg = regularizers.build("cacr", steps=7, method="riemann_middle", batch_size=None, p=2, weight=0.3)
        self.assertEqual((reg.steps, reg.method, reg.weight, reg.name), (7, "riemann_middle", 0.3, "cacr"))
        self.assertEqual(regularizers.build("trades_kl", steps=7).get_config(),
                         {"weight": 1.0, "name": "trades_kl"})
        for name in NAMES:
            reg = regularizers.build(name, steps=3)
            restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(reg))
            self.assertIsInstance(restored, type(reg))
            self.assertEqual(restored.get_config(), reg.get_config())
        self.assertTrue(all(regularizers.get(n).requires_adv for n in NAMES if n != "input_gradient_norm"))
        self.assertTrue(regularizers.ARTAlignment.uses_surrogate)

    def test_bad_input(self):
        with self.assertRaisesRegex(ValueError, "Unknown regularizer 'ig_nrom'. Did you mean 'ig_norm'"):
            regularizers.get("ig_nrom")
        with self.assertRaisesRegex(ValueError, "`weight` must be a finite number >= 0. Received: weight=-1"):
            regularizers.IGNorm(weight=-1)
        with self.assertRaisesRegex(ValueError, "`steps` must be an integer >= 1. Received: steps=0"):
            regularizers.CACR(steps=0)
        with self.assertRaisesRegex(ValueError, "Unknown method 'riemann'"):
            regularizers.WACR(method="riemann")
        with self.assertRaisesRegex(ValueError, "`p` must be 1 or 2"):
            regularizers.InputGradientNorm(p=3)
        model, _ = _mlp()
        x, y, _ = _batch()
        with self.assertRaisesRegex(ValueError,
                                    "`adv_images` must be given.*'wacr'.*Received: adv_images=None"):
            regularizers.WACR(steps=2)(model, x, y)


def _numpy_scale(a, temperature):
    """The per-map scale s of `CACR(temperature=...)` in float64: 1, τ, pixel std (population) or mean |a|."""
    if temperature is None:
        return 1.0
    if temperature == "std":
        return max(np.std(a), 1e-12)
    if temperature == "l1":
        return max(np.mean(np.abs(a)), 1e-12)
    return float(temperature)


def numpy_cacr(net, x, y, adv, m, temperature, scales=None):
    """Per-example scaled CACR for flattened x′ (N, D) and the scales used; `scales` freezes them (stop-gradient)."""
    out, used = [], []
    for i, (yi, ai) in enumerate(zip(y, adv)):
        a_t = net.ig(ai, yi, "probability", m).reshape(SHAPE).sum(-1).ravel()
        a_n = net.ig(ai, yi, "strongest_other_probability", m).reshape(SHAPE).sum(-1).ravel()
        s_t, s_n = scales[i] if scales is not None else (_numpy_scale(a_t, temperature), _numpy_scale(a_n, temperature))
        out.append(_kl_uniform(a_n / s_n) - _kl_uniform(a_t / s_t))
        used.append((s_t, s_n))
    return np.array(out), used


class _ScaledMapCACR(regularizers.CACR):
    """CACR whose attribution maps are multiplied by a constant c > 0 (every IG it computes is c·IG)."""

    def __init__(self, c, **kwargs):
        super().__init__(**kwargs)
        self.c = c

    def __call__(self, *args, **kwargs):
        from attr_robust_tf import terms

        plain = terms._ig  # every IG of the loss term (terms.cacr), multiplied by c for this call
        terms._ig = lambda *a, **k: self.c * plain(*a, **k)
        try:
            return super().__call__(*args, **kwargs)
        finally:
            terms._ig = plain


class CACRTemperatureTest(testing.TestCase):
    def test_kl_of_scaled_maps_matches_float64_closed_form(self):
        rng = np.random.default_rng(20)
        a = rng.normal(size=(3, 5, 5)) * np.array([1e-4, 1.0, 30.0])[:, None, None]
        a[1, 0, 0] = 9.0  # a peaked map: KL of the unit-variance map well above ½
        for temperature in ("std", "l1", 0.5):
            got = regularizers.kl_uniform_softmax(regularizers.scale_map(tf.constant(a), temperature))
            expected = [_kl_uniform(r.ravel() / _numpy_scale(r.ravel(), temperature)) for r in a]
            self.assertAllClose(got, expected, rtol=1e-9, atol=1e-15)
        z = regularizers.scale_map(tf.constant(a), "std").numpy().reshape(3, -1)
        self.assertAllClose(np.std(z, axis=-1), [1.0] * 3)
        # a unit-variance Gaussian map: KL(U ‖ softmax(z)) ≈ ½ (the log-normal mean), whatever the raw scale
        big = rng.normal(size=(1, 200, 200)) * 1e-3
        kl = float(regularizers.kl_uniform_softmax(regularizers.scale_map(tf.constant(big), "std"))[0])
        self.assertAllClose(kl, 0.5, atol=0.02)
        self.assertAllClose(regularizers.scale_map(tf.zeros((1, 3, 3), tf.float64), "std"), np.zeros((1, 3, 3)))

    @parameterized.parameters(None, 0.5, "std", "l1")
    def test_values_match_numpy_closed_form(self, temperature):
        model, params = _mlp()
        x, y, adv = _batch()
        got = regularizers.CACR(steps=5, temperature=temperature)(
            model, tf.constant(x), tf.constant(y), adv_images=tf.constant(adv))
        expected, _ = numpy_cacr(NumpyMLP(params), x.reshape(3, -1), y, adv.reshape(3, -1), 5, temperature)
        self.assertAllClose(got, expected, rtol=1e-9, atol=1e-12)

    def test_faithful_default_is_unchanged(self):
        # temperature=None is the released formula: KL(U‖softmax(a_N)) − KL(U‖softmax(a_T)) on the raw maps
        model, _ = _mlp(seed=21)
        x, y, adv = (tf.constant(v) for v in _batch(seed=22))
        self.assertIsNone(regularizers.CACR().temperature)
        got = regularizers.CACR(steps=5)(model, x, y, adv_images=adv)
        a_t = tf.reduce_sum(attributions.integrated_gradients(model, adv, y, steps=5, score="probability"), -1)
        a_n = tf.reduce_sum(attributions.integrated_gradients(model, adv, y, steps=5,
                                                              score="strongest_other_probability"), -1)
        self.assertAllEqual(got, regularizers.kl_uniform_softmax(a_n) - regularizers.kl_uniform_softmax(a_t))
        self.assertAllEqual(got, regularizers.CACR(steps=5, temperature=None)(model, x, y, adv_images=adv))

    def test_scaled_forms_are_invariant_to_the_map_scale(self):
        # Scaling every attribution map by c > 0 (a ⟶ c·a; `_ScaledMapCACR`) leaves "std" and "l1" unchanged, value
        # and weight gradient, while the faithful KL ≈ ½Var(a) grows like c². (Scaling the logits would not do:
        # CACR attributes probabilities, and c·f changes softmax(f) nonlinearly.)
        model, _ = _mlp(seed=23)
        x, y, adv = (tf.constant(v) for v in _batch(seed=24))

        def value_and_grads(reg):
            with tf.GradientTape() as tape:
                value = reg(model, x, y, adv_images=adv)
                total = tf.reduce_sum(value)
            grads = tape.gradient(total, model.trainable_variables)
            return value.numpy(), [np.zeros(v.shape) if g is None else g.numpy()
                                   for g, v in zip(grads, model.trainable_variables)]

        for temperature in ("std", "l1"):
            v1, g1 = value_and_grads(_ScaledMapCACR(1.0, steps=4, temperature=temperature))
            self.assertGreater(np.abs(g1[0]).max(), 1e-6)
            for c in (1e-3, 250.0):
                vc, gc = value_and_grads(_ScaledMapCACR(c, steps=4, temperature=temperature))
                self.assertAllClose(vc, v1, rtol=1e-9, atol=1e-12)
                for a, b in zip(gc, g1):
                    self.assertAllClose(a, b, rtol=1e-7, atol=1e-12)
        small, _ = value_and_grads(_ScaledMapCACR(1e-3, steps=4))
        large, _ = value_and_grads(_ScaledMapCACR(1.0, steps=4))
        self.assertAllClose(small, large * 1e-6, rtol=0.05)  # ½Var(c·a) = c²·½Var(a) for small maps
        self.assertGreater(np.abs(large - small).max(), 0.1 * np.abs(large).max())

    @parameterized.parameters(None, 0.5, "std", "l1")
    def test_weight_gradient_matches_float64_finite_differences(self, temperature):
        # the per-map scale is a constant for differentiation: compare with central differences of the NumPy
        # closed form at the scales of the unperturbed weights
        model, params = _mlp(seed=25)
        x, y, adv = _batch(seed=26)
        weights = model.trainable_variables
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(regularizers.CACR(steps=4, temperature=temperature)(
                model, tf.constant(x), tf.constant(y), adv_images=tf.constant(adv)))
        grads = [np.zeros(w.shape) if g is None else g for g, w in zip(tape.gradient(value, weights), weights)]
        rng = np.random.default_rng(27)
        direction = [rng.normal(size=w.shape) for w in weights]
        analytic = sum(float(tf.reduce_sum(g * d)) for g, d in zip(grads, direction))
        flat_x, flat_adv = x.reshape(3, -1), adv.reshape(3, -1)
        _, scales = numpy_cacr(NumpyMLP(params), flat_x, y, flat_adv, 4, temperature)
        h = 1e-6
        values = [numpy_cacr(NumpyMLP([p + sign * h * d for p, d in zip(params, direction)]), flat_x, y, flat_adv,
                             4, temperature, scales=scales)[0].sum() for sign in (1, -1)]
        numeric = (values[0] - values[1]) / (2 * h)
        self.assertGreater(abs(numeric), 1e-9)
        self.assertAllClose(analytic, numeric, rtol=1e-5, atol=1e-10)

    def test_config_round_trip_and_bad_temperature(self):
        for temperature in (None, 2.0, "std", "l1"):
            reg = regularizers.build("cacr", steps=3, temperature=temperature)
            self.assertEqual(reg.get_config()["temperature"], temperature)
            restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(reg))
            self.assertEqual(restored.get_config(), reg.get_config())
        for bad in (0, -1.0, "var", True):
            with self.assertRaisesRegex(ValueError, "`temperature` must be None .*, a positive float τ, 'std' or 'l1'"):
                regularizers.CACR(temperature=bad)
