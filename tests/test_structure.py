"""Map structure (attr_robust_tf.reproduction.structure): block top-k, mass support and first-layer peak share
against NumPy float64 re-implementations and closed forms; the record of a cell folder; the generated table."""
import os

import keras
import numpy as np
import tensorflow as tf

from attr_robust_tf import metrics
from attr_robust_tf.reproduction import structure, tables


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
                "protocol": {"lens_window": 3}}

    def _record(self, topk, block_topk, peaked):
        return {"images": 10, "k": 100, "block": 2, "topk": topk, "block_topk": block_topk, "support": 90.4,
                "peak_share": 0.7, "peaked": peaked, "filters": 16}

    def test_rows_and_generated_sentence(self):
        cells = [self._cell("natural", 0.9), self._cell("madry", 0.96), self._cell("trades")]
        lines = tables.structure_table(cells, [self._record(0.48, 0.61, 0), self._record(0.35, 0.68, 11), None])
        self.assertEqual(len([line for line in lines if line.startswith("| ")]), 3)  # header + 2 rows
        self.assertIn("| Madry et al. (PGD-AT) | 11 of 16 | 0.70 | 90 | 35.0% | 68.0% | 96.0% |", lines)
        self.assertIn("below Natural in pixels but not in blocks", lines[-1])
        self.assertIn("11 of its 16 first-layer filters", lines[-1])
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
        for p, content in saved.items():
            with open(p, "wb") as f:
                f.write(content)
        np.savez(chunks[1], clean_maps=clean[3:], adversarial_maps=clean[3:])  # new maps: recomputed
        self.assertNotEqual(structure.map_structure(folder, k=4), first)
