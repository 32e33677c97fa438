"""Resumable early stopping (attr_robust_tf.early_stopping, `train.early_stopping_patience` in run_train).

Oracles: the stopping rule re-derived from the recorded per-epoch validation accuracies, the restored model's
accuracy recomputed on the validation draw, and an uninterrupted run against one stopped after each epoch and
resumed (bit-for-bit equal weights and the same decision).
"""
import json
import os

import keras
import numpy as np
import pytest

import testing
from attr_robust_tf import config_utils, configs, data, early_stopping, experiment



def tiny_config(epochs, patience):
    config = configs.get("fmnist", "natural", "tiny")
    config.train.epochs = epochs
    config.train.early_stopping_patience = patience
    config.data.num_examples = 32  # 4 steps of 8
    config.lr = 0.05  # large steps: the validation accuracy moves, and stalls, within a few epochs
    return config


class DecideTest(testing.TestCase):
    def test_rule(self):
        self.assertEqual(early_stopping.decide({1: 0.5, 2: 0.6, 3: 0.6}, 2), (2, 0.6, False))  # a tie: no gain
        self.assertEqual(early_stopping.decide({1: 0.5, 2: 0.6, 3: 0.6, 4: 0.55}, 2), (2, 0.6, True))
        self.assertEqual(early_stopping.decide({1: 0.7, 2: float("nan")}, 1), (1, 0.7, True))
        self.assertEqual(early_stopping.decide({1: 0.5}, 1), (1, 0.5, False))
        # an ε warm-up: its epochs are never the best, patience counts from its end
        self.assertEqual(early_stopping.decide({1: 0.9, 2: 0.8, 3: 0.7}, 1, warmup=2), (3, 0.7, False))
        self.assertEqual(early_stopping.decide({1: 0.9, 2: 0.8, 3: 0.7, 4: 0.6}, 1, warmup=2), (3, 0.7, True))
        self.assertEqual(early_stopping.decide({1: 0.9, 2: 0.8}, 1, warmup=2), (None, None, False))
        with self.assertRaisesRegex(ValueError, "`patience` must be >= 1"):
            early_stopping.decide({1: 0.5}, 0)
        with self.assertRaisesRegex(ValueError, "`history` must hold at least one epoch"):
            early_stopping.decide({}, 1)

    def test_config_key_is_validated(self):
        config = tiny_config(2, 1)
        config_utils.validate(config)
        config.train.early_stopping_patience = -1
        with self.assertRaisesRegex(ValueError, "train.early_stopping_patience"):
            config_utils.validate(config)
        config = tiny_config(2, 1)
        config.data.validation_limit = 0
        with self.assertRaisesRegex(ValueError, "needs validation data"):
            experiment.run_train(config, self.get_temp_dir(), verbose=0)


class RunTrainTest(testing.TestCase):
    @pytest.mark.slow  # 4 tiny trainings: ~6 s quiet, ~15 s on shared cores
    def test_stops_restores_the_best_epoch_and_resumes_to_the_same_decision(self):
        # one uninterrupted run of up to 6 tiny epochs (it stops after 2), then the same run one epoch per call
        config = tiny_config(6, 1)
        whole = os.path.join(self.get_temp_dir(), "whole")
        model = experiment.run_train(config, whole, verbose=0)
        state = early_stopping.read_state(whole)
        history = state["history"]
        best, value, stop = early_stopping.decide(history, 1)
        self.assertEqual((state["best_epoch"], state["best_value"]), (best, value))
        self.assertEqual(state["stopped_epoch"], max(history) if stop else None)
        self.assertEqual(len(model.history.history["val_accuracy"]), max(history))
        # the rule: training ran until one epoch without a gain (or the last epoch)
        self.assertTrue(stop or max(history) == 6)
        # the saved model holds the best epoch's weights: its validation accuracy is the recorded best
        (x, y) = data.synthetic(16, image_shape=(8, 8, 1), num_classes=3, seed=config.seed + 1, as_arrays=True)
        saved = keras.models.load_model(os.path.join(whole, "model.keras"), compile=False)
        accuracy = np.mean(np.argmax(saved.predict(x.astype(np.float32) / (255.0 if x.dtype == np.uint8 else 1.0),
                                                   verbose=0), -1) == y)
        self.assertAllClose(accuracy, value)

        # killed after every epoch (train.epochs raised one by one): same history, stop and weights
        parts = os.path.join(self.get_temp_dir(), "parts")
        for epochs in range(1, 7):
            partial = tiny_config(epochs, 1)
            resumed = experiment.run_train(partial, parts, verbose=0)
            if (early_stopping.read_state(parts) or {}).get("stopped_epoch"):
                break
        again = experiment.run_train(config, parts, verbose=0)  # nothing left: the recorded stop holds
        self.assertEqual(early_stopping.read_state(parts), state)
        with open(os.path.join(parts, "checkpoints", "state.json")) as f:
            self.assertEqual(json.load(f)["epoch"], max(history))
        for a, b in zip(again.get_weights(), model.get_weights()):
            np.testing.assert_array_equal(a, b)
        del resumed
