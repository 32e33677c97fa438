"""Experiment configs: the `:arg` of a config file, dotted overrides, validation and JSON I/O (style.md §6).

The only library module that imports `ml_collections`. Configs are `ConfigDict`s with the blocks `seed`, `lr`,
`data`, `model`, `train`, `robust`, `eval` and `runtime`; `configs/common.py` builds them from the reference
tables of method.md. `validate` runs before any TensorFlow work and raises a `ValueError` that names the dotted
key, what was expected and what was received, with a did-you-mean for unknown names.
"""
import difflib
import inspect
import json
import math
import os
import tempfile

import ml_collections

STRATEGIES = ("default", "mirrored", "multi_worker")
OPTIMIZERS = ("adam", "sgd", "momentum")  # "momentum": SGD with momentum, the RAR ResNet optimizer (§8.2)
LOSS_REDUCTIONS = ("mean", "sum")
SYNTHETIC = "synthetic"  # data.synthetic(...): random 8×8 images for tests and CI

# Every key a config may hold, per block; anything else is a typo (did-you-mean).
SCHEMA = {
    "": ("seed", "lr", "data", "model", "train", "robust", "eval", "runtime"),
    "data": ("name", "train_split", "validation_split", "limit", "offset", "validation_limit", "image_size",
             "augment", "num_examples", "image_shape", "num_classes"),
    "model": ("name", "weight_decay"),
    "train": ("optimizer", "lr", "momentum", "lr_schedule", "batch_size", "epochs", "steps_per_epoch"),
    "robust": ("objective", "weights", "epsilon", "step_size", "attack_steps", "random_start", "ig_steps",
               "inner_ig_steps", "ig_method", "surrogate_beta", "loss_reduction", "ig_batch_size"),
    "eval": ("protocol",),
    "runtime": ("strategy", "jit_compile", "logical_cpus", "deterministic"),
}


def _unknown(kind, name, options):
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
            raise _unknown("config argument", key, spec)
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
            raise _unknown("config key", ".".join(walked + [key]),
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
            try:
                value = json.loads(value)
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
        error = _unknown(kind, value, options)
        raise ValueError(f"`{path}`: {error}") from None
    return value


def _check_keys(config):
    for block, keys in SCHEMA.items():
        node = get(config, block) if block else config
        if not isinstance(node, ml_collections.ConfigDict):
            _fail(block, "a ConfigDict block", node)
        for key in node.keys():
            if key not in keys:
                prefix = f"{block}." if block else ""
                raise _unknown("config key", prefix + key, [prefix + k for k in keys])
        missing = [k for k in ("name",) if block in ("data", "model") and k not in node]
        if missing:
            _fail(f"{block}.name", "set", None)


def validate(config, *, num_replicas=1):
    """Checks every field of an experiment config before any TensorFlow work; returns the config.

    Unknown keys, datasets, models, objectives, regularizers, optimizers, strategies and protocols raise a
    did-you-mean ValueError; ranges follow method.md (ε > 0, 0 < step_size <= ε, weights >= 0, ...); the
    global batch must split evenly over `num_replicas` (style.md §5).
    """
    from attr_robust_tf import attributions, data, models, objectives

    _check_keys(config)
    _int(config, "seed", minimum=0)
    lr = _float(config, "lr", positive=True)
    if abs(_float(config, "train.lr", positive=True) - lr) > 1e-12 * max(1.0, abs(lr)):
        _fail("train.lr", f"equal to the top-level `lr` ({lr!r}), its alias", config.train.lr,
              "Set one of them (--config.lr=...).")

    # data
    names = tuple(data.NAMES) + (SYNTHETIC,)
    name = _choice(config, "data.name", names, "dataset")
    if name == SYNTHETIC:
        _int(config, "data.num_examples")
        _int(config, "data.num_classes", minimum=2)
        shape = get(config, "data.image_shape")
        if not (isinstance(shape, tuple) and len(shape) == 3 and all(isinstance(d, int) and d >= 1 for d in shape)):
            _fail("data.image_shape", "a tuple (H, W, C) of positive integers", shape)
    else:
        splits = tuple(data.info(name).splits)
        _choice(config, "data.train_split", splits, "split")
        _choice(config, "data.validation_split", splits, "split")
        _int(config, "data.offset", minimum=0)
        _int(config, "data.image_size", optional=True)
        if not isinstance(get(config, "data.augment"), bool):
            _fail("data.augment", "True or False", config.data.augment)
    _int(config, "data.limit", optional=True)
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
    _int(config, "train.epochs")
    _int(config, "train.steps_per_epoch", optional=True)
    schedule = get(config, "train.lr_schedule")
    previous = 0
    for entry in schedule:
        if (not isinstance(entry, tuple) or len(entry) != 2 or isinstance(entry[0], bool)
                or not isinstance(entry[0], int) or entry[0] <= previous
                or not isinstance(entry[1], (int, float)) or not entry[1] > 0):
            _fail("train.lr_schedule", "a tuple of (step, factor) pairs with increasing steps > 0 and factors > 0",
                  schedule, "The learning rate is factor·lr from `step` on.")
        previous = entry[0]
    if batch % num_replicas:
        _fail("train.batch_size", f"divisible by the number of replicas ({num_replicas})", batch)

    # robust
    objective = _choice(config, "robust.objective", tuple(objectives.OBJECTIVES), "objective")
    row = objectives.OBJECTIVES[objective]
    robust = config.robust
    names = tuple(objectives.regularizer_names(objective))
    weights = robust.get("weights", ml_collections.ConfigDict())
    for key in weights.keys():
        if key not in names:
            if not names:
                _fail(f"robust.weights.{key}", f"absent: objective {objective!r} has no regularizers", weights[key])
            raise ValueError(f"`robust.weights`: {_unknown(f'regularizer of {objective!r}', key, names)}")
        _float(config, f"robust.weights.{key}")
    del row
    epsilon = None
    if "epsilon" in robust:
        epsilon = _float(config, "robust.epsilon", positive=True)
    if "step_size" in robust:
        step = _float(config, "robust.step_size", positive=True)
        if epsilon is not None and step > epsilon * (1 + 1e-9):
            _fail("robust.step_size", f"<= robust.epsilon = {epsilon!r}", step)
    for key in ("attack_steps", "ig_steps", "inner_ig_steps"):
        if key in robust:
            _int(config, f"robust.{key}")
    if "ig_batch_size" in robust:
        _int(config, "robust.ig_batch_size", optional=True)
    if "ig_method" in robust:
        method = _choice(config, "robust.ig_method", attributions.METHODS, "quadrature rule")
        if method == "riemann_trapezoid":
            for key in ("ig_steps", "inner_ig_steps"):
                if key in robust:
                    _int(config, f"robust.{key}", minimum=2)
    if "surrogate_beta" in robust:
        _float(config, "robust.surrogate_beta", positive=True)
    if "random_start" in robust and not isinstance(robust.random_start, bool):
        _fail("robust.random_start", "True or False", robust.random_start)
    _choice(config, "robust.loss_reduction", LOSS_REDUCTIONS, "loss reduction")

    # eval
    protocol = get(config, "eval.protocol")
    try:
        from attr_robust_tf import protocols
    except ImportError:  # evaluation presets are optional for training
        protocols = None
    if protocols is not None and protocol not in protocols.PRESETS:
        raise ValueError(f"`eval.protocol`: {_unknown('evaluation protocol', protocol, protocols.PRESETS)}")

    # runtime
    _choice(config, "runtime.strategy", STRATEGIES, "strategy")
    if get(config, "runtime.jit_compile") is not False and get(config, "runtime.jit_compile") is not True:
        _fail("runtime.jit_compile", "True or False (never 'auto', style.md §1)", config.runtime.jit_compile)
    _int(config, "runtime.logical_cpus", minimum=0)
    if not isinstance(get(config, "runtime.deterministic"), bool):
        _fail("runtime.deterministic", "True or False", config.runtime.deterministic)
    return config


def to_json(config):
    """The resolved config (field references replaced by their values) as indented JSON text."""
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=list)


def save(config, path):
    """Writes the resolved config as JSON to `path` atomically (a temporary file, then a rename)."""
    write_text(path, to_json(config) + "\n")


def load(path):
    """Reads a config written by `save` back into a ConfigDict (lists become tuples, as in config files)."""
    with open(path) as f:
        raw = json.load(f)

    def tuples(value):
        if isinstance(value, list):
            return tuple(tuples(v) for v in value)
        if isinstance(value, dict):
            return {k: tuples(v) for k, v in value.items()}
        return value

    return ml_collections.ConfigDict(tuples(raw))


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
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
