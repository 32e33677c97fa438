"""TFDS builders on fixture files, offline (`download_and_prepare` with a manual folder)."""
import ast
import pathlib

import fixtures_data as fx
import numpy as np
import pytest

from attr_robust_tf import data

tfds = pytest.importorskip("tensorflow_datasets", reason="the `tfds` extra is not installed")
from attr_robust_tf.data import tfds_builders  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    fx.isolate(monkeypatch, tmp_path)


def _tfds_arrays(name, split, tfds_dir):
    ds = tfds.load(name, split=split, data_dir=str(tfds_dir), download=False, as_supervised=True)
    pairs = [(x.numpy(), y.numpy()) for x, y in ds]
    return np.stack([p[0] for p in pairs]), np.asarray([p[1] for p in pairs])


def test_only_the_builders_module_imports_tfds():
    folder = pathlib.Path(data.__file__).parent
    importers = set()
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
                     if isinstance(node, ast.ImportFrom) else [])
            if any(n.startswith("tensorflow_datasets") or n.endswith("tfds_builders") for n in names):
                importers.add(path.name)
    assert importers == {"tfds_builders.py"}


def test_builders_are_registered():
    names = tfds.list_builders(with_community_datasets=False)
    assert {"gtsrb", "flower17", "flowers102"} <= set(names)
    assert "GTSRB_Final_Training_Images.zip" in tfds_builders.Gtsrb.MANUAL_DOWNLOAD_INSTRUCTIONS


def test_gtsrb_builder_gives_the_same_data(tmp_path, monkeypatch):
    fixture = fx.write_gtsrb(tmp_path / "manual", monkeypatch)
    builder = tfds_builders.prepare("gtsrb", tfds_data_dir=tmp_path / "tfds", data_dir=fixture.root)
    assert builder.info.splits["train"].num_examples == len(fixture.train)
    for tfds_split, split in (("train", "train_full"), ("test", "test")):
        images, labels = _tfds_arrays("gtsrb", tfds_split, tmp_path / "tfds")
        ours, our_labels = data.arrays("gtsrb", split, data_dir=fixture.root)
        np.testing.assert_array_equal(images, ours)
        np.testing.assert_array_equal(labels, our_labels)
    assert builder.info.features["label"].names[14] == "Stop"


def test_flower_builders(tmp_path, monkeypatch):
    labels0, setid0 = fx.write_flowers102(tmp_path / "f102", monkeypatch)
    tfds_builders.prepare("flowers102", tfds_data_dir=tmp_path / "tfds", data_dir=tmp_path / "f102")
    _, labels = _tfds_arrays("flowers102", "validation", tmp_path / "tfds")
    np.testing.assert_array_equal(labels, labels0[setid0["valid"]])
    # Flower-17 through the TFDS API itself, with the manual folder in the download config.
    fx.write_flower17(tmp_path / "f17", monkeypatch, splits=False)
    config = tfds.download.DownloadConfig(manual_dir=str(tmp_path / "f17"), try_download_gcs=False)
    builder = tfds.builder("flower17", data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare(download_config=config)
    assert set(builder.info.splits) == {"train", "test"}
    _, test_labels = _tfds_arrays("flower17", "test", tmp_path / "tfds")
    np.testing.assert_array_equal(test_labels, data.rar_split()[1] // 80)
    # With datasplits.mat the official splits are added.
    fx.write_mat(str(tmp_path / "f17" / "datasplits.mat"), fx.flower17_datasplits())
    assert set(builder._splits(str(tmp_path / "f17"))) == {"train", "test"} | {
        f"official{k}_{s}" for k in (1, 2, 3) for s in ("train", "validation", "test")}


def test_missing_manual_files_raise_our_error(tmp_path):
    (tmp_path / "manual").mkdir()
    (tmp_path / "manual" / "readme.txt").write_text("not the data")
    with pytest.raises(FileNotFoundError, match="Could not find the GTSRB files"):
        tfds_builders.prepare("gtsrb", tfds_data_dir=tmp_path / "tfds", data_dir=tmp_path / "manual")
    assert not list((tmp_path / "tfds").glob("gtsrb/*/*.tfrecord*"))


def test_mnist_offline_prepare_feeds_tfds_own_builder(tmp_path, monkeypatch):
    arrays = fx.make_idx_arrays(n_train=25, n_test=9)
    fx.write_idx(tmp_path / "idx", arrays, monkeypatch=monkeypatch)
    tfds_builders.prepare("mnist", tfds_data_dir=tmp_path / "tfds", data_dir=tmp_path / "idx")
    images, labels = _tfds_arrays("mnist", "test", tmp_path / "tfds")  # TFDS's registered `mnist` builder
    np.testing.assert_array_equal(images[..., 0], arrays["test_images"])
    np.testing.assert_array_equal(labels, arrays["test_labels"])
    with pytest.raises(ValueError, match="Unknown dataset 'mnsit'"):
        tfds_builders.prepare("mnsit")
