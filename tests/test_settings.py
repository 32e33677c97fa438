"""`RobustSettings` (validated once), objective rows' defaults and used settings, one home per loss term."""
import dataclasses
import json
import os

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from attr_robust_tf import models, objectives, penalties, regularizers, settings, terms
from attr_robust_tf.attacks import inner as inner_lib
from attr_robust_tf.robust_model import RobustModel
from attr_robust_tf.settings import RobustSettings
import testing

TINY = dict(epsilon=0.1, step_size=0.04, attack_steps=1, ig_steps=2, inner_ig_steps=2)


class RobustSettingsTest(testing.TestCase):
    def test_defaults_are_the_rar_mnist_values(self):
        s = RobustSettings()
        self.assertEqual((s.epsilon, s.step_size, s.attack_steps, s.ig_steps, s.inner_ig_steps),
                         (0.3, 0.01, 40, 50, 10))
        self.assertEqual(settings.names(), tuple(f.name for f in dataclasses.fields(RobustSettings)))
        self.assertEqual(RobustSettings.names(), settings.names())
        with self.assertRaises(dataclasses.FrozenInstanceError):
            s.epsilon = 0.1

    def test_values_are_normalised_once(self):
        s = RobustSettings(epsilon=1, attack_steps=np.int64(3), seed=np.int32(4), surrogate_beta=None,
                           random_start=0)
        self.assertEqual((s.epsilon, s.attack_steps, s.seed, s.surrogate_beta, s.random_start),
                         (1.0, 3, 4, 0.0, False))
        self.assertIsInstance(s.epsilon, float)
        self.assertIs(type(s.seed), int)
        self.assertEqual(RobustSettings(surrogate_beta=False).surrogate_beta, 0.0)

    @parameterized.parameters(
        ({"epsilon": -0.1}, r"`epsilon` must be a finite number >= 0. Received: epsilon=-0.1"),
        ({"step_size": float("nan")}, r"`step_size` must be a finite number >= 0"),
        ({"attack_steps": 1.5}, r"`attack_steps` must be an integer >= 0"),
        ({"ig_steps": 0}, r"`ig_steps` must be an integer >= 1. Received: ig_steps=0"),
        ({"ig_method": "riemann"}, r"Unknown method 'riemann'. Did you mean 'riemann_left'"),
        ({"loss_reduction": "avg"}, r"Unknown loss_reduction 'avg'"),
        ({"seed": 1.0}, r"`seed` must be an integer. Received: seed=1.0"),
        ({"surrogate_beta": -1.0}, r"`surrogate_beta` must be a finite number > 0"),
        ({"top_k": 0}, r"`top_k` must be an integer >= 1"),
        ({"inner_weight": -1}, r"`inner_weight` must be a finite number >= 0"),
        ({"ig_batch_size": 0}, r"`ig_batch_size` must be an integer >= 1"))
    def test_bad_values(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            RobustSettings(**kwargs)
        with self.assertRaisesRegex(ValueError, message):
            RobustSettings().replace(**kwargs)

    def test_replace(self):
        s = RobustSettings()
        t = s.replace(epsilon=0.1, top_k=None)
        self.assertEqual((t.epsilon, t.top_k, s.epsilon), (0.1, None, 0.3))
        self.assertIs(s.replace(epsilon=None), s)  # None keeps the value
        with self.assertRaisesRegex(ValueError, "Unknown robust setting 'epsilonn'. Did you mean 'epsilon'"):
            s.replace(epsilonn=0.1)


# the settings each row uses, written out (the config's `robust` block: these but the seed, plus the weights)
USES = {
    "natural": ("loss_reduction",),
    "madry": ("loss_reduction", "epsilon", "step_size", "attack_steps", "random_start", "surrogate_beta", "seed"),
    "trades": ("loss_reduction", "epsilon", "step_size", "attack_steps", "random_start", "surrogate_beta", "seed"),
    "ig_norm": ("loss_reduction", "epsilon", "step_size", "attack_steps", "random_start", "ig_steps",
                "inner_ig_steps", "ig_method", "ig_batch_size", "surrogate_beta", "seed"),
    "ig_sum_norm": ("loss_reduction", "epsilon", "step_size", "attack_steps", "random_start", "ig_steps",
                    "inner_ig_steps", "ig_method", "ig_batch_size", "surrogate_beta", "seed"),
    "art": ("loss_reduction", "epsilon", "step_size", "attack_steps", "random_start", "surrogate_beta", "top_k",
            "seed"),
    "sarkar2021": ("loss_reduction", "epsilon", "step_size", "attack_steps", "random_start", "ig_steps",
                   "inner_ig_steps", "ig_method", "ig_batch_size", "inner_weight", "surrogate_beta", "seed"),
}


class ObjectiveSettingsTest(testing.TestCase):
    def test_row_defaults(self):
        art = objectives.get("art").settings
        self.assertIsInstance(art, RobustSettings)
        self.assertEqual((art.attack_steps, art.step_size, art.surrogate_beta, art.top_k), (3, 0.1875, 50.0, 1000))
        sarkar = objectives.get("sarkar2021")
        self.assertEqual((sarkar.settings.ig_steps, sarkar.settings.inner_ig_steps), (20, 5))
        self.assertEqual(sarkar.ig_steps, 20)  # row attributes read the settings
        self.assertEqual(objectives.get("madry").settings, RobustSettings())
        row = objectives.Objective("with_defaults", ig_steps=7, settings={"epsilon": 0.2})
        self.assertEqual((row.settings.ig_steps, row.settings.epsilon), (7, 0.2))
        with self.assertRaisesRegex(ValueError, "Did you mean 'ig_steps'"):
            objectives.Objective("typo", ig_step=7)

    @parameterized.parameters(*sorted(USES))
    def test_uses(self, name):
        self.assertEqual(objectives.get(name).uses, USES[name])

    def test_resolve_and_model_settings(self):
        model = models.tiny_cnn()
        robust = RobustModel(model, "art", epsilon=0.2, attack_steps=np.int64(2), ig_batch_size=None)
        self.assertEqual(robust.settings, objectives.get("art").settings.replace(epsilon=0.2, attack_steps=2))
        config = robust.get_config()
        saved = [k for k in settings.names() if k != "bounds"]  # the default bounds (0, 1) are not written
        self.assertEqual({k: config[k] for k in saved}, {k: getattr(robust.settings, k) for k in saved})
        self.assertEqual(set(config), set(saved) | {"name", "trainable", "model", "objective", "weights"})
        scaled = RobustModel(models.tiny_cnn(), "art", bounds=(0, 255), epsilon=8.0, step_size=2.0)
        self.assertEqual(scaled.get_config()["bounds"], (0.0, 255.0))
        self.assertEqual(RobustModel.from_config(scaled.get_config()).settings, scaled.settings)
        with self.assertRaisesRegex(ValueError, "Unknown RobustModel setting 'epsilonn'. Did you mean 'epsilon'"):
            RobustModel(model, "madry", epsilonn=0.1)
        with self.assertRaisesRegex(ValueError, "`step_size` must be a finite number > 0. Received: step_size=0"):
            RobustModel(model, "madry", step_size=0)
        self.assertEqual(RobustModel(model, "natural", step_size=0).settings.step_size, 0.0)

    def test_old_format_keras_file_loads(self):
        # a RobustModel config as written before RobustSettings (same keys, surrogate_beta 0.0 for "none")
        robust = RobustModel(models.tiny_cnn(), "sarkar2021", **TINY)
        path = os.path.join(self.get_temp_dir(), "m.keras")
        robust.save(path)
        config = json.loads(json.dumps(robust.get_config()))
        old = {"name": config["name"], "trainable": True, "model": config["model"], "objective": "sarkar2021",
               "weights": {"cacr": 0.1, "wacr": 0.1}, "epsilon": 0.1, "step_size": 0.04, "attack_steps": 1,
               "random_start": True, "ig_steps": 2, "inner_ig_steps": 2, "ig_method": "riemann_right",
               "surrogate_beta": 0.0, "loss_reduction": "mean", "ig_batch_size": None, "seed": 0,
               "inner_weight": None, "top_k": None}
        self.assertEqual(config, old)
        restored = keras.models.load_model(path)
        self.assertEqual(restored.settings, robust.settings)
        self.assertAllEqual(restored.predict(np.zeros((1, 8, 8, 1), "float32"), verbose=0),
                            robust.predict(np.zeros((1, 8, 8, 1), "float32"), verbose=0))


class OneHomePerTermTest(testing.TestCase):
    def test_tied_weight_is_one_variable(self):
        robust = RobustModel(models.tiny_cnn(), "ig_sum_norm", weights={"ig_norm": 0.3}, **TINY)
        self.assertIs(robust.inner_attack.objectives["ig_norm"], robust.regularizer_weights["ig_norm"])
        self.assertEqual(robust.inner_attack.get_config()["objectives"], {"cross_entropy": 1.0, "ig_norm": 0.3})
        untied = RobustModel(models.tiny_cnn(), "ig_sum_norm", inner_weight=0.05, **TINY)
        self.assertEqual(untied.inner_attack.objectives, {"cross_entropy": 1.0, "ig_norm": 0.05})
        sarkar = RobustModel(models.tiny_cnn(), "sarkar2021", **TINY)
        self.assertEqual(sarkar.inner_attack.objectives, {"cross_entropy": 1.0, "ig_norm": 0.1})

    def test_lambda_lives_only_in_the_variable(self):
        # the penalties are built without a weight: their `weight` attribute is not λ and is never read
        robust = RobustModel(models.tiny_cnn(), "trades", weights={"trades_kl": 6.0}, **TINY)
        self.assertEqual(robust.regularizers["trades_kl"].weight, 1.0)
        self.assertAllClose(robust.regularizer_weights["trades_kl"], 6.0)

    def test_regularizers_is_the_penalties_module(self):
        for name in penalties.__all__:
            self.assertIs(getattr(regularizers, name), getattr(penalties, name))

    def test_inner_and_outer_terms_are_the_same_function(self):
        # the inner attack's J_t and the penalty evaluate one function of `terms` on the same inputs
        rng = np.random.default_rng(0)
        x = tf.constant(rng.uniform(size=(3, 8, 8, 1)), tf.float32)
        adv = tf.clip_by_value(x + 0.05, 0.0, 1.0)
        y = tf.constant([0, 1, 2])
        model = models.tiny_cnn()
        attack = inner_lib.InnerAttack({"ig_norm": 1.0, "trades_kl": 1.0}, epsilon=0.1, step_size=0.1, steps=1,
                                       ig_steps=3)
        context = attack._context(model, model, x, y, x)
        got_ig = inner_lib.TERMS["ig_norm"](attack, model, adv, x, y, context)
        self.assertAllEqual(got_ig, penalties.IGNorm(steps=3)(model, x, y, adv_images=adv))
        self.assertAllEqual(got_ig, terms.ig_norm(model, x, adv, y, steps=3))
        got_kl = inner_lib.TERMS["trades_kl"](attack, model, adv, x, y, context)
        self.assertAllEqual(got_kl, penalties.TradesKL()(model, x, y, adv_images=adv))
        # with p(x) held fixed the value is the same; the gradient then flows through p(x′) only
        self.assertAllEqual(got_kl, terms.kl_divergence(model(x), model(adv)))
