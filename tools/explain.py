"""Save attribution maps of a saved model as PNGs (docs/evaluation.md).

  python tools/explain.py --model=runs/x/model.keras --images=fashion_mnist:test:0,1,2 --out_dir=runs/x/maps
  python tools/explain.py --model=... --images=shoe.png,bag.npy --methods=ig,saliency --ig_steps=100

Each image gets <out_dir>/<name>.png: the image, then one map per method (normalised saliency, docs/method.md §3)
with its top-k pixels marked. The raw maps go to <out_dir>/maps.npz.
"""
import os

from absl import app, flags, logging

FLAGS = flags.FLAGS
METHODS = ("ig", "saliency", "input_x_gradient", "smoothgrad")


def define_flags():
    # Flags are defined here, not at import, so importing this file never registers them twice.
    flags.DEFINE_string("model", None, "Path of a .keras model (a RobustModel is explained through its .model).")
    flags.DEFINE_list("images", None, "Image files (.png, .jpg, .npy) or dataset indices as name:split:i,j,...")
    flags.DEFINE_list("methods", ["ig", "saliency"], f"Attribution methods, any of {', '.join(METHODS)}.")
    flags.DEFINE_integer("ig_steps", 100, "Right-Riemann points of Integrated Gradients (zero baseline).")
    flags.DEFINE_string("target", "predicted", "Class to explain: 'predicted' or a class index.")
    flags.DEFINE_integer("k", 100, "Mark the top-k pixels of each map (0: none).")
    flags.DEFINE_string("out_dir", None, "Output folder.")
    flags.DEFINE_string("data_dir", None, "Folder holding the dataset files (for name:split:indices).")


def _read_images(specs, shape):
    """(images float32 (N, H, W, C) in [0, 1], names) from files or `name:split:i,j` specs."""
    import numpy as np
    from PIL import Image

    from attr_robust_tf import data

    images, names = [], []
    specs = list(specs)
    while specs:
        spec = specs.pop(0)
        if spec.count(":") == 2:  # name:split:i — flags.DEFINE_list split "name:split:0,1" at the commas
            dataset, split, first = spec.split(":")
            indices = [int(first)]
            while specs and specs[0].isdigit():
                indices.append(int(specs.pop(0)))
            for i in indices:
                x, _ = data.arrays(dataset, split, limit=1, offset=i, data_dir=FLAGS.data_dir)
                images.append(x[0].astype(np.float32) / 255.0)
                names.append(f"{dataset}_{split}_{i}")
            continue
        if not os.path.isfile(spec):
            raise app.UsageError(f"`--images` must list image files or name:split:indices. Received: {spec!r}")
        if spec.endswith(".npy"):
            x = np.load(spec).astype(np.float32)
            x = x / 255.0 if x.max() > 1.0 else x
        else:
            mode = "L" if shape[-1] == 1 else "RGB"
            img = Image.open(spec).convert(mode).resize(shape[1::-1], Image.Resampling.LANCZOS)
            x = np.asarray(img, np.float32) / 255.0
        images.append(x.reshape(shape))
        names.append(os.path.splitext(os.path.basename(spec))[0])
    return np.stack(images), names


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not FLAGS.model or not os.path.isfile(FLAGS.model):
        raise app.UsageError(f"`--model` must be an existing .keras file. Received: --model={FLAGS.model}")
    if not FLAGS.images or not FLAGS.out_dir:
        raise app.UsageError("`--images` and `--out_dir` must be given.")
    unknown = sorted(set(FLAGS.methods) - set(METHODS))
    if unknown:
        raise app.UsageError(f"`--methods` must be among {', '.join(METHODS)}. Received: {', '.join(unknown)}")

    import keras  # after flag parsing: TF start-up is slow and --help should not pay for it
    import numpy as np

    import attr_robust_tf as art
    from attr_robust_tf import evaluation_report, models, robust_model  # noqa: F401
    from attr_robust_tf.attacks.attribution import unwrap

    model = unwrap(keras.models.load_model(FLAGS.model, compile=False))
    images, names = _read_images(FLAGS.images, tuple(model.input_shape[1:]))
    target = FLAGS.target if FLAGS.target == "predicted" else np.full(len(images), int(FLAGS.target), np.int32)
    explain = {
        "ig": lambda: art.integrated_gradients(model, images, target, steps=FLAGS.ig_steps),
        "saliency": lambda: art.saliency(model, images, target),
        "input_x_gradient": lambda: art.input_x_gradient(model, images, target),
        "smoothgrad": lambda: art.smoothgrad(model, images, target, seed=0),
    }
    maps = {m: art.saliency_map(explain[m]()).numpy() for m in FLAGS.methods}
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    scale = max(1, 112 // images.shape[1])
    for i, name in enumerate(names):
        row = [evaluation_report.image_panel(images[i], scale=scale)]
        row += [evaluation_report.map_panel(maps[m][i], k=FLAGS.k, scale=scale) for m in FLAGS.methods]
        panel = evaluation_report.grid([row], header=["image"] + list(FLAGS.methods))
        evaluation_report.save_png(panel, os.path.join(FLAGS.out_dir, f"{name}.png"))
    with open(os.path.join(FLAGS.out_dir, ".maps.npz.tmp"), "wb") as f:
        np.savez(f, images=images, names=np.array(names), **maps)
    os.replace(os.path.join(FLAGS.out_dir, ".maps.npz.tmp"), os.path.join(FLAGS.out_dir, "maps.npz"))
    logging.info("Wrote %d PNGs and maps.npz to %s", len(names), FLAGS.out_dir)


if __name__ == "__main__":
    define_flags()
    app.run(main)
