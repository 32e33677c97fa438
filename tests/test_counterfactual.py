"""The black-patch counterfactual of a cell (attr_robust_tf.reproduction.counterfactual).

Oracles: the same edit made by hand in NumPy (b = −(ε + margin)·Σ max(w, 0) for the filters in the band) and
evaluated directly with `evaluate_robustness`; the paired differences recomputed from the two per-image records.
"""
import os

import keras
import numpy as np
import tensorflow as tf

from attr_robust_tf import evaluation
from attr_robust_tf.reproduction import cells, counterfactual, names, records, tables
from attr_robust_tf.reproduction.claims import counterfactual_lines

EPS = 0.1  # the tiny protocol's


def _model(levels):
    """conv3×3 (4 filters, ReLU) → max-pool → dense on 8×8×1, the filters' black-patch levels set to `levels`."""
    inputs = keras.Input((8, 8, 1))
    conv = keras.layers.Conv2D(4, 3, padding="same", activation="relu")
    h = keras.layers.Flatten()(keras.layers.MaxPooling2D(2)(conv(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(3)(h))
    kernel = np.random.default_rng(0).normal(0, 1, (3, 3, 1, 4)).astype(np.float32)
    conv.kernel.assign(kernel)
    conv.bias.assign((-np.asarray(levels) * np.clip(kernel, 0, None).reshape(9, 4).sum(0)).astype(np.float32))
    return model, kernel


class BlackPatchTest(tf.test.TestCase):
    def _cell(self, levels):
        config = names.load_config("fmnist", "natural", "tiny")
        folder = os.path.join(self.get_temp_dir(), f"cell{np.random.default_rng().integers(1 << 30)}")
        os.makedirs(os.path.join(folder, "train"))
        model, kernel = _model(levels)
        model.save(os.path.join(folder, "train", "model.keras"))
        protocol = records.cell_protocol(config)
        test_set = cells._test_set(config, protocol)
        report = evaluation.evaluate_robustness(model, test_set, protocol)
        return {"folder": folder, "entry": "natural", "objective": "natural",
                "per_image": records.per_image(report.examples)}, config, kernel, test_set

    def test_edited_model_is_attacked_like_a_hand_edit(self):
        levels = [0.095, 0.2, 0.099, 0.05]  # in the band [0.09, 0.1): filters 0 and 2
        cell, config, kernel, test_set = self._cell(levels)
        record = counterfactual.black_patch(cell, config, 6, test_set=test_set)
        self.assertEqual(record["moved"], [0, 2])
        self.assertAllClose(record["levels"], levels, rtol=1e-5)
        self.assertAllClose(record["shift"], EPS + counterfactual.MARGIN - 0.095, rtol=1e-4)
        # the oracle: the same edit by hand, evaluated directly on the first 6 images
        model = keras.models.load_model(os.path.join(cell["folder"], "train", "model.keras"), compile=False)
        conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
        bias = conv.bias.numpy()
        positive = np.clip(kernel.astype(np.float64), 0, None).reshape(9, 4).sum(0)
        bias[[0, 2]] = -(EPS + counterfactual.MARGIN) * positive[[0, 2]]
        conv.bias.assign(bias)
        protocol = records.cell_protocol(config, 6)
        expected = records.per_image(evaluation.evaluate_robustness(model, test_set, protocol).examples)
        self.assertEqual(record["per_image"]["index"], list(range(6)))
        self.assertAllClose(np.array(record["per_image"]["topk"], float), np.array(expected["topk"], float))
        a, b = record["per_image"], cell["per_image"]
        both = [i for i in range(6) if a["clean_correct"][i] and a["found"][i] and b["clean_correct"][i]
                and b["found"][i]]
        if both:
            self.assertAllClose(record["paired"]["topk"]["mean"], np.mean([a["topk"][i] - b["topk"][i] for i in both]))
        self.assertEqual(record["paired"]["natural_accuracy"]["n"], 6)
        self.assertTrue(os.path.isdir(os.path.join(cell["folder"], "counterfactual")))
        # cached: the same record without attacking again; another image count is recomputed
        path = os.path.join(cell["folder"], counterfactual.FILE)
        stamp = os.stat(path).st_mtime_ns
        self.assertEqual(counterfactual.black_patch(cell, config, 6, test_set=test_set), record)
        self.assertEqual(os.stat(path).st_mtime_ns, stamp)
        self.assertEqual(counterfactual.read(cell["folder"]), record)
        # the page: a row with the moved filters, and the Sarkar − baseline sentence from two records
        row = tables.counterfactual_table([cell], [record])[2]
        self.assertTrue(row.startswith("| Natural | 2 of 4 (levels raised by ≤ 0.0055) | "), row)
        sarkar = dict(cell, entry="sarkar2021", objective="sarkar2021")
        base = dict(cell, entry="ig_sum_norm", objective="ig_sum_norm")
        lines = counterfactual_lines([base, sarkar], [record, record])
        self.assertEqual(len(lines), 1)
        self.assertIn("+0.0 points [0.0, 0.0] with the black patches of both closed", lines[0])
        self.assertIn("**no**", lines[0])

    def test_nothing_in_the_band_attacks_nothing(self):
        cell, config, _, test_set = self._cell([0.2, 0.05, 0.3, 0.15])
        record = counterfactual.black_patch(cell, config, 4, test_set=test_set)
        self.assertEqual((record["moved"], record["paired"], record["shift"]), ([], None, 0.0))
        self.assertFalse(os.path.exists(os.path.join(cell["folder"], "counterfactual")))
        self.assertIn("nothing to move", tables.counterfactual_table([cell], [record])[2])
        trained, edited = counterfactual.images(cell, record)
        self.assertEqual(trained, edited)
        self.assertEqual(trained["index"], [0, 1, 2, 3])
        with self.assertRaisesRegex(ValueError, "`num_images` must be"):
            counterfactual.black_patch(cell, config, 0)
