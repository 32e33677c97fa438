"""`make demo`: train a natural and a Sarkar et al. 2021 model on Fashion-MNIST, attack both, compare.

  python tools/demo.py                      # cpu configs and the fmnist:cpu protocol, in runs/demo
  python tools/demo.py --scale=tiny --workdir=/tmp/demo   # seconds, synthetic data (a smoke test)

A second run reuses the models and evaluations of the first (runs/demo); an interrupted run resumes.
Prints the comparison table and the paths of report.md and attacks.png.
"""
import os
import time

from absl import app, flags

FLAGS = flags.FLAGS
OBJECTIVES = ("natural", "sarkar2021")


def define_flags():
    flags.DEFINE_string("workdir", "runs/demo", "Folder of the demo's models and reports (reused by a rerun).")
    flags.DEFINE_enum("scale", "cpu", ["tiny", "cpu"], "cpu: real Fashion-MNIST (minutes); tiny: synthetic data.")
    flags.DEFINE_integer("limit", None, "Evaluate at most this many test images (default: the protocol's 200).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if FLAGS.limit is not None and FLAGS.limit < 1:
        raise app.UsageError(f"`--limit` must be >= 1. Received: --limit={FLAGS.limit}.")
    start = time.perf_counter()
    print(f"Demo: {' vs '.join(OBJECTIVES)} on Fashion-MNIST ({FLAGS.scale} configs) in {FLAGS.workdir}",
          flush=True)
    from attr_robust_tf import reproduction

    from attr_robust_tf.cli import common

    strategy = common.setup_runtime(reproduction.load_config("fashion_mnist", OBJECTIVES[0], FLAGS.scale))
    cells = []
    for i, objective in enumerate(OBJECTIVES):
        print(f"[{i + 1}/{len(OBJECTIVES)}] {objective}", flush=True)
        cells.append(reproduction.run_cell("fashion_mnist", objective, FLAGS.scale, FLAGS.workdir,
                                           limit=FLAGS.limit, strategy=strategy, verbose=1, progress=True,
                                           log=lambda message: print(message, flush=True)))
    report, figure = reproduction.write_demo_report(cells, FLAGS.workdir)
    p = cells[0]["protocol"]
    print(f"\nFashion-MNIST, protocol {p['name']} ({cells[0]['num_images']} test images; 95 % bootstrap "
          "intervals in brackets):\n")
    print(reproduction.results_table(cells, spearman=False))
    print(f"\nReport:  {report}\nAttacks: {figure}\nPer model: "
          + ", ".join(os.path.dirname(c["report_md"]) for c in cells))
    print(f"Done in {time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    define_flags()
    app.run(main)
