"""Integrated-gradients throughput against tf-explain, and Kendall's τ per map against SciPy.

  .venv/bin/python benchmarks/bench_attributions.py [--images=16] [--steps=50] [--repeats=5] [--batches=4] [--maps=16]

IG: `integrated_gradients` versus tf-explain's raw IG computation (`generate_interpolations` +
`get_integrated_gradients`, the two steps before its picture rendering; docs/stack.md §3) on the same Keras CNN
(the RAR MNIST CNN of docs/method.md §8.3, randomly initialised: the cost does not depend on the weights or the
pixel values) at MNIST size (28×28×1, 10 classes) and GTSRB size (32×32×3, 43 classes), 50 path points.
Two workloads:

* one class for the whole batch, the only case tf-explain's API covers in one call; each side traced
  once before timing, median of `--repeats` calls;
* one target per image (evaluation: each image's own label), over a stream of `--batches` batches with
  random labels. tf-explain takes one Python-int class per call, so it is called once per distinct class
  on just the images of that class (the least work it can do); a new (class, group size) pair retraces
  its `tf.function`, which is part of its cost.

The floor is `steps` × (one forward + input-gradient pass over the batch), measured as a compiled
function in the same run, next to one such pass over all images × steps path points as a single batch (the
work both IG implementations do). Every group of timed functions runs in turn, so load from other
processes on the shared cores hits all of them alike.

Kendall: per-map time of `metrics.kendall_tau` on a batch of 128×128 maps (Flower size, 16,384 pixels)
versus `scipy.stats.kendalltau` called per map, on continuous maps, on zero-heavy maps (as zero-baseline
IG gives) and on maps with few distinct values. The last line prints the ratios measured in this run.
"""
import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from scipy import stats  # noqa: E402
from tf_explain.core.integrated_gradients import IntegratedGradients  # noqa: E402

from attr_robust_tf import integrated_gradients, metrics, models  # noqa: E402


def median_seconds(fns, repeats):
    """{name: median wall seconds}. The functions run in turn, so load from other processes hits all alike."""
    for fn in fns.values():
        fn()  # trace / warm up outside the timing
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def tf_explain_ig(model, images, class_index, steps):
    """tf-explain's raw computation: the mean logit gradient over the path, without the (x − x₀) factor."""
    path = IntegratedGradients.generate_interpolations(images, steps)
    return IntegratedGradients.get_integrated_gradients(path, model, class_index, steps).numpy()


def tf_explain_per_label(model, images, labels, steps):
    """One call per distinct class, on the images of that class only."""
    out = np.zeros(images.shape, np.float32)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        out[rows] = tf_explain_ig(model, images[rows], int(c), steps)
    return out


def input_gradient_fn(model, shape):
    """Compiled forward + input-gradient pass of a batch: the unit of work of every IG path point."""
    @tf.function(input_signature=[tf.TensorSpec((None,) + shape)])
    def grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(model(x, training=False)[:, 0])
        return tape.gradient(total, x)

    return grad


def bench_ig(name, shape, classes, args, rng):
    keras.utils.set_random_seed(0)
    model = models.mnist_cnn(shape, classes)
    n, steps = args.images, args.steps
    images = rng.uniform(0.0, 1.0, (n,) + shape).astype(np.float32)
    same = np.zeros(n, np.int32)
    grad = input_gradient_fn(model, shape)
    batch = tf.constant(images)
    all_points = tf.constant(np.repeat(images, steps, axis=0))  # n·steps images, as one batch

    def taped():
        with tf.GradientTape():  # a recording tape: the plain, twice-differentiable path
            return integrated_gradients(model, images, same, steps=steps).numpy()

    t = median_seconds({
        "ours": lambda: integrated_gradients(model, images, same, steps=steps).numpy(),
        "tf-explain": lambda: tf_explain_ig(model, images, 0, steps),
        "taped": taped,
        "pass": lambda: grad(batch).numpy(),
        "one batch": lambda: grad(all_points).numpy(),
    }, args.repeats)
    floor = steps * t["pass"]

    # a stream of batches with one label per image; the first batch warms both sides up
    batches = [rng.integers(0, classes, n).astype(np.int32) for _ in range(args.batches + 1)]
    integrated_gradients(model, images, batches[0], steps=steps)
    tf_explain_per_label(model, images, batches[0], steps)
    ours_labels = theirs_labels = 0.0
    for labels in batches[1:]:  # in turn, as in median_seconds
        start = time.perf_counter()
        integrated_gradients(model, images, labels, steps=steps).numpy()
        ours_labels += (time.perf_counter() - start) / args.batches
        start = time.perf_counter()
        tf_explain_per_label(model, images, labels, steps)
        theirs_labels += (time.perf_counter() - start) / args.batches

    rate = lambda seconds: n / seconds  # noqa: E731
    print(f"{name} {shape}, {classes} classes, {n} images x {steps} path points:")
    print(f"  one class per batch: ours {rate(t['ours']):7.1f} images/s | tf-explain {rate(t['tf-explain']):7.1f} "
          f"images/s | ours under a recording tape (plain path) {rate(t['taped']):7.1f} images/s")
    print(f"  floor {steps} x (forward + input gradient of {n} images): {rate(floor):7.1f} images/s "
          f"(ours {floor / t['ours']:.2f}x it, tf-explain {floor / t['tf-explain']:.2f}x); one such pass over all "
          f"{n * steps} path points as one batch: {rate(t['one batch']):7.1f} images/s "
          f"(ours {t['one batch'] / t['ours']:.2f}x it, tf-explain {t['one batch'] / t['tf-explain']:.2f}x)")
    print(f"  one label per image ({args.batches} batches): ours {rate(ours_labels):7.1f} images/s | "
          f"tf-explain {rate(theirs_labels):7.1f} images/s")
    return {f"{name} one class": t["tf-explain"] / t["ours"], f"{name} per-image labels": theirs_labels / ours_labels}


def bench_kendall(args, rng):
    p = 128 * 128
    n = args.maps
    shape = (n, p)
    continuous = rng.random(shape).astype(np.float32)
    # zero-baseline IG maps: exact zeros wherever the image is black (docs/method.md §3), distinct values elsewhere
    zeros = np.where(rng.random(shape) < 0.6, 0.0, rng.random(shape)).astype(np.float32)
    # few distinct values (quantised maps): Kendall counts by contingency-table cells
    levels = np.where(rng.random(shape) < 0.6, 0.0, rng.integers(1, 20, shape)).astype(np.float32)
    data = {
        "continuous": (continuous, (continuous + rng.normal(scale=0.5, size=shape)).astype(np.float32)),
        "zero-heavy": (zeros, np.where(rng.random(shape) < 0.6, 0.0, zeros + rng.random(shape)).astype(np.float32)),
        "few values": (levels, np.where(rng.random(shape) < 0.6, 0.0, levels + rng.integers(0, 3, shape))
                       .astype(np.float32)),
    }
    ratios = {}
    for name, (a, b) in data.items():
        t = median_seconds({"ours": lambda: metrics.kendall_tau(a, b).numpy(),
                            "scipy": lambda: [stats.kendalltau(x, y) for x, y in zip(a, b)]}, args.repeats)
        ours, theirs = t["ours"] / n, t["scipy"] / n
        error = np.max(np.abs(metrics.kendall_tau(a, b).numpy()
                              - [stats.kendalltau(x, y).statistic for x, y in zip(a, b)]))
        print(f"kendall tau, {n} maps of {p} pixels, {name}: ours {1e3 * ours:.2f} ms/map | "
              f"scipy {1e3 * theirs:.2f} ms/map | max |difference| {error:.1e}")
        ratios[f"kendall {name}"] = theirs / ours
    return ratios


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16, help="images per batch")
    parser.add_argument("--steps", type=int, default=50, help="IG path points")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (median)")
    parser.add_argument("--batches", type=int, default=4, help="batches in the one-label-per-image stream")
    parser.add_argument("--maps", type=int, default=16, help="maps per Kendall batch")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    ratios = {}
    ratios.update(bench_ig("mnist", (28, 28, 1), 10, args, rng))
    ratios.update(bench_ig("gtsrb", (32, 32, 3), 43, args, rng))
    ratios.update(bench_kendall(args, rng))
    print("ratio ours / baseline (images/s or maps/s, same run): "
          + ", ".join(f"{name} {value:.2f}x" for name, value in ratios.items()))


if __name__ == "__main__":
    main()
