"""Every objective's loss on one batch against a naive float64 reference that loops image by image.

The reference is written from docs/method.md §7 with raw TF ops on the MLP's weight matrices (its own forward pass,
scores, IG sums, PGD loop and softplus-β surrogate); it shares nothing with the library except the random
start point, which is an input of the attack (drawn from the documented (seed, step) stream).
"""
import dataclasses

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from attr_robust_tf import objectives, regularizers
from attr_robust_tf.attacks import inner as inner_lib
from attr_robust_tf.robust_model import RobustModel
import testing

SHAPE = (5, 5, 1)
D = 25
HIDDEN, K, N = 8, 3, 4
SEED = 3
SETTINGS = dict(epsilon=0.1, step_size=0.03, attack_steps=2, ig_steps=3, inner_ig_steps=2, seed=SEED)


class Reference:
    """Naive per-image float64 implementation of docs/method.md §7 for a one-hidden-layer MLP."""

    def __init__(self, weights, settings):
        self.w1, self.b1, self.w2, self.b2 = (tf.constant(w, tf.float64) for w in weights)
        self.s = settings

    # forward passes: ReLU network and its softplus-β surrogate (docs/method.md §4.2)
    def logits(self, z, beta=None):
        u = z @ self.w1 + self.b1
        h = tf.nn.relu(u) if beta is None else tf.math.softplus(beta * u) / beta
        return h @ self.w2 + self.b2

    def score(self, z, y, kind, beta=None):
        f = self.logits(z[None], beta)[0]
        p = tf.nn.softmax(f)
        others = [c for c in range(K) if c != y]
        if kind == "logit":
            return f[y]
        if kind == "other_logit":
            return tf.reduce_max(tf.gather(f, others))
        if kind == "p":
            return p[y]
        if kind == "other_p":
            return tf.reduce_max(tf.gather(p, others))
        if kind == "log_p":
            return tf.math.log(p[y])
        if kind == "ce":
            return -tf.math.log(p[y])
        raise ValueError(kind)

    def grad(self, z, y, kind, beta=None):
        with tf.GradientTape() as tape:
            tape.watch(z)
            s = self.score(z, y, kind, beta)
        return tape.gradient(s, z)

    def ig(self, x, y, kind, m, baseline=None):
        x0 = tf.zeros_like(x) if baseline is None else baseline
        total = tf.zeros_like(x)
        for k in range(1, m + 1):
            total += self.grad(x0 + (k / m) * (x - x0), y, kind)
        return (x - x0) * total / m

    @staticmethod
    def cos(u, v):
        return tf.reduce_sum(u * v) / tf.sqrt(tf.reduce_sum(u * u) * tf.reduce_sum(v * v) + 1e-16)

    @staticmethod
    def kl_uniform(a):
        p = tf.nn.softmax(a)
        u = 1.0 / int(a.shape[0])
        return tf.reduce_sum(u * tf.math.log(u / p))

    # inner objectives J(x′) (docs/method.md §7.9)
    def inner_objective(self, name, x, y, adv, mask=None):
        s = self.s
        ig_l1 = lambda: tf.reduce_sum(tf.abs(self.ig(adv, y, "ce", s["inner_ig_steps"], baseline=x)))  # noqa
        if name == "madry":
            return self.score(adv, y, "ce")
        if name == "trades":
            p = tf.nn.softmax(self.logits(x[None])[0])
            q = tf.nn.softmax(self.logits(adv[None])[0])
            return tf.reduce_sum(p * (tf.math.log(p) - tf.math.log(q)))
        if name == "ig_norm":
            return ig_l1()
        if name == "ig_sum_norm":
            return self.score(adv, y, "ce") + s["weights"]["ig_norm"] * ig_l1()
        if name == "sarkar2021":
            return self.score(adv, y, "ce") + s.get("inner_weight", 0.1) * ig_l1()
        if name == "art":
            g1 = self.grad(adv, y, "logit", beta=50.0) * mask
            g2 = self.grad(adv, y, "other_logit", beta=50.0) * mask
            d_p = 1.0 - self.cos(adv * mask, g1)
            d_n = 1.0 - self.cos(adv * mask, g2)
            return tf.math.softplus(d_p - d_n)
        raise ValueError(name)

    def attack(self, name, x, y, start, top_k=None):
        eps, a = self.s["epsilon"], self.s["step_size"]
        mask = None
        if name == "art":
            g = tf.abs(self.grad(start, y, "logit"))  # ReLU network, at the start point
            mask = tf.scatter_nd(tf.math.top_k(g, top_k).indices[:, None], tf.ones(top_k, tf.float64), [D])
        adv = start
        for _ in range(self.s["attack_steps"]):
            with tf.GradientTape() as tape:
                tape.watch(adv)
                j = self.inner_objective(name, x, y, adv, mask)
            adv = adv + a * tf.sign(tape.gradient(j, adv))
            adv = tf.clip_by_value(tf.clip_by_value(adv, x - eps, x + eps), 0.0, 1.0)
        return adv

    # outer penalties (docs/method.md §7.4–§7.8)
    def penalty(self, name, x, y, adv):
        m = self.s["ig_steps"]
        if name == "ig_norm":
            return tf.reduce_sum(tf.abs(self.ig(adv, y, "ce", m, baseline=x)))
        if name == "trades_kl":
            return self.inner_objective("trades", x, y, adv)
        if name == "cacr":
            return (self.kl_uniform(self.ig(adv, y, "other_p", m))
                    - self.kl_uniform(self.ig(adv, y, "p", m)))  # one channel: the channel sum is the map
        if name == "wacr":
            b = self.ig(x, y, "p", m)
            da = self.ig(adv, y, "log_p", m, baseline=x)
            return tf.reduce_sum(tf.where(tf.sign(b) == tf.sign(da), b * da, tf.abs(da)))
        if name == "art":
            rows = [x, adv]
            pos = [self.grad(r, y, "logit", beta=50.0) for r in rows]
            neg = [self.grad(r, y, "other_logit", beta=50.0) for r in rows]
            total = 0.0
            for r in rows:
                d_ap = tf.maximum(1 - self.cos(r, pos[0]), 1 - self.cos(r, pos[1]))
                d_an = tf.minimum(1 - self.cos(r, neg[0]), 1 - self.cos(r, neg[1]))
                total += tf.math.log(1 + tf.exp(d_ap - d_an))
            return 0.5 * total
        raise ValueError(name)

    def loss(self, row, x, y, starts, reduction="mean", top_k=None):
        """(total loss, ce, {penalty: (N,) per-example values}) over the batch, image by image."""
        ces, terms = [], {r: [] for r in row["regularizers"]}
        for i in range(x.shape[0]):
            xi = tf.reshape(x[i], [-1])
            adv = None
            if row["inner"]:
                adv = self.attack(row["name"], xi, int(y[i]), tf.reshape(starts[i], [-1]), top_k)
            task = adv if row["task_input"] == "adv" else xi
            ces.append(self.score(task, int(y[i]), "ce"))
            for r in terms:
                terms[r].append(self.penalty(r, xi, int(y[i]), adv))
        reduce = tf.reduce_mean if reduction == "mean" else tf.reduce_sum
        total = reduce(tf.stack(ces))
        for r, values in terms.items():
            total += self.s["weights"][r] * reduce(tf.stack(values))
        per_example = {r: tf.stack(v).numpy() for r, v in terms.items()}
        return float(total), float(tf.reduce_mean(tf.stack(ces))), per_example


def _mlp():
    keras.utils.set_random_seed(11)
    inp = keras.Input(SHAPE, dtype="float64")
    h = keras.layers.Flatten(dtype="float64")(inp)
    h = keras.layers.Dense(HIDDEN, activation="relu", dtype="float64")(h)
    model = keras.Model(inp, keras.layers.Dense(K, dtype="float64")(h))
    rng = np.random.default_rng(12)
    model.set_weights([rng.normal(0, 0.8, (D, HIDDEN)), rng.normal(0, 0.2, HIDDEN),
                       rng.normal(0, 0.8, (HIDDEN, K)), rng.normal(0, 0.2, K)])
    return model


def _data():
    rng = np.random.default_rng(13)
    return rng.uniform(0.0, 1.0, (N,) + SHAPE), rng.integers(0, K, N).astype("int32")


class ObjectivesTest(testing.TestCase):
    def setUp(self):
        super().setUp()
        # keras caches the default dtype policy from floatx: save and restore both
        self._floatx, self._policy = keras.config.floatx(), keras.config.dtype_policy()
        keras.config.set_floatx("float64")  # float64 trackers and weight variables: tight comparisons
        keras.config.set_dtype_policy("float64")

    def tearDown(self):
        keras.config.set_floatx(self._floatx)
        keras.config.set_dtype_policy(self._policy)
        super().tearDown()

    def _robust(self, name, reduction="mean", **kwargs):
        robust = RobustModel(_mlp(), name, loss_reduction=reduction, **{**SETTINGS, **kwargs})
        loss = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="sum" if reduction == "sum" else "sum_over_batch_size")
        robust.compile(keras.optimizers.SGD(0.1), loss)
        return robust

    @parameterized.parameters(
        ("natural", "mean"), ("madry", "mean"), ("trades", "mean"), ("ig_norm", "mean"), ("ig_norm", "sum"),
        ("ig_sum_norm", "mean"), ("art", "mean"), ("sarkar2021", "sum"))
    def test_loss_matches_naive_float64_reference(self, name, reduction):
        x, y = _data()
        kwargs = {"top_k": 10} if name == "art" else {}
        robust = self._robust(name, reduction, **kwargs)
        row = robust.objective
        starts = None
        if row.has_inner_attack:
            starts = robust.inner_attack.start(tf.constant(x), seed=tf.constant([SEED, 0], tf.int64))
        settings = {**SETTINGS, "weights": dict(row.weights)}
        ref = Reference(robust.model.get_weights(), settings)
        total, ce, terms = ref.loss(
            {"name": name, "inner": dict(row.inner), "task_input": row.task_input,
             "regularizers": row.regularizers}, tf.constant(x), y, starts, reduction, top_k=10)
        got = robust.evaluate(x, y, batch_size=N, verbose=0, return_dict=True)
        # the logged loss is the reduced objective; "ce" and each term are batch means ("sum": ce is the sum)
        self.assertAllClose(got["loss"], total, rtol=1e-8, atol=1e-12)
        self.assertAllClose(got["ce"] / (N if reduction == "sum" else 1), ce, rtol=1e-8, atol=1e-12)
        self.assertEqual(sorted(k for k in got if k not in ("loss", "ce")), sorted(row.regularizers))
        for r in row.regularizers:
            self.assertAllClose(got[r], np.mean(terms[r]), rtol=1e-7, atol=1e-12)
        # the per-example terms of the same batch, before any reduction
        tied = {t: robust.regularizer_weights[r] for t, r in row.inner.items() if isinstance(r, str)}
        _, _, penalties = row.terms(
            robust.model, tf.constant(x), tf.constant(y), attack=robust.inner_attack,
            regularizers=robust.regularizers, surrogate=robust.surrogate,
            seed=tf.constant([SEED, 0], tf.int64), inner_weights=tied)
        for r in row.regularizers:
            self.assertEqual(tuple(penalties[r].shape), (N,))
            self.assertAllClose(penalties[r], terms[r], rtol=1e-7, atol=1e-12)

    @parameterized.parameters(
        ("madry", {}), ("trades", {}), ("ig_norm", {}), ("ig_sum_norm", {}),
        ("ig_sum_norm", {"weights": {"ig_norm": 20.0}}), ("art", {"top_k": 10}), ("sarkar2021", {}),
        ("sarkar2021", {"inner_weight": 20.0}))
    def test_inner_attack_matches_reference_pgd(self, name, kwargs):
        # a large inner weight makes the IG term decide the signs (a small one rarely flips them)
        x, y = _data()
        robust = self._robust(name, **kwargs)
        seed = tf.constant([SEED, 5], tf.int64)
        start = robust.inner_attack.start(tf.constant(x), seed=seed)
        tied = {t: robust.regularizer_weights[r] for t, r in robust.objective.inner.items()
                if isinstance(r, str)}
        adv = robust.inner_attack(robust.model, tf.constant(x), tf.constant(y), seed=seed,
                                  surrogate=robust.surrogate, weights=tied)
        weights = {**robust.objective.weights, **kwargs.get("weights", {})}
        ref = Reference(robust.model.get_weights(), {**SETTINGS, **kwargs, "weights": weights})
        expected = [ref.attack(name, tf.reshape(x[i], [-1]), int(y[i]), tf.reshape(start[i], [-1]), 10)
                    for i in range(N)]
        self.assertAllClose(tf.reshape(adv, [N, -1]), tf.stack(expected), atol=1e-12)
        self.assertLessEqual(float(tf.reduce_max(tf.abs(adv - x))), SETTINGS["epsilon"] + 1e-12)
        self.assertGreater(float(tf.reduce_max(tf.abs(adv - start))), 0.0)  # the ascent moved

    def test_ig_sum_norm_with_zero_beta_is_madry(self):
        # docs/method.md §7.6: with β = 0 the inner objective and the loss are exactly PGD-AT's
        x, y = _data()
        madry = self._robust("madry").evaluate(x, y, batch_size=N, verbose=0, return_dict=True)
        zero = self._robust("ig_sum_norm", weights={"ig_norm": 0.0})
        got = zero.evaluate(x, y, batch_size=N, verbose=0, return_dict=True)
        self.assertAllClose(got["loss"], madry["loss"], rtol=1e-12)
        self.assertGreater(got["ig_norm"], 0.0)  # still logged, just not weighted

    def test_ig_sum_norm_inner_beta_follows_the_weight_variable(self):
        x, y = _data()
        robust = self._robust("ig_sum_norm", attack_steps=3)
        seed = tf.constant([1, 2], tf.int64)
        kw = dict(seed=seed, weights={"ig_norm": robust.regularizer_weights["ig_norm"]})
        first = robust.inner_attack(robust.model, tf.constant(x), tf.constant(y), **kw)
        robust.regularizer_weights["ig_norm"].assign(50.0)
        second = robust.inner_attack(robust.model, tf.constant(x), tf.constant(y), **kw)
        self.assertNotAllClose(first, second)

    def test_registry(self):
        self.assertEqual(objectives.names(),
                         ["art", "ig_norm", "ig_sum_norm", "igr", "madry", "natural", "sarkar2021",
                          "sarkar2021_scaled", "trades"])
        row = objectives.get("sarkar2021")
        self.assertEqual(row.regularizers, ("cacr", "wacr"))
        self.assertEqual(dict(row.weights), {"cacr": 0.1, "wacr": 0.1})
        self.assertEqual((row.ig_steps, row.inner_ig_steps, row.task_input), (20, 5, "adv"))
        self.assertEqual(dict(row.inner), {"cross_entropy": 1.0, "ig_norm": 0.1})
        self.assertIs(objectives.get(row), row)
        with self.assertRaisesRegex(ValueError, "Unknown objective 'sarkar2020'. Did you mean 'sarkar2021'"):
            objectives.get("sarkar2020")
        with self.assertRaisesRegex(ValueError, "already registered"):
            objectives.register(objectives.Objective("natural"))
        with self.assertRaisesRegex(ValueError, "needs the perturbed input"):
            objectives.Objective("bad", regularizers=("cacr",), weights={"cacr": 1.0})
        with self.assertRaisesRegex(ValueError, "Unknown task_input 'adversarial'"):
            objectives.Objective("bad", task_input="adversarial", inner={"cross_entropy": 1.0})
        with self.assertRaisesRegex(ValueError, "Unknown inner-attack term 'ce'"):
            objectives.Objective("bad", inner={"ce": 1.0})
        with self.assertRaisesRegex(TypeError, "must be an Objective"):
            objectives.register("natural")

    def test_registering_a_new_objective_trains_without_other_changes(self):
        row = objectives.register(objectives.Objective(
            "input_gradient_test", regularizers=("input_gradient_norm",),
            weights={"input_gradient_norm": 0.5}))
        try:
            x, y = _data()
            robust = self._robust("input_gradient_test")
            got = robust.evaluate(x, y, batch_size=N, verbose=0, return_dict=True)
            ref = Reference(robust.model.get_weights(), SETTINGS)
            grads = [ref.grad(tf.reshape(x[i], [-1]), int(y[i]), "ce") for i in range(N)]
            penalty = np.mean([float(tf.reduce_sum(g * g)) for g in grads])
            self.assertAllClose(got["input_gradient_norm"], penalty, rtol=1e-9)
            self.assertAllClose(got["loss"], got["ce"] + 0.5 * penalty, rtol=1e-9)
            history = robust.fit(x, y, batch_size=N, epochs=2, verbose=0).history
            self.assertLess(history["loss"][1], history["loss"][0])
            self.assertIs(robust.objective, row)
        finally:
            objectives.OBJECTIVES.pop("input_gradient_test")

    def test_inner_attack_bounds_config_and_errors(self):
        x, y = _data()
        model = _mlp()
        attack = inner_lib.InnerAttack({"cross_entropy": 1.0, "ig_norm": 0.1}, epsilon=0.05, step_size=0.02,
                                        steps=3, ig_steps=2)
        adv = attack(model, x, y, seed=[0, 1])
        self.assertLessEqual(float(tf.reduce_max(tf.abs(adv - x))), 0.05 + 1e-12)
        self.assertTrue(np.all((adv.numpy() >= 0) & (adv.numpy() <= 1)))
        self.assertAllEqual(attack(model, x, y, seed=[0, 1]), adv)  # stateless: same seed, same x′
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(attack))
        self.assertEqual(restored.get_config(), attack.get_config())
        self.assertAllEqual(restored(model, x, y, seed=[0, 1]), adv)
        zero = inner_lib.InnerAttack({"cross_entropy": 1.0}, epsilon=0.05, step_size=0.02, steps=0,
                                     start="none")
        self.assertAllEqual(zero(model, x, y), x)
        normal = inner_lib.InnerAttack({"trades_kl": 1.0}, epsilon=0.05, step_size=0.02, steps=1,
                                       start="normal")
        start = normal.start(tf.constant(x), seed=tf.constant([4, 4], tf.int64))
        self.assertAllClose(tf.math.reduce_std(start - x), 0.001, rtol=0.2)  # TRADES: x + 0.001·N(0, I)
        with self.assertRaisesRegex(ValueError, "`epsilon` must be a finite number > 0. Received: epsilon=0"):
            inner_lib.InnerAttack({"cross_entropy": 1.0}, epsilon=0, step_size=0.1, steps=1)
        with self.assertRaisesRegex(ValueError,
                                    "Unknown inner-attack term 'ig_nrom'. Did you mean 'ig_norm'"):
            inner_lib.InnerAttack({"ig_nrom": 1.0}, epsilon=0.1, step_size=0.1, steps=1)
        with self.assertRaisesRegex(ValueError, "Unknown start 'gauss'"):
            inner_lib.InnerAttack({"cross_entropy": 1.0}, epsilon=0.1, step_size=0.1, steps=1, start="gauss")

    def test_penalties_are_per_example(self):
        # each term depends only on its own example: splitting the batch gives the same values
        x, y = _data()
        robust = self._robust("sarkar2021")
        adv = tf.constant(np.clip(x + 0.05, 0, 1))
        for name, reg in robust.regularizers.items():
            full = reg(robust.model, tf.constant(x), y, adv_images=adv)
            parts = tf.concat([reg(robust.model, tf.constant(x[i:i + 1]), y[i:i + 1], adv_images=adv[i:i + 1])
                               for i in range(N)], 0)
            self.assertAllClose(full, parts, rtol=1e-12)
            self.assertIsInstance(reg, regularizers.get(name))

    def test_scaled_sarkar_row_differs_only_in_the_cacr_temperature(self):
        row, scaled = objectives.get("sarkar2021"), objectives.get("sarkar2021_scaled")
        differ = [f.name for f in dataclasses.fields(row) if getattr(row, f.name) != getattr(scaled, f.name)]
        self.assertEqual(differ, ["name", "reference", "regularizer_args"])
        self.assertEqual({k: dict(v) for k, v in scaled.regularizer_args.items()}, {"cacr": {"temperature": "std"}})
        robust = self._robust("sarkar2021_scaled")
        self.assertEqual(robust.regularizers["cacr"].temperature, "std")
        self.assertEqual(list(robust.regularizer_weights), ["cacr", "wacr"])  # the weight and metric keep `cacr`
        self.assertIsNone(self._robust("sarkar2021").regularizers["cacr"].temperature)
        restored = RobustModel.from_config(robust.get_config())
        self.assertEqual(restored.regularizers["cacr"].temperature, "std")
        with self.assertRaisesRegex(ValueError, "`regularizer_args` must name regularizers of this row"):
            objectives.Objective("bad", inner={"cross_entropy": 1.0}, regularizers=("cacr",), weights={"cacr": 1.0},
                                 regularizer_args={"wacr": {"temperature": "std"}})
        with self.assertRaisesRegex(ValueError, "`temperature` must be None"):
            objectives.Objective("bad", inner={"cross_entropy": 1.0}, regularizers=("cacr",), weights={"cacr": 1.0},
                                 regularizer_args={"cacr": {"temperature": "max"}})
