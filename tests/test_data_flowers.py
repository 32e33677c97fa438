"""Flower-17 and Flowers-102 on fixture trees in the official layouts (docs/datasets.md §4, §5, §7)."""
import os

import fixtures_data as fx
import numpy as np
import pytest

from attr_robust_tf import data
from attr_robust_tf.data import cache, flowers


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    fx.isolate(monkeypatch, tmp_path)


def _index_of(images):
    """Recovers the 1-based image index from the flat fixture colour (R = 4·(index mod 64), G = 10·(index div 64))."""
    mean = images.reshape(len(images), -1, 3).mean(axis=1)
    return np.round(mean[:, 0] / 4).astype(int) + 64 * np.round(mean[:, 1] / 10).astype(int)


@pytest.mark.parametrize("archive", [True, False])
def test_flower17_label_rule_and_index_order(tmp_path, monkeypatch, archive):
    root = fx.write_flower17(tmp_path / "f17", monkeypatch, archive=archive, splits=False)
    images, labels = data.arrays("flower17", "all", data_dir=root, image_size=8)
    assert images.shape == (1360, 8, 8, 3) and labels.dtype == np.int32
    index = np.arange(1, 1361)
    np.testing.assert_array_equal(labels, (index - 1) // 80)  # docs/datasets.md §4.2
    np.testing.assert_array_equal(_index_of(images), index)
    assert data.info("flower17").image_shape == (128, 128, 3)
    assert data.info("flower17").class_names[(1281 - 1) // 80] == "Pansy"


def test_rar_protocol_counts_determinism_and_seed():
    train, test = data.rar_split()
    assert len(train) == 17 * 72 and len(test) == 17 * 8
    assert not set(train) & set(test) and len(set(train) | set(test)) == 1360
    np.testing.assert_array_equal(np.bincount(train // 80), [72] * 17)
    np.testing.assert_array_equal(np.bincount(test // 80), [8] * 17)
    # Oracle: the naive walk of the reference (docs/datasets.md §4.3) written independently.
    np.random.seed(4557077)
    perm = np.random.permutation(1360)
    seen, ref_train, ref_test = {}, [], []
    for i in perm:
        c = i // 80
        seen[c] = seen.get(c, 0) + 1
        (ref_train if seen[c] <= 72 else ref_test).append(i)
    np.testing.assert_array_equal(train, ref_train)
    np.testing.assert_array_equal(test, ref_test)
    again, _ = data.rar_split(4557077)
    np.testing.assert_array_equal(again, train)
    other, _ = data.rar_split(1)
    assert set(other) != set(train)


def test_rar_splits_through_the_loader(tmp_path, monkeypatch):
    root = fx.write_flower17(tmp_path / "f17", monkeypatch, splits=False)
    images, labels = data.arrays("flower17", "train", data_dir=root, image_size=8)
    train, test = data.rar_split()
    np.testing.assert_array_equal(_index_of(images), train + 1)
    np.testing.assert_array_equal(labels, train // 80)
    _, test_labels = data.arrays("flower17", "rar_test", data_dir=root, image_size=8)
    np.testing.assert_array_equal(test_labels, test // 80)
    images7, _ = data.arrays("flower17", "test", data_dir=root, image_size=8, split_seed=7)
    np.testing.assert_array_equal(_index_of(images7), data.rar_split(7)[1] + 1)


def test_reference_label_permutation():
    # docs/datasets.md §4.3 table, written out.
    assert data.FLOWER17_REFERENCE_LABELS == (0, 1, 9, 10, 11, 12, 13, 14, 15, 16, 2, 3, 4, 5, 6, 7, 8)


def test_official_splits_from_datasplits_mat(tmp_path, monkeypatch):
    root = fx.write_flower17(tmp_path / "f17", monkeypatch)
    splits = fx.flower17_datasplits()
    for k in (1, 3):
        for name, key in (("train", "trn"), ("validation", "val"), ("test", "tst")):
            images, labels = data.arrays("flower17", f"official{k}_{name}", data_dir=root, image_size=8)
            ids = splits[f"{key}{k}"][0].astype(int)
            np.testing.assert_array_equal(_index_of(images), ids)
            np.testing.assert_array_equal(labels, (ids - 1) // 80)
            assert len(labels) == data.info("flower17").splits[f"official{k}_{name}"]


def test_official_split_without_mat_file(tmp_path, monkeypatch):
    root = fx.write_flower17(tmp_path / "f17", monkeypatch, splits=False)
    with pytest.raises(FileNotFoundError, match=r"needs datasplits.mat.*robots.ox.ac.uk"):
        data.arrays("flower17", "official2_test", data_dir=root, image_size=8)


def test_bad_mat_key_and_missing_image(tmp_path, monkeypatch):
    root = fx.write_flower17(tmp_path / "f17", monkeypatch, splits=False)
    fx.patch_spec(monkeypatch, "flower17", "splits",
                  fx.write_mat(os.path.join(root, "datasplits.mat"), {"trn1": np.arange(1, 5)[None]}))
    with pytest.raises(ValueError, match=r"must hold the key 'tst1'. Received: keys \['trn1'\]"):
        data.arrays("flower17", "official1_test", data_dir=root, image_size=8)
    cache.clear_memory()  # the images of `root` decoded fine and stay cached; the split selection failed
    cached = os.listdir(tmp_path / "cache" / "arrays")
    members = fx.flower_members(1360, 4)
    del members["jpg/image_0999.jpg"]
    root2 = fx.write_flower17(tmp_path / "f17b", monkeypatch, splits=False, members=members)
    with pytest.raises(ValueError, match=r"Received: 1 missing \(image_0999.jpg\)"):
        data.arrays("flower17", "all", data_dir=root2, image_size=8)
    assert not cache._MEMORY and os.listdir(tmp_path / "cache" / "arrays") == cached


def test_corrupt_jpeg_names_the_file(tmp_path, monkeypatch):
    members = fx.flower_members(1360, 4)
    members["jpg/image_0042.jpg"] = members["jpg/image_0042.jpg"][:20]
    root = fx.write_flower17(tmp_path / "f17", monkeypatch, archive=False, splits=False, members=members)
    with pytest.raises(ValueError, match=r"image_0042.jpg could not be decoded"):
        data.arrays("flower17", "all", data_dir=root, image_size=8)


def test_flowers102_labels_and_setid_splits(tmp_path, monkeypatch):
    labels0, setid0 = fx.write_flowers102(tmp_path / "f102", monkeypatch)
    root = str(tmp_path / "f102")
    for split, key in (("train", "trnid"), ("validation", "valid"), ("test", "tstid")):
        images, labels = data.arrays("flowers102", split, data_dir=root, image_size=(8, 6))
        assert images.shape == (len(setid0[key]), 8, 6, 3)
        np.testing.assert_array_equal(_index_of(images), setid0[key] + 1)
        np.testing.assert_array_equal(labels, labels0[setid0[key]])
    assert len(data.info("flowers102").class_names) == 102


def test_flowers102_needs_both_mat_files(tmp_path, monkeypatch):
    fx.write_flowers102(tmp_path / "f102", monkeypatch, archive=False)
    os.remove(tmp_path / "f102" / "setid.mat")
    with pytest.raises(FileNotFoundError, match="not setid.mat"):
        data.arrays("flowers102", "train", data_dir=tmp_path / "f102")


def test_flowers_default_size_and_disk_cache(tmp_path, monkeypatch):
    fx.write_flowers102(tmp_path / "f102", monkeypatch)
    images, _ = data.arrays("flowers102", "all", data_dir=tmp_path / "f102")
    assert images.shape == (30, 128, 128, 3)
    assert len(os.listdir(tmp_path / "cache" / "arrays")) == 1
    calls = []
    monkeypatch.setattr(flowers, "_decode_one", lambda *a, **k: calls.append(1))
    cache.clear_memory()
    again, _ = data.arrays("flowers102", "all", data_dir=tmp_path / "f102")
    assert not calls
    np.testing.assert_array_equal(images, again)


def test_flower17_tgz_checksum_names_file_and_both_hashes(tmp_path, monkeypatch):
    root = fx.write_flower17(tmp_path / "f17", monkeypatch, splits=False)
    path = os.path.join(root, "17flowers.tgz")
    raw = bytearray(open(path, "rb").read())
    expected = fx.md5(bytes(raw))
    raw[100] ^= 1
    open(path, "wb").write(raw)
    with pytest.raises(data.ChecksumError) as err:
        data.arrays("flower17", "all", data_dir=root, image_size=8)
    for part in (path, expected, fx.md5(bytes(raw)), "17flowers.tgz", "robots.ox.ac.uk"):
        assert part in str(err.value)


def test_download_places_checked_files_in_the_cache(tmp_path, monkeypatch):
    from attr_robust_tf.data import verify as verify_lib

    labels0, setid0 = fx.write_flowers102(tmp_path / "server", monkeypatch)
    for role, spec in list(verify_lib.FILES["flowers102"].items()):  # official URLs -> local file:// copies
        monkeypatch.setitem(verify_lib.FILES["flowers102"], role,
                            type(spec)(spec.filename, spec.md5, spec.size,
                                       (tmp_path / "server" / spec.filename).as_uri()))
    with pytest.raises(FileNotFoundError, match="download=True"):
        data.arrays("flowers102", "test", image_size=8)
    _, labels = data.arrays("flowers102", "test", image_size=8, download=True)
    np.testing.assert_array_equal(labels, labels0[setid0["tstid"]])
    assert sorted(os.listdir(tmp_path / "cache" / "flowers102")) == ["102flowers.tgz", "imagelabels.mat",
                                                                     "setid.mat"]
