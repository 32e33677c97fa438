"""GTSRB final protocol on fixture trees in the official layout (docs/datasets.md §3, §7)."""
import os

import fixtures_data as fx
import numpy as np
import pytest
from PIL import Image

from attr_robust_tf import data
from attr_robust_tf.data import cache, gtsrb


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    fx.isolate(monkeypatch, tmp_path)


def _resized(arr, size=(32, 32), box=None):
    img = Image.fromarray(arr)
    if box is not None:
        img = img.crop(box)
    return np.asarray(img.resize((size[1], size[0]), Image.Resampling.LANCZOS))


@pytest.mark.parametrize("zipped", [True, False])
def test_train_and_test_labels_order_and_pixels(tmp_path, monkeypatch, zipped):
    fixture = fx.write_gtsrb(tmp_path / "gt", monkeypatch, zipped=zipped)
    images, labels = data.arrays("gtsrb", "train_full", data_dir=fixture.root)
    assert images.shape == (len(fixture.train), 32, 32, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, [e[1] for e in fixture.train])  # label = class folder
    # Official order: class folders ascending, CSV order within; pixels = Pillow LANCZOS of the whole image.
    for k in (0, 7, len(fixture.train) - 1):
        np.testing.assert_array_equal(images[k], _resized(fixture.train[k][3]))
    test_images, test_labels = data.arrays("gtsrb", "test", data_dir=fixture.root)
    np.testing.assert_array_equal(test_labels, [e[1] for e in fixture.test])  # from GT-final_test.csv
    np.testing.assert_array_equal(test_images[5], _resized(fixture.test[5][3]))


def test_roi_crop_uses_inclusive_coordinates(tmp_path, monkeypatch):
    fixture = fx.write_gtsrb(tmp_path / "gt", monkeypatch)
    # Every fixture ROI is 8 x 10 (h x w): at that size no resize happens, so the crop is compared exactly.
    images, _ = data.arrays("gtsrb", "train_full", data_dir=fixture.root, image_size=fixture.roi_size,
                            crop_roi=True)
    for k in (0, 11, 40):
        arr, (x1, y1, x2, y2) = fixture.train[k][3], fixture.train[k][4]
        np.testing.assert_array_equal(images[k], arr[y1:y2 + 1, x1:x2 + 1])
    test_images, _ = data.arrays("gtsrb", "test", data_dir=fixture.root, crop_roi=True)
    arr, (x1, y1, x2, y2) = fixture.test[3][3], fixture.test[3][4]
    np.testing.assert_array_equal(test_images[3], _resized(arr, box=(x1, y1, x2 + 1, y2 + 1)))


def test_validation_split_is_by_track(tmp_path, monkeypatch):
    fixture = fx.write_gtsrb(tmp_path / "gt", monkeypatch)
    _, train_labels = data.arrays("gtsrb", "train", data_dir=fixture.root)
    _, val_labels = data.arrays("gtsrb", "validation", data_dir=fixture.root)
    _, full_labels = data.arrays("gtsrb", "train_full", data_dir=fixture.root)
    assert len(train_labels) + len(val_labels) == len(full_labels)
    # Oracle: class c has 1 + c % 3 tracks of 2 frames; classes with >= 2 tracks hold out their last track.
    expected_val = [(c, t) for c in range(43) for t in range(1 + c % 3) if c % 3 and t == c % 3]
    train_keys = [(e[1], e[2]) for e in fixture.train]
    mask = gtsrb.validation_mask(full_labels, np.asarray([e[1] * 100000 + e[2] for e in fixture.train]))
    val_keys = {k for k, m in zip(train_keys, mask) if m}
    assert val_keys == set(expected_val)
    assert len(val_labels) == 2 * len(expected_val)
    # No track is split between train and validation.
    assert not val_keys & {k for k, m in zip(train_keys, mask) if not m}


def test_validation_fraction_rule():
    labels = np.repeat([0, 1, 2], [30 * 25, 30 * 5, 30])
    tracks = np.concatenate([np.repeat(np.arange(25), 30), np.repeat(np.arange(5), 30), np.zeros(30, int)])
    mask = gtsrb.validation_mask(labels, tracks)
    # round(0.1·25) = 2 (rounds half to even), max(1, round(0.5)) = 1, a single track stays in train.
    assert mask[labels == 0].sum() == 2 * 30 and set(tracks[(labels == 0) & mask]) == {23, 24}
    assert mask[labels == 1].sum() == 30 and set(tracks[(labels == 1) & mask]) == {4}
    assert mask[labels == 2].sum() == 0


def test_loading_twice_decodes_once_and_disk_cache_serves_a_new_process(tmp_path, monkeypatch):
    fixture = fx.write_gtsrb(tmp_path / "gt", monkeypatch)
    calls = []
    original = gtsrb._decode_one
    monkeypatch.setattr(gtsrb, "_decode_one", lambda *a, **k: calls.append(1) or original(*a, **k))
    first, _ = data.arrays("gtsrb", "train_full", data_dir=fixture.root)
    n = len(calls)
    assert n == len(fixture.train)
    data.arrays("gtsrb", "train", data_dir=fixture.root)  # same part, other split: no decode
    list(data.load("gtsrb", "validation", data_dir=fixture.root, batch_size=8))
    assert len(calls) == n
    cache.clear_memory()  # a new process: the .npz cache answers
    again, _ = data.arrays("gtsrb", "train_full", data_dir=fixture.root)
    assert len(calls) == n
    np.testing.assert_array_equal(first, again)
    data.arrays("gtsrb", "train_full", data_dir=fixture.root, crop_roi=True)  # other settings: decode again
    assert len(calls) == 2 * n


def test_zip_missing_a_class_folder_is_a_clear_error_and_nothing_is_cached(tmp_path, monkeypatch):
    fixture = fx.write_gtsrb(tmp_path / "gt", monkeypatch, drop="GTSRB/Final_Training/Images/00007/")
    with pytest.raises(ValueError) as err:
        data.arrays("gtsrb", "train_full", data_dir=fixture.root)
    message = str(err.value)
    assert "GTSRB_Final_Training_Images.zip" in message and "missing class folders 00007" in message
    assert "GT-000CC.csv" in message  # the expected layout tree
    assert not (tmp_path / "cache" / "arrays").exists() or not os.listdir(tmp_path / "cache" / "arrays")
    assert not cache._MEMORY


def test_csv_with_wrong_header(tmp_path, monkeypatch):
    members, _, _ = fx.gtsrb_members()
    members["test_gt"] = {"GT-final_test.csv": members["test_images"]["GTSRB/Final_Test/Images/GT-final_test.test.csv"]}
    fixture = fx.write_gtsrb(tmp_path / "gt", monkeypatch, members=members)
    with pytest.raises(ValueError, match="must start with the header Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;"
                       "Roi.Y2;ClassId.*GT-final_test.test.csv of the image zip"):
        data.arrays("gtsrb", "test", data_dir=fixture.root)
    members["test_gt"] = {"GT-final_test.csv": b"Filename,Width,Height\r\n00000.ppm,30,30\r\n"}
    fixture = fx.write_gtsrb(tmp_path / "gt2", monkeypatch, members=members)
    with pytest.raises(ValueError, match=r"GT-final_test.csv in .*GTSRB_Final_Test_GT.zip must start with"):
        data.arrays("gtsrb", "test", data_dir=fixture.root)


@pytest.mark.parametrize("row, pattern", [
    (["00000.ppm", "30", "30", "5", "5", "24"], "row 2 must have 8 `;`-separated columns"),
    (["00000.ppm", "30", "30", "5", "5", "30", "24", "3"], r"ROI inside the 30x30 image"),
    (["00000.ppm", "30", "30", "5", "5", "24", "24", "43"], "ClassId in 0..42"),
    (["00000.ppm", "30", "x", "5", "5", "24", "24", "3"], "must hold integers"),
])
def test_csv_row_errors_name_the_row(row, pattern):
    with pytest.raises(ValueError, match=pattern) as err:
        gtsrb.parse_csv(fx.gtsrb_csv([row]), "GT-final_test.csv")
    assert "GT-final_test.csv, row 2" in str(err.value)


def test_test_csv_must_cover_exactly_the_images(tmp_path, monkeypatch):
    members, _, _ = fx.gtsrb_members()
    del members["test_images"]["GTSRB/Final_Test/Images/00004.ppm"]
    fixture = fx.write_gtsrb(tmp_path / "gt", monkeypatch, members=members)
    with pytest.raises(ValueError, match=r"listed but missing: \['00004.ppm'\]"):
        data.arrays("gtsrb", "test", data_dir=fixture.root)


def test_size_mismatch_between_csv_and_image(tmp_path, monkeypatch):
    members, _, _ = fx.gtsrb_members()
    name = "GTSRB/Final_Test/Images/00002.ppm"
    members["test_images"][name] = fx._ppm_bytes(np.zeros((50, 60, 3), np.uint8))
    fixture = fx.write_gtsrb(tmp_path / "gt", monkeypatch, members=members)
    with pytest.raises(ValueError, match=r"00002.ppm in .*GTSRB_Final_Test_Images.zip \(GT-final_test.csv, row 4\) "
                       r"must be \d+x\d+ pixels .* Received: 60x50"):
        data.arrays("gtsrb", "test", data_dir=fixture.root)


def test_checksum_mismatch_and_truncated_zip(tmp_path, monkeypatch):
    fixture = fx.write_gtsrb(tmp_path / "gt", monkeypatch)
    path = os.path.join(fixture.root, "GTSRB_Final_Test_GT.zip")
    raw = bytearray(open(path, "rb").read())
    expected = fx.md5(bytes(raw))
    raw[len(raw) // 2] ^= 0xFF
    with open(path, "wb") as f:
        f.write(raw)
    with pytest.raises(data.ChecksumError) as err:
        data.arrays("gtsrb", "test", data_dir=fixture.root)
    assert path in str(err.value) and expected in str(err.value) and fx.md5(bytes(raw)) in str(err.value)
    with open(path, "wb") as f:
        f.write(raw[: len(raw) // 3])
    with pytest.raises(data.ChecksumError, match="The file is truncated"):
        data.arrays("gtsrb", "test", data_dir=fixture.root)
    with pytest.raises(ValueError, match="not a readable zip archive"):
        data.arrays("gtsrb", "test", data_dir=fixture.root, verify=False)
    assert not cache._MEMORY


def test_missing_parts_and_missing_dataset(tmp_path, monkeypatch):
    fixture = fx.write_gtsrb(tmp_path / "gt", monkeypatch)
    os.remove(os.path.join(fixture.root, "GTSRB_Final_Test_GT.zip"))
    data.arrays("gtsrb", "train_full", data_dir=fixture.root, limit=3)  # the train part is complete
    with pytest.raises(FileNotFoundError, match="missing GTSRB_Final_Test_GT.zip"):
        data.arrays("gtsrb", "test", data_dir=fixture.root)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as err:
        data.arrays("gtsrb", "test", data_dir=empty)
    message = str(err.value)
    for part in (str(empty), "GTSRB_Final_Training_Images.zip", "GT-final_test.csv", "sid.erda.dk", "download=True"):
        assert part in message


def test_discovery_through_environment_variable(tmp_path, monkeypatch):
    fixture = fx.write_gtsrb(tmp_path / "root" / "gtsrb", monkeypatch, zipped=False)
    monkeypatch.setenv("ATTR_ROBUST_DATA", str(tmp_path / "root"))
    _, labels = data.arrays("gtsrb", "test")
    np.testing.assert_array_equal(labels, [e[1] for e in fixture.test])
