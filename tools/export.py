"""Export a trained model as a SavedModel with `serve` and `explain` endpoints (docs/serving.md).

  python tools/export.py --model=runs/mnist/model.keras --export_dir=/srv/models/mnist/1 --ig_steps=50
  python tools/export.py --workdir=runs/mnist     # model.keras -> runs/mnist/export/<unix time>

The artifact loads with TensorFlow alone (`tf.saved_model.load`, `saved_model_cli show --all --dir ...`).
"""
import os
import time

from absl import app, flags, logging

FLAGS = flags.FLAGS


def define_flags():
    # Flags are defined here, not at import, so importing this file never registers them twice.
    flags.DEFINE_string("model", None, "Path of a .keras model (a RobustModel or a plain Keras model).")
    flags.DEFINE_string("workdir", None, "Training workdir: reads workdir/model.keras when --model is unset "
                        "and exports to workdir/export/<unix time> when --export_dir is unset.")
    flags.DEFINE_string("export_dir", None, "Directory to write the SavedModel to.")
    flags.DEFINE_integer("ig_steps", 50, "Integrated Gradients path points frozen into `explain`.")
    flags.DEFINE_string("method", "riemann_right", "IG quadrature rule (attributions.METHODS).")
    flags.DEFINE_string("score", "logit", "Attributed score (scores.SCORES).")
    flags.DEFINE_bool("overwrite", False, "Replace a non-empty --export_dir.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    model_path = FLAGS.model or (FLAGS.workdir and os.path.join(FLAGS.workdir, "model.keras"))
    if not model_path:
        raise app.UsageError("`--model` (or `--workdir`) must be given. Received neither.")
    if not os.path.isfile(model_path):
        raise app.UsageError(f"`--model` must be an existing .keras file. Received: --model={model_path}")
    export_dir = FLAGS.export_dir or (
        FLAGS.workdir and os.path.join(FLAGS.workdir, "export", str(int(time.time()))))
    if not export_dir:
        raise app.UsageError("`--export_dir` (or `--workdir`) must be given. Received neither.")

    import keras  # after flag parsing: TF start-up is slow and --help should not pay for it

    # Importing these registers the package's serializable classes (RobustModel, custom layers).
    from attr_robust_tf import export, models, robust_model  # noqa: F401

    model = keras.models.load_model(model_path, compile=False)
    try:
        path = export.export_saved_model(model, export_dir, ig_steps=FLAGS.ig_steps, method=FLAGS.method,
                                         score=FLAGS.score, overwrite=FLAGS.overwrite)
    except (FileExistsError, ValueError) as e:  # user mistakes: usage message, exit 1
        raise app.UsageError(str(e)) from None
    logging.info("Exported %s to %s", model_path, path)
    print(path)


if __name__ == "__main__":
    define_flags()
    app.run(main)
