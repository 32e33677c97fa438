"""Peak memory of one training step against the number of IG path points, with and without `ig_batch_size`.

For `sarkar2021` and `ig_sum_norm` on `models.cpu_cnn()` (28×28×1, 10 classes) and a batch of `--batch` images,
one `RobustModel.train_on_batch` step is run for every m in `--m` (outer IG points `ig_steps = m`, inner
`inner_ig_steps = m // 4`, the RAR approximation factor) with `ig_batch_size = --ig_batch_size` (chunked, the
chunks' activations recomputed in backprop), and for every m in `--unchunked_m` with `ig_batch_size=None` (the
baseline: every path point's activations are held for the backward pass).

Every configuration runs in its own subprocess, which reports `resource.getrusage(RUSAGE_SELF).ru_maxrss`
(the peak resident set, including TensorFlow's own ~0.5 GB) after the steps, the resident set before the first
step, and the fastest of `--repeats` steps after one warm-up (tracing) step. The time ratio comes from one more
subprocess per m in `--unchunked_m` that alternates a chunked and an unchunked step `--rounds` times (so a
changing background load slows both alike) and reports the median of the per-pair ratios. Printed: the peak of
each configuration, the ratio of each chunked peak to the chunked peak at the smallest m (goal: ≤ 1.3 at
m = 160), and the paired time ratio chunked / unchunked at the same m (goal: ≤ 1.4).

Run: .venv/bin/python benchmarks/bench_memory.py [--m 20,80,160] [--unchunked_m 20,80,160] [--ig_batch_size 100]
     [--batch 50] [--attack_steps 2] [--repeats 2] [--rounds 5] [--objectives sarkar2021,ig_sum_norm]
"""
import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _rss_now_mb():
    """The current resident set (MB), from /proc (Linux); None elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _robust_step(config, ig_batch_size):
    """(train_on_batch closure, x, y) of one configuration with ig_batch_size, traced and warmed up."""
    import keras  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from attr_robust_tf import RobustModel, models  # noqa: PLC0415

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(config["batch"], 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, config["batch"]).astype("int32")
    m = config["m"]
    robust = RobustModel(models.cpu_cnn(), config["objective"], ig_steps=m, inner_ig_steps=max(2, m // 4),
                         attack_steps=config["attack_steps"], ig_batch_size=ig_batch_size)
    robust.compile(keras.optimizers.Adam(1e-3),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=False)
    return lambda: robust.train_on_batch(x, y)


def child(config):
    """One configuration in this (fresh) process; prints one JSON line."""
    import resource  # noqa: PLC0415

    if config.get("paired_timing"):
        return timing_child(config)
    step = _robust_step(config, config["ig_batch_size"])
    before = _rss_now_mb()
    step()  # trace + warm-up
    times = []
    for _ in range(config["repeats"]):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
    print(json.dumps({**config, "peak_mb": peak, "before_mb": before, "seconds": min(times)}))
    return None


def timing_child(config):
    """Chunked and unchunked steps of one configuration, alternated in one process for `rounds` pairs.

    Background load then slows both alike; the median of the per-pair time ratios is reported.
    """
    chunked, plain = _robust_step(config, config["ig_batch_size"]), _robust_step(config, None)
    chunked(), plain()  # trace + warm-up
    ratios, chunked_times, plain_times = [], [], []
    for _ in range(config["rounds"]):
        pair = []
        for step, times in ((chunked, chunked_times), (plain, plain_times)):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
            pair.append(times[-1])
        ratios.append(pair[0] / pair[1])
    ratios.sort()
    print(json.dumps({**config, "median_ratio": ratios[len(ratios) // 2], "min_ratio": ratios[0],
                      "max_ratio": ratios[-1], "chunked_s": min(chunked_times), "plain_s": min(plain_times)}))


def run_config(config):
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(config)], capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        tail = "\n".join(out.stderr.splitlines()[-5:])
        print(f"  {config}: failed (exit {out.returncode})\n{tail}", flush=True)
        return None
    result = json.loads(lines[-1])
    if config.get("paired_timing"):
        print(f"  {result['objective']:12s} m={result['m']:4d} paired time chunked/unchunked: median "
              f"{result['median_ratio']:.2f}× over {result['rounds']} pairs (range {result['min_ratio']:.2f}–"
              f"{result['max_ratio']:.2f}×; fastest {result['chunked_s']:.2f} s vs {result['plain_s']:.2f} s)",
              flush=True)
        return result
    print(f"  {result['objective']:12s} m={result['m']:4d} ig_batch_size={str(result['ig_batch_size']):5s} "
          f"peak {result['peak_mb']:7.0f} MB (before the step {result['before_mb']:5.0f} MB)  "
          f"{result['seconds']:6.2f} s/step", flush=True)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--objectives", default="sarkar2021,ig_sum_norm")
    parser.add_argument("--m", default="20,80,160", help="IG points (chunked runs)")
    parser.add_argument("--unchunked_m", default="20,80,160", help="IG points of the unchunked baseline runs")
    parser.add_argument("--ig_batch_size", type=int, default=100)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--attack_steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="alternated chunked/unchunked pairs of the timing")
    args = parser.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return
    ms = [int(v) for v in args.m.split(",")]
    unchunked_ms = [int(v) for v in args.unchunked_m.split(",") if v]
    common = {"batch": args.batch, "attack_steps": args.attack_steps, "repeats": args.repeats}
    print(f"cpu_cnn, batch {args.batch}, {args.attack_steps} attack steps, ig_batch_size={args.ig_batch_size}, "
          f"fastest of {args.repeats} steps after a warm-up; one subprocess per configuration", flush=True)
    rows = []
    for objective in args.objectives.split(","):
        chunked = {m: run_config({**common, "objective": objective, "m": m, "ig_batch_size": args.ig_batch_size})
                   for m in ms}
        plain = {m: run_config({**common, "objective": objective, "m": m, "ig_batch_size": None})
                 for m in unchunked_ms}
        paired = {m: run_config({**common, "objective": objective, "m": m, "ig_batch_size": args.ig_batch_size,
                                 "paired_timing": True, "rounds": args.rounds}) for m in unchunked_ms}
        base = chunked.get(ms[0])
        for m in ms:
            rows.append((objective, m, chunked.get(m), plain.get(m), paired.get(m), base))
    print("\n| objective | m | peak, chunked | peak / peak at m = {} | peak, unchunked | time chunked / unchunked "
          "(median of paired steps, range) |".format(ms[0]))
    print("|---|---|---|---|---|---|")
    for objective, m, c, p, t, base in rows:
        peak = f"{c['peak_mb']:.0f} MB" if c else "failed"
        ratio = f"{c['peak_mb'] / base['peak_mb']:.2f}×" if c and base else "–"
        plain_peak = f"{p['peak_mb']:.0f} MB" if p else "not run"
        time_ratio = f"{t['median_ratio']:.2f}× ({t['min_ratio']:.2f}–{t['max_ratio']:.2f})" if t else "–"
        print(f"| {objective} | {m} | {peak} | {ratio} | {plain_peak} | {time_ratio} |")


if __name__ == "__main__":
    main()
