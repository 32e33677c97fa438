"""Training-step throughput of every objective, against natural training and against its pass-count floor.

For each model (the RAR MNIST CNN and the CPU CNN) and each registered objective, one `RobustModel.train_step`
is timed (tf.function, no XLA unless --jit) on a fixed batch. Printed per row:

* img/s and the slowdown against `natural` measured in the same run;
* the floor: the passes the objective needs per batch (docs/method.md §11.1) × the measured cost of one pass,
  where P1 = forward + one backward (an input or parameter gradient) and P2 = forward + backward + the
  backward of that backward (a double-backprop path point), each timed on its own in this run;
* the ratio step / floor (the overhead of the library over the bare passes). Goal: sarkar2021 ≤ 1.25.

Run: .venv/bin/python benchmarks/bench_train_step.py [--models cpu_cnn] [--batch 50] [--repeats 3] [--jit]
"""
import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from attr_robust_tf import models, objectives  # noqa: E402
from attr_robust_tf.robust_model import RobustModel  # noqa: E402


def pass_counts(name, k, m, m_inner):
    """(P1, P2) passes per batch (docs/method.md §11.1), K inner steps, m outer and m′ inner IG points."""
    table = {
        "natural": (1, 0),
        "madry": (k + 1, 0),
        "trades": (k + 2, 0),  # K ascent steps, p(x) once, outer p(x) and p(x′) with one backward
        "ig_norm": (1, k * m_inner + m),
        "ig_sum_norm": (k + 1, k * m_inner + m),
        "art": (2, 2 * k + 4),  # ReLU mask + CE; 2 saliencies per step; 2 inputs × 2 saliencies outside
        "sarkar2021": (k + 1, k * m_inner + 4 * m),  # ΔA, B, A_T, A_N with m points each
    }
    return table.get(name)


def timed(fn, repeats):
    """Fastest of `repeats` calls after a warm-up: other processes on the cores only ever slow a call down."""
    fn()  # trace and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, out)
        times.append(time.perf_counter() - start)
    return min(times)


def pass_costs(model, x, y, m, repeats, jit):
    """Seconds per image of one P1 and one P2 pass (P2 measured on a batch of m·N path points)."""
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    weights = model.trainable_variables

    @tf.function(jit_compile=jit)
    def p1(images, labels):
        with tf.GradientTape() as tape:
            loss = ce(labels, model(images))
        return tape.gradient(loss, weights)

    @tf.function(jit_compile=jit)
    def p2(images, labels):
        with tf.GradientTape() as outer:
            with tf.GradientTape(watch_accessed_variables=False) as inner:
                inner.watch(images)
                loss = ce(labels, model(images))
            g = inner.gradient(loss, images)
            penalty = tf.reduce_sum(tf.abs(g))
        return outer.gradient(penalty, weights)

    points = tf.tile(x, [m, 1, 1, 1])
    labels = tf.tile(y, [m])
    c1 = timed(lambda: p1(x, y), repeats) / x.shape[0]
    c2 = timed(lambda: p2(points, labels), repeats) / points.shape[0]
    return c1, c2


def step_time(model_fn, name, x, y, args):
    keras.utils.set_random_seed(0)
    robust = RobustModel(model_fn(), name, epsilon=0.1, step_size=0.02, attack_steps=args.attack_steps,
                         ig_steps=args.ig_steps, inner_ig_steps=args.inner_ig_steps)
    robust.compile(keras.optimizers.Adam(1e-4),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=args.jit)
    robust.optimizer.build(robust.trainable_variables)
    step = tf.function(robust.train_step, jit_compile=args.jit)
    return timed(lambda: step((x, y)), args.repeats)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mnist_cnn,cpu_cnn")
    parser.add_argument("--objectives", default=",".join(objectives.names()))
    parser.add_argument("--batch", type=int, default=50)  # RAR MNIST batch
    parser.add_argument("--attack_steps", type=int, default=2)
    parser.add_argument("--ig_steps", type=int, default=10)
    parser.add_argument("--inner_ig_steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--jit", action="store_true", help="XLA for every timed function (slower on CPU)")
    args = parser.parse_args(argv)
    names = ["natural"] + [n for n in args.objectives.split(",") if n != "natural"]
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(size=(args.batch, 28, 28, 1)).astype("float32"))
    y = tf.constant(rng.integers(0, 10, args.batch).astype("int32"))
    print(f"batch {args.batch}, K = {args.attack_steps} inner steps, m = {args.ig_steps}, "
          f"m' = {args.inner_ig_steps}, jit_compile={args.jit}, fastest of {args.repeats} timed repeats")
    for model_name in args.models.split(","):
        model_fn = getattr(models, model_name)
        keras.utils.set_random_seed(0)
        probe = model_fn()
        rows, c1, c2 = [], float("inf"), float("inf")
        for name in names:
            # the pass costs are re-measured next to every row and the fastest kept, so a burst of load
            # from other processes inflates neither side of the step / floor ratio
            p1_cost, p2_cost = pass_costs(probe, x, y, args.ig_steps, args.repeats, args.jit)
            c1, c2 = min(c1, p1_cost), min(c2, p2_cost)
            rows.append((name, step_time(model_fn, name, x, y, args)))
        print(f"\n{model_name}: P1 {1e3 * c1 * args.batch:.2f} ms/batch, "
              f"P2 {1e3 * c2 * args.batch:.2f} ms/batch (P2/P1 = {c2 / c1:.2f})")
        print(f"{'objective':<12} {'ms/step':>9} {'img/s':>9} {'x natural':>10} {'P1':>5} {'P2':>5} "
              f"{'floor ms':>9} {'/ floor':>8}")
        natural = rows[0][1]
        for name, seconds in rows:
            counts = pass_counts(name, args.attack_steps, args.ig_steps, args.inner_ig_steps)
            if counts is None:
                floor_txt, ratio_txt, p1, p2 = "-", "-", "-", "-"
            else:
                p1, p2 = counts
                floor = (p1 * c1 + p2 * c2) * args.batch
                floor_txt, ratio_txt = f"{1e3 * floor:.1f}", f"{seconds / floor:.2f}"
            print(f"{name:<12} {1e3 * seconds:>9.1f} {args.batch / seconds:>9.1f} {seconds / natural:>10.1f} "
                  f"{p1:>5} {p2:>5} {floor_txt:>9} {ratio_txt:>8}")
        sys.stdout.flush()

if __name__ == "__main__":
    main()
