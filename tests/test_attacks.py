"""Attribution attacks (attacks/attribution.py) and PGD on real data.

Oracles: SciPy's Kendall τ / Spearman ρ and NumPy top-k / center of mass on the returned maps, a naive
one-image eager re-implementation of the attack loop, the ε-ball and range constraints, and a natural
Fashion-MNIST CNN for the qualitative claims (top-k beats random; PGD lowers accuracy).
"""
import functools

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

import testing
from attr_robust_tf import data, errors, models
from attr_robust_tf.attacks import AttributionAttack, pgd_linf
from attr_robust_tf.attacks import attribution
from attr_robust_tf.attributions import integrated_gradients, saliency_map
from attr_robust_tf.surrogate import softplus_surrogate

IG = 4  # IG points in the fast tests: one trace per (model, method, quantize)


@functools.lru_cache(maxsize=None)
def tiny_model():
    """A ReLU CNN on 8×8×1 images with 3 classes (functional, so it has a softplus surrogate)."""
    return testing.small_cnn(activation="relu", seed=1)


def random_images(seed, n, shape=(8, 8, 1)):
    return np.random.default_rng(seed).uniform(0.05, 0.95, (n,) + shape).astype(np.float32)


@functools.lru_cache(maxsize=None)
def fmnist():
    """cpu_cnn trained naturally for 1 epoch on 3,000 real Fashion-MNIST images, plus 400 test images."""
    keras.utils.set_random_seed(0)
    x, y = data.arrays("fashion_mnist", "train", limit=3000)
    model = models.cpu_cnn()
    model.compile(keras.optimizers.Adam(2e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x.astype(np.float32) / 255.0, y, batch_size=50, epochs=1, verbose=0)
    xt, yt = data.arrays("fashion_mnist", "test", limit=400)
    return model, xt.astype(np.float32) / 255.0, yt.astype(np.int32)


def real_map(model, images, target, steps):
    return saliency_map(integrated_gradients(model, images, target, steps=steps)).numpy()


def topk_set(saliency, k):
    return set(np.argsort(-saliency.ravel(), kind="stable")[:k])


def center(saliency):
    rows, cols = np.indices(saliency.shape)
    return np.array([(saliency * rows).sum(), (saliency * cols).sum()]) / saliency.sum()


class ObjectiveTest(testing.TestCase):
    def test_topk_mask_breaks_ties_by_lower_index(self):
        maps = np.random.default_rng(0).integers(0, 4, (5, 6, 6)).astype(np.float32)  # many ties
        mask = attribution.topk_mask(maps, 7).numpy()
        for s, m in zip(maps, mask):
            self.assertEqual(set(np.flatnonzero(m.ravel())), topk_set(s, 7))

    def test_mass_center_closed_form(self):
        maps = np.zeros((2, 5, 7), np.float32)
        maps[0, 1, 6] = 3.0
        maps[1, 0, 0] = maps[1, 4, 2] = 1.0
        self.assertAllClose(attribution.mass_center(maps), [[1.0, 6.0], [2.0, 1.0]])
        self.assertAllClose(attribution.mass_center(np.zeros((1, 3, 3), np.float32)), [[0.0, 0.0]])

    def test_losses_match_numpy(self):
        rng = np.random.default_rng(1)
        maps = rng.uniform(0, 2, (3, 4, 4)).astype(np.float32)
        mask = (rng.uniform(size=(3, 4, 4)) < 0.3).astype(np.float32)
        self.assertAllClose(attribution.topk_mass(maps, mask), (maps * mask).sum(axis=(1, 2)))
        self.assertAllClose(attribution.targeted(maps, mask), -(maps * mask).sum(axis=(1, 2)))
        c0 = np.array([[1.0, 2.0]] * 3, np.float32)
        expected = [-np.sum((center(m) - c0[0]) ** 2) for m in maps]
        self.assertAllClose(attribution.center_of_mass(maps, c0), expected, rtol=1e-5)

    def test_random_sign_is_per_row(self):
        keys = attribution._row_keys(tf.constant([3, 7], tf.int64), np.array([5, 9, 11]), np.array([0, 1, 1]))
        signs = attribution.random_sign(keys, tf.constant(1, tf.int64), (4, 4, 1)).numpy()
        self.assertEqual(set(np.unique(signs)), {-1.0, 1.0})
        alone = attribution.random_sign(keys[1:2], tf.constant(1, tf.int64), (4, 4, 1)).numpy()
        self.assertAllEqual(signs[1:2], alone)  # independent of the other rows in the batch
        later = attribution.random_sign(keys, tf.constant(2, tf.int64), (4, 4, 1)).numpy()
        self.assertNotAllEqual(signs, later)


class InvariantTest(testing.TestCase):
    @settings(max_examples=10, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors])
    @given(seed=st.integers(0, 10_000), n=st.integers(1, 4), epsilon=st.floats(0.0, 0.4),
           step_size=st.floats(0.0, 0.1), method=st.sampled_from(["topk", "mass_center", "random_sign"]),
           restarts=st.integers(1, 3), quantize=st.sampled_from([None, 255]))
    def test_invariants(self, seed, n, epsilon, step_size, method, restarts, quantize):
        model = tiny_model()
        x = random_images(seed, n)
        labels = np.random.default_rng(seed).integers(0, 3, n).astype(np.int32)
        attack = AttributionAttack(method, epsilon=epsilon, step_size=step_size, steps=3, k_attack=8, k_eval=8,
                                   ig_steps=IG, restarts=restarts, seed=seed, quantize=quantize)
        r = attack(model, x, labels)
        adv = r.adversarial_images
        clean_pred = np.argmax(model(x).numpy(), axis=-1)
        # the ε-ball and the valid range
        self.assertLessEqual(np.abs(adv - x).max(), epsilon + 1e-6)
        self.assertGreaterEqual(adv.min(), 0.0)
        self.assertLessEqual(adv.max(), 1.0)
        if quantize:
            moved = np.abs(adv - x) > 0
            self.assertAllClose((adv * 255)[moved], np.round(adv * 255)[moved], atol=1e-3)
        # every kept iterate keeps the clean prediction; a failed image keeps the clean input
        self.assertAllEqual(r.clean_predictions, clean_pred)
        self.assertAllEqual(r.clean_correct, clean_pred == labels)
        self.assertAllEqual(np.argmax(model(adv).numpy(), axis=-1)[r.found], clean_pred[r.found])
        self.assertAllEqual(adv[~r.found], x[~r.found])
        self.assertTrue(np.all((r.restart >= 0) == r.found) and np.all(r.restart < restarts))
        # reported maps and metrics equal a recomputation from the returned images
        self.assertAllClose(r.clean_maps, real_map(model, x, clean_pred, IG), atol=1e-5, rtol=1e-4)
        adv_maps = real_map(model, adv, clean_pred, IG)
        self.assertAllClose(r.adversarial_maps, adv_maps, atol=1e-5, rtol=1e-4)
        for i in range(n):
            a, b = r.clean_maps[i].ravel(), r.adversarial_maps[i].ravel()
            self.assertAllClose(r.kendall[i], stats.kendalltau(a, b)[0], atol=1e-5)
            self.assertAllClose(r.spearman[i], stats.spearmanr(a, b)[0], atol=1e-5)
            inter = len(topk_set(r.clean_maps[i], 8) & topk_set(r.adversarial_maps[i], 8)) / 8
            self.assertAllClose(r.topk[i], inter)
            shift = np.linalg.norm(center(r.clean_maps[i]) - center(r.adversarial_maps[i]))
            self.assertAllClose(r.center_shift[i], shift, atol=1e-4)

    def test_zero_epsilon_is_the_identity(self):
        model = tiny_model()
        x = random_images(1, 3)
        r = AttributionAttack("topk", epsilon=0.0, step_size=0.05, steps=2, k_attack=8, k_eval=8, ig_steps=IG,
                              restarts=2)(model, x, np.zeros(3, np.int32))
        self.assertAllEqual(r.adversarial_images, x)
        self.assertTrue(r.found.all())
        self.assertAllClose(r.topk, np.ones(3))
        self.assertAllClose(r.kendall, np.ones(3))
        self.assertAllClose(r.center_shift, np.zeros(3), atol=1e-5)


def naive_topk_attack(model, x, *, epsilon, step_size, steps, k, ig_steps):
    """One image, eager, written from docs/method.md §4.3–§4.5: the oracle of the kept iterate."""
    surrogate = softplus_surrogate(model, beta=1.0)
    y = np.argmax(model(x).numpy(), axis=-1)
    clean = real_map(model, x, y, ig_steps)[0]
    top = np.argsort(-clean.ravel(), kind="stable")[:k]
    adv, best, best_adv = x, np.inf, x
    for _ in range(steps):
        z = tf.constant(adv)
        with tf.GradientTape() as tape:
            tape.watch(z)
            s = tf.reshape(saliency_map(integrated_gradients(surrogate, z, y, steps=ig_steps)), [-1])
            mass = tf.reduce_sum(tf.gather(s, top))
        grad = tape.gradient(mass, z).numpy()
        adv = np.clip(np.clip(adv - step_size * np.sign(grad), x - epsilon, x + epsilon), 0.0, 1.0)
        if np.argmax(model(adv).numpy(), axis=-1)[0] != y[0]:
            continue
        tau = stats.kendalltau(clean.ravel(), real_map(model, adv, y, ig_steps)[0].ravel())[0]
        if tau < best:
            best, best_adv = tau, adv
    return best_adv, best


class SelectionTest(testing.TestCase):
    def test_kept_iterate_is_the_lowest_tau_of_a_naive_loop(self):
        model = tiny_model()
        x = random_images(7, 3)
        attack = AttributionAttack("topk", epsilon=0.2, step_size=0.05, steps=5, k_attack=8, k_eval=8,
                                   ig_steps=IG)
        r = attack(model, x, np.zeros(3, np.int32))
        for i in range(3):
            adv, tau = naive_topk_attack(model, x[i:i + 1], epsilon=0.2, step_size=0.05, steps=5, k=8,
                                         ig_steps=IG)
            self.assertAllClose(r.adversarial_images[i], adv[0], atol=1e-6)
            if np.isfinite(tau):
                self.assertAllClose(r.kendall[i], tau, atol=1e-5)
            else:
                self.assertFalse(r.found[i])

    def test_restarts_report_the_worst_case(self):
        model = tiny_model()
        x = random_images(3, 6)
        kwargs = dict(epsilon=0.2, step_size=0.05, steps=3, k_attack=8, k_eval=8, ig_steps=IG, seed=4)
        one = AttributionAttack("topk", restarts=1, **kwargs)(model, x, np.zeros(6, np.int32))
        three = AttributionAttack("topk", restarts=3, **kwargs)(model, x, np.zeros(6, np.int32))
        both = one.found & three.found
        # restart 0 of both runs is the same walk from x, so three restarts can only lower τ
        self.assertTrue(np.all(three.kendall[both] <= one.kendall[both] + 1e-6))
        self.assertTrue(np.all(three.found >= one.found))

    def test_random_starts_differ_between_restarts_and_seeds(self):
        model = tiny_model()
        x = random_images(5, 4)
        # step_size 0: every iterate is its start, so the kept image is a start point
        kwargs = dict(epsilon=0.1, step_size=0.0, steps=1, k_attack=8, k_eval=8, ig_steps=IG, restarts=3)
        a = AttributionAttack("topk", seed=0, **kwargs)(model, x, np.zeros(4, np.int32))
        b = AttributionAttack("topk", seed=1, **kwargs)(model, x, np.zeros(4, np.int32))
        keys = attribution._row_keys(tf.constant([0, 0x5EED], tf.int64), np.array([2, 2, 2]), np.array([0, 1, 2]))
        starts = attribution._row_uniform(keys, (8, 8, 1)).numpy()
        self.assertNotAllClose(starts[1], starts[2])
        self.assertTrue(np.all(a.restart[a.found] >= 1))  # a random start changes the map; x itself does not
        self.assertGreater(np.abs(a.adversarial_images - x).max(), 0.05)
        self.assertNotAllClose(a.adversarial_images, b.adversarial_images)


class BatchingTest(testing.TestCase):
    def test_batched_equals_one_at_a_time(self):
        model = tiny_model()
        x = random_images(11, 6)
        labels = np.arange(6, dtype=np.int32) % 3
        for method in ("topk", "random_sign"):
            kwargs = dict(epsilon=0.15, step_size=0.04, steps=3, k_attack=8, k_eval=8, ig_steps=IG, restarts=2,
                          seed=9)
            batched = AttributionAttack(method, **kwargs)(model, x, labels)
            single = AttributionAttack(method, images_per_chunk=1, **kwargs)(model, x, labels)
            # a different order with the same example indices gives the same per-example results
            perm = np.array([4, 0, 5, 2, 1, 3])
            shuffled = AttributionAttack(method, images_per_chunk=4, **kwargs)(
                model, x[perm], labels[perm], indices=perm)
            for other, order in ((single, np.arange(6)), (shuffled, np.argsort(perm))):
                for name in ("adversarial_images", "adversarial_maps", "kendall", "topk", "found", "restart"):
                    self.assertAllClose(getattr(batched, name), getattr(other, name)[order], atol=1e-5,
                                        msg=f"{method} {name}")


class RealDataTest(testing.TestCase):
    def test_topk_attack_beats_random_sign(self):
        model, x, y = fmnist()
        pred = np.argmax(model(x[:64]).numpy(), axis=-1)
        chosen = np.flatnonzero(pred == y[:64])[:12]
        kwargs = dict(epsilon=0.1, step_size=0.01, steps=10, k_attack=100, k_eval=100, ig_steps=10)
        topk = AttributionAttack("topk", **kwargs)(model, x[chosen], y[chosen])
        rand = AttributionAttack("random_sign", **kwargs)(model, x[chosen], y[chosen])
        both = topk.found & rand.found
        self.assertGreaterEqual(both.sum(), 8)
        self.assertLess(topk.topk[both].mean(), rand.topk[both].mean())
        self.assertLess(rand.topk[both].mean(), 1.0)
        self.assertLess(topk.kendall[both].mean(), 1.0)

    def test_pgd_lowers_accuracy_and_zero_epsilon_changes_nothing(self):
        model, x, y = fmnist()
        x, y = x[:200], y[:200]
        natural = np.mean(np.argmax(model(x).numpy(), -1) == y)
        adv = pgd_linf(model, x, y, epsilon=0.1, step_size=0.01, steps=10, seed=0)
        robust = np.mean(np.argmax(model(adv).numpy(), -1) == y)
        self.assertGreater(natural, 0.6)
        self.assertLess(robust, natural - 0.2)
        self.assertAllEqual(pgd_linf(model, x, y, epsilon=0.0, step_size=0.01, steps=10, seed=0), x)


class BadInputTest(testing.TestCase):
    def test_settings(self):
        with self.assertRaisesRegex(ValueError, r"`epsilon` must be a finite number >= 0. Received: epsilon=-0.1"):
            AttributionAttack(epsilon=-0.1, step_size=0.01, steps=1)
        with self.assertRaisesRegex(ValueError, r"Unknown attack method 'topK'. Did you mean 'topk'\?"):
            AttributionAttack("topK", epsilon=0.1, step_size=0.01, steps=1)
        with self.assertRaisesRegex(ValueError, r"`region` must be .* Received: region=None"):
            AttributionAttack("targeted", epsilon=0.1, step_size=0.01, steps=1)
        with self.assertRaisesRegex(ValueError, r"`restarts` must be an integer >= 1. Received: restarts=0"):
            AttributionAttack(epsilon=0.1, step_size=0.01, steps=1, restarts=0)
        with self.assertWarns(errors.LargeEpsilonWarning):
            AttributionAttack(epsilon=2.0, step_size=0.01, steps=1)

    def test_k_larger_than_the_map(self):
        attack = AttributionAttack(epsilon=0.1, step_size=0.01, steps=1, k_attack=65, k_eval=8, ig_steps=IG)
        with self.assertRaisesRegex(ValueError, r"`k_attack` must be at most .* H·W = 8·8 = 64. Received: "
                                                r"k_attack=65"):
            attack(tiny_model(), random_images(0, 2), np.zeros(2, np.int32))

    def test_probability_outputs_are_detected(self):
        logits = tiny_model()
        probs = keras.Model(logits.inputs[0], keras.layers.Softmax()(logits.outputs[0]))
        attack = AttributionAttack(epsilon=0.1, step_size=0.01, steps=1, k_attack=8, k_eval=8, ig_steps=IG)
        with self.assertRaisesRegex(ValueError, r"`model` must return logits .* look like probabilities"):
            attack(probs, random_images(0, 3), np.zeros(3, np.int32))

    def test_images_and_labels(self):
        attack = AttributionAttack(epsilon=0.1, step_size=0.01, steps=1, k_attack=8, k_eval=8, ig_steps=IG)
        with self.assertRaisesRegex(ValueError, r"`images` must have values in \[0, 1\]"):
            attack(tiny_model(), random_images(0, 2) * 3, np.zeros(2, np.int32))
        with self.assertRaisesRegex(ValueError, r"`labels` must have shape \(N,\) with N = images.shape\[0\] = 2"):
            attack(tiny_model(), random_images(0, 2), np.zeros((2, 1), np.int32))

    def test_subclassed_model_needs_a_surrogate(self):
        class Net(keras.Model):
            def __init__(self, activation="relu", layers=None):
                super().__init__()
                self.flat = keras.layers.Flatten()
                self.hidden, self.out = layers or (keras.layers.Dense(8), keras.layers.Dense(3))
                self.activation = keras.activations.get(activation)

            def call(self, x):
                return self.out(self.activation(self.hidden(self.flat(x))))

        net = Net()
        x = random_images(0, 3)
        net(x)
        smooth = Net("softplus", layers=(net.hidden, net.out))  # the same weights, smooth activation
        attack = AttributionAttack(epsilon=0.1, step_size=0.02, steps=2, k_attack=8, k_eval=8, ig_steps=IG)
        with self.assertRaisesRegex(ValueError, r"Pass `surrogate=` explicitly"):
            attack(net, x, np.zeros(3, np.int32))
        r = attack(net, x, np.zeros(3, np.int32), surrogate=smooth)
        self.assertLessEqual(np.abs(r.adversarial_images - x).max(), 0.1 + 1e-6)
        self.assertGreater(np.abs(r.adversarial_images - x).max(), 0.0)

    def test_zero_attack_gradient_is_reported(self):
        # black images have all-zero IG maps: no direction to move in, which the attack says
        attack = AttributionAttack(epsilon=0.1, step_size=0.02, steps=1, k_attack=8, k_eval=8, ig_steps=IG)
        with self.assertWarns(errors.ZeroAttackGradientWarning):
            r = attack(tiny_model(), np.zeros((2, 8, 8, 1), np.float32), np.zeros(2, np.int32))
        self.assertAllEqual(r.adversarial_images, np.zeros((2, 8, 8, 1)))


class ConfigTest(testing.TestCase):
    def test_get_config_round_trip(self):
        attack = AttributionAttack("mass_center", epsilon=0.1, step_size=0.01, steps=4, k_attack=8, k_eval=6,
                                   ig_steps=IG, restarts=2, quantize=255, seed=3)
        clone = AttributionAttack.from_config(attack.get_config())
        self.assertEqual(clone.get_config(), attack.get_config())

    def test_targeted_moves_mass_into_the_region(self):
        model = tiny_model()
        x = random_images(2, 6)
        region = np.zeros((8, 8), np.float32)
        region[:3, :3] = 1.0
        r = AttributionAttack("targeted", epsilon=0.2, step_size=0.05, steps=4, k_attack=8, k_eval=8,
                              ig_steps=IG, region=region)(model, x, np.zeros(6, np.int32))
        before = (r.clean_maps * region).sum(axis=(1, 2))
        after = (r.adversarial_maps * region).sum(axis=(1, 2))
        self.assertGreater(after[r.found].mean(), before[r.found].mean())

    def test_mass_center_moves_the_center(self):
        model = tiny_model()
        x = random_images(4, 6)
        kwargs = dict(epsilon=0.2, step_size=0.05, steps=4, k_attack=8, k_eval=8, ig_steps=IG)
        center_attack = AttributionAttack("mass_center", **kwargs)(model, x, np.zeros(6, np.int32))
        self.assertGreater(center_attack.center_shift[center_attack.found].mean(), 0.05)


if __name__ == "__main__":
    pytest.main([__file__])
