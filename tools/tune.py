"""Tune regularizer weights, the training ε and the learning rate with KerasTuner (docs/tuning.md).

  python tools/tune.py --config=configs/tiny.py:ig_norm --workdir=runs/tune --tuner=random --max_trials=2
  python tools/train.py --config=configs/tiny.py:ig_norm --workdir=runs/best --overrides=runs/tune/best_overrides.json

The objective is the attribution attack's top-k intersection on the first --eval_images validation images
(`val_attr_topk`, maximised), or with --accuracy_weight=w the mix (1 − w)·val_attr_topk + w·val_accuracy.
Writes <workdir>/best_overrides.json ({dotted key: value}, for config_utils.override), best_flags.txt (the
same as --config.<key>=<value> flags for tools/train.py), best_trial.json (score and every trial) and kt/
(the tuner's own state: rerunning the same command resumes the search, --overwrite starts over).

--pareto searches the regularizer weights alone (log-uniform, for sarkar2021 CACR and WACR separately) and also
writes pareto.json (NA and top-k of every trial on the validation subset, the non-dominated trials) and
pareto.png (all trials, the front highlighted); tools/reproduce.py --pareto_dirs puts several fronts in one figure:

  python tools/tune.py --config=configs/fmnist_sarkar2021.py:cpu --workdir=runs/pareto/sarkar2021 --pareto \
      --max_trials=8 --eval_images=200
"""
import json
import os

from absl import app, flags, logging

from attr_robust_tf.cli import common

FLAGS = flags.FLAGS


def define_flags():
    common.define_common_flags()
    flags.DEFINE_enum("tuner", "random", ["random", "bayesian", "hyperband"], "Search algorithm.")
    flags.DEFINE_integer("max_trials", 10, "Trials of random/bayesian search (hyperband: budget = train.epochs).")
    flags.DEFINE_string("objective", "val_attr_topk", "Metric to optimise (a logged or evaluated metric).")
    flags.DEFINE_enum("direction", "max", ["max", "min"], "Whether --objective is maximised or minimised.")
    flags.DEFINE_float("accuracy_weight", 0.0, "w in (1 − w)·objective + w·val_accuracy; 0: objective alone.")
    flags.DEFINE_string("protocol", None, "Evaluation protocol of the objective (default: config.eval.protocol).")
    flags.DEFINE_integer("eval_images", 16, "Validation images attacked after each trial.")
    flags.DEFINE_bool("overwrite", False, "Start the search over instead of resuming it.")
    flags.DEFINE_bool("pareto", False, "Search the regularizer weights alone (log-uniform, each weight separately) "
                      "and write pareto.json (every trial's NA and top-k on the validation subset, the "
                      "non-dominated ones marked) and pareto.png.")
    flags.DEFINE_float("pareto_spread", 30.0, "--pareto: each weight ranges over [w / spread, w · spread].")
    flags.DEFINE_string("label", None, "--pareto: the name of this search in pareto.json and figures (default: "
                        "the objective).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not 0.0 <= FLAGS.accuracy_weight <= 1.0:
        raise app.UsageError(f"`--accuracy_weight` must be in [0, 1]. Received: {FLAGS.accuracy_weight}")
    config = FLAGS.config
    if FLAGS.strategy:
        config.runtime.strategy = FLAGS.strategy

    from attr_robust_tf import config_utils, experiment, tuning

    config_utils.validate(config)
    strategy = common.setup_runtime(config)
    train, validation, steps = experiment.build_datasets(config)
    if validation is None:
        raise app.UsageError("The tuning objective needs validation data: set --config.data.validation_limit > 0.")
    x_val, y_val = next(validation.unbatch().batch(FLAGS.eval_images).as_numpy_iterator())
    robust = config.robust
    if FLAGS.pareto:
        try:
            space = tuning.pareto_search_space(dict(robust.get("weights") or {}), spread=FLAGS.pareto_spread)
        except ValueError as error:
            raise app.UsageError(str(error)) from None
    else:
        space = tuning.default_search_space(weights=dict(robust.get("weights") or {}), lr=config.lr,
                                            epsilon=robust.get("epsilon"), step_size=robust.get("step_size"))
    objective, weights = (FLAGS.objective, FLAGS.direction), None
    if FLAGS.accuracy_weight:
        weights = {FLAGS.objective: 1.0 - FLAGS.accuracy_weight, "val_accuracy": FLAGS.accuracy_weight}
        objective = (tuning.WEIGHTED, FLAGS.direction)
    hypermodel = tuning.RobustHyperModel(
        lambda values: experiment.build_robust_model(config_utils.override(config, values), strategy), space,
        tuning.robustness_evaluator(x_val, y_val, FLAGS.protocol or config.eval.protocol), objective_weights=weights)
    tuner = tuning.make_tuner(
        FLAGS.tuner, hypermodel, objective, directory=FLAGS.workdir, project_name="kt", max_trials=FLAGS.max_trials,
        max_epochs=config.train.epochs, seed=config.seed, overwrite=FLAGS.overwrite,
        distribution_strategy=None if config.runtime.strategy == "default" else strategy)
    config_utils.save(config, os.path.join(FLAGS.workdir, "config.json"))
    tuner.search(train, epochs=config.train.epochs, steps_per_epoch=steps, validation_data=validation, verbose=2)

    best = tuning.best_values(tuner)
    tuning.write_overrides(os.path.join(FLAGS.workdir, "best_overrides.json"), best)
    flag_line = " ".join(f"--config.{k}={v}" for k, v in sorted(best.items()))
    config_utils.write_text(os.path.join(FLAGS.workdir, "best_flags.txt"), flag_line + "\n")
    trials = [{"trial_id": t.trial_id, "score": t.score, "status": t.status,
               "values": {k: v for k, v in t.hyperparameters.values.items() if not k.startswith("tuner/")}}
              for t in tuner.oracle.get_best_trials(len(tuner.oracle.trials))]
    summary = {"tuner": FLAGS.tuner, "objective": objective[0], "direction": objective[1],
               "best_score": trials[0]["score"], "best_trial": trials[0]["trial_id"], "best_values": best,
               "search_space": [list(entry) for entry in space], "trials": trials}
    config_utils.write_text(os.path.join(FLAGS.workdir, "best_trial.json"), json.dumps(summary, indent=2) + "\n")
    logging.info("Best trial %s: %s = %.4f with %s", trials[0]["trial_id"], objective[0], trials[0]["score"], best)
    if FLAGS.pareto:
        write_pareto(config, tuner, [list(entry) for entry in space], x_val.shape[0])
    print(flag_line)


def write_pareto(config, tuner, space, images):
    """pareto.json and pareto.png in --workdir from the tuner's trials."""
    from attr_robust_tf import pareto, tuning
    from attr_robust_tf.reproduction import figures

    label = FLAGS.label or config.robust.objective
    trials = tuning.trial_records(tuner)
    record = pareto.write_pareto(
        os.path.join(FLAGS.workdir, pareto.FILE), trials, label=label,
        extra={"objective": config.robust.objective, "dataset": config.data.name, "validation_images": int(images),
               "protocol": FLAGS.protocol or config.eval.protocol, "search_space": space,
               "epochs": config.train.epochs})
    figures.save_figure(figures.pareto_figure(trials, record["front_ids"], label=label),
                        os.path.join(FLAGS.workdir, "pareto.png"))
    logging.info("Pareto front of %s: %d of %d trials non-dominated.", label, len(record["front_ids"]), len(trials))


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=common.parse_flags)
