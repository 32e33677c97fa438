"""KerasTuner search over the robustness knobs of a `RobustModel` (regularizer weights, ε, learning rate).

A search space is a tuple of `(dotted_path, kind, low, high)` entries (`ConfigDict` rejects dotted keys,
docs/conventions.md §6), e.g. `("robust.weights.ig_norm", "log", 1e-3, 1.0)`. `RobustHyperModel.build` samples each
entry and hands the `{dotted_path: value}` dict to a user builder that returns a built, compiled
`RobustModel`; `fit` trains it and returns the final epoch's metrics plus a post-training evaluation (e.g.
the top-k intersection of the attribution attack on a fixed validation subset, docs/method.md §6.1).

The best values are written as a flat JSON file `{dotted_path: value}`, the format of
`config_utils.override` and of `tools/train.py --overrides=...`.

Needs the `tune` extra (keras-tuner, tensorboard): `pip install "attr_robust_tf[tune]"`.
"""
import json
import math
import numbers

import keras

try:
    import keras_tuner
except ImportError as error:  # the package itself never imports this module
    raise ImportError(
        "attr_robust_tf.tuning needs KerasTuner, which is in the `tune` extra. Install it with "
        "pip install \"attr_robust_tf[tune]\" (keras-tuner and tensorboard).") from error

from attr_robust_tf import _checks

KINDS = ("log", "float", "int", "choice")
TUNERS = ("random", "bayesian", "hyperband")
WEIGHTED = "weighted_objective"  # key of the weighted mix of metrics (see RobustHyperModel)


def check_search_space(search_space):
    """Validates `(dotted_path, kind, low, high)` entries and returns them as a tuple of tuples.

    Kinds: "log" (float, log-uniform; 0 < low < high), "float" (uniform), "int" (integers in [low, high]),
    "choice" (`low` is the tuple of values, `high` is None).
    """
    if isinstance(search_space, (str, bytes)) or not hasattr(search_space, "__iter__"):
        raise ValueError("`search_space` must be a sequence of (dotted_path, kind, low, high) tuples. "
                         f"Received: search_space={search_space!r}.")
    entries, seen = [], set()
    for entry in search_space:
        if not isinstance(entry, (tuple, list)) or len(entry) != 4:
            raise ValueError("`search_space` entries must be (dotted_path, kind, low, high) tuples. Received: "
                             f"{entry!r}.")
        path, kind, low, high = entry
        if not isinstance(path, str) or not path or path in seen:
            what = "a duplicate" if path in seen else "not a non-empty string"
            raise ValueError(f"`search_space` paths must be unique dotted config keys. Received: {path!r} "
                             f"({what}).")
        seen.add(path)
        kind = _checks.lookup(f"search-space kind of {path!r}:", kind, {k: k for k in KINDS})
        if kind == "choice":
            if not isinstance(low, (tuple, list)) or not low or high is not None:
                raise ValueError(f"`{path}`: a 'choice' entry must be ({path!r}, 'choice', (v1, v2, ...), "
                                 f"None). Received: low={low!r}, high={high!r}.")
            low = tuple(low)
        else:
            number = numbers.Integral if kind == "int" else numbers.Real
            bad = [v for v in (low, high)
                   if isinstance(v, bool) or not isinstance(v, number) or not math.isfinite(v)]
            if bad or not low < high or (kind == "log" and low <= 0):
                need = {"log": "0 < low < high", "float": "low < high",
                        "int": "integers with low < high"}[kind]
                raise ValueError(f"`{path}` must have bounds with {need} for kind {kind!r}. Received: "
                                 f"low={low!r}, high={high!r}.")
        entries.append((path, kind, low, high))
    if not entries:
        raise ValueError("`search_space` must hold at least one entry. Received: an empty search space.")
    return tuple(entries)


def sample(hp, search_space):
    """Registers every entry with the `keras_tuner.HyperParameters` `hp`; returns {dotted_path: value}."""
    values = {}
    for path, kind, low, high in check_search_space(search_space):
        if kind == "log":
            values[path] = hp.Float(path, float(low), float(high), sampling="log")
        elif kind == "float":
            values[path] = hp.Float(path, float(low), float(high))
        elif kind == "int":
            values[path] = hp.Int(path, int(low), int(high))
        else:
            values[path] = hp.Choice(path, list(low))
    return values


def default_search_space(*, weights, lr, epsilon=None, step_size=None, spread=10.0):
    """The standard space around a config's values: each regularizer weight and the learning rate on a
    log scale within a factor `spread` either way, and the training ε uniformly in [step_size, ε].

    Args:
      weights: dict regularizer name → current weight (`robust.weights`); zero weights are left out (a
        log scale cannot hold 0, and 0 switches the term off).
      lr: the current learning rate (`lr`).
      epsilon, step_size: the inner attack's radius and step (None for objectives without one). The range
        keeps step_size ≤ ε, which validation requires.
      spread: factor of the log ranges.

    Returns:
      A tuple of `(dotted_path, kind, low, high)` entries.
    """
    spread = _checks.check_nonnegative(spread, "spread", strict=True)
    if spread <= 1:
        raise ValueError(f"`spread` must be > 1. Received: spread={spread!r}.")
    space = [(f"robust.weights.{name}", "log", float(w) / spread, float(w) * spread)
             for name, w in sorted(dict(weights).items()) if w > 0]
    lr = _checks.check_nonnegative(lr, "lr", strict=True)
    space.append(("lr", "log", lr / spread, lr * spread))
    if epsilon is not None and step_size is not None and step_size < epsilon:
        space.append(("robust.epsilon", "float", float(step_size), float(epsilon)))
    return check_search_space(space)


def pareto_search_space(weights, *, spread=30.0):
    """The space of a Pareto search over the regularizer weights alone: each non-zero weight of `weights`
    (`robust.weights`) log-uniform within a factor `spread` either way, each weight separately (for
    sarkar2021 the CACR and WACR weights are two axes)."""
    spread = _checks.check_nonnegative(spread, "spread", strict=True)
    if spread <= 1:
        raise ValueError(f"`spread` must be > 1. Received: spread={spread!r}.")
    space = [(f"robust.weights.{name}", "log", float(w) / spread, float(w) * spread)
             for name, w in sorted(dict(weights).items()) if w > 0]
    if not space:
        raise ValueError(f"`weights` must hold at least one positive regularizer weight to search. Received: "
                         f"weights={dict(weights)!r}. Objectives without regularizers have no trade-off to tune.")
    return check_search_space(space)


def trial_records(tuner, metrics=("natural_accuracy", "topk"), *, prefix="val_attr_"):
    """Every finished trial as {"trial_id", "status", "values", <metric>: last value or None}, by trial id."""
    records = []
    for trial_id, trial in sorted(tuner.oracle.trials.items()):
        record = {"trial_id": trial_id, "status": str(trial.status),
                  "values": {k: v for k, v in trial.hyperparameters.values.items() if not k.startswith("tuner/")}}
        for name in metrics:
            key = prefix + name
            record[name] = float(trial.metrics.get_last_value(key)) if trial.metrics.exists(key) else None
        records.append(record)
    return records


def robustness_evaluator(images, labels, protocol="tiny", *, prefix="val_attr_", surrogate=None):
    """A post-training evaluation for `RobustHyperModel(evaluate=...)`.

    Runs `evaluation.evaluate_robustness` (the attribution attack of the protocol on the correctly
    classified images of a fixed subset, docs/method.md §4–§6) and returns {prefix + name: value} for
    natural_accuracy, pgd_accuracy, topk, kendall, spearman, center_shift and failed. With the default
    prefix the tuner objective is `Objective("val_attr_topk", "max")`.
    """
    from attr_robust_tf import evaluation, protocols  # keeps `import tuning` light

    images = _checks.check_images(images, check_range=True).numpy()
    labels = _checks.check_target(labels, images.shape[0], name="labels").numpy()
    protocol = protocols.get_protocol(protocol)

    def evaluate(model):
        report = evaluation.evaluate_robustness(model, (images, labels), protocol, surrogate=surrogate)
        values = {"natural_accuracy": report.natural_accuracy, "pgd_accuracy": report.pgd_accuracy,
                  "failed": float(report.num_failed)}
        values.update({name: report.metric(name) for name in evaluation.METRICS})
        return {prefix + k: float(v) for k, v in values.items()}

    return evaluate


class RobustHyperModel(keras_tuner.HyperModel):
    """A `keras_tuner.HyperModel` whose models are `RobustModel`s built from sampled config values.

    Args:
      build_model: callable `{dotted_path: value} -> RobustModel`, returning a built model compiled with its
        own optimizer, loss and metrics (never let the tuner compile it: its trackers would be replaced).
        Under a distribution strategy the tuner calls it inside `strategy.scope()`.
      search_space: `(dotted_path, kind, low, high)` entries (see `check_search_space`).
      evaluate: optional callable `model -> {name: value}` run after training (e.g.
        `robustness_evaluator(x_val, y_val, "tiny")`); its values join the returned metrics.
      objective_weights: optional {metric name: weight}; adds `weighted_objective` = Σ weight · metric to
        the results, e.g. {"val_attr_topk": 0.5, "val_accuracy": 0.5} to trade robustness for accuracy.
      name, tunable: as `keras_tuner.HyperModel`.

    `fit(hp, model, *args, **kwargs)` forwards everything to `model.fit` (the kwargs carry the tuner's
    callbacks) and returns a dict: the last epoch's value of every logged metric, then the evaluation and
    the weighted mix. Use it with an explicit `keras_tuner.Objective(name, direction)`.

    Example:
      >>> hypermodel = RobustHyperModel(build, [("robust.weights.ig_norm", "log", 1e-3, 1.0)],
      ...                               evaluate=robustness_evaluator(x_val, y_val, "tiny"))  # doctest: +SKIP
      >>> tuner = make_tuner("random", hypermodel, keras_tuner.Objective("val_attr_topk", "max"),
      ...                    max_trials=2, directory="runs/tune")  # doctest: +SKIP
    """

    def __init__(self, build_model, search_space, evaluate=None, *, objective_weights=None, name=None,
                 tunable=True):
        super().__init__(name=name, tunable=tunable)
        if not callable(build_model):
            raise TypeError(f"`build_model` must be callable (values dict → RobustModel). Received: "
                            f"build_model={build_model!r}.")
        if evaluate is not None and not callable(evaluate):
            raise TypeError(f"`evaluate` must be callable (model → dict) or None. Received: evaluate={evaluate!r}.")
        self.build_model = build_model
        self.search_space = check_search_space(search_space)
        self.evaluate = evaluate
        self.objective_weights = None
        if objective_weights is not None:
            if not isinstance(objective_weights, dict) or not objective_weights:
                raise ValueError("`objective_weights` must be a non-empty dict {metric name: weight}. Received: "
                                 f"objective_weights={objective_weights!r}.")
            self.objective_weights = {str(k): float(v) for k, v in objective_weights.items()}

    def build(self, hp):
        values = sample(hp, self.search_space)
        model = self.build_model(dict(values))
        if not isinstance(model, keras.Model):
            raise TypeError(f"`build_model` must return a keras.Model (a RobustModel). Received: "
                            f"{type(model).__name__}.")
        if not model.built or getattr(model, "optimizer", None) is None or not getattr(model, "compiled", False):
            raise ValueError(
                "`build_model` must return a built, compiled model: the tuner must not compile it (docs/conventions.md "
                f"§8). Received: {type(model).__name__} with built={model.built}, optimizer="
                f"{getattr(model, 'optimizer', None)!r}. Call model.compile(...) inside build_model.")
        return model

    def fit(self, hp, model, *args, **kwargs):
        history = model.fit(*args, **kwargs)
        results = {name: float(values[-1]) for name, values in history.history.items() if len(values)}
        if self.evaluate is not None:
            extra = self.evaluate(model)
            if not isinstance(extra, dict):
                raise TypeError(f"`evaluate` must return a dict of metrics. Received: {type(extra).__name__}.")
            results.update({k: float(v) for k, v in extra.items()})
        if self.objective_weights is not None:
            missing = sorted(set(self.objective_weights) - set(results))
            if missing:
                raise ValueError(
                    f"`objective_weights` names metrics that were not produced: {missing}. Available: "
                    f"{', '.join(sorted(results))}.")
            results[WEIGHTED] = sum(w * results[k] for k, w in self.objective_weights.items())
        return results


def make_tuner(kind, hypermodel, objective, *, directory, project_name="tune", max_trials=10, max_epochs=None,
               seed=0, overwrite=False, distribution_strategy=None, **kwargs):
    """A KerasTuner tuner by name: "random", "bayesian" or "hyperband".

    `objective` is a `keras_tuner.Objective` or a `(name, direction)` pair; custom metric names need the
    explicit direction. Hyperband has no `max_trials`: its budget is `max_epochs` (required) with factor
    3. No `optimizer`, `loss` or `metrics` is passed to the tuner (it would recompile every model).
    """
    kind = _checks.lookup("tuner", kind, {k: k for k in TUNERS})
    if isinstance(objective, (tuple, list)) and len(objective) == 2:
        objective = keras_tuner.Objective(*objective)
    if not isinstance(objective, keras_tuner.Objective):
        raise ValueError("`objective` must be a keras_tuner.Objective or a (name, 'min'|'max') pair. Received: "
                         f"objective={objective!r}.")
    for key in ("optimizer", "loss", "metrics"):
        if key in kwargs:
            raise ValueError(f"`{key}` must not be passed to the tuner: build_model compiles the RobustModel "
                             "with its own trackers, which a tuner recompile would break (docs/stack.md §3 item 11).")
    common = dict(objective=objective, directory=str(directory), project_name=project_name, seed=seed,
                  overwrite=overwrite, distribution_strategy=distribution_strategy, **kwargs)
    if kind == "hyperband":
        max_epochs = _checks.check_positive_int(max_epochs, "max_epochs", minimum=2)
        return keras_tuner.Hyperband(hypermodel, max_epochs=max_epochs, factor=3, **common)
    max_trials = _checks.check_positive_int(max_trials, "max_trials")
    if kind == "bayesian":
        return keras_tuner.BayesianOptimization(hypermodel, max_trials=max_trials, **common)
    return keras_tuner.RandomSearch(hypermodel, max_trials=max_trials, **common)


def best_values(tuner):
    """{dotted_path: value} of the best trial (the tuner's own bookkeeping entries left out)."""
    best = tuner.get_best_hyperparameters(1)
    if not best:
        raise ValueError("`tuner` has no completed trial. Received: a tuner before (or without) search().")
    return {k: v for k, v in best[0].values.items() if not k.startswith("tuner/")}


def write_overrides(path, values):
    """Writes {dotted_path: value} as JSON atomically (temporary file, then rename); returns `path`."""
    from attr_robust_tf import config_utils  # the one module that writes config files

    values = {str(k): (v.item() if hasattr(v, "item") else v) for k, v in dict(values).items()}
    config_utils.write_text(path, json.dumps(values, indent=2, sort_keys=True) + "\n")
    return path


def read_overrides(path):
    """Reads a file written by `write_overrides` back into {dotted_path: value}."""
    from attr_robust_tf import config_utils

    return config_utils.read_json(path)
