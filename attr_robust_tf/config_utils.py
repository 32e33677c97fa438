"""Experiment configs: the `:arg` of a config file, dotted overrides, validation and JSON I/O (style.md §6).

The only library module that imports `ml_collections`. Configs are `ConfigDict`s with the blocks `seed`, `lr`,
`data`, `model`, `train`, `robust`, `eval` and `runtime`; `configs/common.py` builds them from the reference
tables of method.md. `validate` runs before any TensorFlow work and raises a `ValueError` that names the dotted
key, what was expected and what was received, with a did-you-mean for unknown names.
"""
import difflib
import importlib.util
import inspect
import json
import math
import os
import sys
import tempfile

import ml_collections

STRATEGIES = ("default", "mirrored", "multi_worker")
OPTIMIZERS = ("adam", "sgd", "momentum")  # "momentum": SGD with momentum, the RAR ResNet optimizer (§8.2)
LOSS_REDUCTIONS = ("mean", "sum")
SYNTHETIC = "synthetic"  # data.synthetic(...): random 8×8 images for tests and CI

# Every key a config may hold, per block; anything else is a typo (did-you-mean). Keys of REQUIRED must be set.
SCHEMA = {
    "": ("seed", "lr", "data", "model", "train", "robust", "eval", "runtime"),
    "data": ("name", "train_split", "validation_split", "limit", "offset", "validation_limit", "image_size",
             "augment", "num_examples", "image_shape", "num_classes"),
    "model": ("name", "weight_decay"),
    "train": ("optimizer", "lr", "momentum", "lr_schedule", "batch_size", "epochs", "steps_per_epoch",
              "influence_every"),
    "robust": ("objective", "loss_reduction", "weights", "epsilon", "step_size", "attack_steps", "random_start",
               "ig_steps", "inner_ig_steps", "ig_method", "ig_batch_size", "inner_weight", "surrogate_beta",
               "top_k"),
    "eval": ("protocol",),
    "runtime": ("strategy", "jit_compile", "logical_cpus", "deterministic"),
}
REQUIRED = {
    **SCHEMA,
    "train": tuple(k for k in SCHEMA["train"] if k != "influence_every"),  # optional: configs saved before it
    "data": ("name", "validation_limit"),
    "robust": ("objective", "loss_reduction"),
}
DATA_KEYS = {  # data keys by kind of dataset
    "files": ("name", "train_split", "validation_split", "limit", "offset", "validation_limit", "image_size",
              "augment"),
    SYNTHETIC: ("name", "num_examples", "image_shape", "num_classes", "validation_limit"),
}


def unknown(kind, name, options):
    """A ValueError for an unknown `name` among `options`, with the closest match ("Did you mean ...?")."""
    options = sorted(options)
    close = difflib.get_close_matches(str(name), options, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ValueError(f"Unknown {kind} {name!r}.{hint} Available: {', '.join(options)}.")


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


def override(config, overrides):
    """Returns a copy of `config` with dotted overrides applied: {"robust.epsilon": 0.2} or ["lr=1e-3"].

    Only existing keys may be set (a typo raises a did-you-mean ValueError naming the dotted key); values are
    type-checked like the command line's `--config.a.b=value` (an int may replace a float, not a string).
    """
    config = ml_collections.ConfigDict(config.to_dict(preserve_field_references=True))
    if not isinstance(overrides, dict):
        pairs = {}
        for item in overrides:
            key, sep, value = str(item).partition("=")
            if not sep:
                raise ValueError(f"Overrides must look like key=value. Received: {item!r}.")
            literals = {"None": None, "True": True, "False": False}  # Python spellings, as on the command line
            try:
                value = literals[value] if value in literals else json.loads(value)
            except json.JSONDecodeError:
                pass  # a bare string such as objective=madry
            pairs[key.strip()] = tuple(value) if isinstance(value, list) else value
        overrides = pairs
    for path, value in overrides.items():
        parent_path, _, key = path.rpartition(".")
        parent = get(config, parent_path) if parent_path else config
        if not isinstance(parent, ml_collections.ConfigDict) or key not in parent:
            get(config, path)  # raises the did-you-mean error
        try:
            parent[key] = value
        except TypeError as error:
            raise ValueError(f"`{path}` has the wrong type. Received: {path}={value!r}. {error}") from None
    return config


def read_json(path):
    """Reads a JSON object of {dotted_key: value} overrides (tools/tune.py's best_overrides.json)."""
    with open(path) as f:
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
    """The `robust` keys that objective `objective` uses, in config order (method.md §7.9).

    Every objective has `objective` and `loss_reduction`; rows with regularizers add `weights`; an inner attack
    adds the PGD knobs and the surrogate β (0: none); IG-based terms add their point counts and rule; an
    untied inner attribution term (Sarkar 2021) adds `inner_weight`; ART adds its mask size `top_k`.
    """
    from attr_robust_tf import objectives, regularizers

    row = objectives.get(objective)
    keys = ["objective", "loss_reduction"]
    if row.regularizers:
        keys.append("weights")
    if row.has_inner_attack:
        keys += ["epsilon", "step_size", "attack_steps", "random_start"]
    outer_ig = any("steps" in inspect.signature(regularizers.get(name).__init__).parameters
                   for name in row.regularizers)
    inner_ig = "ig_norm" in row.inner
    if outer_ig:
        keys.append("ig_steps")
    if inner_ig:
        keys.append("inner_ig_steps")
    if outer_ig or inner_ig:
        keys += ["ig_method", "ig_batch_size"]
    if inner_ig and len(row.inner) > 1 and not isinstance(row.inner["ig_norm"], str):
        keys.append("inner_weight")  # IG-SUM-NORM ties its inner weight to the regularizer's instead
    if row.has_inner_attack:
        keys.append("surrogate_beta")
    if "art" in row.inner:
        keys.append("top_k")
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
        required = allowed if block == "data" and "name" in node else REQUIRED[block]
        for key in required:
            if key not in node:
                raise ValueError(f"`{prefix}{key}` must be set. Received: a config without it.")


def validate(config, *, num_replicas=1):
    """Checks every field of an experiment config before any TensorFlow work; returns the config.

    Unknown keys, datasets, models, objectives, regularizers, optimizers, strategies and protocols raise a
    did-you-mean ValueError naming the dotted key; ranges follow method.md (ε > 0, 0 < step_size <= ε,
    weights >= 0, ...); the global batch must split evenly over `num_replicas` (style.md §5).
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
    _int(config, "train.epochs")
    _int(config, "train.steps_per_epoch", optional=True)
    if "influence_every" in config.train:
        _int(config, "train.influence_every", minimum=0)
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
        if key not in used:
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
    if "ig_batch_size" in robust:
        _int(config, "robust.ig_batch_size", optional=True)
    for key in ("inner_weight", "surrogate_beta"):
        if key in robust:
            _float(config, f"robust.{key}")
    if "random_start" in robust and not isinstance(robust.random_start, bool):
        _fail("robust.random_start", "True or False", robust.random_start)

    # eval
    try:
        protocols.get_protocol(get(config, "eval.protocol"))
    except ValueError as error:
        raise ValueError(f"`eval.protocol`: {error}") from None

    # runtime
    _choice(config, "runtime.strategy", STRATEGIES, "strategy")
    for key in ("jit_compile", "deterministic"):
        if not isinstance(get(config, f"runtime.{key}"), bool):
            _fail(f"runtime.{key}", "True or False" + (" (never 'auto', style.md §1)" if key == "jit_compile"
                                                          else ""), config.runtime[key])
    _int(config, "runtime.logical_cpus", minimum=0)
    return config


def import_sibling(path, name):
    """Imports module `name` from the folder of file `path` (configs/<x>.py → configs/common.py).

    Config files are loaded by path (`--config=configs/x.py`), so `configs/` is not a package on sys.path;
    the module is cached under a name private to that folder.
    """
    folder = os.path.dirname(os.path.abspath(path))
    key = f"_attr_robust_tf_config_{abs(hash(folder))}_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, os.path.join(folder, f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[key]
            raise
    return sys.modules[key]


def to_json(config):
    """The resolved config (field references replaced by their values) as indented JSON text."""
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=list)


def save(config, path):
    """Writes the resolved config as JSON to `path` atomically (a temporary file, then a rename)."""
    write_text(path, to_json(config) + "\n")


def from_json(text):
    """A ConfigDict from JSON text written by `to_json` (lists become tuples, as in config files)."""

    def tuples(value):
        if isinstance(value, list):
            return tuple(tuples(v) for v in value)
        if isinstance(value, dict):
            return {k: tuples(v) for k, v in value.items()}
        return value

    return ml_collections.ConfigDict(tuples(json.loads(text)))


def load(path):
    """Reads a config written by `save` back into a ConfigDict."""
    with open(path) as f:
        return from_json(f.read())


def write_text(path, text):
    """Writes `text` to `path` through a temporary file in the same folder and an atomic rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
