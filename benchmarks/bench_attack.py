"""Throughput of the top-k attribution attack: batched versus the same code one image at a time.

  .venv/bin/python benchmarks/bench_attack.py [--images=8] [--steps=2] [--memory_budget_mb=4096]

Both runs use `AttributionAttack` with the same settings; "one at a time" sets `images_per_chunk=1`, as the
reference evaluation loop does (docs/method.md §9 quirk 16). The model is the RAR MNIST CNN (docs/method.md §8.3,
randomly initialised: the cost of a step does not depend on the weights) on real MNIST test images. Each
setting is first traced once, then timed over `--steps` iterations; the cost per iteration is constant, so
images/s of the full attack = 1 / (seconds per image-iteration × iterations). The last line prints the
batched/one-at-a-time ratios measured in this run.
"""
import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from attr_robust_tf import data, models, protocols  # noqa: E402
from attr_robust_tf.attacks import pgd_linf  # noqa: E402


def seconds_per_image_iteration(model, images, labels, protocol, steps, **overrides):
    """Wall seconds per (image, iteration) of the protocol's attack (all restarts included)."""
    protocol.attack(steps=1, **overrides)(model, images[:1], labels[:1])  # trace outside the timing
    attack = protocol.attack(steps=steps, **overrides)
    start = time.perf_counter()
    attack(model, images, labels)
    return (time.perf_counter() - start) / (len(images) * steps)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="images in the batched run")
    parser.add_argument("--single_images", type=int, default=3, help="images in the one-at-a-time run")
    parser.add_argument("--steps", type=int, default=2, help="timed attack iterations per run")
    parser.add_argument("--memory_budget_mb", type=float, default=1024, help="chunking budget of the attack")
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    model = models.mnist_cnn()
    x, y = data.arrays("mnist", "test", limit=args.images)
    x = x.astype(np.float32) / 255.0
    # attack the model's own predictions so that every image counts as correctly classified
    y = np.argmax(model(x).numpy(), axis=-1).astype(np.int32)

    ratios = {}
    per_image = {}
    for name in ("mnist:reference", "mnist:cpu"):
        p = protocols.get_protocol(name)
        batched = seconds_per_image_iteration(model, x, y, p, args.steps, memory_budget_mb=args.memory_budget_mb)
        single = seconds_per_image_iteration(model, x[:args.single_images], y[:args.single_images], p, args.steps,
                                             images_per_chunk=1)
        chunk = p.attack(memory_budget_mb=args.memory_budget_mb).chunk_images(model, x.shape[1:])
        per_image[name] = batched * p.steps
        ratios[name] = single / batched
        print(f"{name}: {p.steps} iterations × {p.restarts} restart(s), {p.ig_steps} IG points, "
              f"k_attack={p.k_attack}; batched ({min(chunk, args.images)} images per chunk): "
              f"{1.0 / (batched * p.steps):.3f} images/s; one at a time: {1.0 / (single * p.steps):.3f} images/s")

    ref = protocols.get_protocol("mnist:reference")
    pgd = dict(epsilon=ref.pgd_epsilon, step_size=ref.pgd_step_size, steps=ref.pgd_steps, seed=0)
    pgd_linf(model, x, y, **pgd)  # trace
    start = time.perf_counter()
    pgd_linf(model, x, y, **pgd)
    pgd_seconds = (time.perf_counter() - start) / len(x)
    hours = 1000 * (per_image["mnist:reference"] + pgd_seconds) / 3600
    print(f"projected wall time of the full mnist:reference protocol on 1,000 MNIST test images (batched, "
          f"every image attacked): {hours:.1f} h")
    print("ratio batched / one at a time (images/s): "
          + ", ".join(f"{name} {ratio:.2f}x" for name, ratio in ratios.items()))


if __name__ == "__main__":
    main()
