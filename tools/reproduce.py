"""Train and evaluate every objective with one protocol and write docs/RESULTS.md (docs/reproduce.md).

  python tools/reproduce.py --datasets=mnist,fashion_mnist --objectives=all --scale=cpu --workdir=runs/repro
  python tools/reproduce.py --datasets=fmnist --objectives=natural,sarkar2021 --scale=tiny \
      --workdir=/tmp/r --results=/tmp/r/RESULTS.md
  python tools/reproduce.py --datasets=fmnist --objectives=ig_sum_norm,sarkar2021,sarkar2021@train.epochs=4
  python tools/reproduce.py --datasets=mnist,fmnist --objectives=all --scale=medium --workdir=runs/repro \
      --pareto_dirs=runs/pareto/ig_sum_norm,runs/pareto/sarkar2021    # + the cpu tables of the same workdir
  python tools/reproduce.py --scale=medium --workdir=runs/repro --render_only    # the page of what is finished

Rerunning the same command resumes: finished models and evaluations are reused, an interrupted training
continues from its last epoch and an interrupted evaluation from its last saved chunk.
"""
import os
import shlex
import sys

from absl import app, flags

FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def define_flags():
    flags.DEFINE_string("datasets", "mnist,fashion_mnist", "Comma-separated: mnist, fashion_mnist (fmnist), gtsrb, "
                        "flower17.")
    flags.DEFINE_string("objectives", "all", "`all` or a comma-separated list of natural, madry, trades, ig_norm, "
                        "ig_sum_norm, art, sarkar2021, igr; an entry may add config overrides for an ablation, "
                        "e.g. sarkar2021@robust.weights.cacr=1+robust.weights.wacr=1, and a dataset prefix that runs "
                        "it on that dataset only, e.g. fmnist:madry@model.name=cpu_cnn_avgpool.")
    flags.DEFINE_enum("scale", "cpu", ["tiny", "cpu", "medium", "reference"],
                      "tiny: synthetic 8×8 data, minutes (tests the tool); cpu: real data, about an hour on 2 "
                      "cores; medium (MNIST, Fashion-MNIST): 20,000 images to convergence with early stopping, "
                      "1,000 test images × 3 restarts, several sessions (resumes); reference: the papers' "
                      "settings (GPU).")
    flags.DEFINE_string("workdir", "runs/repro", "Root folder of every model and evaluation (resumable).")
    flags.DEFINE_string("results", os.path.join(ROOT, "docs", "RESULTS.md"),
                        "Where to write the results page (its bar chart goes next to it as .png).")
    flags.DEFINE_integer("limit", None, "Evaluate at most this many test images per model (default: the "
                         "protocol's).")
    flags.DEFINE_integer("study_images", None, "Images of the restart study (default: 4 tiny, 40 cpu, 100 "
                         "reference; 0: no study).")
    flags.DEFINE_list("include_scales", None, "Also put the finished cells of these scales under --workdir on the "
                      "page, without running anything (default: cpu when --scale=medium).")
    flags.DEFINE_list("pareto_dirs", [], "Folders of tools/tune.py --pareto runs whose fronts go into one figure "
                      "of the page.")
    flags.DEFINE_bool("render_only", False, "Write the page from the cells already finished under --workdir, "
                      "without training or evaluating anything; the unfinished ones are named as pending.")
    flags.DEFINE_integer("counterfactual_images", 0, "Also attack, per finished cell, the model with its first-layer "
                         "filters that fire on an ε-raised black patch moved above ε (docs/method.md §15) on this "
                         "many test images (0: off; resumable).")
    flags.DEFINE_bool("progress", True, "Show progress bars.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from attr_robust_tf import reproduction  # after flag parsing: TF start-up is slow

    try:
        datasets = reproduction.parse_datasets(FLAGS.datasets)
        objectives = reproduction.parse_objectives(FLAGS.objectives)
        reproduction.check_prefixes(objectives, datasets)
        grid = [(d, e) for d in datasets for e in reproduction.entries_for(objectives, d)]
        config = reproduction.load_config(*grid[0], FLAGS.scale)
    except (ValueError, FileNotFoundError) as error:  # user mistakes: usage message, exit 1
        raise app.UsageError(str(error)) from None
    for name in ("limit", "study_images", "counterfactual_images"):
        value = getattr(FLAGS, name)
        if value is not None and value < (1 if name == "limit" else 0):
            raise app.UsageError(f"`--{name}` must be >= {1 if name == 'limit' else 0}. "
                                 f"Received: --{name}={value}.")
    include = FLAGS.include_scales
    if include is None:
        include = ["cpu"] if FLAGS.scale == "medium" else []
    for scale in include:
        if scale not in reproduction.SCALES:
            raise app.UsageError(f"`--include_scales` must list scales of {', '.join(reproduction.SCALES)}. "
                                 f"Received: {scale!r}.")
    for folder in FLAGS.pareto_dirs:
        if not os.path.isfile(os.path.join(folder, "pareto.json")):
            raise app.UsageError(f"`--pareto_dirs` must name folders of tools/tune.py --pareto runs. Received: "
                                 f"{folder} without pareto.json.")
    if os.path.isfile(FLAGS.workdir):
        raise app.UsageError(f"`--workdir` must be a folder. Received: --workdir={FLAGS.workdir} (a file).")

    from attr_robust_tf.cli import common

    strategy = common.setup_runtime(config)  # logical CPUs, determinism, seeds, logging
    from absl import logging

    command = "python tools/reproduce.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    try:
        reproduction.reproduce(datasets, objectives, FLAGS.scale, FLAGS.workdir, results=FLAGS.results,
                               limit=FLAGS.limit, study_images=FLAGS.study_images, command=command,
                               strategy=strategy, verbose=1 if FLAGS.progress else 2, progress=FLAGS.progress,
                               log=logging.info, include_scales=include, pareto_dirs=FLAGS.pareto_dirs,
                               render_only=FLAGS.render_only, counterfactual_images=FLAGS.counterfactual_images)
    except ValueError as error:
        if FLAGS.render_only:  # nothing finished to render: a usage mistake
            raise app.UsageError(str(error)) from None
        raise
    print(f"Wrote {FLAGS.results} and {os.path.splitext(FLAGS.results)[0]}.png")


if __name__ == "__main__":
    define_flags()
    app.run(main)
