"""tools/train.py in subprocesses: overrides, usage and config errors, and resuming after `kill -9`."""
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np

from attr_robust_tf import robust_model  # noqa: F401  (registers RobustModel for load_model)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "tools", "train.py")


def env(tmp_path):
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "ATTR_ROBUST_CACHE": str(tmp_path / "cache")}


def command(*args):
    return [sys.executable, TRAIN, *args]


def run(tmp_path, *args, timeout=300, cwd=ROOT):
    return subprocess.run(command(*args), cwd=cwd, env=env(tmp_path), capture_output=True, text=True,
                          timeout=timeout)


def test_train_with_overrides_and_strategy(tmp_path):
    # no --workdir: runs/<config name>_<arg> under the current folder
    result = run(tmp_path, f"--config={ROOT}/configs/tiny.py:natural", "--config.lr=0.02", "--config.train.epochs=1",
                 "--strategy=mirrored", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    work = tmp_path / "runs" / "tiny_natural"
    saved = json.loads((work / "config.json").read_text())
    assert saved["lr"] == saved["train"]["lr"] == 0.02
    assert saved["runtime"]["strategy"] == "mirrored" and saved["train"]["epochs"] == 1
    assert "Strategy mirrored with 2 replica(s)" in result.stderr
    assert "loss:" in result.stdout and "val_loss:" in result.stdout  # the progress bar with the loss terms
    assert sorted(os.listdir(work)) == ["checkpoints", "config.json", "metrics.csv", "model.keras", "tb"]


def test_overrides_file_is_applied_after_the_config(tmp_path):
    overrides = tmp_path / "best_overrides.json"
    overrides.write_text(json.dumps({"lr": 0.005, "robust.weights.cacr": 0.3, "train.epochs": 1}))
    work = tmp_path / "w"
    result = run(tmp_path, "--config=configs/tiny.py:sarkar2021", f"--workdir={work}", f"--overrides={overrides}")
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads((work / "config.json").read_text())
    assert saved["lr"] == saved["train"]["lr"] == 0.005
    assert saved["robust"]["weights"]["cacr"] == 0.3 and saved["train"]["epochs"] == 1
    overrides.write_text(json.dumps({"robust.wieghts.cacr": 0.3}))
    typo = run(tmp_path, "--config=configs/tiny.py:sarkar2021", f"--workdir={tmp_path / 'w2'}",
               f"--overrides={overrides}")
    assert typo.returncode != 0 and "wieghts" in typo.stderr and "weights" in typo.stderr


def test_user_and_config_mistakes(tmp_path):
    work = tmp_path / "bad"
    typo = run(tmp_path, "--config=configs/fmnist_sarkar2021.py:tiny", f"--workdir={work}",
               "--config.robust.wieghts.cacr=0.2")
    assert typo.returncode == 1
    assert 'Did you mean "weights" instead of "wieghts"' in typo.stderr and "Traceback" not in typo.stderr
    bad = run(tmp_path, "--config=configs/fmnist_sarkar2021.py:tiny", f"--workdir={work}",
              "--config.robust.epsilon=0.0")
    assert bad.returncode != 0
    assert "ValueError: `robust.epsilon` must be a finite number > 0. Received: robust.epsilon=0.0." in bad.stderr
    missing = run(tmp_path, f"--workdir={work}")
    assert missing.returncode == 1 and "--config" in missing.stderr
    assert not work.exists()  # nothing was written for a rejected config


def test_resume_after_kill_matches_an_uninterrupted_run(tmp_path):
    # 150 steps of 8 per epoch (a second or two), so the kill lands inside epoch 2
    args = ["--config=configs/tiny.py:sarkar2021", "--config.data.num_examples=1200", "--config.train.epochs=3"]
    straight_dir, killed_dir = tmp_path / "straight", tmp_path / "killed"
    straight = subprocess.Popen(command(*args, f"--workdir={straight_dir}"), cwd=ROOT, env=env(tmp_path),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen(command(*args, f"--workdir={killed_dir}"), cwd=ROOT, env=env(tmp_path),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = killed_dir / "checkpoints" / "state.json"
    deadline = time.time() + 240
    while not state.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    assert json.loads(state.read_text())["epoch"] == 1  # killed during epoch 2
    assert not (killed_dir / "model.keras").exists()

    resumed = run(tmp_path, *args, f"--workdir={killed_dir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming" in resumed.stderr and "after epoch 1 of 3" in resumed.stderr
    _, straight_err = straight.communicate(timeout=300)
    assert straight.returncode == 0, straight_err[-3000:]

    a = keras.models.load_model(straight_dir / "model.keras")
    b = keras.models.load_model(killed_dir / "model.keras")
    wa, wb = a.get_weights(), b.get_weights()
    assert len(wa) == len(wb) > 0
    for x, y in zip(wa, wb):
        np.testing.assert_array_equal(x, y)  # bit for bit
    rows = (killed_dir / "metrics.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2"]
    assert not [f for _, _, files in os.walk(killed_dir) for f in files if ".tmp" in f]
