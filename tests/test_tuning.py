"""KerasTuner integration: search-space sampling, a 2-trial search, best-model reload, overrides round trip."""
import json
import os
import subprocess
import sys

import keras
import keras_tuner
import numpy as np
import pytest

from attr_robust_tf import data, models, tuning
from attr_robust_tf.robust_model import RobustModel
from testing import TestCase

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SPACE = (("robust.weights.ig_norm", "log", 1e-3, 1.0), ("lr", "log", 1e-4, 1e-2))


def _build(values):
    """{dotted path: value} → a compiled RobustModel (IG-NORM on tiny_cnn, ≤ 4 IG points)."""
    robust = RobustModel(models.tiny_cnn(), "ig_norm", weights={"ig_norm": values["robust.weights.ig_norm"]},
                         epsilon=0.1, step_size=0.05, attack_steps=1, ig_steps=2, inner_ig_steps=2)
    robust.compile(keras.optimizers.Adam(values["lr"]),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return robust


class SearchSpaceTest(TestCase):
    def test_sample_respects_kinds_and_bounds(self):
        space = (("a.log", "log", 1e-3, 10.0), ("a.float", "float", -1.0, 1.0), ("a.int", "int", 2, 5),
                 ("a.choice", "choice", ("x", "y"), None))
        logs = []
        for seed in range(30):
            values = {}
            for entry in space:  # a fresh HyperParameters returns defaults: draw from each registered spec
                hp = keras_tuner.HyperParameters()
                tuning.sample(hp, (entry,))
                values[entry[0]] = hp.space[0].random_sample(seed)
            self.assertTrue(1e-3 <= values["a.log"] <= 10.0)
            self.assertTrue(-1.0 <= values["a.float"] <= 1.0)
            self.assertIn(values["a.int"], range(2, 6))
            self.assertIn(values["a.choice"], ("x", "y"))
            logs.append(np.log10(values["a.log"]))
        # log sampling: uniform in log10 over [-3, 1], so about half the draws fall below 10^-1
        self.assertBetween(np.mean(np.array(logs) < -1.0), 0.25, 0.75)
        hp = keras_tuner.HyperParameters()
        values = tuning.sample(hp, space)
        self.assertEqual(sorted(values), sorted(e[0] for e in space))
        spec = {p.name: p for p in hp.space}
        self.assertEqual(spec["a.log"].sampling, "log")
        self.assertEqual((spec["a.int"].min_value, spec["a.int"].max_value), (2, 5))

    def test_bad_entries(self):
        cases = [
            ((("a", "log", 0.0, 1.0),), r"`a` must have bounds with 0 < low < high for kind 'log'"),
            ((("a", "float", 1.0, 1.0),), r"`a` must have bounds with low < high"),
            ((("a", "int", 1.5, 3),), r"integers with low < high"),
            ((("a", "lgo", 1.0, 2.0),), r"Did you mean 'log'"),
            ((("a", "choice", (), None),), r"a 'choice' entry must be"),
            ((("a", "log", 1e-3, 1.0), ("a", "log", 1e-3, 1.0)), r"Received: 'a' \(a duplicate\)"),
            ((("a", "log", 1e-3),), r"entries must be \(dotted_path, kind, low, high\) tuples"),
            ((), r"at least one entry"),
            ("robust.epsilon", r"`search_space` must be a sequence"),
        ]
        for space, message in cases:
            with self.assertRaisesRegex(ValueError, message):
                tuning.check_search_space(space)

    def test_default_search_space(self):
        space = tuning.default_search_space(weights={"cacr": 0.1, "wacr": 0.0}, lr=1e-3, epsilon=0.1,
                                            step_size=0.01)
        self.assertEqual([(p, k) for p, k, _, _ in space],
                         [("robust.weights.cacr", "log"), ("lr", "log"), ("robust.epsilon", "float")])
        self.assertAllClose([(lo, hi) for _, _, lo, hi in space], [(0.01, 1.0), (1e-4, 1e-2), (0.01, 0.1)])
        self.assertEqual([e[0] for e in tuning.default_search_space(weights={}, lr=1e-3)], ["lr"])
        with self.assertRaisesRegex(ValueError, r"`spread` must be > 1"):
            tuning.default_search_space(weights={}, lr=1e-3, spread=1.0)


class HyperModelTest(TestCase):
    @pytest.fixture(autouse=True)
    def _inject(self, tmp_path):
        self.tmp = tmp_path

    def test_build_fit_and_weighted_objective(self):
        hp = keras_tuner.HyperParameters()
        x, y = data.synthetic(16, as_arrays=True)
        calls = []

        def evaluate(model):
            calls.append(model)
            return {"val_robust": 0.25}

        hypermodel = tuning.RobustHyperModel(_build, SPACE, evaluate,
                                             objective_weights={"val_robust": 2.0, "val_accuracy": 1.0})
        model = hypermodel.build(hp)
        self.assertIsInstance(model, RobustModel)
        # the sampled weight is live in the model's variable (defaults: the lower bounds)
        self.assertAllClose(model.regularizer_weights["ig_norm"], 1e-3)
        self.assertAllClose(model.optimizer.learning_rate, 1e-4)
        results = hypermodel.fit(hp, model, x, y, validation_data=(x[:8], y[:8]), batch_size=8, epochs=2,
                                 verbose=0)
        self.assertEqual(calls, [model])
        for key in ("loss", "ce", "ig_norm", "accuracy", "val_accuracy", "val_loss", "val_robust"):
            self.assertIn(key, results)
        self.assertAlmostEqual(results[tuning.WEIGHTED], 2.0 * 0.25 + results["val_accuracy"], places=6)

    def test_build_checks(self):
        hp = keras_tuner.HyperParameters()
        with self.assertRaisesRegex(TypeError, "`build_model` must return a keras.Model"):
            tuning.RobustHyperModel(lambda values: None, SPACE).build(hp)

        def uncompiled(values):
            return RobustModel(models.tiny_cnn(), "natural")

        with self.assertRaisesRegex(ValueError, "must return a built, compiled model"):
            tuning.RobustHyperModel(uncompiled, SPACE).build(hp)
        with self.assertRaisesRegex(TypeError, "`build_model` must be callable"):
            tuning.RobustHyperModel("model", SPACE)
        hypermodel = tuning.RobustHyperModel(_build, SPACE, objective_weights={"val_nope": 1.0})
        x, y = data.synthetic(8, as_arrays=True)
        with self.assertRaisesRegex(ValueError, r"produced: \['val_nope'\]"):
            hypermodel.fit(hp, hypermodel.build(hp), x, y, batch_size=8, epochs=1, verbose=0)
        with self.assertRaisesRegex(ValueError, "`optimizer` must not be passed to the tuner"):
            tuning.make_tuner("random", hypermodel, ("loss", "min"), directory=self.tmp, optimizer="adam")
        with self.assertRaisesRegex(ValueError, "Did you mean 'bayesian'"):
            tuning.make_tuner("baysian", hypermodel, ("loss", "min"), directory=self.tmp)
        with self.assertRaisesRegex(ValueError, "`max_epochs` must be an integer >= 2"):
            tuning.make_tuner("hyperband", hypermodel, ("loss", "min"), directory=self.tmp)

    # reloading weights into a fresh, never-trained optimizer is expected (docs/stack.md §8)
    @pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
    def test_two_trial_search_reload_and_overrides(self):
        x, y = data.synthetic(32, as_arrays=True, seed=1)
        xv, yv = data.synthetic(8, as_arrays=True, seed=2)
        hypermodel = tuning.RobustHyperModel(_build, SPACE, tuning.robustness_evaluator(xv, yv, "tiny"))
        tuner = tuning.make_tuner("random", hypermodel, keras_tuner.Objective("val_attr_topk", "max"),
                                  max_trials=2, directory=self.tmp, seed=3)
        tuner.search(x, y, validation_data=(xv, yv), batch_size=8, epochs=1, verbose=0)
        trials = tuner.oracle.get_best_trials(2)
        self.assertLen(trials, 2)
        self.assertTrue(all(t.status == "COMPLETED" for t in trials))
        scores = [t.score for t in trials]
        self.assertEqual(scores, sorted(scores, reverse=True))  # best first, "max" direction
        for t in trials:
            self.assertBetween(t.score, 0.0, 1.0)  # a top-k intersection

        best = tuning.best_values(tuner)
        self.assertEqual(sorted(best), sorted(p for p, *_ in SPACE))
        self.assertEqual(best, {k: trials[0].hyperparameters.values[k] for k in best})
        for path, _, low, high in SPACE:
            self.assertBetween(best[path], low, high)

        # the best model reloads (built wrapper + checkpoint) with the best trial's weight in its variable
        model = tuner.get_best_models(1)[0]
        self.assertIsInstance(model, RobustModel)
        self.assertAllClose(model.regularizer_weights["ig_norm"], best["robust.weights.ig_norm"])
        # ... and its robustness re-evaluates to the recorded score (deterministic attack, same weights)
        rescored = tuning.robustness_evaluator(xv, yv, "tiny")(model)["val_attr_topk"]
        self.assertAlmostEqual(rescored, trials[0].score, places=5)

        path = tuning.write_overrides(self.tmp / "best.json", best)
        self.assertEqual(tuning.read_overrides(path), best)
        self.assertEqual([p.name for p in self.tmp.iterdir() if p.name.startswith(".tmp")], [])


def _run_tool(tool, *args, cwd=REPO):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", tool), *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=600)


class TuneToolTest(TestCase):
    @pytest.fixture(autouse=True)
    def _inject(self, tmp_path):
        self.tmp = tmp_path

    @pytest.mark.filterwarnings("ignore:the load_module")  # ml_collections loading the config file
    def test_cli_search_then_train_with_the_overrides(self):
        from absl import flags
        from ml_collections import config_flags

        from attr_robust_tf import config_utils

        workdir = self.tmp / "tune"
        config_arg = os.path.join(REPO, "configs", "tiny.py") + ":ig_norm"
        proc = _run_tool("tune.py", f"--config={config_arg}", f"--workdir={workdir}", "--tuner=random",
                         "--max_trials=2", "--eval_images=8", "--config.train.epochs=1")
        self.assertEqual(proc.returncode, 0, proc.stderr[-4000:])
        summary = json.loads((workdir / "best_trial.json").read_text())
        self.assertEqual(summary["objective"], "val_attr_topk")
        self.assertLen(summary["trials"], 2)
        self.assertEqual(summary["best_score"], max(t["score"] for t in summary["trials"]))
        best = tuning.read_overrides(workdir / "best_overrides.json")
        self.assertEqual(best, summary["best_values"])
        for path, _, low, high in summary["search_space"]:
            self.assertBetween(best[path], low, high)
        self.assertEqual(sorted(best), ["lr", "robust.epsilon", "robust.weights.ig_norm"])

        # The overrides file and the printed flags give the same config as config_utils.override.
        def parse(*args):  # the --config flag of tools/common.py, parsed in isolation
            argv = ["train.py", f"--config={config_arg}", "--config.train.epochs=1", *args]
            fv = flags.FlagValues()
            config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True, sys_argv=argv)
            fv(argv)
            return fv.config

        line = (workdir / "best_flags.txt").read_text().split()
        expected = config_utils.override(parse(), best)
        self.assertEqual(config_utils.to_json(parse(*line)), config_utils.to_json(expected))
        self.assertEqual(config_utils.to_json(config_utils.load(workdir / "config.json")),
                         config_utils.to_json(parse()))  # the tuned base config was recorded
        self.assertEqual(expected.lr, best["lr"])
        self.assertEqual(expected.train.lr, best["lr"])  # the alias follows

        # tools/train.py accepts the flags as printed
        train = _run_tool("train.py", f"--config={config_arg}", f"--workdir={self.tmp / 'train'}",
                          "--config.train.epochs=1", *line)
        self.assertEqual(train.returncode, 0, train.stderr[-4000:])
        trained = config_utils.load(self.tmp / "train" / "config.json")
        self.assertEqual(trained.robust.weights.ig_norm, best["robust.weights.ig_norm"])
        self.assertEqual(trained.robust.epsilon, best["robust.epsilon"])


class ParetoToolTest(TestCase):
    @pytest.fixture(autouse=True)
    def _inject(self, tmp_path):
        self.tmp = tmp_path

    def test_pareto_space_searches_each_weight_alone(self):
        space = tuning.pareto_search_space({"cacr": 0.1, "wacr": 0.2, "off": 0.0}, spread=10.0)
        self.assertAllClose([e[2:] for e in space], [(0.01, 1.0), (0.02, 2.0)])
        self.assertEqual([e[:2] for e in space], [("robust.weights.cacr", "log"), ("robust.weights.wacr", "log")])
        with self.assertRaisesRegex(ValueError, "`weights` must hold at least one positive"):
            tuning.pareto_search_space({})
        with self.assertRaisesRegex(ValueError, "`spread` must be > 1"):
            tuning.pareto_search_space({"cacr": 0.1}, spread=1.0)

    @pytest.mark.filterwarnings("ignore:the load_module")
    def test_cli_pareto_two_trials(self):
        # 2 one-epoch trials of tiny sarkar2021 (about 30 s): both weights drawn separately, NA and top-k per trial
        from attr_robust_tf import pareto

        workdir = self.tmp / "pareto"
        proc = _run_tool("tune.py", f"--config={os.path.join(REPO, 'configs', 'tiny.py')}:sarkar2021",
                         f"--workdir={workdir}", "--pareto", "--max_trials=2", "--eval_images=8",
                         "--config.train.epochs=1", "--pareto_spread=10", "--label=Sarkar tiny")
        self.assertEqual(proc.returncode, 0, proc.stderr[-4000:])
        record = pareto.read_pareto(workdir / "pareto.json")
        self.assertEqual((record["label"], record["objective"], record["validation_images"]),
                         ("Sarkar tiny", "sarkar2021", 8))
        self.assertLen(record["trials"], 2)
        summary = json.loads((workdir / "best_trial.json").read_text())
        scores = {t["trial_id"]: t["score"] for t in summary["trials"]}
        for t in record["trials"]:
            self.assertEqual(sorted(t["values"]), ["robust.weights.cacr", "robust.weights.wacr"])
            self.assertBetween(t["values"]["robust.weights.cacr"], 0.01, 1.0)
            self.assertBetween(t["natural_accuracy"], 0.0, 1.0)
            self.assertEqual(t["topk"], scores[t["trial_id"]])  # the tuner's objective is the recorded top-k
        points = [[t["natural_accuracy"], t["topk"]] for t in record["trials"]]
        self.assertEqual(record["front_ids"], [record["trials"][i]["trial_id"] for i in pareto.non_dominated(points)])
        self.assertTrue((workdir / "pareto.png").exists())
