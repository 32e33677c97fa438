"""MirroredStrategy on 2 logical CPUs vs the single-device step, through `RobustModel.fit` (docs/distributed.md).

For each model and objective, the same global batch is trained with the default strategy (one device) and
with `MirroredStrategy` over 2 logical CPU devices (R = 2, half the batch per replica, all-reduced
gradients), and the time per step is printed with the ratio mirrored / single measured in the same run.
On one 2-core machine the logical devices share the cores, so this measures the overhead of the strategy
(replication, all-reduce), not a speed-up; on k GPUs the same code splits the batch over k devices.

Run: .venv/bin/python benchmarks/bench_distribute.py [--models tiny_cnn,cpu_cnn] [--steps 20] [--repeats 3]
"""
import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

# Two logical CPU devices, before any op runs (docs/stack.md §3 item 13).
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from attr_robust_tf import models  # noqa: E402
from attr_robust_tf.robust_model import RobustModel  # noqa: E402

SHAPES = {"tiny_cnn": ((8, 8, 1), 3), "cpu_cnn": ((28, 28, 1), 10)}


def step_seconds(strategy, model_name, objective, batch, steps, repeats, settings):
    """Fastest time per step of `steps` fit steps after a traced warm-up epoch."""
    shape, classes = SHAPES[model_name]
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(batch * steps,) + shape).astype("float32")
    y = rng.integers(0, classes, batch * steps).astype("int32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch, drop_remainder=True).repeat()
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = RobustModel(getattr(models, model_name)(shape, classes), objective, **settings)
        model.compile(keras.optimizers.SGD(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data, epochs=1, steps_per_epoch=2, shuffle=False, verbose=0)  # trace
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        model.fit(data, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0)
        best = min(best, (time.perf_counter() - start) / steps)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny_cnn,cpu_cnn")
    parser.add_argument("--objectives", default="natural,ig_norm,sarkar2021")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    settings = dict(epsilon=0.1, step_size=0.02, attack_steps=2, ig_steps=8, inner_ig_steps=2)
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    mirrored = tf.distribute.MirroredStrategy(devices)
    print(f"{len(devices)} logical CPUs; K = 2 inner steps, m = 8, m' = 2; fastest of {args.repeats} × "
          f"{args.steps} steps")
    print(f"{'model':<9} {'objective':<11} {'batch':>5} {'single ms':>10} {'mirrored ms':>12} {'ratio':>6}")
    for model_name in args.models.split(","):
        batch = 8 if model_name == "tiny_cnn" else 50  # tiny config batch; RAR MNIST batch
        for objective in args.objectives.split(","):
            single = step_seconds(tf.distribute.get_strategy(), model_name, objective, batch, args.steps,
                                  args.repeats, settings)
            mirror = step_seconds(mirrored, model_name, objective, batch, args.steps, args.repeats, settings)
            print(f"{model_name:<9} {objective:<11} {batch:>5} {1e3 * single:>10.1f} {1e3 * mirror:>12.1f} "
                  f"{mirror / single:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
