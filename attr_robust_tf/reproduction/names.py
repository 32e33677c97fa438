"""Names of the reproduction grid: datasets, objectives (and ablation variants), scales, their configs.

A cell is one dataset × objective entry at one scale; an entry may carry config overrides for an ablation,
`sarkar2021@robust.weights.cacr=1+train.epochs=4` (keys of configs/common.py joined by "+"), and a dataset prefix
that restricts it to one dataset of the grid, `fmnist:madry@model.name=cpu_cnn_avgpool` (`entry_dataset`).
"""
import os

from attr_robust_tf import _checks, config_utils
from attr_robust_tf.configs.common import OBJECTIVES as config_objectives

DATASETS = {"mnist": "mnist", "fashion_mnist": "fmnist", "gtsrb": "gtsrb", "flower17": "flower17"}
ALIASES = {"fmnist": "fashion_mnist", "flower": "flower17", "flowers17": "flower17"}
TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "gtsrb": "GTSRB", "flower17": "Flower-17"}
CONFIG_DIR = None  # load_config default: the package's configs (attr_robust_tf.configs)
BASE_OBJECTIVES = ("natural", "madry", "trades", "ig_norm", "ig_sum_norm", "art", "sarkar2021")
# Rows added by later objectives; part of `all` once the package's configs define them.
LATER_OBJECTIVES = ("sarkar2021_scaled", "igr")
OBJECTIVES = BASE_OBJECTIVES + tuple(o for o in LATER_OBJECTIVES if o in config_objectives)
OBJECTIVE_TITLES = {"natural": "Natural", "madry": "Madry et al. (PGD-AT)", "trades": "TRADES",
                    "ig_norm": "IG-NORM (RAR)", "ig_sum_norm": "IG-SUM-NORM (RAR)", "art": "ART",
                    "sarkar2021": "Sarkar et al. 2021", "sarkar2021_scaled": "Sarkar et al. 2021 (scaled)",
                    "igr": "IGR"}
EARLIER = ("madry", "trades", "ig_norm", "ig_sum_norm", "art")  # the methods Sarkar et al. compare against
BASELINE = "ig_sum_norm"  # the paired comparisons: every method against IG-SUM-NORM
SCALES = ("tiny", "cpu", "medium", "reference")
# scale → the `:arg` variant of configs/common.py; tiny runs the tiny data with medium's training features
# (early stopping, ε warm-up) so that CI covers them
CONFIG_ARGS = {"tiny": "tiny,medium", "cpu": "cpu", "medium": "medium", "reference": ""}
STUDY_OBJECTIVES = ("natural", "ig_sum_norm", "sarkar2021")  # restart study: a baseline, the rival, the claim
STUDY_IMAGES = {"tiny": 4, "cpu": 40, "medium": 100, "reference": 100}


def is_sarkar(objective):
    """Whether `objective` is one of the Sarkar et al. 2021 rows (sarkar2021, sarkar2021_scaled, ...)."""
    return objective.startswith("sarkar2021")


# RAR (Chen et al. 2019) Table 1 as recalled in docs/method.md §10: NOT verified against the paper.
# (dataset, objective) → (NA, AA, IN, CO), fractions.
RAR_TABLE1 = {
    ("mnist", "natural"): (0.9917, 0.0000, 0.4661, 0.1758),
    ("mnist", "madry"): (0.9840, 0.9247, 0.6256, 0.2422),
    ("mnist", "ig_norm"): (0.9874, 0.8143, 0.7136, 0.2841),
    ("mnist", "ig_sum_norm"): (0.9834, 0.8817, 0.7245, 0.3111),
    ("fashion_mnist", "natural"): (0.9086, 0.0001, 0.3901, 0.4610),
    ("fashion_mnist", "madry"): (0.8573, 0.7301, 0.4612, 0.6251),
    ("fashion_mnist", "ig_norm"): (0.8513, 0.6595, 0.5922, 0.6171),
    ("fashion_mnist", "ig_sum_norm"): (0.8544, 0.7026, 0.7208, 0.6747),
    ("gtsrb", "natural"): (0.9857, 0.2105, 0.5416, 0.6790),
    ("gtsrb", "madry"): (0.9759, 0.8324, 0.6885, 0.7520),
    ("gtsrb", "ig_norm"): (0.9702, 0.7524, 0.7481, 0.7555),
    ("gtsrb", "ig_sum_norm"): (0.9568, 0.7712, 0.7404, 0.7684),
    ("flower17", "natural"): (0.8676, 0.0000, 0.0812, 0.4978),
    ("flower17", "madry"): (0.8382, 0.4191, 0.5587, 0.7784),
    ("flower17", "ig_norm"): (0.8529, 0.2426, 0.6468, 0.7591),
    ("flower17", "ig_sum_norm"): (0.8235, 0.4706, 0.6633, 0.7974),
}

def _split(text, name):
    if isinstance(text, str):
        items = [t.strip() for t in text.split(",")]
    else:
        items = [str(t).strip() for t in (text or ())]
    items = [t for t in items if t]
    if not items:
        raise ValueError(f"`{name}` must name at least one entry. Received: {name}={text!r}.")
    return items


def parse_datasets(text):
    """"mnist,fmnist" → ("mnist", "fashion_mnist"): canonical names in the given order, duplicates dropped."""
    out = []
    for item in _split(text, "datasets"):
        item = ALIASES.get(item, item)
        if item not in DATASETS:
            _checks.did_you_mean("dataset in `datasets`", item, list(DATASETS) + list(ALIASES))
        if item not in out:
            out.append(item)
    return tuple(out)


def split_entry(entry):
    """"sarkar2021@robust.weights.cacr=1+train.epochs=4" → ("sarkar2021", ("robust.weights.cacr=1", ...))."""
    objective, _, rest = str(entry).partition("@")
    if objective not in OBJECTIVES:
        _checks.did_you_mean("objective in `objectives`", objective, OBJECTIVES + ("all",))
    overrides = tuple(o for o in rest.split("+") if o) if rest else ()
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"An override in `objectives` must look like key=value. Received: {item!r} in "
                             f"{entry!r}. Example: sarkar2021@robust.weights.cacr=1+train.epochs=4.")
    if rest and not overrides:
        raise ValueError(f"`objectives` entry {entry!r} has '@' but no override. Example: "
                         "sarkar2021@robust.weights.cacr=1.")
    return objective, overrides


def parse_objectives(text):
    """"all" → every objective (in `OBJECTIVES` order); "natural,sarkar2021" → those two; entries may carry
    overrides ("sarkar2021@robust.weights.cacr=1", see `split_entry`) and a dataset prefix ("fmnist:sarkar2021",
    "mnist:all"; see `entry_dataset`), kept in the returned entries with the dataset's canonical name."""
    items = _split(text, "objectives")
    out = []
    for item in items:
        dataset, item = entry_dataset(item)
        for entry in OBJECTIVES if item == "all" else (item,):
            split_entry(entry)
            entry = f"{dataset}:{entry}" if dataset else entry
            if entry not in out:
                out.append(entry)
    return tuple(out)


def entry_dataset(entry):
    """(dataset or None, entry without it): "fmnist:madry@seed=1" → ("fashion_mnist", "madry@seed=1").

    An entry with a dataset prefix runs on that dataset only; `reproduce` skips it for the others, so one command
    can describe a grid whose datasets carry different extra rows.
    """
    entry = str(entry)
    if ":" not in entry.partition("@")[0]:
        return None, entry
    dataset, _, rest = entry.partition(":")
    if not dataset or not rest:
        raise ValueError(f"A dataset prefix in `objectives` must look like dataset:objective. Received: {entry!r}. "
                         "Example: fmnist:sarkar2021@seed=1.")
    dataset, = parse_datasets(dataset)
    return dataset, rest


def check_prefixes(objectives, datasets):
    """Raises unless every dataset prefix of `objectives` names one of `datasets` (both parsed): an entry for a
    dataset the grid does not run would otherwise be skipped without a word."""
    stray = [e for e in objectives if entry_dataset(e)[0] not in (None, *datasets)]
    if stray:
        raise ValueError(f"A dataset prefix in `objectives` must name one of the datasets {', '.join(datasets)}. "
                         f"Received: {', '.join(stray)}. Add the dataset to `datasets` or drop the entry.")


def entries_for(objectives, dataset):
    """The entries of `objectives` (`parse_objectives`) that run on `dataset`, without their prefix, in order."""
    out = []
    for entry in objectives:
        only, plain = entry_dataset(entry)
        if only in (None, dataset) and plain not in out:
            out.append(plain)
    return tuple(out)


def paired_baseline(entry, baseline=BASELINE):
    """The entry `entry` is paired with: `baseline` trained with the same seed override.

    "sarkar2021@seed=1" → "ig_sum_norm@seed=1" (a seed replicate is compared within its seed);
    "ig_sum_norm@seed=1" → "ig_sum_norm" (the difference between two seeds of the baseline itself);
    "sarkar2021" or "madry@model.name=cpu_cnn_avgpool" → "ig_sum_norm".
    """
    objective, overrides = split_entry(entry)
    seed = seed_override(entry)
    if objective == baseline and seed and overrides == (seed,):
        return baseline
    return baseline + (f"@{seed}" if seed else "")


def seed_override(entry):
    """The entry's "seed=…" override ("sarkar2021@seed=1" → "seed=1"); None when it trains with the config's
    seed."""
    return next((o for o in split_entry(entry)[1] if o.partition("=")[0] == "seed"), None)


def title(entry):
    """"IG-SUM-NORM (RAR)"; a variant adds its overrides: "Sarkar et al. 2021 [robust.weights.cacr=1]"."""
    objective, overrides = split_entry(entry)
    return OBJECTIVE_TITLES[objective] + (f" [{', '.join(overrides)}]" if overrides else "")


def _check_scale(scale):
    return _checks.lookup("scale", scale, {s: s for s in SCALES})


def load_config(dataset, entry, scale, *, config_dir=None):
    """The validated ConfigDict of `dataset` × the entry's objective in the variant of `scale`, with the entry's
    overrides applied (`split_entry`): from the package's configs (`attr_robust_tf.configs`), or from the files
    `<config_dir>/<prefix>_<objective>.py` when `config_dir` is given."""
    from attr_robust_tf import configs

    dataset, = parse_datasets(dataset)
    objective, overrides = split_entry(entry)
    variant = CONFIG_ARGS[_check_scale(scale)]
    if config_dir is None:
        return configs.load(DATASETS[dataset], objective, variant, overrides)
    path = os.path.join(config_dir, f"{DATASETS[dataset]}_{objective}.py")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"`config_dir` must hold the experiment configs. Received: config_dir={config_dir!r} without "
            f"{os.path.basename(path)}. Pass a folder of configs/<prefix>_<objective>.py files, or none for the "
            "package's configs.")
    config = config_utils.load_module(path).get_config(variant)
    return config_utils.validate(config_utils.override(config, list(overrides)) if overrides else config)


def cell_dir(workdir, scale, dataset, entry):
    return os.path.join(workdir, scale, dataset, entry)

