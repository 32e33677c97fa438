"""Evaluate the attributional robustness of a saved model (docs/evaluation.md).

  python tools/evaluate.py --model=runs/x/model.keras --protocol=fmnist:cpu --workdir=runs/x/eval
  python tools/evaluate.py ... --limit=100 --offset=200 --set=restarts=1
  python tools/evaluate.py ... --ensemble   # worst case over topk, mass_center and random_sign

Writes <workdir>/report.json, report.md (the paper-style table) and attacks.png, keeping per-chunk results in
<workdir>/chunks/: an interrupted run resumes where it stopped when started again with the same flags.
"""
import os
import shutil

from absl import app, flags, logging

FLAGS = flags.FLAGS


def define_flags():
    # Flags are defined here, not at import, so importing this file never registers them twice.
    flags.DEFINE_string("model", None, "Path of a .keras model (a RobustModel is evaluated through its .model).")
    flags.DEFINE_string("protocol", "fmnist:cpu", "Protocol preset, e.g. mnist:reference, fmnist:cpu, tiny.")
    flags.DEFINE_string("workdir", None, "Output folder for report.json, report.md, attacks.png and chunks/.")
    flags.DEFINE_integer("limit", None, "Evaluate at most this many test images (overrides the preset).")
    flags.DEFINE_integer("offset", None, "Index of the first test image (overrides the preset).")
    flags.DEFINE_multi_string("set", [], "Protocol field override field=value, e.g. --set=restarts=1.")
    flags.DEFINE_string("data_dir", None, "Folder holding the dataset files (default: the usual locations).")
    flags.DEFINE_integer("examples", 6, "Rows of attacks.png.")
    flags.DEFINE_bool("overwrite", False, "Delete saved chunks and start over instead of resuming.")
    flags.DEFINE_bool("progress", True, "Show a progress bar.")
    flags.DEFINE_bool("ensemble", False, "Worst case over the attack ensemble topk, mass_center, random_sign "
                      "(per image and metric), instead of the protocol's single attack.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not FLAGS.model or not os.path.isfile(FLAGS.model):
        raise app.UsageError(f"`--model` must be an existing .keras file. Received: --model={FLAGS.model}")
    if not FLAGS.workdir:
        raise app.UsageError("`--workdir` must be given. Received: --workdir=None")

    import keras  # after flag parsing: TF start-up is slow and --help should not pay for it

    # Importing these registers the package's serializable classes (RobustModel, custom layers).
    from attr_robust_tf import config_utils, evaluation, evaluation_report, models, protocols, robust_model  # noqa

    overrides = {k: v for k, v in (("num_images", FLAGS.limit), ("offset", FLAGS.offset)) if v is not None}
    try:
        overrides.update(config_utils.parse_overrides(FLAGS.set, "A protocol override", "field=value"))
        if FLAGS.ensemble and "ensemble" not in overrides:
            overrides["ensemble"] = protocols.DEFAULT_ENSEMBLE
        protocol = protocols.get_protocol(FLAGS.protocol, **overrides)
    except ValueError as e:  # user mistakes: usage message, exit 1
        raise app.UsageError(str(e)) from None
    chunk_dir = os.path.join(FLAGS.workdir, "chunks")
    if FLAGS.overwrite and os.path.isdir(chunk_dir):
        shutil.rmtree(chunk_dir)
    model = keras.models.load_model(FLAGS.model, compile=False)
    dataset = evaluation.protocol_dataset(protocol, data_dir=FLAGS.data_dir)
    logging.info("Evaluating %s with protocol %s: %s", FLAGS.model, protocol.name, protocol.note)
    try:
        report = evaluation.evaluate_robustness(model, dataset, protocol, chunk_dir=chunk_dir,
                                                progress=FLAGS.progress)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    evaluation_report.write_report(report, FLAGS.workdir, count=FLAGS.examples)
    logging.info("Wrote report.json, report.md and attacks.png to %s", FLAGS.workdir)
    print(evaluation_report.format_markdown(report).split("\n\n")[1])  # the results table


if __name__ == "__main__":
    define_flags()
    app.run(main)
