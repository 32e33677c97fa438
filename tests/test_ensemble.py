"""Attack ensemble (attacks/ensemble.py), any explainer, and the LENS/ensemble parts of evaluate_robustness.

Oracles: the members run separately with the same seeds (the ensemble's metric is their per-image minimum),
the package's LENS metrics recomputed on the stored maps, and the protocol dicts of the existing presets.
"""
import json
import os

import numpy as np
import pytest

import testing
from attr_robust_tf import attributions, evaluation, evaluation_report, metrics, protocols
from attr_robust_tf.attacks import AttackEnsemble, AttributionAttack
from attr_robust_tf.attacks.attribution import attribution_map
from test_evaluation import SMALL, holdout, trained_tiny

SETTINGS = dict(epsilon=0.15, step_size=0.05, steps=3, k_attack=8, k_eval=8, ig_steps=4, restarts=2, seed=3)
MEMBERS = ("topk", "mass_center", "random_sign")


def _saliency(model, images, labels):
    return attributions.saliency(model, images, labels)


def _smoothgrad(model, images, labels):
    return attributions.smoothgrad(model, images, labels, samples=4, seed=0)


class EnsembleTest(testing.TestCase):
    def test_per_image_metric_is_the_minimum_over_separate_members(self):
        model = trained_tiny()
        x, y = holdout(8)
        ensemble = AttackEnsemble(list(MEMBERS), **SETTINGS)
        result = ensemble(model, x, y)
        alone = [AttributionAttack(m, **SETTINGS)(model, x, y) for m in MEMBERS]
        found = np.stack([r.found for r in alone])
        self.assertAllEqual(result.found, found.any(axis=0))
        for name in ("topk", "kendall", "spearman"):
            v = np.stack([getattr(r, name) for r in alone]).astype(np.float64)
            want = np.where(found, v, np.inf).min(axis=0)
            ok = found.any(axis=0)
            self.assertAllClose(getattr(result, name)[ok], want[ok], msg=name)
            # the winner holds that value
            w = result.winners[name]
            self.assertAllClose(v[w[ok], np.flatnonzero(ok)], want[ok])
            self.assertTrue(np.all(w[~ok] == -1))
        shift = np.stack([r.center_shift for r in alone])
        ok = found.any(axis=0)
        self.assertAllClose(result.center_shift[ok], np.where(found, shift, -np.inf).max(axis=0)[ok])
        # LENS worst case over the members' maps
        lens = np.stack([metrics.lens_topk(r.clean_maps, r.adversarial_maps, 8).numpy() for r in alone])
        self.assertAllClose(result.lens_topk[ok], np.where(found, lens, np.inf).min(axis=0)[ok])
        # kept images and maps are those of the Kendall winner
        k = result.winners["kendall"]
        for i in np.flatnonzero(ok):
            self.assertAllClose(result.adversarial_maps[i], alone[k[i]].adversarial_maps[i])
        counts = result.win_counts()
        self.assertEqual(sum(counts["kendall"].values()), int(ok.sum()))

    def test_members_and_restarts(self):
        settings = {k: v for k, v in SETTINGS.items() if k != "restarts"}
        ensemble = AttackEnsemble(["topk", AttributionAttack("topk", **SETTINGS)], restarts=3, **settings)
        self.assertEqual(ensemble.names, ("topk", "topk#2"))
        self.assertEqual([m.restarts for m in ensemble.members], [3, 3])
        with self.assertRaisesRegex(ValueError, "same `k_eval`"):
            AttackEnsemble([AttributionAttack("topk", **SETTINGS), AttributionAttack("topk", **{**SETTINGS,
                                                                                                  "k_eval": 4})])
        with self.assertRaisesRegex(ValueError, "non-empty list"):
            AttackEnsemble("topk", **SETTINGS)
        with self.assertRaisesRegex(ValueError, "Did you mean 'topk'"):
            AttackEnsemble(["topkk"], **SETTINGS)


class ProtocolFieldsTest(testing.TestCase):
    def test_existing_presets_keep_their_dict(self):
        for name, p in protocols.PRESETS.items():
            data = p.to_dict()
            if name.endswith(":cpu_ensemble"):
                self.assertEqual(data["ensemble"], protocols.DEFAULT_ENSEMBLE)
                base = protocols.PRESETS[name.replace("_ensemble", "")].to_dict()
                self.assertEqual({k: v for k, v in data.items() if k not in ("name", "note", "ensemble")},
                                 {k: v for k, v in base.items() if k not in ("name", "note")})
            else:
                self.assertNotIn("ensemble", data)
                self.assertNotIn("lens_window", data)
        self.assertEqual(protocols.get_protocol("tiny", lens_window=5).to_dict()["lens_window"], 5)
        self.assertIsInstance(protocols.get_protocol("fmnist:cpu_ensemble").attack(), AttackEnsemble)
        with self.assertRaisesRegex(ValueError, "Did you mean 'topk'"):
            protocols.get_protocol("tiny", ensemble=["topkk"])
        with self.assertRaisesRegex(ValueError, "odd"):
            protocols.get_protocol("tiny", lens_window=2)
        self.assertEqual(protocols.get_protocol("tiny", ensemble=["topk"]).ensemble, ("topk",))


class EvaluateLensAndEnsembleTest(testing.TestCase):
    def test_lens_in_report_from_stored_maps(self):
        model = trained_tiny()
        x, y = holdout()
        report = evaluation.evaluate_robustness(model, (x, y), SMALL)
        ex = report.examples
        pos = ex["attacked_positions"]
        want = metrics.lens_metrics(ex["clean_maps"], ex["adversarial_maps"], SMALL.k_eval, 3)
        keep = ex["found"] & ex["clean_correct"]
        for name in evaluation.LENS_METRICS:
            self.assertAllClose(ex[name][pos], want[name])
            self.assertAllClose(report.summaries["exclude"][name]["mean"], np.nanmean(ex[name][keep]), rtol=1e-5)
            self.assertIn(name, report.to_dict()["summaries"]["reference"])
        self.assertNotIn("ensemble_wins", report.to_dict())
        text = evaluation_report.format_markdown(report)
        self.assertIn("3-LENS-recall@8", text)
        self.assertNotIn("Attack ensemble", text)

    def test_old_chunks_without_lens_still_load(self):
        model = trained_tiny()
        x, y = holdout(5)
        protocol = SMALL.replace(num_images=5)
        chunk_dir = os.path.join(self.get_temp_dir(), "chunks")
        first = evaluation.evaluate_robustness(model, (x, y), protocol, chunk_dir=chunk_dir)
        path = os.path.join(chunk_dir, "chunk_00000.npz")
        with np.load(path) as f:
            arrays = dict(f)
        self.assertFalse(any(k.startswith("lens_") for k in arrays))  # not stored: computed at report time
        # the chunk fingerprint of a single-attack protocol is the one of the fields that existed before
        stamp = json.loads(str(arrays["fingerprint"]))
        self.assertEqual(sorted(stamp["protocol"]), sorted(evaluation._CHUNK_FIELDS))
        again = evaluation.evaluate_robustness(model, (x, y), protocol, chunk_dir=chunk_dir)
        self.assertEqual(again.to_dict()["summaries"], first.to_dict()["summaries"])

    def test_ensemble_protocol(self):
        model = trained_tiny()
        x, y = holdout(5)
        protocol = SMALL.replace(num_images=5, ensemble=MEMBERS)
        chunk_dir = os.path.join(self.get_temp_dir(), "chunks")
        report = evaluation.evaluate_robustness(model, (x, y), protocol, chunk_dir=chunk_dir)
        single = evaluation.evaluate_robustness(model, (x, y), SMALL.replace(num_images=5))
        ex, one = report.examples, single.examples
        keep = one["found"] & ex["found"]
        self.assertTrue(np.all(ex["kendall"][keep] <= one["kendall"][keep] + 1e-6))
        self.assertTrue(np.all(ex["lens_topk"][keep] <= one["lens_topk"][keep] + 1e-6))
        wins = report.to_dict()["ensemble_wins"]
        self.assertEqual(set(wins["kendall"]), set(MEMBERS))
        self.assertEqual(sum(wins["kendall"].values()), int(np.sum(ex["found"])))
        self.assertIn("Attack ensemble", evaluation_report.format_markdown(report))
        with self.assertRaisesRegex(ValueError, "differs in ensemble"):
            evaluation.evaluate_robustness(model, (x, y), protocol.replace(ensemble=("topk",)), chunk_dir=chunk_dir)


class ExplainTest(testing.TestCase):
    def test_package_explainers(self):
        model = trained_tiny()
        x, y = holdout(6)
        for explain, direct in ((_saliency, attributions.saliency), (_smoothgrad, None)):
            attack = AttributionAttack("topk", explain=explain, **SETTINGS)
            result = attack(model, x, y)
            pred = np.argmax(model(x).numpy(), axis=-1)
            # the clean maps are the explainer's, through saliency_map
            want = attribution_map(model, x, pred, ig_steps=4, explain=explain).numpy()
            self.assertAllClose(result.clean_maps, want, atol=1e-5)
            if direct is not None:
                self.assertAllClose(result.clean_maps, attributions.saliency_map(direct(model, x, pred)).numpy(),
                                    atol=1e-5)
            ok = result.found
            self.assertTrue(ok.any())
            tau = metrics.kendall_tau(result.clean_maps[ok], result.adversarial_maps[ok]).numpy()
            self.assertAllClose(result.kendall[ok], tau)
            self.assertLess(float(np.mean(result.topk[ok])), 1.0)  # the attack moves the explainer's map

    def test_evaluate_with_explain(self):
        model = trained_tiny()
        x, y = holdout(5)
        report = evaluation.evaluate_robustness(model, (x, y), SMALL.replace(num_images=5), explain=_saliency)
        pred = np.argmax(model(x).numpy(), axis=-1)
        pos = report.examples["attacked_positions"]
        want = attributions.saliency_map(attributions.saliency(model, x[pos], pred[pos])).numpy()
        self.assertAllClose(report.examples["clean_maps"], want, atol=1e-5)

    def test_explain_must_be_callable(self):
        with self.assertRaisesRegex(TypeError, "`explain` must be None or a callable"):
            AttributionAttack("topk", explain="saliency", **SETTINGS)

    def test_xplique_wrapper(self):
        xplique = pytest.importorskip("xplique.attributions")
        model = trained_tiny()
        x, y = holdout(4)

        def explain(model, images, labels):  # xplique's gradient core, differentiable inside tf.function
            import tensorflow as tf

            targets = tf.one_hot(labels, model.output_shape[-1])
            return xplique.Saliency(model, batch_size=None).explain(images, targets)

        result = AttributionAttack("topk", explain=explain, **SETTINGS)(model, x, y)
        self.assertEqual(result.clean_maps.shape, (4, 8, 8))
