"""Configs: every file and variant validates, reference values match docs/method.md, bad configs fail clearly."""
import glob
import importlib.util
import json
import os

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from attr_robust_tf import config_utils, distribute, objectives

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")
DATASETS = ("mnist", "fmnist", "gtsrb", "flower17")
OBJECTIVES = ("natural", "madry", "trades", "ig_norm", "ig_sum_norm", "art", "sarkar2021", "sarkar2021_scaled",
              "igr")
FILES = [f"{d}_{o}" for d in DATASETS for o in OBJECTIVES]


def load(name, arg=None):
    path = os.path.join(CONFIGS, f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"config_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def test_one_file_per_dataset_and_objective():
    names = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(CONFIGS, "*.py"))}
    assert names == set(FILES) | {"common", "tiny"}
    assert set(OBJECTIVES) == set(objectives.OBJECTIVES)


@pytest.mark.parametrize("name", FILES)
def test_every_variant_validates(name):
    dataset, objective = name.split("_", 1)
    reference, cpu, tiny = (load(name, arg) for arg in (None, "cpu", "tiny"))
    for config in (reference, cpu, tiny):
        config_utils.validate(config)
        assert config.robust.objective == objective
        assert config.train.lr == config.lr
        assert config.runtime.jit_compile is False
    # the cpu variant keeps the objective and its terms, and is strictly cheaper
    assert cpu.robust.keys() == reference.robust.keys()
    assert dict(cpu.robust.get("weights", {})) == dict(reference.robust.get("weights", {}))
    assert cpu.train.epochs < reference.train.epochs
    for key in ("attack_steps", "ig_steps", "inner_ig_steps"):
        if key in reference.robust:
            assert cpu.robust[key] <= reference.robust[key]
    assert cpu.eval.protocol == reference.eval.protocol.replace(":reference", ":cpu")
    # tiny: docs/conventions.md §6
    assert tiny.data.name == "synthetic" and tiny.data.image_shape == (8, 8, 1)
    assert tiny.model.name == "tiny_cnn" and tiny.train.batch_size == 8 and tiny.train.epochs == 2
    assert tiny.robust.get("ig_steps", 0) <= 4 and tiny.robust.get("inner_ig_steps", 0) <= 4
    assert tiny.eval.protocol == "tiny"


def test_tiny_file_takes_the_objective():
    assert load("tiny").robust.objective == "sarkar2021"
    assert load("tiny", "trades").robust.objective == "trades"
    assert load("tiny", "madry").to_dict() == load("fmnist_madry", "tiny").to_dict()


# Reference values typed in from docs/method.md (§4.6, §5, §7, §8.2, §8.3), independently of configs/common.py.
@pytest.mark.parametrize("name, expected", [
    ("mnist_madry", {"data.name": "mnist", "model.name": "mnist_cnn", "seed": 4557077, "lr": 1e-4,
                     "train.optimizer": "adam", "train.batch_size": 50, "robust.epsilon": 0.3,
                     "robust.attack_steps": 40, "robust.step_size": 0.01, "robust.loss_reduction": "sum",
                     "eval.protocol": "mnist:reference"}),
    ("fmnist_ig_norm", {"data.name": "fashion_mnist", "robust.epsilon": 0.1, "robust.attack_steps": 20,
                        "robust.ig_steps": 50, "robust.inner_ig_steps": 10, "robust.weights.ig_norm": 1.0}),
    ("mnist_ig_sum_norm", {"robust.weights.ig_norm": 0.1, "robust.ig_steps": 50, "robust.inner_ig_steps": 10}),
    ("gtsrb_ig_sum_norm", {"model.name": "gtsrb_resnet", "model.weight_decay": 2e-4, "train.optimizer": "momentum",
                           "train.momentum": 0.9, "train.batch_size": 64, "seed": 451760341, "lr": 1e-3,
                           "train.lr_schedule": ((500, 10.0), (60000, 1.0)), "robust.epsilon": 8 / 255,
                           "robust.step_size": 2 / 255, "robust.attack_steps": 7, "robust.inner_ig_steps": 5,
                           "robust.weights.ig_norm": 1.0}),
    ("flower17_ig_norm", {"model.name": "flower_resnet", "data.image_size": 128, "train.batch_size": 16,
                          "lr": 1e-4, "robust.weights.ig_norm": 0.1}),
    ("flower17_natural", {"lr": 1e-3}),
    ("flower17_sarkar2021", {"train.batch_size": 1, "lr": 1e-4, "train.lr_schedule": ((500, 3.0), (60000, 1.0)),
                             "robust.weights.cacr": 0.1, "robust.weights.wacr": 0.1, "robust.ig_steps": 20,
                             "robust.inner_ig_steps": 5, "robust.inner_weight": 0.1, "robust.epsilon": 8 / 255,
                             "robust.attack_steps": 7, "robust.step_size": 2 / 255, "model.weight_decay": 2e-4}),
    ("fmnist_sarkar2021", {"robust.weights.cacr": 0.1, "robust.ig_steps": 20, "robust.inner_ig_steps": 5,
                           "robust.epsilon": 0.1, "robust.loss_reduction": "sum"}),
    ("fmnist_trades", {"robust.weights.trades_kl": 1.0, "robust.attack_steps": 20, "robust.loss_reduction": "mean"}),
    ("gtsrb_art", {"robust.weights.art": 0.5, "robust.attack_steps": 3, "robust.step_size": 5 / 255,
                   "robust.surrogate_beta": 50.0, "robust.top_k": 1000}),
])
def test_reference_values_match_method_md(name, expected):
    config = load(name)
    for path, value in expected.items():
        got = config_utils.get(config, path)
        assert got == pytest.approx(value) if isinstance(value, float) else got == value, (path, got, value)


@pytest.mark.parametrize("name, steps", [("mnist_madry", 100_000), ("fmnist_natural", 25_000),
                                         ("gtsrb_ig_norm", 70_001), ("flower17_madry", 70_001),
                                         ("flower17_sarkar2021", 100_000)])
def test_reference_epochs_cover_the_reference_step_count(name, steps):
    config = load(name)
    train_size = {"mnist": 55000, "fashion_mnist": 55000, "gtsrb": 35300, "flower17": 1224}[config.data.name]
    total = config.train.epochs * (train_size // config.train.batch_size)
    assert abs(total - steps) / steps < 0.02


def test_only_the_knobs_an_objective_uses():
    assert config_utils.robust_keys("natural") == ("objective", "loss_reduction")
    assert "ig_steps" not in config_utils.robust_keys("madry")
    assert "inner_weight" not in config_utils.robust_keys("ig_sum_norm")  # tied to the regularizer's weight
    assert {"inner_weight", "ig_steps", "inner_ig_steps"} <= set(config_utils.robust_keys("sarkar2021"))
    assert "top_k" in config_utils.robust_keys("art")


# -- parse_arg / override / alias ---------------------------------------------------------------------


def test_parse_arg():
    arg = config_utils.parse_arg("cpu,seed=3", cpu=False, tiny=False, seed=0)
    assert (arg.cpu, arg.tiny, arg.seed) == (True, False, 3)
    assert config_utils.parse_arg("", cpu=False).cpu is False
    assert config_utils.parse_arg(None, cpu=False).cpu is False
    with pytest.raises(ValueError, match="Did you mean 'cpu'"):
        config_utils.parse_arg("cpi", cpu=False, tiny=False)
    with pytest.raises(ValueError, match="`seed` must be of type int"):
        config_utils.parse_arg("seed=abc", seed=0)
    with pytest.raises(ValueError, match="at most one variant"):
        load("fmnist_madry", "cpu,tiny")
    with pytest.raises(ValueError, match="Did you mean 'tiny'"):
        load("fmnist_madry", "tinny")


def test_lr_is_an_alias_of_train_lr():
    config = load("fmnist_sarkar2021", "cpu")
    config.lr = 0.5
    assert config.train.lr == 0.5
    config.train.lr = 0.25
    assert config.lr == 0.25
    copy = config_utils.override(config, {"lr": 0.125})
    assert copy.train.lr == 0.125 and config.lr == 0.25  # override returns a copy
    plain = config_utils.from_json(config_utils.to_json(config))  # no field reference any more
    plain.train.lr = 0.1
    with pytest.raises(ValueError, match=r"`train.lr` must be equal to the top-level `lr` \(0.25\)"):
        config_utils.validate(plain)


def test_override():
    config = load("fmnist_sarkar2021", "tiny")
    new = config_utils.override(config, ["robust.epsilon=0.2", "robust.weights.cacr=0.3", "train.epochs=3",
                                         "robust.ig_batch_size=16", "robust.random_start=False"])
    assert (new.robust.epsilon, new.robust.weights.cacr, new.train.epochs) == (0.2, 0.3, 3)
    assert (new.robust.ig_batch_size, new.robust.random_start) == (16, False)
    assert config_utils.override(new, ["robust.ig_batch_size=None"]).robust.ig_batch_size is None
    with pytest.raises(ValueError, match="Unknown config key 'robust.epsilno'. Did you mean 'robust.epsilon'"):
        config_utils.override(config, {"robust.epsilno": 0.2})
    with pytest.raises(ValueError, match="Did you mean 'robust.weights.cacr'"):
        config_utils.override(config, {"robust.weights.carc": 0.2})
    with pytest.raises(ValueError, match="`train.epochs` has the wrong type"):
        config_utils.override(config, {"train.epochs": "many"})
    with pytest.raises(ValueError, match="key=value"):
        config_utils.override(config, ["lr"])


@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")  # ml_collections loads by path
def test_command_line_overrides_and_typos():
    path = os.path.join(CONFIGS, "fmnist_sarkar2021.py")
    argv = ["prog", f"--config={path}:cpu", "--config.lr=0.5", "--config.robust.weights.wacr=0.2"]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True, sys_argv=argv)
    values(argv)
    assert values.config.lr == values.config.train.lr == 0.5
    assert values.config.robust.weights.wacr == 0.2 and values.config.model.name == "cpu_cnn"
    config_utils.validate(values.config)
    argv = ["prog", f"--config={path}:cpu", "--config.robust.wieghts.cacr=0.2"]
    typo = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=typo, lock_config=True, sys_argv=argv)
    with pytest.raises(KeyError, match='Did you mean "weights" instead of "wieghts"'):
        typo(argv)


# -- validation -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, message", [
    ({"robust.epsilon": 0.0}, r"`robust.epsilon` must be a finite number > 0. Received: robust.epsilon=0.0"),
    ({"robust.epsilon": -0.1}, r"`robust.epsilon` must be a finite number > 0"),
    ({"robust.step_size": 0.5}, r"`robust.step_size` must be <= robust.epsilon = 0.1"),
    ({"robust.weights.cacr": -1.0}, r"`robust.weights.cacr` must be a finite number >= 0. Received: .*=-1.0"),
    ({"robust.weights.wacr": float("nan")}, r"`robust.weights.wacr` must be a finite number"),
    ({"robust.objective": "sarkar"}, r"`robust.objective`: Unknown objective 'sarkar'. Did you mean 'sarkar2021'"),
    ({"robust.objective": "madry"}, r"`robust.\w+` must be absent: objective 'madry' does not use it"),
    ({"robust.attack_steps": 0}, r"`robust.attack_steps` must be an integer >= 1"),
    ({"robust.ig_method": "riemann_rigth"}, r"Did you mean 'riemann_right'"),
    ({"robust.loss_reduction": "avg"}, r"`robust.loss_reduction`: Unknown loss reduction 'avg'"),
    ({"data.name": "fmnist"}, r"`data.name`: Unknown dataset 'fmnist'. Did you mean 'mnist'"),
    ({"model.name": "tiny_cn"}, r"`model.name`: Unknown model 'tiny_cn'. Did you mean 'tiny_cnn'"),
    ({"model.weight_decay": 1e-4}, r"`model.weight_decay` must be 0 for model 'tiny_cnn'"),
    ({"train.optimizer": "adamw"}, r"`train.optimizer`: Unknown optimizer 'adamw'. Did you mean 'adam'"),
    ({"train.batch_size": 0}, r"`train.batch_size` must be an integer >= 1"),
    ({"train.lr_schedule": ((500, 10.0), (100, 1.0))}, r"`train.lr_schedule` must be a tuple of \(step, factor\)"),
    ({"lr": -1e-3}, r"`lr` must be a finite number > 0"),
    ({"eval.protocol": "fmnist:gpu"}, r"`eval.protocol`: Unknown protocol 'fmnist:gpu'"),
    ({"runtime.strategy": "mirored"}, r"Did you mean 'mirrored'"),
    ({"runtime.jit_compile": "auto"}, r"`runtime.jit_compile` must be True or False \(never 'auto'"),
    ({"data.image_shape": (8, 8)}, r"`data.image_shape` must be a tuple \(H, W, C\)"),
])
def test_bad_values_name_the_key(overrides, message):
    # built from plain dicts: a hand-written config file has no type locks to stop a bad value earlier
    raw = load("fmnist_sarkar2021", "tiny").to_dict()
    for path, value in overrides.items():
        *parents, key = path.split(".")
        node = raw
        for parent in parents:
            node = node[parent]
        node[key] = value
    if "lr" in overrides:
        raw["train"]["lr"] = overrides["lr"]
    with pytest.raises(ValueError, match=message):
        config_utils.validate(ml_collections.ConfigDict(raw))


def test_unknown_and_missing_keys():
    config = load("fmnist_sarkar2021", "tiny")
    config.unlock()
    config.robust.epsilom = 0.1
    with pytest.raises(ValueError, match="Unknown config key 'robust.epsilom'. Did you mean 'robust.epsilon'"):
        config_utils.validate(config)
    config = load("fmnist_sarkar2021", "tiny")
    config.robust.weights.unlock()
    config.robust.weights.cacrr = 0.1
    with pytest.raises(ValueError, match="`robust.weights.cacrr`: Unknown regularizer of objective 'sarkar2021' "
                                         "'cacrr'. Did you mean 'cacr'"):
        config_utils.validate(config)
    config = load("fmnist_madry", "tiny")
    config.robust.unlock()
    config.robust.ig_steps = 4
    with pytest.raises(ValueError, match="`robust.ig_steps` must be absent: objective 'madry' does not use it"):
        config_utils.validate(config)
    config = load("fmnist_madry")
    del config.train["epochs"]
    with pytest.raises(ValueError, match="`train.epochs` must be set"):
        config_utils.validate(config)


def test_batch_must_split_over_replicas():
    config = config_utils.override(load("fmnist_madry", "tiny"), {"train.batch_size": 9})
    config_utils.validate(config)
    with pytest.raises(ValueError, match=r"`train.batch_size` must be divisible by the number of replicas \(2\)"):
        config_utils.validate(config, num_replicas=2)


def test_json_round_trip_is_atomic(tmp_path):
    config = load("gtsrb_sarkar2021", "cpu")
    path = tmp_path / "sub" / "config.json"
    config_utils.save(config, str(path))
    assert os.listdir(path.parent) == ["config.json"]  # no temporary file left
    again = config_utils.load(str(path))
    assert again.to_dict() == config.to_dict()
    config_utils.validate(again)
    assert json.loads(path.read_text())["train"]["lr_schedule"] == []


# -- distribute ---------------------------------------------------------------------------------------


def test_strategies_and_global_batch():
    assert distribute.make_strategy("default").num_replicas_in_sync == 1
    mirrored = distribute.make_strategy("mirrored")
    assert mirrored.num_replicas_in_sync == 2  # the 2 logical CPUs of conftest.py
    assert distribute.check_global_batch(8, mirrored) == 4
    with pytest.raises(ValueError, match=r"`batch_size` must be divisible by the number of replicas \(2\). "
                                         r"Received: batch_size=7. Use 6 or 8"):
        distribute.check_global_batch(7, mirrored)
    with pytest.raises(ValueError, match="Did you mean 'mirrored'"):
        distribute.make_strategy("mirored")
    assert distribute.is_chief(mirrored)
    assert distribute.configure_logical_cpus(2) == 2  # already configured: a no-op
    with pytest.raises(RuntimeError, match="`logical_cpus` must be set before TensorFlow runs its first op"):
        distribute.configure_logical_cpus(3)


# -- the package's configs ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FILES)
def test_package_configs_equal_the_files(name):
    from attr_robust_tf import configs

    dataset, objective = name.split("_", 1)
    experiment = config_utils.load_module(configs.EXPERIMENT)
    for variant in (None, "cpu", "tiny"):
        expected = load(name, variant).to_dict()
        assert configs.get(dataset, objective, variant).to_dict() == expected
        arg = f"{dataset},{objective}" + (f",{variant}" if variant else "")
        assert experiment.get_config(arg).to_dict() == expected
    assert experiment.get_config(dataset).robust.objective == "sarkar2021"
    with pytest.raises(ValueError, match="must name a dataset"):
        experiment.get_config("")


def test_configs_read_the_objective_rows(monkeypatch):
    import dataclasses

    from attr_robust_tf import configs

    art, sarkar = objectives.get("art"), objectives.get("sarkar2021")
    # The config's step is ε·(row step / row ε) at the dataset's ε: 5/255 at 8/255 for the ART row.
    assert configs.get("gtsrb", "art").robust.step_size == 8 / 255 * (art.step_size / art.epsilon)
    monkeypatch.setitem(objectives.OBJECTIVES, "art", dataclasses.replace(art, step_size=0.15, attack_steps=5,
                                                                         surrogate_beta=10.0, top_k=500))
    monkeypatch.setitem(objectives.OBJECTIVES, "sarkar2021", dataclasses.replace(
        sarkar, ig_steps=30, inner_ig_steps=6, weights={"cacr": 0.2, "wacr": 0.3},
        inner={"cross_entropy": 1.0, "ig_norm": 0.4}))
    robust = configs.get("gtsrb", "art").robust
    assert robust.step_size == pytest.approx(8 / 255 * 0.5) and robust.attack_steps == 5
    assert (robust.surrogate_beta, robust.top_k) == (10.0, 500)
    assert configs.get("mnist", "art").robust.top_k == 255  # MNIST's own k [ours]
    robust = configs.get("fmnist", "sarkar2021").robust
    assert (robust.ig_steps, robust.inner_ig_steps, robust.inner_weight) == (30, 6, 0.4)
    assert dict(robust.weights) == {"cacr": 0.2, "wacr": 0.3}
    assert configs.get("fmnist", "madry").robust.attack_steps == 20  # the dataset's PGD, not a row's


def test_robust_block_names_robust_model_settings():
    from attr_robust_tf.settings import RobustSettings

    # every key of the robust block is a RobustModel argument: `weights` or a RobustSettings field
    assert set(config_utils.ROBUST_FIELDS) <= {"weights"} | set(RobustSettings.names())
    for objective in OBJECTIVES:
        keys = set(config_utils.robust_keys(objective)) - {"objective", "epsilon_warmup_epochs"}
        assert keys <= set(config_utils.ROBUST_FIELDS)


@pytest.mark.parametrize("text, value", [
    ("0.1", 0.1), ("16", 16), ("1e-3", 1e-3), ("None", None), ("null", None), ("True", True), ("false", False),
    ("madry", "madry"), (" riemann_right ", "riemann_right"), ("[1, 2]", (1, 2)), ("((500, 10.0),)", ((500, 10.0),)),
    ("'quoted'", "quoted"), ("[[1, 2.0]]", ((1, 2.0),)),
])
def test_parse_value(text, value):
    got = config_utils.parse_value(text)
    assert got == value and type(got) is type(value)


def test_one_override_path_for_files_entries_and_json(tmp_path):
    config = load("fmnist_sarkar2021", "tiny")
    from_strings = config_utils.override(config, ["train.lr_schedule=[[2, 0.5]]", "robust.ig_method=riemann_left"])
    from_dict = config_utils.override(config, {"train.lr_schedule": [[2, 0.5]], "robust.ig_method": "riemann_left"})
    path = tmp_path / "o.json"
    path.write_text(json.dumps({"train.lr_schedule": [[2, 0.5]], "robust.ig_method": "riemann_left"}))
    from_json = config_utils.override(config, config_utils.read_json(str(path)))
    for new in (from_strings, from_dict, from_json):
        assert new.train.lr_schedule == ((2, 0.5),) and new.robust.ig_method == "riemann_left"
        config_utils.validate(new)
    assert config.train.lr_schedule == () and config.robust.ig_method == "riemann_right"  # a copy
    from attr_robust_tf import reproduction

    entry = reproduction.load_config("fmnist", "sarkar2021@robust.weights.cacr=1+train.epochs=4", "tiny")
    assert (entry.robust.weights.cacr, entry.train.epochs) == (1, 4)
    with pytest.raises(ValueError, match="Did you mean 'train.epochs'"):
        reproduction.load_config("fmnist", "sarkar2021@train.epoch=4", "tiny")


def test_optional_keys_leave_the_recorded_run_unchanged():
    config = load("fmnist_sarkar2021", "cpu")
    assert config.robust.epsilon_warmup_epochs == 0 and config.train.influence_every == 0
    text = config_utils.to_json(config)
    values = json.loads(text)
    assert "epsilon_warmup_epochs" not in values["robust"] and "influence_every" not in values["train"]
    assert config_utils.from_json(text).to_dict() == config.to_dict()
    on = config_utils.override(config, {"robust.epsilon_warmup_epochs": 1, "train.influence_every": 5})
    values = json.loads(config_utils.to_json(on))
    assert values["robust"]["epsilon_warmup_epochs"] == 1 and values["train"]["influence_every"] == 5
    assert config_utils.from_json(config_utils.to_json(on)).to_dict() == on.to_dict()
    natural = load("fmnist_natural", "tiny")
    assert "epsilon_warmup_epochs" not in natural.robust
    assert config_utils.from_json(config_utils.to_json(natural)).to_dict() == natural.to_dict()
    with pytest.raises(ValueError, match=r"`robust.epsilon_warmup_epochs` must be <= train.epochs = 2"):
        config_utils.validate(config_utils.override(config, {"robust.epsilon_warmup_epochs": 3}))
    with pytest.raises(ValueError, match=r"`train.influence_every` must be an integer >= 0"):
        config_utils.validate(config_utils.override(config, {"train.influence_every": -1}))


def test_config_paths_resolve_inside_the_package(tmp_path, monkeypatch):
    from attr_robust_tf import configs

    experiment = configs.EXPERIMENT
    checkout = os.path.join(CONFIGS, "fmnist_madry.py") + ":cpu"
    assert configs.resolve(checkout) == checkout  # an existing file is kept
    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    assert configs.resolve("attr_robust_tf/configs/experiment.py:mnist,art") == experiment + ":mnist,art"
    assert configs.resolve("experiment.py:mnist,art,tiny") == experiment + ":mnist,art,tiny"
    assert configs.resolve("configs/fmnist_madry.py:cpu") == experiment + ":fmnist,madry,cpu"
    assert configs.resolve("configs/gtsrb_ig_sum_norm.py") == experiment + ":gtsrb,ig_sum_norm"
    assert configs.resolve("configs/tiny.py:trades") == experiment + ":fmnist,trades,tiny"
    assert configs.resolve("configs/tiny.py") == experiment + ":fmnist,sarkar2021,tiny"
    assert configs.resolve("configs/cifar_madry.py:cpu") == "configs/cifar_madry.py:cpu"  # left to config_flags
    assert configs.resolve("mine.py") == "mine.py"


def test_write_atomic_text_bytes_and_writers(tmp_path):
    path = str(tmp_path / "sub" / "f.txt")
    config_utils.write_atomic(path, "one\n")
    config_utils.write_atomic(path, b"two\n")
    assert open(path).read() == "two\n"
    config_utils.write_atomic(path, lambda tmp: open(tmp, "w").write("three\n"))
    assert open(path).read() == "three\n"

    def broken(tmp):
        open(tmp, "w").write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        config_utils.write_atomic(path, broken)
    assert open(path).read() == "three\n" and os.listdir(tmp_path / "sub") == ["f.txt"]
