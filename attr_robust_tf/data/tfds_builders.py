"""TFDS builders that read the official local files through `attr_robust_tf.data`, so `tfds.load(...)` users get
the same arrays as `arrays(...)` (docs/datasets.md §2.5, §3.5). Needs the `tfds` extra; importing this module registers
`gtsrb`, `flower17` and `flowers102` with TFDS.

    import attr_robust_tf.data.tfds_builders  # registers the builders
    ds = tfds.load("gtsrb", split="test", download_and_prepare_kwargs={"download_config":
                   tfds.download.DownloadConfig(manual_dir="/data/gtsrb")})

MNIST and Fashion-MNIST keep TFDS's own builders; `prepare("mnist", tfds_data_dir=D)` writes them from the offline
sources, after which `tfds.load("mnist", data_dir=D, download=False)` works with no network.
"""
import os

try:
    import tensorflow_datasets as tfds
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("attr_robust_tf.data.tfds_builders needs tensorflow-datasets. Install the extra: "
                      "pip install 'attr_robust_tf[tfds]'.") from err

from attr_robust_tf.data import catalog, discovery, loaders

_INSTRUCTIONS = {
    "gtsrb": """\
Place the official GTSRB final-protocol files (https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/)
in the manual folder, as zips or extracted:
  GTSRB_Final_Training_Images.zip, GTSRB_Final_Test_Images.zip, GTSRB_Final_Test_GT.zip""",
    "flower17": """\
Place 17flowers.tgz (or its extracted jpg/ folder) and, for the official splits, datasplits.mat from
https://www.robots.ox.ac.uk/~vgg/data/flowers/17/ in the manual folder.""",
    "flowers102": """\
Place 102flowers.tgz (or its extracted jpg/ folder), imagelabels.mat and setid.mat from
https://www.robots.ox.ac.uk/~vgg/data/flowers/102/ in the manual folder.""",
}


def _examples(name, split, root):
    images, labels = loaders.arrays(name, split, data_dir=root)
    for i in range(len(labels)):
        yield i, {"image": images[i], "label": int(labels[i])}


class _LocalFilesBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Writes the splits of `DATASET` as `arrays` returns them (default image size and settings)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Built from the official files, checked by MD5 (attr_robust_tf.data)."}
    DATASET = None
    SPLITS = {}  # TFDS split name -> attr_robust_tf split name

    def _info(self):
        meta = catalog.DATASETS[self.DATASET]
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"{meta.title}, read from the official files by attr_robust_tf.data.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=meta.image_shape),
                "label": tfds.features.ClassLabel(names=list(meta.class_names)),
            }),
            supervised_keys=("image", "label"),
            homepage=meta.homepage,
            disable_shuffling=True,  # keep the official order, as `arrays` returns it
        )

    def _root(self, dl_manager):
        try:
            return os.fspath(dl_manager.manual_dir)
        except AssertionError:  # no manual folder: use the package's discovery ($ATTR_ROBUST_DATA, ...)
            return None

    def _splits(self, root):
        return dict(self.SPLITS)

    def _split_generators(self, dl_manager):
        root = self._root(dl_manager)
        return {tfds_split: self._generate_examples(split=split, root=root)
                for tfds_split, split in self._splits(root).items()}

    def _generate_examples(self, split, root):
        yield from _examples(self.DATASET, split, root)


class Gtsrb(_LocalFilesBuilder):
    """GTSRB final protocol: `train` = the 39,209 Final_Training images, `test` = the 12,630 Final_Test images."""

    name = "gtsrb"
    DATASET = "gtsrb"
    SPLITS = {"train": "train_full", "test": "test"}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS["gtsrb"]


class Flower17(_LocalFilesBuilder):
    """Flower-17: `train`/`test` = the seeded 72/8 protocol; `official{1,2,3}_{train,validation,test}` when
    datasplits.mat is present."""

    name = "flower17"
    DATASET = "flower17"
    SPLITS = {"train": "rar_train", "test": "rar_test"}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS["flower17"]

    def _splits(self, root):
        splits = dict(self.SPLITS)
        roots = discovery.Roots("flower17", root)
        folders = [f for r, _ in roots.roots for f in roots.folders(r)]
        if any(os.path.isfile(os.path.join(f, "datasplits.mat")) for f in folders):
            splits.update({f"official{k}_{s}": f"official{k}_{s}" for k in (1, 2, 3)
                           for s in ("train", "validation", "test")})
        return splits


class Flowers102(_LocalFilesBuilder):
    """Flowers-102 with the splits of setid.mat."""

    name = "flowers102"
    DATASET = "flowers102"
    SPLITS = {"train": "train", "validation": "validation", "test": "test"}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS["flowers102"]


def _offline_builder(name, data_dir):
    base = {"mnist": tfds.image_classification.MNIST,
            "fashion_mnist": tfds.image_classification.FashionMNIST}[name]

    class Offline(base, skip_registration=True):
        __doc__ = f"TFDS's `{base.name}` written from local files instead of downloads."

        def _info(self):
            info = super()._info()
            info.as_proto.disable_shuffling = True  # keep the official order, as `arrays` returns it
            return info

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(split="train_full"),
                    "test": self._generate_examples(split="test")}

        def _generate_examples(self, split):
            yield from _examples(name, split, data_dir)

    Offline.name = base.name  # same name and version: tfds.load(name, download=False) then reads these files
    return Offline


def prepare(name, *, tfds_data_dir=None, data_dir=None):
    """Builds the TFDS dataset `name` from local files, offline; returns the prepared builder.

    Args:
        name: 'mnist', 'fashion_mnist', 'gtsrb', 'flower17' or 'flowers102'.
        tfds_data_dir: the TFDS data folder (default TFDS's, ~/tensorflow_datasets).
        data_dir: the folder with the official files (default: the package's discovery; for GTSRB and the
            flowers it is TFDS's manual folder).
    """
    if name not in catalog.DATASETS:
        loaders.info(name)  # raises the did-you-mean error
    config = tfds.download.DownloadConfig(try_download_gcs=False,
                                          manual_dir=None if data_dir is None else os.fspath(data_dir))
    if name in ("mnist", "fashion_mnist"):
        builder = _offline_builder(name, data_dir)(data_dir=tfds_data_dir)
    else:
        builder = tfds.builder(name, data_dir=tfds_data_dir)
    builder.download_and_prepare(download_config=config)
    return builder
