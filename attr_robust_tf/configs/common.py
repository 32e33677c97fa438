"""The builder of every experiment config: `get_config(dataset, objective, arg)`.

`attr_robust_tf/configs/experiment.py:<dataset>,<objective>[,<variant>]` and the checkout's
`configs/<dataset>_<objective>.py:<variant>` call it. The values come from the per-dataset table `DATASETS`
below, the objective rows of `attr_robust_tf.objectives` (their paper defaults, read through
`config_utils.row_default`) and the per-objective table `OBJECTIVES` (what the rows do not hold), each commented
with its source in docs/method.md (§4.6 attack, §5 PGD, §7 objectives, §8.2 training, §8.3 architectures).
Variants, selected by the `:arg` of `--config=configs/x.py:arg`:

* "" (reference): the paper/reference-code settings. GPU work for every robust objective (docs/method.md §11.3).
* "cpu": same objective and loss, shrunk to train in minutes on 2 CPU cores; `CPU` below says what shrinks
  and why.
* "tiny": synthetic 8×8×1 data (`data.synthetic`), `tiny_cnn`, batch 8, ≤ 4 IG points, 2 epochs; runs in
  seconds (tests and CI).
* "medium" (MNIST and Fashion-MNIST): the `cpu` objective settings trained to convergence; `MEDIUM` below.
  "tiny,medium" is the tiny setting with medium's training features (early stopping, ε warm-up) for CI.

`lr` is a top-level alias of `train.lr` (one shared value), so `--config.lr=...` sets the learning rate.
"""
import ml_collections
from ml_collections.config_dict import placeholder

from attr_robust_tf import config_utils

__all__ = ["VARIANTS", "DATASETS", "OBJECTIVES", "SARKAR_FLOWER", "CPU", "CPU_SHRINK", "MEDIUM", "TINY_MEDIUM", "get_config"]

VARIANTS = ("cpu", "tiny", "medium")

# Config-file prefix → one row of reference settings (docs/method.md §8.2 unless noted).
DATASETS = {
    "mnist": dict(
        data="mnist", model="mnist_cnn", image_size=None, augment=False,
        seed=4557077,  # RAR MNIST/FMNIST seed
        optimizer="adam", lr=1e-4, lr_schedule=(), weight_decay=0.0,  # Adam 1e-4, hard-coded in RAR
        batch_size=50,
        # 100,000 steps (NATURAL 25,000) of 50 on 55,000 images: 91 (23) epochs of 1,100 steps
        epochs=91, natural_epochs=23,
        epsilon=0.3, attack_steps=40, step_size=0.01,  # training PGD, §8.2
        ig_steps=50, inner_ig_steps=10,  # m = 50, approx_factor 5 → m' = 10
        ig_norm=1.0, ig_sum_norm=0.1,  # λ (IG-NORM), β (IG-SUM-NORM)
        art_top_k=255,  # ART's k = 1,000 of 3,072 CIFAR entries, scaled to 784 [ours]
        protocol="mnist"),
    "fmnist": dict(
        data="fashion_mnist", model="mnist_cnn", image_size=None, augment=False,
        seed=4557077,
        optimizer="adam", lr=1e-4, lr_schedule=(), weight_decay=0.0,
        batch_size=50,
        epochs=91, natural_epochs=23,  # as MNIST: 100,000 (25,000) steps of 50 on 55,000 images
        epsilon=0.1, attack_steps=20, step_size=0.01,  # FMNIST training PGD, §8.2
        ig_steps=50, inner_ig_steps=10,
        ig_norm=1.0, ig_sum_norm=0.1,
        art_top_k=255,
        protocol="fmnist"),
    "gtsrb": dict(
        data="gtsrb", model="gtsrb_resnet", image_size=None,
        # seeded online rotation/translation instead of the unseeded offline 10k/class (docs/datasets.md §3.3)
        augment=True,
        seed=451760341,  # RAR GTSRB tf seed
        optimizer="momentum", lr=1e-3, weight_decay=2e-4,  # momentum SGD 0.9, w_d 2e-4
        lr_schedule=((500, 10.0), (60000, 1.0)),  # {0: 1e-3, 500: 1e-2, 60,000: 1e-3}
        batch_size=64,
        # 70,001 steps of 64 on ≈ 35,300 train images (90 % of the 39,209 tracks): ≈ 127 epochs
        epochs=127, natural_epochs=127,
        epsilon=8 / 255, attack_steps=7, step_size=2 / 255,  # 8 and 2 on the 0–255 scale (docs/method.md §1)
        ig_steps=50, inner_ig_steps=5,  # m = 50, approx_factor 10 → m' = 5
        ig_norm=1.0, ig_sum_norm=1.0,
        art_top_k=None,  # 32×32×3 = CIFAR's 3,072 entries: ART's k of the objective row unchanged
        protocol="gtsrb"),
    "flower17": dict(
        data="flower17", model="flower_resnet", image_size=128,  # 128×128, aspect not kept (docs/datasets.md §4.3)
        # the 72/8 protocol has no validation split: no per-epoch validation (set a limit to score on test)
        validation_split="test", validation_limit=0,
        augment=True,  # online augmentation instead of the offline 1,000 per class
        seed=451760341,  # as GTSRB
        optimizer="momentum", weight_decay=2e-4,
        lr=1e-4, natural_lr=1e-3,  # IG objectives {0: 1e-4, 500: 1e-3, 60,000: 1e-4}; NATURAL/Madry 10×
        lr_schedule=((500, 10.0), (60000, 1.0)),
        batch_size=16,
        epochs=915, natural_epochs=915,  # 70,001 steps of 16 on the 1,224 images of the 72/8 split
        epsilon=8 / 255, attack_steps=7, step_size=2 / 255,
        ig_steps=50, inner_ig_steps=5,
        ig_norm=0.1, ig_sum_norm=0.1,
        art_top_k=None,  # ART's k unchanged (its ratio k/entries would give 16,000 of 49,152 entries) [ours]
        protocol="flower17"),
}

# Objective → what its row in `objectives` does not hold (docs/method.md §7), and which of its row's settings replace
# the dataset's (the others come from `DATASETS`, the RAR rows). Weights are the row's unless per dataset.
OBJECTIVES = {
    "natural": dict(loss_reduction="sum"),  # RAR sums CE over the batch (docs/method.md §7.1, §9 quirk 5)
    "madry": dict(loss_reduction="sum"),  # TF1 minimize of a per-example vector sums (§7.1)
    # TRADES' trades.py averages; β of the row (the MNIST script default); Madry inner settings (§7.4)
    "trades": dict(loss_reduction="mean"),
    "ig_norm": dict(loss_reduction="sum"),  # weight λ from DATASETS (§7.5)
    "ig_sum_norm": dict(loss_reduction="sum"),  # weight β from DATASETS; the inner term shares it (§7.6)
    # ART's PyTorch losses average; 0.5·triplet, softplus β = 50 (docs/method.md §4.2); 3 steps whose size keeps
    # the row's ratio a/ε = 5/8 (5/255 at ε = 8/255) at the dataset's ε (§7.7)
    "art": dict(loss_reduction="mean", own=("attack_steps", "step_ratio", "surrogate_beta")),
    # reduce_sum of CE and both regularizers; one λ = 0.1 for both; m = 20 outer and 5 inner IG points
    # (k ∈ {4, 8, ..., 20}); inner IG-SUM-NORM objective CE + 0.1·‖IG‖₁ (§7.8)
    "sarkar2021": dict(loss_reduction="sum", own=("ig_steps", "inner_ig_steps", "inner_weight")),
    # the same settings; the row itself sets CACR's temperature "std" (attr_robust_tf/objectives.py)
    "sarkar2021_scaled": dict(loss_reduction="sum", own=("ig_steps", "inner_ig_steps", "inner_weight")),
    # IGR (Wang & Kong 2022): 1 − cos(IG(x), IG(x′)) with the row's λ = 1; the inner attack is IG-SUM-NORM's with
    # the dataset's β as its IG weight; RAR point counts and PGD (docs/igr.md) [ours]
    "igr": dict(loss_reduction="sum", inner_weight_from="ig_sum_norm"),
}

# Sarkar et al. released Flower settings only (docs/method.md §7.8); other datasets use their RAR rows [ours].
SARKAR_FLOWER = dict(batch_size=1, epochs=82,  # 100,000 steps of 1 on 1,224 images
                     lr=1e-4, lr_schedule=((500, 3.0), (60000, 1.0)))  # {0: 1e-4, 500: 3e-4, 60,000: 1e-4}

# The "cpu" shrink, per dataset: what trains in minutes on 2 cores. Measured per step on the shared 2-core
# machine (docs/configs.md): sarkar2021, the dearest objective, takes ~0.4 s per batch of 50 with cpu_cnn at
# 8/2 IG points, ~1.5 s per batch of 64 with the GTSRB ResNet at 4/2, ~2.9 s per batch of 16 on Flower at 4/2.
CPU = {
    # 6,000 images (11 % of train), 240 steps: natural ~20 s, sarkar2021 1.5–2.5 min (make demo trains both)
    "mnist": dict(model="cpu_cnn", limit=6000, validation_limit=500, epochs=2, batch_size=50),
    "fmnist": dict(model="cpu_cnn", limit=6000, validation_limit=500, epochs=2, batch_size=50),
    # the ResNet itself is already small (174k parameters); 4,096 images, 128 steps, half the IG points
    "gtsrb": dict(model="gtsrb_resnet", limit=4096, validation_limit=256, epochs=2, batch_size=64,
                  ig_steps=4, attack_steps=3),
    # 128×128 maps: 256 images, 32 steps, 2 attack steps; a smoke run, not a result (Flower is GPU work)
    "flower17": dict(model="flower_resnet", limit=256, validation_limit=0, epochs=2, batch_size=16,
                     ig_steps=4, attack_steps=2),
}
CPU_SHRINK = dict(
    lr_factor=10.0,  # Adam 1e-3 (momentum-SGD 10× too): 2 short epochs learn nothing at the reference LR
    loss_reduction="mean",  # per-example scale; not a parity run
    attack_steps=3,  # not 40/20/7: each inner step costs m' double-backprop passes
    ig_steps=8, inner_ig_steps=2,  # not 50/20 and 10/5: the IG points dominate the cost (docs/method.md §11.1)
)

# The "medium" scale: the cpu objective settings (model, Adam 1e-3, mean reduction, 3-step inner attack, 8/2 IG
# points) trained until validation accuracy stops improving, so that the comparison is between converged models.
# 20,000 images (36 % of train) × up to 15 epochs of 400 steps; stop after 3 epochs without a better validation
# accuracy (on 1,000 validation images) and keep the best epoch's weights.
MEDIUM = {
    "mnist": dict(limit=20000, validation_limit=1000, epochs=15, early_stopping_patience=3,
                  # ε = 0.3 with a 3-step inner attack collapses from the start (Madry: 24 % NA after 2 cpu
                  # epochs, 46 % after 10, docs/reproduce.md): ramp ε up linearly over the first 3 epochs
                  epsilon_warmup_epochs=3),
    "fmnist": dict(limit=20000, validation_limit=1000, epochs=15, early_stopping_patience=3,
                   epsilon_warmup_epochs=0),  # ε = 0.1 trains from the start at the cpu scale
}
TINY_MEDIUM = dict(early_stopping_patience=1, epsilon_warmup_epochs=1)  # "tiny,medium": 2 epochs exercise both


def get_config(dataset, objective, arg=None):
    """The ConfigDict of `dataset` × `objective`; `arg` is "", "cpu" or "tiny" (big_vision `parse_arg`)."""
    if dataset not in DATASETS:
        raise config_utils.unknown("dataset", dataset, DATASETS)
    if objective not in OBJECTIVES:
        raise config_utils.unknown("objective", objective, OBJECTIVES)
    arg = config_utils.parse_arg(arg, cpu=False, tiny=False, medium=False)
    if arg.cpu and (arg.tiny or arg.medium):
        raise ValueError("Config argument must name at most one variant (cpu, medium or tiny; tiny,medium for "
                         f"CI). Received: {'cpu,tiny' if arg.tiny else 'cpu,medium'}.")
    if arg.medium and not arg.tiny and dataset not in MEDIUM:
        raise ValueError(f"Config variant `medium` must be one of the datasets {', '.join(MEDIUM)}. Received: "
                         f"dataset={dataset!r}. Use the cpu variant for it.")
    ds = DATASETS[dataset]
    natural_like = objective in ("natural", "madry")

    c = ml_collections.ConfigDict()
    c.seed = ds["seed"]
    c.lr = ds.get("natural_lr", ds["lr"]) if natural_like else ds["lr"]

    c.data = ml_collections.ConfigDict()
    c.data.name = ds["data"]
    c.data.train_split = "train"  # MNIST/FMNIST: 55,000 after the first 5,000 (docs/method.md §8.4)
    c.data.validation_split = ds.get("validation_split", "validation")
    c.data.limit = placeholder(int)  # None: the whole split
    c.data.offset = 0
    c.data.validation_limit = ds.get("validation_limit", 1000)  # per-epoch val_ metrics on the first 1,000
    c.data.image_size = placeholder(int) if ds["image_size"] is None else ds["image_size"]
    c.data.augment = ds["augment"]
    c.data.bounds = (0.0, 1.0)  # pixel range of the loaded images; ε and step sizes are in its units

    c.model = ml_collections.ConfigDict()
    c.model.name = ds["model"]
    c.model.weight_decay = ds["weight_decay"]  # w_d·Σ‖W‖²/2 on kernels (ResNets only)

    c.train = ml_collections.ConfigDict()
    c.train.optimizer = ds["optimizer"]
    c.train.lr = c.get_ref("lr")  # alias: --config.lr and --config.train.lr set the same value
    c.train.momentum = 0.9  # used by optimizer "momentum" (RAR ResNets)
    c.train.lr_schedule = ds["lr_schedule"]  # ((step, factor), ...): factor·lr from `step` on
    c.train.batch_size = ds["batch_size"]
    c.train.epochs = ds["natural_epochs"] if objective == "natural" else ds["epochs"]
    c.train.steps_per_epoch = placeholder(int)  # None: ⌊examples / batch⌋
    c.train.influence_every = 0  # > 0: log the regularizers' influence every n steps (diagnostics)

    c.robust = _robust(dataset, objective)
    if objective in ("sarkar2021", "sarkar2021_scaled") and dataset == "flower17":
        c.train.batch_size = SARKAR_FLOWER["batch_size"]
        c.train.epochs = SARKAR_FLOWER["epochs"]
        c.lr = SARKAR_FLOWER["lr"]
        c.train.lr_schedule = SARKAR_FLOWER["lr_schedule"]

    c.eval = ml_collections.ConfigDict()
    c.eval.protocol = f"{ds['protocol']}:reference"  # the RAR evaluation protocol (docs/method.md §4.6)

    c.runtime = ml_collections.ConfigDict()
    c.runtime.strategy = "default"  # or mirrored / multi_worker (--strategy)
    c.runtime.jit_compile = False  # XLA is ~2× slower on CPU and fails under Mirrored (docs/stack.md §5)
    c.runtime.logical_cpus = 2  # 2 replicas for --strategy=mirrored on a CPU; no effect otherwise
    c.runtime.deterministic = True  # deterministic ops, no Grappler rewrites: runs repeat bit for bit

    if arg.cpu:
        _cpu(c, dataset)
    elif arg.tiny:
        _tiny(c)
        if arg.medium:
            _medium_training(c, TINY_MEDIUM)
    elif arg.medium:
        _medium(c, dataset)
    return c


def _medium(c, dataset):
    """The "medium" variant in place: the cpu shrink, then more images, epochs, early stopping and warm-up."""
    _cpu(c, dataset)
    medium = MEDIUM[dataset]
    c.data.limit = medium["limit"]
    c.data.validation_limit = medium["validation_limit"]
    c.train.epochs = medium["epochs"]
    _medium_training(c, medium)
    c.eval.protocol = c.eval.protocol.replace(":cpu", ":medium")


def _medium_training(c, values):
    """Adds the early-stopping patience and, for objectives with an inner attack, the ε warm-up epochs."""
    c.train.early_stopping_patience = values["early_stopping_patience"]
    if "epsilon" in c.robust and values["epsilon_warmup_epochs"]:
        c.robust.epsilon_warmup_epochs = values["epsilon_warmup_epochs"]


def _robust(dataset, objective):
    """The `robust` block: only the knobs the objective uses (config_utils.robust_keys)."""
    ds, own = DATASETS[dataset], OBJECTIVES[objective].get("own", ())

    def setting(key):  # the row's value where the objective owns the setting, else the dataset's
        return config_utils.row_default(objective, key) if key in own else ds[key]

    step_ratio = config_utils.row_default(objective, "step_size") / config_utils.row_default(objective, "epsilon")
    values = dict(
        objective=objective,
        loss_reduction=OBJECTIVES[objective]["loss_reduction"],
        # λ/β of the RAR rows are per dataset; the other objectives' weights are fixed by their papers
        weights=({"ig_norm": ds[objective]} if objective in ("ig_norm", "ig_sum_norm")
                 else config_utils.row_default(objective, "weights")),
        epsilon=ds["epsilon"],
        step_size=ds["epsilon"] * step_ratio if "step_ratio" in own else ds["step_size"],
        attack_steps=setting("attack_steps"),
        random_start=True,  # uniform start in the ε-ball (RAR/Madry); TRADES' row starts at x + 0.001·N(0, I)
        ig_steps=setting("ig_steps"),
        inner_ig_steps=setting("inner_ig_steps"),
        ig_method="riemann_right",  # every reference loss uses right Riemann sums (docs/method.md §2.2)
        ig_batch_size=placeholder(int),  # None: all path points in one pass
        inner_weight=(ds[OBJECTIVES[objective]["inner_weight_from"]] if "inner_weight_from" in OBJECTIVES[objective]
                      else config_utils.row_default(objective, "inner_weight")),
        surrogate_beta=(config_utils.row_default(objective, "surrogate_beta") if "surrogate_beta" in own
                        else 0.0),  # 0: no surrogate, as the RAR/Sarkar training code
        top_k=ds["art_top_k"] or config_utils.row_default(objective, "top_k"),
        epsilon_warmup_epochs=0,  # constant ε (a schedules.EpsilonSchedule ramp when > 0)
    )
    block = ml_collections.ConfigDict()
    for key in config_utils.robust_keys(objective):  # a setting not listed above: the row's default
        value = values[key] if key in values else config_utils.row_default(objective, key)
        block[key] = ml_collections.ConfigDict(value) if isinstance(value, dict) else value
    return block


def _cpu(c, dataset):
    """Shrinks `c` in place to the CPU budget (see `CPU` and `CPU_SHRINK`)."""
    shrink = CPU[dataset]
    c.model.name = shrink["model"]
    c.data.limit = shrink["limit"]
    c.data.validation_limit = shrink["validation_limit"]
    c.train.epochs = shrink["epochs"]
    c.train.batch_size = shrink["batch_size"]
    c.train.lr_schedule = ()
    c.lr = c.lr * CPU_SHRINK["lr_factor"]
    r = c.robust
    r.loss_reduction = CPU_SHRINK["loss_reduction"]
    if "attack_steps" in r:
        r.attack_steps = min(r.attack_steps, shrink.get("attack_steps", CPU_SHRINK["attack_steps"]))
        # Madry et al.'s 2.5·ε/K, so the few steps still reach the boundary of the ε-ball
        r.step_size = max(r.step_size, min(r.epsilon, 2.5 * r.epsilon / r.attack_steps))
    for key in ("ig_steps", "inner_ig_steps"):
        if key in r:
            r[key] = min(r[key], shrink.get(key, CPU_SHRINK[key]))
    c.eval.protocol = c.eval.protocol.replace(":reference", ":cpu")


def _tiny(c):
    """Replaces data and model by the seconds-scale test setting (docs/conventions.md §6: 8×8×1, batch 8, ≤ 4 IG
    points)."""
    c.seed = 0
    c.data = ml_collections.ConfigDict()
    c.data.name = config_utils.SYNTHETIC
    c.data.num_examples = 64  # 8 steps of 8 per epoch
    c.data.image_shape = (8, 8, 1)
    c.data.num_classes = 3
    c.data.validation_limit = 16
    c.data.bounds = (0.0, 1.0)  # synthetic images lie in [0, 1]
    c.model.name = "tiny_cnn"
    c.model.weight_decay = 0.0
    c.train.optimizer = "adam"
    c.lr = 1e-2
    c.train.lr_schedule = ()
    c.train.batch_size = 8
    c.train.epochs = 2
    r = c.robust
    r.loss_reduction = "mean"
    if "epsilon" in r:
        r.epsilon = 0.1
        r.step_size = 0.05
        r.attack_steps = 2
    for key, value in (("ig_steps", 4), ("inner_ig_steps", 2)):
        if key in r:
            r[key] = value
    if "top_k" in r:
        r.top_k = 16  # of 64 entries
    c.eval.protocol = "tiny"
