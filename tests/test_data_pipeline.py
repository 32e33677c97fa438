"""`load`/`make_dataset` pipelines, augmentation, `info`, `synthetic` and argument errors."""
import math

import fixtures_data as fx
import numpy as np
import pytest
import tensorflow as tf

from attr_robust_tf import data
from attr_robust_tf.data import augment, idx, mnist


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    fx.isolate(monkeypatch, tmp_path)
    monkeypatch.setattr(mnist, "hub_pickle_path", lambda: None)
    monkeypatch.setattr(mnist, "FASHION_MNIST_SYSTEM_DIR", str(tmp_path / "none"))


@pytest.fixture
def idx_root(tmp_path, monkeypatch):
    arrays = fx.make_idx_arrays(n_train=40, n_test=23)
    fx.write_idx(tmp_path / "mnist", arrays, monkeypatch=monkeypatch)
    return tmp_path / "mnist", arrays


def _epoch(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.stack(xs), np.stack(ys)


def test_load_elements_are_float_in_unit_range_and_int32(idx_root):
    root, arrays = idx_root
    ds = data.load("mnist", "test", data_dir=root)
    assert ds.element_spec[0] == tf.TensorSpec((28, 28, 1), tf.float32)
    assert ds.element_spec[1] == tf.TensorSpec((), tf.int32)
    x, y = _epoch(ds)
    np.testing.assert_array_equal(x[..., 0], arrays["test_images"].astype(np.float32) / 255.0)
    np.testing.assert_array_equal(y, arrays["test_labels"])


@pytest.mark.parametrize("bounds", [(0, 255), (-1.0, 1.0), (0.0, 1.0)])
def test_load_serves_the_declared_bounds(idx_root, bounds):
    root, arrays = idx_root
    x, _ = _epoch(data.load("mnist", "test", data_dir=root, bounds=bounds))
    pixels = arrays["test_images"].astype(np.float64)  # uint8 in the files
    want = bounds[0] + pixels * (bounds[1] - bounds[0]) / 255.0  # float64 oracle
    np.testing.assert_allclose(x[..., 0], want, rtol=0, atol=1e-6 * max(1.0, abs(bounds[1])))
    if bounds == (0, 255):
        np.testing.assert_array_equal(x[..., 0], arrays["test_images"])  # raw pixel values, exactly
    assert x.min() >= bounds[0] and x.max() <= bounds[1]


def test_float_images_in_unit_range_are_mapped_to_the_bounds():
    images = np.random.default_rng(0).uniform(size=(6, 4, 4, 1)).astype(np.float32)
    x, _ = _epoch(data.make_dataset(images, np.arange(6), bounds=(-1, 1)))
    np.testing.assert_allclose(x, 2.0 * images - 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="bounds"):
        data.make_dataset(images, np.arange(6), bounds=(1, 0))


def test_batching_and_drop_remainder(idx_root):
    root, _ = idx_root
    sizes = [int(x.shape[0]) for x, _ in data.load("mnist", "test", data_dir=root, batch_size=5)]
    assert sizes == [5, 5, 5, 5, 3]
    ds = data.load("mnist", "test", data_dir=root, batch_size=5, drop_remainder=True)
    assert [int(x.shape[0]) for x, _ in ds] == [5, 5, 5, 5] and ds.element_spec[0].shape == (5, 28, 28, 1)
    assert int(ds.cardinality()) == 4


def test_shuffle_is_a_seeded_permutation_of_the_limited_examples(idx_root):
    root, arrays = idx_root
    kw = dict(data_dir=root, shuffle=True, limit=15, offset=4)
    ds = data.load("mnist", "test", seed=3, **kw)
    x1, y1 = _epoch(ds)
    x2, _ = _epoch(ds)  # the next epoch is reshuffled
    x3, _ = _epoch(data.load("mnist", "test", seed=3, **kw))  # a new pipeline with the same seed
    x4, _ = _epoch(data.load("mnist", "test", seed=4, **kw))
    np.testing.assert_array_equal(x1, x3)
    assert not np.array_equal(x1, x2) and not np.array_equal(x1, x4)
    expected = arrays["test_images"][4:19].astype(np.float32)[..., None] / 255.0
    order = [int(np.flatnonzero((expected == img).all(axis=(1, 2, 3)))[0]) for img in x1]
    assert sorted(order) == list(range(15))  # exactly examples 4..18, in a new order
    np.testing.assert_array_equal(y1, arrays["test_labels"][4:19][order])


@pytest.mark.parametrize("batch_size", [None, 6])
def test_augmentation_is_deterministic_given_the_seed(idx_root, batch_size):
    root, _ = idx_root
    kw = dict(data_dir=root, augment=True, batch_size=batch_size, limit=12)
    plain, _ = _epoch(data.load("mnist", "test", data_dir=root, batch_size=batch_size, limit=12))
    a, ya = _epoch(data.load("mnist", "test", seed=1, **kw))
    b, _ = _epoch(data.load("mnist", "test", seed=1, **kw))
    c, _ = _epoch(data.load("mnist", "test", seed=2, **kw))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c) and not np.allclose(a, plain)
    assert a.shape == plain.shape and a.min() >= 0.0 and a.max() <= 1.0
    ds = data.load("mnist", "test", seed=1, **kw)
    first, second = _epoch(ds)[0], _epoch(ds)[0]
    assert not np.allclose(first, second)  # a fresh draw each epoch


def test_transform_matches_rot90_and_integer_shifts():
    rng = np.random.RandomState(0)
    img = rng.rand(1, 9, 9, 2).astype(np.float32)
    out = augment.transform(tf.constant(img), [math.pi / 2], [[0.0, 0.0]], interpolation="NEAREST")
    np.testing.assert_allclose(out.numpy()[0], np.rot90(img[0], k=1), atol=1e-6)  # counter-clockwise on screen
    img = rng.rand(1, 7, 8, 1).astype(np.float32)
    out = augment.transform(tf.constant(img), [0.0], [[2.0, -1.0]], interpolation="NEAREST").numpy()[0]
    # Shift right by 2 and up by 1: out[y, x] = img[y + 1, x − 2]; edges repeat the nearest pixel.
    np.testing.assert_array_equal(out[:6, 2:], img[0, 1:, :6])
    np.testing.assert_array_equal(out[:6, :2], np.repeat(img[0, 1:, :1], 2, axis=1))


def test_random_affine_stays_within_15_degrees_and_5_pixels():
    # A thin horizontal bar through the centre: its principal axis gives the angle, its centroid the shift.
    img = np.zeros((64, 41, 41, 1), np.float32)
    img[:, 20, 8:33] = 1.0
    out = augment.random_affine(tf.constant(img), tf.constant([7, 9])).numpy()[..., 0]
    ys, xs = np.mgrid[:41, :41]
    angles, shifts = [], []
    for o in out:
        w = o / o.sum()
        cx, cy = (w * xs).sum(), (w * ys).sum()
        cov = np.cov(np.stack([xs.ravel() - cx, ys.ravel() - cy]), aweights=w.ravel())
        vx, vy = np.linalg.eigh(cov)[1][:, -1]
        angles.append(abs(math.degrees(math.atan2(vy, vx))) % 180)
        shifts.append((abs(cx - 20), abs(cy - 20)))
    angles = np.minimum(np.asarray(angles), 180 - np.asarray(angles))
    assert angles.max() <= 15.5 and angles.max() > 5  # bounded, and rotation does happen
    assert np.max(shifts) <= 5.3 and np.max(shifts) > 2


def test_decoded_split_is_not_decoded_twice(idx_root, monkeypatch):
    root, _ = idx_root
    calls = []
    original = idx.read_bytes
    monkeypatch.setattr(idx, "read_bytes", lambda p: calls.append(p) or original(p))
    data.load("mnist", "train", data_dir=root, batch_size=4)
    data.load("mnist", "validation", data_dir=root)
    data.arrays("mnist", "train_full", data_dir=root)
    assert len(calls) == 2  # images + labels of the training part, once


def test_info():
    assert data.NAMES == ("mnist", "fashion_mnist", "gtsrb", "flower17", "flowers102")
    m = data.info("mnist")
    assert dict(m.splits) == {"train": 55000, "validation": 5000, "train_full": 60000, "test": 10000}
    assert m.num_classes == 10 and m.image_shape == (28, 28, 1)
    f = data.info("fashion_mnist")
    assert f.class_names[0] == "T-shirt/top" and f.class_names[9] == "Ankle boot"
    g = data.info("gtsrb")
    assert g.num_classes == 43 and g.splits["test"] == 12630 and g.splits["train_full"] == 39209
    assert g.class_names[14] == "Stop" and g.image_shape == (32, 32, 3)
    assert data.info("flower17").class_names == ("Daffodil", "Snowdrop", "LilyValley", "Bluebell", "Crocus", "Iris",
                                                  "Tigerlily", "Tulip", "Fritillary", "Sunflower", "Daisy",
                                                  "ColtsFoot", "Dandelion", "Cowslip", "Buttercup", "Windflower",
                                                  "Pansy")
    assert data.info("flowers102").splits["test"] == 6149
    assert "GTSRB_Final_Test_GT.zip" in g.files


def test_unknown_name_and_split():
    with pytest.raises(ValueError, match=r"Unknown dataset 'fashion-mnist'. Did you mean 'fashion_mnist'\?"):
        data.load("fashion-mnist", "train")
    with pytest.raises(ValueError, match=r"`split` must be one of train, validation, train_full, test for 'mnist'. "
                       r"Received: split='valid'. Did you mean 'validation'\?"):
        data.arrays("mnist", "valid")
    with pytest.raises(ValueError, match=r"`split` must be one of .*official3_test.* Received: split='official4_test'"):
        data.arrays("flower17", "official4_test")


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(batch_size=0), r"`batch_size` must be an integer >= 1. Received: batch_size=0"),
    (dict(limit=0), r"`limit` must be an integer >= 1. Received: limit=0"),
    (dict(offset=-1), r"`offset` must be an integer >= 0. Received: offset=-1"),
    (dict(image_size=(0, 4)), r"`image_size` must be None, a positive int.*Received: image_size=\(0, 4\)"),
    (dict(seed="a"), r"`seed` must be an integer. Received: seed='a'"),
    (dict(shuffle="yes"), r"`shuffle` must be True or False. Received: shuffle='yes'"),
    (dict(crop_roi=True), r"`crop_roi` applies only to 'gtsrb'"),
    (dict(resample="lanczoz"), r"Unknown resample filter 'lanczoz'. Did you mean 'lanczos'\?"),
    (dict(split_seed=3), r"`split_seed` applies only to 'flower17'"),
])
def test_bad_arguments(idx_root, kwargs, pattern):
    root, _ = idx_root
    with pytest.raises(ValueError, match=pattern):
        data.load("mnist", "test", data_dir=root, **kwargs)


def test_synthetic_is_balanced_deterministic_and_learnable():
    x, y = data.synthetic(300, (8, 8, 1), 3, seed=0, as_arrays=True)
    assert x.shape == (300, 8, 8, 1) and x.dtype == np.float32 and y.dtype == np.int32
    assert x.min() >= 0 and x.max() <= 1 and list(np.bincount(y)) == [100, 100, 100]
    x2, y2 = data.synthetic(300, (8, 8, 1), 3, seed=0, as_arrays=True)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    # Oracle: a nearest-class-mean classifier fit on seed 0 generalises to a fresh draw (seed 1).
    means = np.stack([x[y == c].mean(axis=0).ravel() for c in range(3)])
    xt, yt = data.synthetic(300, (8, 8, 1), 3, seed=1, as_arrays=True)
    pred = np.argmin(((xt.reshape(300, 1, -1) - means[None]) ** 2).sum(-1), axis=1)
    assert (pred == yt).mean() > 0.95
    ds = data.synthetic(10, (4, 4, 3), 4, batch_size=4)
    assert ds.element_spec[0].shape.as_list() == [None, 4, 4, 3] and ds.element_spec[1].dtype == tf.int32
    with pytest.raises(ValueError, match=r"`num_classes` must be an integer >= 2"):
        data.synthetic(10, num_classes=1)
