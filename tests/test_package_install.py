"""The installed package trains from its own configs, without the checkout beside it (a wheel in a temporary
folder, run from another working directory)."""
import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, cwd, env, timeout=600):
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_wheel_trains_from_its_own_configs(tmp_path):
    # Build from a copy of the sources, so the checkout gets no build/ or egg-info folder.
    src = tmp_path / "src"
    shutil.copytree(os.path.join(ROOT, "attr_robust_tf"), src / "attr_robust_tf",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "README.md"):
        shutil.copy(os.path.join(ROOT, name), src / name)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow", ATTR_ROBUST_CACHE=str(tmp_path / "cache"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    built = _run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), "."], src, env)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel, = (tmp_path / "dist").glob("attr_robust_tf-*.whl")
    site = tmp_path / "site"
    installed = _run(pip + ["install", "--no-deps", "--target", str(site), str(wheel)], tmp_path, env)
    assert installed.returncode == 0, installed.stderr[-3000:]
    assert (site / "attr_robust_tf" / "configs" / "experiment.py").is_file()

    shutil.rmtree(src)  # nothing of the sources is left to import from
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env["PYTHONPATH"] = str(site)
    where = _run([sys.executable, "-c", "import attr_robust_tf, attr_robust_tf.configs as c; "
                  "print(attr_robust_tf.__file__); print(c.EXPERIMENT)"], cwd, env)
    assert where.returncode == 0, where.stderr[-3000:]
    package_file, experiment_file = where.stdout.split()[-2:]
    assert package_file == str(site / "attr_robust_tf" / "__init__.py")
    assert experiment_file == str(site / "attr_robust_tf" / "configs" / "experiment.py")

    # The path need not exist here: it is the installed package's file.
    train = _run([sys.executable, "-m", "attr_robust_tf.cli.train",
                  "--config=attr_robust_tf/configs/experiment.py:fmnist,madry,tiny", "--workdir=w",
                  "--config.train.epochs=1", "--config.data.num_examples=16"], cwd, env)
    assert train.returncode == 0, train.stderr[-3000:]
    work = cwd / "w"
    assert sorted(os.listdir(work)) == ["checkpoints", "config.json", "metrics.csv", "model.keras", "tb"]
    saved = json.loads((work / "config.json").read_text())
    assert saved["robust"]["objective"] == "madry" and saved["train"]["epochs"] == 1
    assert saved["data"]["name"] == "synthetic" and saved["model"]["name"] == "tiny_cnn"
