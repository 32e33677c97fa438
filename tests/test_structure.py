"""Map structure (attr_robust_tf.reproduction.structure): block top-k, mass support and first-layer peak share
against NumPy float64 re-implementations and closed forms; the record of a cell folder; the generated table."""
import json
import os

import keras
import numpy as np
import scipy.stats
import tensorflow as tf

from attr_robust_tf import metrics
from attr_robust_tf.reproduction import counterfactual, structure, tables


def numpy_block_topk(clean, adv, k, b):
    n, h, w = clean.shape
    kb = max(1, int(round(k / b ** 2)))
    out = []
    for c, a in zip(clean.astype(np.float64), adv.astype(np.float64)):
        cs = c.reshape(h // b, b, w // b, b).sum(axis=(1, 3)).ravel()
        as_ = a.reshape(h // b, b, w // b, b).sum(axis=(1, 3)).ravel()
        tc = set(np.argsort(-cs, kind="stable")[:kb])
        ta = set(np.argsort(-as_, kind="stable")[:kb])
        out.append(len(tc & ta) / kb)
    return np.array(out)


class BlockTopkTest(tf.test.TestCase):
    def test_matches_numpy(self):
        rng = np.random.default_rng(0)
        clean, adv = rng.random((6, 12, 12)), rng.random((6, 12, 12))
        for k, b in ((16, 2), (9, 3), (20, 2), (1, 2)):
            self.assertAllClose(structure.block_topk_intersection(clean, adv, k, b),
                                numpy_block_topk(clean, adv, k, b))

    def test_block_one_is_the_pixel_metric(self):
        rng = np.random.default_rng(1)
        clean, adv = rng.random((4, 8, 8)), rng.random((4, 8, 8))
        self.assertAllEqual(structure.block_topk_intersection(clean, adv, 10, 1),
                            metrics.topk_intersection(clean, adv, 10))

    def test_a_shift_inside_a_cell_keeps_the_block_metric(self):
        clean = np.zeros((1, 4, 4))
        clean[0, 0, 0] = clean[0, 2, 2] = 1.0
        adv = np.zeros((1, 4, 4))
        adv[0, 1, 1] = adv[0, 3, 3] = 1.0  # each bright pixel moved inside its 2×2 cell
        self.assertAllClose(metrics.topk_intersection(clean, adv, 2), [0.0])
        self.assertAllClose(structure.block_topk_intersection(clean, adv, 8, 2), [1.0])

    def test_bad_block(self):
        with self.assertRaisesRegex(ValueError, r"`block` must divide the map size \(H, W\) = \(6, 6\)\. "
                                                r"Received: block=4"):
            structure.block_sums(np.zeros((1, 6, 6)), 4)
        with self.assertRaisesRegex(ValueError, "`maps` must have shape"):
            structure.block_sums(np.zeros((6, 6)), 2)


class MassSupportTest(tf.test.TestCase):
    def test_closed_form(self):
        maps = np.array([[[4.0, 3.0], [2.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]])
        # 4, 7, 9 of 10: 3 pixels hold ≥ 80 %; an all-zero map: 0; a flat map of 4: ceil(0.8·4) = 4
        self.assertAllEqual(structure.mass_support(maps), [3, 0, 4])
        self.assertAllEqual(structure.mass_support(maps, share=0.4), [1, 0, 2])

    def test_negative_maps_are_refused(self):
        with self.assertRaisesRegex(ValueError, "`maps` must be finite and non-negative"):
            structure.mass_support(np.array([[[1.0, -1.0]]]))


def _conv_model(kernel):
    inputs = keras.Input((8, 8, kernel.shape[2]))
    inner = keras.Sequential([keras.Input((8, 8, kernel.shape[2])),
                              keras.layers.Conv2D(kernel.shape[3], 3, padding="same"),
                              keras.layers.Conv2D(2, 3, padding="same")])
    model = keras.Model(inputs, keras.layers.Flatten()(inner(inputs)))
    inner.layers[0].kernel.assign(kernel)
    return model


class PeakShareTest(tf.test.TestCase):
    def test_closed_forms_and_nesting(self):
        kernel = np.zeros((3, 3, 2, 3), np.float32)
        kernel[1, 1, :, 0] = [1.0, -2.0]  # one tap: share 1
        kernel[:, :, 0, 1] = 0.5  # flat: share 1/9
        kernel[0, 0, :, 2] = [1.0, 1.0]  # taps (0,0): 2, (2,2): 1, the rest 0: share 2/3
        kernel[2, 2, 1, 2] = -1.0
        share, peaked, filters = structure.first_conv_peak_share(_conv_model(kernel))
        self.assertAllClose(share, (1.0 + 1.0 / 9.0 + 2.0 / 3.0) / 3.0)
        self.assertEqual((peaked, filters), (2, 3))

    def test_no_conv(self):
        inputs = keras.Input((4,))
        self.assertIsNone(structure.first_conv_peak_share(keras.Model(inputs, keras.layers.Dense(2)(inputs))))


def _pool_model(kernel, bias, size=8):
    """conv3×3 (the given kernel and bias, ReLU) → MaxPooling2D(2) → dense, wrapped in a functional model."""
    inputs = keras.Input((size, size, kernel.shape[2]))
    conv = keras.layers.Conv2D(kernel.shape[3], 3, padding="same", activation="relu")
    h = keras.layers.MaxPooling2D(2)(conv(inputs))
    inner = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(h)))
    outer_in = keras.Input((size, size, kernel.shape[2]))
    model = keras.Model(outer_in, inner(outer_in))
    conv.kernel.assign(kernel)
    conv.bias.assign(bias)
    return model


def numpy_switches(clean_features, adv_features):
    """Loop over images, 2×2 windows and channels: (switched / active, active / all) in float64."""
    n, h, w, c = clean_features.shape
    switched = active = total = 0
    for i in range(n):
        for r in range(0, h - h % 2, 2):
            for q in range(0, w - w % 2, 2):
                for ch in range(c):
                    a = clean_features[i, r:r + 2, q:q + 2, ch].ravel()
                    b = adv_features[i, r:r + 2, q:q + 2, ch].ravel()
                    total += 1
                    if a.max() > 0:
                        active += 1
                        switched += int(np.argmax(a) != np.argmax(b))
    return switched / active, active / total


class FirstPoolTest(tf.test.TestCase):
    def test_threshold_closed_form(self):
        kernel = np.zeros((3, 3, 1, 4), np.float32)
        kernel[1, 1, 0, :3] = [0.5, 2.0, -1.0]  # one-pixel filters: −b/w = 0.3, 0.1, 0.2
        kernel[:, :, 0, 3] = 1.0  # flat: not counted
        bias = np.array([-0.15, -0.2, 0.2, -5.0], np.float32)
        self.assertAllClose(structure.first_conv_threshold(_pool_model(kernel, bias)), 0.2)
        kernel[1, 1, 0, :3] = 0.0
        self.assertIsNone(structure.first_conv_threshold(_pool_model(kernel, bias)))

    def test_switches_against_numpy_loops(self):
        rng = np.random.default_rng(5)
        kernel = np.zeros((3, 3, 1, 2), np.float32)
        kernel[1, 1, 0, 0] = 1.0  # ReLU(x − 0.3): the window winner is the brightest pixel above 0.3
        kernel[:, :, 0, 1] = rng.normal(size=(3, 3))
        bias = np.array([-0.3, 0.1], np.float32)
        model = _pool_model(kernel, bias, size=7)  # odd size: the last row and column are outside every window
        clean = rng.random((6, 7, 7, 1)).astype(np.float32)
        adv = np.clip(clean + rng.uniform(-0.2, 0.2, clean.shape), 0, 1).astype(np.float32)
        switched, active = structure.first_pool_switches(model, clean, adv)
        features = model.layers[1].layers[1]  # the conv of the inner model
        f = keras.Model(model.layers[1].inputs[0], features.output)
        self.assertAllClose((switched, active), numpy_switches(np.asarray(f(clean)), np.asarray(f(adv))))
        self.assertGreater(switched, 0.0)
        self.assertLess(switched, 1.0)
        self.assertEqual(structure.first_pool_switches(model, clean, clean), (0.0, active))
        shares, actives = structure.first_pool_switches(model, clean, adv, per_image=True)
        expected = [numpy_switches(np.asarray(f(clean[i:i + 1])), np.asarray(f(adv[i:i + 1]))) for i in range(6)]
        self.assertAllClose(np.stack([shares, actives], axis=1), expected)

    def test_identity_filter_closed_form(self):
        kernel = np.zeros((3, 3, 1, 1), np.float32)
        kernel[1, 1, 0, 0] = 1.0
        model = _pool_model(kernel, np.zeros(1, np.float32), size=4)
        clean = np.zeros((1, 4, 4, 1), np.float32)
        clean[0, 0, 0] = clean[0, 2, 2] = 0.9  # two active windows, the other two all-zero (inactive)
        adv = clean.copy()
        adv[0, 1, 1] = 1.0  # the top-left window's winner moves
        self.assertAllClose(structure.first_pool_switches(model, clean, adv), (0.5, 0.5))
        shares, actives = structure.first_pool_switches(model, np.concatenate([clean, 0 * clean]),
                                                        np.concatenate([adv, adv]), per_image=True)
        self.assertAllClose(shares, [0.5, np.nan])  # an image without an active window: NaN
        self.assertAllClose(actives, [0.5, 0.0])
        self.assertEqual(structure.first_pool_switches(model, 0 * clean, adv), (None, 0.0))

    def test_images_of_different_shapes(self):
        kernel = np.zeros((3, 3, 1, 1), np.float32)
        model = _pool_model(kernel, np.zeros(1, np.float32), size=4)
        with self.assertRaisesRegex(ValueError, r"adversarial_images.*shape of `clean_images`.*\(2, 4, 4, 1\).*"
                                                r"\(1, 4, 4, 1\)"):
            structure.first_pool_switches(model, np.zeros((2, 4, 4, 1)), np.zeros((1, 4, 4, 1)))

    def test_no_pair(self):
        kernel = np.zeros((3, 3, 1, 2), np.float32)
        self.assertIsNone(structure.first_pool_switches(_conv_model(kernel), np.zeros((1, 8, 8, 1)),
                                                        np.zeros((1, 8, 8, 1))))
        inputs = keras.Input((4,))
        self.assertIsNone(structure.first_pool_switches(keras.Model(inputs, keras.layers.Dense(2)(inputs)),
                                                        np.zeros((1, 4)), np.zeros((1, 4))))


class BackgroundTest(tf.test.TestCase):
    def _conv(self, kernel, bias):
        return _pool_model(kernel, bias).layers[1].layers[1]

    def test_levels_closed_form(self):
        kernel = np.zeros((3, 3, 1, 5), np.float32)
        kernel[1, 1, 0, 0], kernel[0, 0, 0, 0] = 0.5, -0.25  # Σ max(w, 0) = 0.5: level 0.3
        kernel[:, :, 0, 1] = 0.1  # flat, Σ = 0.9: level 0.2 / 0.9
        kernel[1, 1, 0, 2] = 1.0  # b ≥ 0: fires on black, level 0
        kernel[1, 1, 0, 3] = -1.0  # no positive tap: never fires
        kernel[1, 1, 0, 4] = 2.0  # level 0.05
        bias = np.array([-0.15, -0.2, 0.1, -0.1, -0.1], np.float32)
        levels = structure.background_levels(self._conv(kernel, bias))
        self.assertAllClose(levels, [0.3, 0.2 / 0.9, 0.0, np.inf, 0.05], rtol=1e-6)
        with self.assertRaisesRegex(ValueError, "`conv` must have a bias"):
            structure.background_levels(_no_bias_conv())

    def test_checkpoint_levels_per_file_and_weights_restored(self):
        kernel = np.zeros((3, 3, 1, 2), np.float32)
        kernel[1, 1, 0, :] = [0.5, 2.0]  # Σ max(w, 0) = 0.5 and 2: level = −b / Σ
        model = _pool_model(kernel, np.array([-0.1, -0.5], np.float32))
        conv = model.layers[1].layers[1]
        paths = []
        for epoch, bias in ((1, [-0.149, -0.61]), (2, [-0.151, -0.59])):  # levels 0.298/0.305, then 0.302/0.295
            conv.bias.assign(np.array(bias, np.float32))
            paths.append(os.path.join(self.get_temp_dir(), f"epoch-{epoch:05d}.weights.h5"))
            model.save_weights(paths[-1])
        conv.bias.assign(np.array([-0.1, -0.5], np.float32))
        levels = structure.checkpoint_levels(model, paths)
        self.assertEqual(list(levels), ["epoch-00001.weights.h5", "epoch-00002.weights.h5"])
        self.assertAllClose(levels["epoch-00001.weights.h5"], [0.298, 0.305], rtol=1e-6)
        self.assertAllClose(levels["epoch-00002.weights.h5"], [0.302, 0.295], rtol=1e-6)
        self.assertAllClose(conv.bias.numpy(), [-0.1, -0.5])  # the model's own weights are back
        with self.assertRaisesRegex(FileNotFoundError, "`paths` must name weights files"):
            structure.checkpoint_levels(model, [os.path.join(self.get_temp_dir(), "missing.weights.h5")])
        os.makedirs(os.path.join(self.get_temp_dir(), "other"), exist_ok=True)
        twin = os.path.join(self.get_temp_dir(), "other", "epoch-00001.weights.h5")
        model.save_weights(twin)
        with self.assertRaisesRegex(ValueError, "`paths` must have distinct file names"):
            structure.checkpoint_levels(model, [paths[0], twin])

    def test_raised_filters_cannot_fire_on_a_black_patch(self):
        rng = np.random.default_rng(9)
        kernel = rng.normal(0, 0.5, (3, 3, 1, 6)).astype(np.float32)
        positive = np.clip(kernel.astype(np.float64), 0, None).reshape(9, 6).sum(0)
        levels = np.array([0.29, 0.31, 0.28, 0.299, 0.5, 0.3001])
        bias = (-levels * positive).astype(np.float32)
        model = _pool_model(kernel, bias)
        conv = model.layers[1].layers[1]

        def worst_patch_preactivation():
            """Per filter, the pre-activation at the centre of a black 8×8 image whose 3×3 centre patch is ε where
            the filter's weight is positive (the attack's best black patch), through the layer itself."""
            out = []
            for f in range(6):
                image = np.zeros((1, 8, 8, 1), np.float32)
                image[0, 3:6, 3:6, 0] = np.where(kernel[:, :, 0, f] > 0, 0.3, 0.0)
                z = tf.nn.conv2d(image, conv.kernel, 1, "SAME") + conv.bias
                out.append(float(z[0, 4, 4, f]))
            return np.array(out)

        before = worst_patch_preactivation()
        self.assertAllEqual(before > 0, levels < 0.3)
        moved = counterfactual.raise_background_levels(model, 0.3, margin=1e-3)
        self.assertAllEqual(moved, [0, 2, 3])
        after = structure.background_levels(conv)
        self.assertAllClose(after[moved], [0.301] * 3, rtol=1e-5)
        self.assertAllClose(np.asarray(conv.bias)[[1, 4, 5]], bias[[1, 4, 5]])  # the others untouched
        self.assertTrue(np.all(worst_patch_preactivation() < 0))
        self.assertAllEqual(counterfactual.raise_background_levels(model, 0.3), [])
        # 0.3005 and 0.3001 lie below the band [0.304, 0.32)
        self.assertAllEqual(counterfactual.raise_background_levels(model, 0.32, band=0.05), [1])
        with self.assertRaisesRegex(ValueError, "`epsilon` must be a finite number > 0"):
            counterfactual.raise_background_levels(model, 0.0)

    def test_black_mass_against_loops(self):
        rng = np.random.default_rng(10)
        images = rng.random((4, 5, 5, 2))
        images[images < 0.4] = 0.0
        maps = rng.random((4, 5, 5))
        maps[3] = 0.0
        expected = []
        for image, m in zip(images, maps):
            black = total = 0.0
            for r in range(5):
                for c in range(5):
                    total += abs(m[r, c])
                    black += abs(m[r, c]) if image[r, c, 0] == 0 and image[r, c, 1] == 0 else 0.0
            expected.append(black / total if total else np.nan)
        self.assertAllClose(structure.black_mass(images, maps), expected)


def _no_bias_conv():
    layer = keras.layers.Conv2D(2, 3, use_bias=False)
    layer.build((None, 4, 4, 1))
    return layer


class MapStructureTest(tf.test.TestCase):
    def _folder(self, clean, adv, kernel=None):
        folder = os.path.join(self.get_temp_dir(), f"cell{np.random.default_rng().integers(1 << 30)}")
        os.makedirs(os.path.join(folder, "eval", "chunks"))
        for i, sl in enumerate((slice(0, 3), slice(3, None))):
            np.savez(os.path.join(folder, "eval", "chunks", f"chunk_{i:05d}.npz"), clean_maps=clean[sl],
                     adversarial_maps=adv[sl])
        if kernel is not None:
            os.makedirs(os.path.join(folder, "train"))
            _conv_model(kernel).save(os.path.join(folder, "train", "model.keras"))
        return folder

    def test_record_against_numpy(self):
        rng = np.random.default_rng(2)
        clean, adv = rng.random((5, 8, 8)).astype(np.float32), rng.random((5, 8, 8)).astype(np.float32)
        kernel = np.zeros((3, 3, 1, 4), np.float32)
        kernel[1, 1, 0, :] = 1.0
        record = structure.map_structure(self._folder(clean, adv, kernel), k=12)
        pixel = np.mean([len(set(np.argsort(-c.ravel(), kind="stable")[:12])
                             & set(np.argsort(-a.ravel(), kind="stable")[:12])) / 12 for c, a in zip(clean, adv)])
        s = -np.sort(-clean.reshape(5, -1).astype(np.float64), axis=1)
        support = np.mean([np.searchsorted(np.cumsum(r), 0.8 * r.sum()) + 1 for r in s])
        self.assertAllClose(record["topk"], pixel)
        self.assertAllClose(record["block_topk"], numpy_block_topk(clean, adv, 12, 2).mean())
        self.assertAllClose(record["support"], support)
        self.assertEqual((record["images"], record["k"], record["block"]), (5, 12, 2))
        self.assertEqual((record["peak_share"], record["peaked"], record["filters"]), (1.0, 4, 4))

    def test_first_pool_entries_from_saved_images(self):
        rng = np.random.default_rng(6)
        clean, adv = rng.random((5, 8, 8)).astype(np.float32), rng.random((5, 8, 8)).astype(np.float32)
        x = rng.random((5, 8, 8, 1)).astype(np.float32)
        x[x < 0.3] = 0.0  # black pixels
        xa = np.clip(x + rng.uniform(-0.3, 0.3, x.shape), 0, 1).astype(np.float32)
        kernel = np.zeros((3, 3, 1, 3), np.float32)
        kernel[1, 1, 0, :] = [1.0, 2.0, 0.5]
        bias = np.array([-0.2, -0.2, -0.1], np.float32)  # firing levels 0.2, 0.1, 0.2
        folder = self._folder(clean, adv)
        for i, sl in enumerate((slice(0, 3), slice(3, None))):
            np.savez(os.path.join(folder, "eval", "chunks", f"chunk_{i:05d}.npz"), clean_maps=clean[sl],
                     adversarial_maps=adv[sl], clean_images=x[sl], adversarial_images=xa[sl])
        os.makedirs(os.path.join(folder, "train"))
        model = _pool_model(kernel, bias)
        model.save(os.path.join(folder, "train", "model.keras"))
        record = structure.map_structure(folder, k=12, epsilon=0.15)
        features = keras.Model(model.layers[1].inputs[0], model.layers[1].layers[1].output)
        fx, fa = np.asarray(features(x)), np.asarray(features(xa))
        self.assertAllClose((record["switched"], record["active"]), numpy_switches(fx, fa))
        per_image = [numpy_switches(fx[i:i + 1], fa[i:i + 1])[0] for i in range(5)]
        pixel = [len(set(np.argsort(-c.ravel(), kind="stable")[:12]) & set(np.argsort(-a.ravel(), kind="stable")[:12]))
                 / 12 for c, a in zip(clean, adv)]
        self.assertAllClose(record["switch_rho"], scipy.stats.spearmanr(per_image, pixel)[0])
        self.assertAllClose(record["threshold"], 0.2)
        self.assertEqual(record["peaked"], 3)
        self.assertEqual(record["lit"], 1)  # black-patch levels 0.2, 0.1, 0.2 against ε = 0.15
        black = [np.abs(a)[c[..., 0] == 0].sum() / np.abs(a).sum() for c, a in zip(x, adv.astype(np.float64))]
        self.assertAllClose(record["black_mass"], np.mean(black))
        self.assertIsNone(structure.map_structure(folder, k=12)["lit"])  # no ε: not counted (and not the cache)

    def test_no_maps_no_record_and_no_model_no_share(self):
        empty = os.path.join(self.get_temp_dir(), "empty")
        os.makedirs(empty)
        self.assertIsNone(structure.map_structure(empty, 10))
        rng = np.random.default_rng(3)
        record = structure.map_structure(self._folder(rng.random((4, 6, 6)), rng.random((4, 6, 6))), k=4)
        self.assertIsNone(record["peak_share"])


class StructureTableTest(tf.test.TestCase):
    def _cell(self, entry, lens=None):
        summary = {"topk": {"mean": 0.5}}
        if lens is not None:
            summary["lens_topk"] = {"mean": lens}
        return {"entry": entry, "objective": entry, "failed_attack": "exclude", "summaries": {"exclude": summary},
                "protocol": {"lens_window": 3, "epsilon": 0.1}}

    def _record(self, topk, block_topk, peaked):
        return {"images": 10, "k": 100, "block": 2, "topk": topk, "block_topk": block_topk, "support": 90.4,
                "peak_share": 0.7, "peaked": peaked, "filters": 16, "threshold": 0.11 if peaked else None,
                "switched": 0.45 if peaked else 0.44, "active": 0.42, "switch_rho": -0.4 if peaked else None,
                "lit": 3 if peaked else None, "black_mass": 0.125}

    def test_rows_and_generated_sentence(self):
        cells = [self._cell("natural", 0.9), self._cell("madry", 0.96), self._cell("trades")]
        lines = tables.structure_table(cells, [self._record(0.48, 0.61, 0), self._record(0.35, 0.68, 11), None])
        self.assertEqual(len([line for line in lines if line.startswith("| ")]), 3)  # header + 2 rows
        self.assertIn("| Madry et al. (PGD-AT) | 11 of 16 | 0.70 | 0.11 | 45.0% (42.0%) | -0.40 | 3 of 16 | 12.5% | 90 "
                      "| 35.0% | 68.0% | 96.0% |", lines)
        self.assertIn("| Natural | 0 of 16 | 0.70 | — | 44.0% (42.0%) | — | — | 12.5% | 90 | 48.0% | 61.0% "
                      "| 90.0% |",
                      lines)
        self.assertIn("(ε = 0.1)", lines[0])
        self.assertIn("below Natural in pixels but not in blocks", lines[-1])
        self.assertIn("11 of its 16 first-layer filters", lines[-1])
        self.assertIn("median firing level −b/w of 0.11 (ε = 0.1)", lines[-1])
        self.assertIn("switches the winner of 45.0% of its active first-pool windows (Natural: 44.0%); over its "
                      "images, the more windows switch, the lower the top-k (Spearman's ρ = -0.40)", lines[-1])
        lines = tables.structure_table(cells[:2], [self._record(0.48, 0.61, 0), self._record(0.35, 0.55, 11)])
        self.assertIn("below Natural in blocks too", lines[-1])
        self.assertEqual(tables.structure_table(cells, [None, None, None]), [])


class CacheTest(tf.test.TestCase):
    def test_record_is_cached_and_refreshed(self):
        rng = np.random.default_rng(4)
        clean, adv = rng.random((4, 6, 6)), rng.random((4, 6, 6))
        folder = MapStructureTest._folder(self, clean, adv)
        first = structure.map_structure(folder, k=4)
        self.assertTrue(os.path.exists(os.path.join(folder, structure.FILE)))
        chunks = [os.path.join(folder, "eval", "chunks", n) for n in sorted(os.listdir(os.path.join(
            folder, "eval", "chunks")))]
        saved = {p: open(p, "rb").read() for p in chunks}
        for p in chunks:  # a checkout without the chunks: the cached record
            os.remove(p)
        self.assertEqual(structure.map_structure(folder, k=4), first)
        self.assertIsNone(structure.map_structure(folder, k=5))  # another k: not the cached one, and no maps
        self.assertIsNone(structure.map_structure(folder, k=4, epsilon=0.3))  # another ε: likewise
        for p, content in saved.items():
            with open(p, "wb") as f:
                f.write(content)
        np.savez(chunks[1], clean_maps=clean[3:], adversarial_maps=clean[3:])  # new maps: recomputed
        second = structure.map_structure(folder, k=4)
        self.assertNotEqual(second, first)

    def test_cache_of_another_version(self):
        rng = np.random.default_rng(7)
        folder = MapStructureTest._folder(self, rng.random((4, 6, 6)), rng.random((4, 6, 6)))
        fresh = structure.map_structure(folder, k=4)
        path = os.path.join(folder, structure.FILE)
        with open(path) as f:
            cached = json.load(f)
        cached["version"] = structure.VERSION - 1
        cached["record"] = dict(cached["record"], topk=-1.0)  # a record of older fields
        with open(path, "w") as f:
            json.dump(cached, f)
        self.assertEqual(structure.map_structure(folder, k=4), fresh)  # chunks present: recomputed
        with open(path, "w") as f:
            json.dump(cached, f)
        for name in os.listdir(os.path.join(folder, "eval", "chunks")):
            os.remove(os.path.join(folder, "eval", "chunks", name))
        self.assertEqual(structure.map_structure(folder, k=4)["topk"], -1.0)  # no chunks: the old record stays
