"""experiment.py: models, optimizers and data from configs; training with checkpoints, resume and determinism."""
import csv
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from attr_robust_tf import config_utils, configs, distribute, experiment
from attr_robust_tf.data import cache
from attr_robust_tf.robust_model import RobustModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FMNIST_DIR = "/usr/share/datasets/fashion-mnist"
needs_fmnist = pytest.mark.skipif(
    not os.path.isfile(os.path.join(FMNIST_DIR, "train-images-idx3-ubyte.gz")),
    reason=f"real Fashion-MNIST source missing: {FMNIST_DIR} (`apt-get install -y dataset-fashion-mnist`)")


def config(dataset, objective, arg=None, **overrides):
    return config_utils.override(configs.get(dataset, objective, arg), overrides)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV_CACHE, str(tmp_path / "cache"))


@pytest.fixture
def deterministic():
    """What tools/common.setup_runtime does for `runtime.deterministic`: no Grappler rewrites (they reorder
    float sums between traces), restored afterwards."""
    before = tf.config.optimizer.get_experimental_options()
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    yield
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": False, **before})


def weights_equal(a, b):
    wa, wb = a.get_weights(), b.get_weights()
    return len(wa) == len(wb) and all(np.array_equal(x, y) for x, y in zip(wa, wb))


def leftovers(folder):
    return [os.path.join(d, f) for d, _, files in os.walk(folder) for f in files if ".tmp" in f]


# -- builders ---------------------------------------------------------------------------------------


def test_build_model_shapes():
    tiny = experiment.build_model(config("fmnist", "madry", "tiny"))
    assert tiny.input_shape == (None, 8, 8, 1) and tiny.output_shape == (None, 3)
    cpu = experiment.build_model(config("fmnist", "madry", "cpu"))
    assert cpu.name == "cpu_cnn" and cpu.input_shape == (None, 28, 28, 1) and cpu.output_shape == (None, 10)
    resnet = experiment.build_model(config("gtsrb", "natural"))
    assert resnet.input_shape == (None, 32, 32, 3) and resnet.output_shape == (None, 43)
    assert len(resnet.losses) > 0  # weight decay 2e-4 on the kernels
    # seeded initialisation
    again = experiment.build_model(config("fmnist", "madry", "tiny"))
    assert weights_equal(tiny, again)


def test_optimizer_and_schedule():
    gtsrb = experiment.build_optimizer(config("gtsrb", "ig_norm"))
    assert isinstance(gtsrb, keras.optimizers.SGD) and gtsrb.momentum == pytest.approx(0.9)
    # RAR GTSRB: {0: 1e-3, 500: 1e-2, 60,000: 1e-3}, TF1 piecewise_constant (value i up to boundary i inclusive)
    for step, lr in ((0, 1e-3), (500, 1e-3), (501, 1e-2), (60000, 1e-2), (60001, 1e-3)):
        gtsrb.iterations.assign(step)
        assert float(gtsrb.learning_rate) == pytest.approx(lr), step
    adam = experiment.build_optimizer(config("fmnist", "ig_norm", lr=3e-4))
    assert isinstance(adam, keras.optimizers.Adam) and adam.epsilon == 1e-8
    assert float(adam.learning_rate) == pytest.approx(3e-4)


def test_robust_model_from_config():
    c = config("fmnist", "sarkar2021", "tiny", **{"robust.weights.wacr": 0.25, "robust.attack_steps": 3})
    model = experiment.build_robust_model(c)
    assert isinstance(model, RobustModel) and model.objective.name == "sarkar2021"
    assert {k: float(v.numpy()) for k, v in model.regularizer_weights.items()} == pytest.approx(
        {"cacr": 0.1, "wacr": 0.25})
    assert model.inner_attack.steps == 3 and model.inner_attack.epsilon == pytest.approx(0.1)
    assert model.loss_reduction == "mean" and model.seed == 0
    reference = experiment.build_robust_model(config("fmnist", "ig_sum_norm"))
    assert reference.loss_reduction == "sum" and reference.loss.reduction == "sum"
    assert float(reference.regularizer_weights["ig_norm"].numpy()) == pytest.approx(0.1)


# -- data order -------------------------------------------------------------------------------------


def batches(ds):
    return [(x.numpy(), y.numpy()) for x, y in ds]


def test_each_epoch_is_a_permutation_fixed_by_seed_and_epoch():
    c = config("fmnist", "natural", "tiny", **{"data.num_examples": 40, "train.epochs": 3})
    images, labels = experiment._arrays(c)[0]
    train, validation, steps = experiment.build_datasets(c)
    assert steps == 5
    full = batches(train)
    assert len(full) == 15 and all(x.shape == (8, 8, 8, 1) for x, _ in full)
    epochs = []
    for e in range(3):
        x = np.concatenate([b[0] for b in full[5 * e: 5 * e + 5]])
        y = np.concatenate([b[1] for b in full[5 * e: 5 * e + 5]])
        # every training example exactly once: match each row to its index in the training arrays
        flat = images.reshape(40, -1)
        index = [int(np.flatnonzero((flat == row).all(axis=1))[0]) for row in x.reshape(40, -1)]
        assert sorted(index) == list(range(40))
        np.testing.assert_array_equal(y, labels[index])
        epochs.append(index)
    assert epochs[0] != epochs[1] != epochs[2]
    # a run resumed at epoch 1 sees exactly the batches of epochs 1 and 2
    resumed, _, _ = experiment.build_datasets(c, initial_epoch=1)
    for (xa, ya), (xb, yb) in zip(full[5:], batches(resumed), strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    other = config_utils.override(c, {"seed": 1})
    assert not np.array_equal(batches(experiment.build_datasets(other)[0])[0][1], full[0][1]) or \
        not np.array_equal(batches(experiment.build_datasets(other)[0])[0][0], full[0][0])
    assert len(batches(validation)) == 2  # 16 validation examples in batches of 8


def test_datasets_are_served_in_data_bounds():
    c = config("fmnist", "natural", "tiny", **{"data.num_examples": 40, "train.epochs": 1})
    scaled = config_utils.override(c, {"data.bounds": (0.0, 255.0)})
    for (xa, ya), (xb, yb) in zip(batches(experiment.build_datasets(c)[0]),
                                  batches(experiment.build_datasets(scaled)[0]), strict=True):
        np.testing.assert_allclose(xb, 255.0 * xa, rtol=1e-6)
        np.testing.assert_array_equal(ya, yb)
    validation = batches(experiment.build_datasets(scaled)[1])
    assert max(float(x.max()) for x, _ in validation) > 1.0


def test_bad_epoch_sizes():
    c = config("fmnist", "natural", "tiny", **{"train.steps_per_epoch": 9})
    with pytest.raises(ValueError, match=r"`train.steps_per_epoch` must be <= 8 \(= 64 examples // batch 8\)"):
        experiment.build_datasets(c)
    c = config("fmnist", "natural", "tiny", **{"data.num_examples": 5})
    with pytest.raises(ValueError, match=r"`train.batch_size` must be <= the number of training examples \(5\)"):
        experiment.build_datasets(c)


@needs_fmnist
def test_augmented_real_batches_are_reproducible():
    c = config("fmnist", "natural", "cpu", **{"data.limit": 64, "data.validation_limit": 0, "data.augment": True,
                                              "train.batch_size": 32})
    a, validation, steps = experiment.build_datasets(c)
    b, _, _ = experiment.build_datasets(c)
    plain, _, _ = experiment.build_datasets(config_utils.override(c, {"data.augment": False}))
    assert validation is None and steps == 2
    for (xa, ya), (xb, _), (xp, yp) in zip(batches(a), batches(b), batches(plain), strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yp)  # same order, only the pixels move
        assert xa.min() >= 0.0 and xa.max() <= 1.0 and not np.array_equal(xa, xp)


# -- training ---------------------------------------------------------------------------------------


def test_train_resume_and_determinism(tmp_path, deterministic):
    c = config("fmnist", "sarkar2021", "tiny", **{"data.validation_limit": 0})  # validation: other tests
    straight = experiment.run_train(c, str(tmp_path / "a"), verbose=0)
    again = experiment.run_train(c, str(tmp_path / "b"), verbose=0)
    assert weights_equal(straight, again)  # seeded: two runs, identical weights

    # stop after epoch 1, then rerun with the full config: it resumes and ends with the same weights
    work = str(tmp_path / "c")
    first = experiment.run_train(config_utils.override(c, {"train.epochs": 1}), work, verbose=0)
    assert not weights_equal(first, straight)
    with open(os.path.join(work, "metrics.csv"), "a") as f:  # the row of an epoch killed before its checkpoint
        f.write("1" + ",0" * 6 + "\n")
    resumed = experiment.run_train(c, work, verbose=0)
    assert len(resumed.history.history["loss"]) == 1  # only epoch 2 ran
    assert int(resumed.optimizer.iterations.numpy()) == 16
    assert weights_equal(resumed, straight)

    # the workdir
    assert sorted(os.listdir(work)) == ["checkpoints", "config.json", "metrics.csv", "model.keras", "tb"]
    assert leftovers(work) == []
    assert config_utils.load(os.path.join(work, "config.json")).to_dict() == c.to_dict()
    with open(os.path.join(work, "checkpoints", "state.json")) as f:
        assert json.load(f) == {"epoch": 2, "weights": "epoch-00002.weights.h5"}
    with open(os.path.join(work, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["0", "1"]
    logged = {k for k in rows[0] if not k.startswith("val_")}  # CSVLogger writes NA val_ columns without validation
    assert logged == {"epoch", "loss", "ce", "cacr", "wacr", "accuracy"}
    assert all(np.isfinite(float(r[k])) for r in rows for k in logged)
    assert any(f.startswith("events") for _, _, files in os.walk(os.path.join(work, "tb")) for f in files)
    loaded = keras.models.load_model(os.path.join(work, "model.keras"))
    assert isinstance(loaded, RobustModel) and weights_equal(loaded, straight)
    x = tf.random.stateless_uniform((4, 8, 8, 1), [1, 2])
    np.testing.assert_array_equal(loaded(x).numpy(), straight(x).numpy())

    # a finished run is not trained again
    done = experiment.run_train(c, work, verbose=0)
    assert weights_equal(done, straight)


def test_workdir_guards(tmp_path):
    work = str(tmp_path / "w")
    c = config("fmnist", "natural", "tiny", **{"train.epochs": 1})
    experiment.run_train(c, work, verbose=0)
    with pytest.raises(ValueError, match=r"`workdir` must hold a run of the same config.*lr: 0.01 → 0.02"):
        experiment.run_train(config_utils.override(c, {"lr": 0.02}), work, verbose=0)
    model = experiment.run_train(config_utils.override(c, {"lr": 0.02}), work, overwrite=True, verbose=0)
    assert len(model.history.history["loss"]) == 1
    assert config_utils.load(os.path.join(work, "config.json")).lr == 0.02


def test_divergence_is_an_error_and_not_checkpointed(tmp_path):
    c = config("fmnist", "natural", "tiny", **{"train.optimizer": "sgd", "lr": 1e30, "train.epochs": 1})
    work = str(tmp_path / "nan")
    with pytest.raises(FloatingPointError, match="Training diverged"):
        experiment.run_train(c, work, verbose=0)
    assert not os.path.exists(os.path.join(work, "checkpoints", "state.json"))
    assert not os.path.exists(os.path.join(work, "model.keras"))


def test_mirrored_equals_single_device(tmp_path):
    c = config("fmnist", "natural", "tiny", **{"train.epochs": 1})
    single = experiment.run_train(c, str(tmp_path / "one"), verbose=0)
    mirrored = distribute.make_strategy("mirrored")
    assert mirrored.num_replicas_in_sync == 2
    two = experiment.run_train(c, str(tmp_path / "two"), mirrored, verbose=0)
    for a, b in zip(single.get_weights(), two.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    odd = config_utils.override(c, {"train.batch_size": 7})
    with pytest.raises(ValueError, match=r"divisible by the number of replicas \(2\)"):
        experiment.run_train(odd, str(tmp_path / "odd"), mirrored, verbose=0)


@needs_fmnist
def test_short_real_fashion_mnist_training(tmp_path):
    c = config("fmnist", "sarkar2021", "cpu", **{
        "data.limit": 300, "data.validation_limit": 50, "train.epochs": 3,
        "robust.ig_steps": 4, "robust.inner_ig_steps": 2, "robust.attack_steps": 2})
    work = str(tmp_path / "fmnist")
    model = experiment.run_train(c, work, verbose=0)
    history = model.history.history
    for term in ("loss", "ce", "cacr", "wacr", "accuracy", "val_loss", "val_ce", "val_cacr", "val_wacr"):
        assert len(history[term]) == 3 and np.all(np.isfinite(history[term])), term
    assert history["loss"][-1] < history["loss"][0] - 0.1
    assert history["ce"][-1] < history["ce"][0]
    # accuracy on the inner attack's x′ (task_input "adv"): low, but clearly learning
    assert history["accuracy"][-1] > history["accuracy"][0] + 0.1
    assert history["val_accuracy"][-1] > 0.2  # 10 classes
    with open(os.path.join(work, "metrics.csv")) as f:
        assert len(list(csv.DictReader(f))) == 3


def test_warmup_and_influence_callbacks_are_wired_when_on(monkeypatch):
    import sys
    import types

    c = config("fmnist", "madry", "tiny")
    train, validation, _ = experiment.build_datasets(c)
    assert experiment._optional_callbacks(c, train, validation) == []  # both off by default

    made = []
    schedules = types.ModuleType("attr_robust_tf.schedules")
    schedules.EpsilonSchedule = lambda warmup: made.append(("warmup", warmup)) or "schedule"
    diagnostics = types.ModuleType("attr_robust_tf.diagnostics")
    diagnostics.RegularizerInfluence = lambda data, every_n_steps: made.append((data, every_n_steps)) or "influence"
    monkeypatch.setitem(sys.modules, "attr_robust_tf.schedules", schedules)
    monkeypatch.setitem(sys.modules, "attr_robust_tf.diagnostics", diagnostics)
    on = config("fmnist", "madry", "tiny", **{"robust.epsilon_warmup_epochs": 2, "train.influence_every": 3})
    assert experiment._optional_callbacks(on, train, validation) == ["schedule", "influence"]
    assert made[0] == ("warmup", 2) and made[1][1] == 3
    x, y = made[1][0]
    first_x, first_y = next(iter(validation))  # the first validation batch, the same at every call
    np.testing.assert_array_equal(x, first_x)
    np.testing.assert_array_equal(y, first_y)

    monkeypatch.setitem(sys.modules, "attr_robust_tf.schedules", None)  # an installation without the module
    with pytest.raises(ImportError, match=r"`robust.epsilon_warmup_epochs` > 0 needs attr_robust_tf.schedules"):
        experiment._optional_callbacks(on, train, validation)
