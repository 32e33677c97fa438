"""Experiment configs: the `:arg` of a config file, dotted overrides, validation and JSON I/O.

The only library module that reads `ConfigDict`s besides `experiment` and `configs` (docs/conventions.md §6).
Configs are `ConfigDict`s with the blocks `seed`, `lr`, `data`, `model`, `train`, `robust`, `eval` and
`runtime`; `attr_robust_tf.configs` builds them from the reference tables of docs/method.md §8. Values are set
through one function, `override` (`ConfigDict.update_from_flattened_dict` on dotted keys, values parsed by
`parse_value`); the command line's `--config.a.b=value` is ml_collections' `config_flags`. Types are the
locked `ConfigDict`'s; `validate` adds what a `ConfigDict` cannot check (ranges, names, the keys an objective
uses, cross-field rules) and raises a `ValueError` naming the dotted key, with a did-you-mean for typos.
"""
import ast
import importlib.util
import inspect
import json
import math
import os

import ml_collections
import tensorflow as tf

from attr_robust_tf import _checks
from attr_robust_tf import settings as settings_lib
from attr_robust_tf._files import write_atomic  # noqa: F401  (the one atomic-write helper)

STRATEGIES = ("default", "mirrored", "multi_worker")
OPTIMIZERS = ("adam", "sgd", "momentum")  # "momentum": SGD with momentum, the RAR ResNet optimizer (§8.2)
LOSS_REDUCTIONS = ("mean", "sum")
SYNTHETIC = "synthetic"  # data.synthetic(...): random 8×8 images for tests and CI
# The `robust` keys that are `RobustModel` settings (its keyword arguments, one each).
# the `robust` block: the objective's weights and every `RobustSettings` field (the seed is the top-level `seed`)
ROBUST_FIELDS = ("loss_reduction", "weights") + tuple(
    name for name in settings_lib.names() if name not in ("loss_reduction", "seed", "bounds"))
# Keys whose off value leaves a run unchanged: `to_json` leaves them out at that value and `from_json` puts
# them back, so a config.json written before the key existed still names the same run (resume, reuse).
OPTIONAL = {"robust.epsilon_warmup_epochs": 0, "train.influence_every": 0, "data.bounds": (0.0, 1.0)}

# Every key a config may hold, per block; anything else is a typo (did-you-mean). Keys of REQUIRED must be set.
SCHEMA = {
    "": ("seed", "lr", "data", "model", "train", "robust", "eval", "runtime"),
    "data": ("name", "train_split", "validation_split", "limit", "offset", "validation_limit", "image_size",
             "augment", "num_examples", "image_shape", "num_classes", "bounds"),
    "model": ("name", "weight_decay"),
    "train": ("optimizer", "lr", "momentum", "lr_schedule", "batch_size", "epochs", "steps_per_epoch",
              "influence_every", "early_stopping_patience"),
    "robust": ("objective",) + ROBUST_FIELDS + ("epsilon_warmup_epochs",),
    "eval": ("protocol",),
    "runtime": ("strategy", "jit_compile", "logical_cpus", "deterministic"),
}
REQUIRED = {
    **SCHEMA,
    "data": ("name", "validation_limit"),
    "train": SCHEMA["train"][:-2],  # influence_every, early_stopping_patience: optional (absent: 0, off)
    "robust": ("objective", "loss_reduction"),
}
DATA_KEYS = {  # data keys by kind of dataset
    "files": ("name", "train_split", "validation_split", "limit", "offset", "validation_limit", "image_size",
              "augment", "bounds"),
    SYNTHETIC: ("name", "num_examples", "image_shape", "num_classes", "validation_limit", "bounds"),
}


def row_default(row, field):
    """The default of setting `field` (a `ROBUST_FIELDS` name) in objective row `row`: its paper's value.

    The one place configs read an objective row's numbers.
    """
    from attr_robust_tf import objectives

    row = objectives.get(row)
    if field == "weights":
        return dict(row.weights)
    value = getattr(row, field)
    if field == "inner_weight" and value is None and not isinstance(row.inner.get("ig_norm", ""), str):
        value = row.inner["ig_norm"]  # the weight of the inner IG term when it has its own
    return value


def unknown(kind, name, options):
    """A ValueError for an unknown `name` among `options`, with the closest match ("Did you mean ...?")."""
    try:
        _checks.did_you_mean(kind, name, options)
    except ValueError as error:
        return error


def parse_arg(arg, **spec):
    """Parses the `:arg` of `--config=file.py:arg` into a ConfigDict (as big_vision's `parse_arg`).

    `spec` maps each known key to its default. A bare word sets a boolean key to True ("cpu"); "key=value"
    converts `value` to the default's type ("cpu,seed=3"). Unknown keys raise a did-you-mean ValueError.

    Example:
      >>> parse_arg("cpu,seed=3", cpu=False, tiny=False, seed=0).seed
      3
    """
    result = ml_collections.ConfigDict(spec)
    for part in filter(None, (p.strip() for p in (arg or "").split(","))):
        key, has_value, value = part.partition("=")
        key = key.strip()
        if key not in spec:
            raise unknown("config argument", key, spec)
        default = spec[key]
        if not has_value:
            if not isinstance(default, bool):
                raise ValueError(f"Config argument `{key}` needs a value. Received: {part!r}. Use {key}=<value>.")
            result[key] = True
        elif isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"Config argument `{key}` must be true or false. Received: {key}={value!r}.")
            result[key] = value.lower() in ("true", "1")
        else:
            try:
                result[key] = type(default)(value) if default is not None else value
            except ValueError:
                raise ValueError(
                    f"Config argument `{key}` must be of type {type(default).__name__}. Received: "
                    f"{key}={value!r}.") from None
    return result


def get(config, path):
    """The value at dotted `path` ("robust.epsilon"); an unknown key raises a did-you-mean ValueError."""
    node, walked = config, []
    for key in path.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or key not in node:
            options = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
            prefix = ".".join(walked)
            raise unknown("config key", ".".join(walked + [key]),
                           [f"{prefix}.{o}" if prefix else o for o in options])
        node = node[key]
        walked.append(key)
    return node


def parse_value(text):
    """A value typed on a command line or in an entry, as Python: the one parser of override values.

    Python literals ("0.1", "16", "(1, 2)", "None", "True"; JSON's true/false/null too) become those values,
    lists become tuples; anything else ("madry") stays the string.
    """
    text = str(text).strip()
    try:
        value = ast.literal_eval({"true": "True", "false": "False", "null": "None"}.get(text, text))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
    return _tuples(value)


def parse_overrides(items, what="Overrides", example="key=value"):
    """["robust.epsilon=0.2", "lr=1e-3"] → {"robust.epsilon": 0.2, "lr": 0.001} through `parse_value`."""
    out = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{what} must look like {example}. Received: {item!r}.")
        out[key.strip()] = parse_value(value)
    return out


def override(config, overrides):
    """Returns a copy of `config` with dotted overrides applied: {"robust.epsilon": 0.2} or ["lr=1e-3"].

    The one way values are set (`tools/train.py --overrides`, `tools/tune.py`, `objective@key=value` entries
    of `tools/reproduce.py`): `ConfigDict.update_from_flattened_dict` on a locked copy, so only existing keys may
    be set (a typo raises a did-you-mean ValueError naming the dotted key) and values are type-checked like the
    command line's `--config.a.b=value` (an int may replace a float, not a string). Field references (the
    `lr` alias of `train.lr`) are kept.
    """
    config = ml_collections.ConfigDict(config.to_dict(preserve_field_references=True))
    config.lock()
    if not isinstance(overrides, dict):
        overrides = parse_overrides(overrides)
    for path, value in overrides.items():
        parent_path, _, key = path.rpartition(".")
        parent = get(config, parent_path) if parent_path else config
        if not isinstance(parent, ml_collections.ConfigDict) or key not in parent:
            get(config, path)  # raises the did-you-mean error
        try:
            config.update_from_flattened_dict({path: _tuples(value)})
        except TypeError as error:
            raise ValueError(f"`{path}` has the wrong type. Received: {path}={value!r}. {error}") from None
    config.unlock()
    return config


def _tuples(value):
    """Lists (JSON, literals) as tuples, as config files write sequences."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def read_json(path):
    """Reads a JSON object of {dotted_key: value} overrides (tools/tune.py's best_overrides.json)."""
    with tf.io.gfile.GFile(path) as f:
        try:
            values = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"`overrides` file must be JSON. Received: {path} ({error}).") from None
    if not isinstance(values, dict) or not all(isinstance(k, str) for k in values):
        raise ValueError(f"`overrides` file must hold a JSON object of dotted config keys. Received: {path} with "
                         f"{type(values).__name__}.")
    return values


def flatten(config, prefix=""):
    """{dotted key: value} over every leaf of `config` (named blocks such as `robust.weights` included)."""
    out = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict):
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def _fail(path, expected, value, hint=""):
    raise ValueError(f"`{path}` must be {expected}. Received: {path}={value!r}.{' ' + hint if hint else ''}")


def _int(config, path, minimum=1, optional=False):
    value = get(config, path)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(path, f"an integer >= {minimum}" + (" or None" if optional else ""), value)
    return value


def _float(config, path, *, positive=False, optional=False, maximum=None):
    value = get(config, path)
    if value is None and optional:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0) or (maximum is not None and value > maximum):
        rel = "> 0" if positive else ">= 0"
        upper = f" and <= {maximum}" if maximum is not None else ""
        _fail(path, f"a finite number {rel}{upper}", value)
    return float(value)


def _choice(config, path, options, kind):
    value = get(config, path)
    if value not in options:
        error = unknown(kind, value, options)
        raise ValueError(f"`{path}`: {error}") from None
    return value


def robust_keys(objective):
    """The `robust` keys that objective `objective` uses (docs/method.md §7.9): `objective`, `weights` when the
    row has regularizers, the `RobustSettings` fields the row reads (`Objective.uses`; the seed is the config's
    top-level `seed`), and for an inner attack `epsilon_warmup_epochs` (0: constant ε; n > 0: ε grows linearly
    over the first n epochs)."""
    from attr_robust_tf import objectives

    row = objectives.get(objective)
    keys = ["objective", "loss_reduction"] + (["weights"] if row.regularizers else [])
    keys += [name for name in row.uses if name not in ("loss_reduction", "seed", "bounds")]
    if row.has_inner_attack:
        keys.append("epsilon_warmup_epochs")
    return tuple(keys)


def _check_keys(config):
    """Unknown keys (did-you-mean) and missing required keys, block by block."""
    for block, keys in SCHEMA.items():
        node = get(config, block) if block else config
        if not isinstance(node, ml_collections.ConfigDict):
            _fail(block, "a block (ConfigDict)", node)
        allowed = keys
        if block == "data" and "name" in node:
            from attr_robust_tf import data

            _choice(config, "data.name", tuple(data.NAMES) + (SYNTHETIC,), "dataset")
            allowed = DATA_KEYS[SYNTHETIC if node.name == SYNTHETIC else "files"]
        prefix = f"{block}." if block else ""
        for key in node.keys():
            if key not in allowed:
                raise unknown("config key", prefix + key, [prefix + k for k in allowed])
        # data.bounds is optional (absent: (0, 1))
        required = tuple(k for k in allowed if k != "bounds") if block == "data" and "name" in node else REQUIRED[block]
        for key in required:
            if key not in node:
                raise ValueError(f"`{prefix}{key}` must be set. Received: a config without it.")


def validate(config, *, num_replicas=1):
    """Checks every field of an experiment config before any TensorFlow work; returns the config.

    Unknown keys, datasets, models, objectives, regularizers, optimizers, strategies and protocols raise a
    did-you-mean ValueError naming the dotted key; ranges follow docs/method.md (ε > 0, 0 < step_size <= ε,
    weights >= 0, ...); the global batch must split evenly over `num_replicas` (docs/conventions.md §5).
    """
    from attr_robust_tf import attributions, data, models, objectives, protocols

    if not isinstance(config, ml_collections.ConfigDict):
        raise TypeError(f"`config` must be an ml_collections.ConfigDict. Received: {type(config).__name__}.")
    _check_keys(config)
    _int(config, "seed", minimum=0)
    lr = _float(config, "lr", positive=True)
    if _float(config, "train.lr", positive=True) != lr:
        _fail("train.lr", f"equal to the top-level `lr` ({lr!r}), its alias", config.train.lr,
              "Set one of them (--config.lr=...).")

    # data
    name = _choice(config, "data.name", tuple(data.NAMES) + (SYNTHETIC,), "dataset")
    if name == SYNTHETIC:
        _int(config, "data.num_examples")
        _int(config, "data.num_classes", minimum=2)
        shape = get(config, "data.image_shape")
        if not (isinstance(shape, tuple) and len(shape) == 3
                and all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape)):
            _fail("data.image_shape", "a tuple (H, W, C) of positive integers", shape)
    else:
        splits = tuple(data.info(name).splits)
        _choice(config, "data.train_split", splits, "split")
        _choice(config, "data.validation_split", splits, "split")
        _int(config, "data.limit", optional=True)
        _int(config, "data.offset", minimum=0)
        _int(config, "data.image_size", minimum=4, optional=True)
        if not isinstance(get(config, "data.augment"), bool):
            _fail("data.augment", "True or False", config.data.augment)
    _int(config, "data.validation_limit", minimum=0)

    # model
    model = _choice(config, "model.name", tuple(models.MODELS), "model")
    weight_decay = _float(config, "model.weight_decay")
    if weight_decay and "weight_decay" not in inspect.signature(models.MODELS[model]).parameters:
        _fail("model.weight_decay", f"0 for model {model!r}, which has no weight-decay option", weight_decay,
              "Weight decay is built into the ResNets (gtsrb_resnet, flower_resnet).")

    # train
    optimizer = _choice(config, "train.optimizer", OPTIMIZERS, "optimizer")
    momentum = _float(config, "train.momentum", maximum=1.0)
    if optimizer == "momentum" and not 0 < momentum < 1:
        _fail("train.momentum", "in (0, 1) for optimizer 'momentum'", momentum)
    batch = _int(config, "train.batch_size")
    if batch % num_replicas:
        _fail("train.batch_size", f"divisible by the number of replicas ({num_replicas})", batch)
    epochs = _int(config, "train.epochs")
    _int(config, "train.steps_per_epoch", optional=True)
    if "bounds" in config.data:
        _checks.check_bounds(config.data.bounds, "data.bounds")
    for key in ("influence_every", "early_stopping_patience"):
        if key in config.train:
            _int(config, f"train.{key}", minimum=0)
    schedule = get(config, "train.lr_schedule")
    previous = 0
    for entry in schedule if isinstance(schedule, tuple) else [None]:
        if (not isinstance(entry, tuple) or len(entry) != 2 or isinstance(entry[0], bool)
                or not isinstance(entry[0], int) or entry[0] <= previous
                or isinstance(entry[1], bool) or not isinstance(entry[1], (int, float)) or not entry[1] > 0):
            _fail("train.lr_schedule", "a tuple of (step, factor) pairs, steps increasing from > 0, factors > 0",
                  schedule, "From `step` on, the learning rate is factor·lr.")
        previous = entry[0]

    # robust
    objective = _choice(config, "robust.objective", tuple(objectives.OBJECTIVES), "objective")
    used = robust_keys(objective)
    robust = config.robust
    for key in robust.keys():
        if key not in used and not (key == "epsilon_warmup_epochs" and "epsilon" in used):
            _fail(f"robust.{key}", f"absent: objective {objective!r} does not use it (it uses "
                  f"{', '.join(used)})", robust[key])
    _choice(config, "robust.loss_reduction", LOSS_REDUCTIONS, "loss reduction")
    if "weights" in robust:
        names = objectives.get(objective).regularizers
        if not isinstance(robust.weights, ml_collections.ConfigDict):
            _fail("robust.weights", f"a block of regularizer weights ({', '.join(names)})", robust.weights)
        for key in robust.weights.keys():
            if key not in names:
                error = unknown(f"regularizer of objective {objective!r}", key, names)
                raise ValueError(f"`robust.weights.{key}`: {error}")
            _float(config, f"robust.weights.{key}")
    epsilon = _float(config, "robust.epsilon", positive=True) if "epsilon" in robust else None
    if "step_size" in robust:
        step = _float(config, "robust.step_size", positive=True)
        if epsilon is not None and step > epsilon:
            _fail("robust.step_size", f"<= robust.epsilon = {epsilon!r}", step)
    method = _choice(config, "robust.ig_method", attributions.METHODS, "quadrature rule") \
        if "ig_method" in robust else None
    for key in ("attack_steps", "ig_steps", "inner_ig_steps", "top_k"):
        if key in robust:
            _int(config, f"robust.{key}", minimum=2 if method == "riemann_trapezoid" and "ig" in key else 1)
    if "epsilon_warmup_epochs" in robust:
        _int(config, "robust.epsilon_warmup_epochs", minimum=0)
    if "ig_batch_size" in robust:
        _int(config, "robust.ig_batch_size", optional=True)
    for key in ("inner_weight", "surrogate_beta"):
        if key in robust:
            _float(config, f"robust.{key}")
    if "random_start" in robust and not isinstance(robust.random_start, bool):
        _fail("robust.random_start", "True or False", robust.random_start)
    if "epsilon_warmup_epochs" in robust:
        if _int(config, "robust.epsilon_warmup_epochs", minimum=0) > epochs:
            _fail("robust.epsilon_warmup_epochs", f"<= train.epochs = {epochs}", robust.epsilon_warmup_epochs)

    # eval
    try:
        protocols.get_protocol(get(config, "eval.protocol"))
    except ValueError as error:
        raise ValueError(f"`eval.protocol`: {error}") from None

    # runtime
    _choice(config, "runtime.strategy", STRATEGIES, "strategy")
    for key in ("jit_compile", "deterministic"):
        if not isinstance(get(config, f"runtime.{key}"), bool):
            never = " (never 'auto', docs/conventions.md §1)" if key == "jit_compile" else ""
            _fail(f"runtime.{key}", "True or False" + never, config.runtime[key])
    _int(config, "runtime.logical_cpus", minimum=0)
    return config


def load_module(path):
    """The Python file `path` as a module object, without registering it in `sys.modules`.

    For config files given by path (`reproduction.load_config(..., config_dir=...)`); a config file imports
    what it shares from `attr_robust_tf.configs`, never from its folder.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"`path` must be an existing Python file. Received: path={path!r}.")
    name = "config_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def to_json(config):
    """The resolved config (field references replaced by their values) as indented JSON text.

    `OPTIONAL` keys at their off value are left out (see `OPTIONAL`).
    """
    values = config.to_dict()
    for path, off in OPTIONAL.items():
        block, key = path.split(".")
        if isinstance(values.get(block), dict) and values[block].get(key, off) == off:
            values[block].pop(key, None)
    return json.dumps(values, indent=2, sort_keys=True, default=list)


def save(config, path):
    """Writes the resolved config as JSON to `path` atomically (`write_text`)."""
    write_text(path, to_json(config) + "\n")


def from_json(text):
    """A ConfigDict from JSON text written by `to_json` (lists become tuples, as in config files).

    `OPTIONAL` keys left out at their off value come back where the config has them (`robust.
    epsilon_warmup_epochs` with an inner attack, `train.influence_every` always).
    """
    values = _tuples(json.loads(text))
    if isinstance(values.get("data"), dict):
        values["data"].setdefault("bounds", OPTIONAL["data.bounds"])
    if isinstance(values.get("train"), dict):
        values["train"].setdefault("influence_every", OPTIONAL["train.influence_every"])
    if isinstance(values.get("robust"), dict) and "epsilon" in values["robust"]:
        values["robust"].setdefault("epsilon_warmup_epochs", OPTIONAL["robust.epsilon_warmup_epochs"])
    return ml_collections.ConfigDict(values)


def load(path):
    """Reads a config written by `save` back into a ConfigDict."""
    with tf.io.gfile.GFile(os.fspath(path)) as f:
        return from_json(f.read())


def write_text(path, text):
    """Writes `text` to `path` atomically (`write_atomic`, on `tf.io.gfile`)."""
    write_atomic(path, text)
