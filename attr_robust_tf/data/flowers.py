"""Oxford Flower-17 (docs/datasets.md §4) and Flowers-102 (docs/datasets.md §5): `jpg/image_*.jpg` in a `.tgz` or a folder, labels
from the file index (17) or `imagelabels.mat` (102), splits from `.mat` files or the reference's seeded 72/8 rule."""
import os
import re

import numpy as np
import scipy.io

from attr_robust_tf.data import archives, discovery, download
from attr_robust_tf.data import images as images_lib
from attr_robust_tf.data import verify as verify_lib

FLOWER17_CLASSES = ("Daffodil", "Snowdrop", "LilyValley", "Bluebell", "Crocus", "Iris", "Tigerlily", "Tulip",
                    "Fritillary", "Sunflower", "Daisy", "ColtsFoot", "Dandelion", "Cowslip", "Buttercup",
                    "Windflower", "Pansy")
FLOWER17_PER_CLASS = 80
FLOWER17_SIZE = 17 * FLOWER17_PER_CLASS
RAR_SEED = 4557077  # docs/datasets.md §4.3: np.random.seed(4557077) in the reference's generate_data.py
RAR_TRAIN_PER_CLASS = 72  # the rest (8 per class) is the reference's test split
# docs/datasets.md §4.3: the reference listed class folders "0".."16" with a string sort, so official class c got the rank
# of str(c) among the sorted strings. Needed only to compare per-class results with reference checkpoints.
FLOWER17_REFERENCE_LABELS = tuple(sorted(str(c) for c in range(17)).index(str(c)) for c in range(17))

LAYOUT17 = """\
  <root>/17flowers.tgz        jpg/image_0001.jpg .. jpg/image_1360.jpg (80 per class, in class order)
  or <root>/jpg/image_0001.jpg .. image_1360.jpg (the archive extracted)
  <root>/datasplits.mat       optional; needed only for the official1..3 splits"""
LAYOUT102 = """\
  <root>/102flowers.tgz       jpg/image_00001.jpg .. jpg/image_08189.jpg
  or <root>/jpg/image_00001.jpg .. (the archive extracted)
  <root>/imagelabels.mat      key `labels`: 1-based class of every image
  <root>/setid.mat            keys `trnid`, `valid`, `tstid`: 1-based image ids"""

_CONFIG = {
    "flower17": dict(title="Oxford Flower-17", archive="17flowers.tgz", digits=4, layout=LAYOUT17,
                     url=verify_lib.FLOWER17_URL, mats=(), optional_mats=("splits",)),
    "flowers102": dict(title="Oxford Flowers-102", archive="102flowers.tgz", digits=5, layout=LAYOUT102,
                       url=verify_lib.FLOWERS102_URL, mats=("labels", "setid"), optional_mats=()),
}
FLOWERS102_SPLIT_KEYS = {"train": "trnid", "validation": "valid", "test": "tstid"}


def rar_split(seed=RAR_SEED, train_per_class=RAR_TRAIN_PER_CLASS):
    """The seeded Flower-17 protocol of the reference code (docs/datasets.md §4.3): 0-based image positions (index − 1).

    Walks `RandomState(seed).permutation(1360)`: an image goes to train while its class has fewer than
    `train_per_class` there, to test otherwise. Both lists are in walk order.

    Returns:
        (train, test): int64 arrays of sizes 17·72 and 17·8 with the defaults.
    """
    perm = np.random.RandomState(seed).permutation(FLOWER17_SIZE)
    taken = np.zeros(17, int)
    train, test = [], []
    for position in perm:
        label = position // FLOWER17_PER_CLASS  # label = (index − 1) // 80 with index = position + 1
        if taken[label] < train_per_class:
            taken[label] += 1
            train.append(position)
        else:
            test.append(position)
    return np.asarray(train, np.int64), np.asarray(test, np.int64)


class Source:
    def __init__(self, name, folder, images, mats, verify, cache_dir):
        self.name, self.folder = name, folder
        self.images_kind, self.images_path = images  # ("tgz" | "dir", path)
        self.mats = mats  # role -> path
        self.verify, self.cache_dir = verify, cache_dir
        spec = verify_lib.FILES[name]
        if self.images_kind == "tgz":
            images_key = verify_lib.check_file(self.images_path, spec["images"], verify=verify,
                                               cache_dir=cache_dir)
        else:
            images_key = archives.DirTree(self.images_path, under="jpg").digest()
        self.key = [images_key] + [self.mat_md5(role) for role in _CONFIG[name]["mats"]]

    def describe(self):
        return self.folder

    def mat_md5(self, role):
        return verify_lib.check_file(self.mats[role], verify_lib.FILES[self.name][role], verify=self.verify,
                                     cache_dir=self.cache_dir)

    def load_mat(self, role, keys):
        """The 1-D int arrays `keys` of the `.mat` file of `role`, checked, as a dict."""
        if role not in self.mats:
            spec = verify_lib.FILES[self.name][role]
            raise FileNotFoundError(
                f"The requested split needs {spec.filename}, which is not in {self.folder}. Place the official "
                f"file there (from {spec.url}). Expected:\n{_CONFIG[self.name]['layout']}")
        path = self.mats[role]
        self.mat_md5(role)
        try:
            content = scipy.io.loadmat(path, squeeze_me=True)
        except Exception as err:  # noqa: BLE001 - scipy raises several types for a corrupt file
            raise ValueError(f"{path} is not a readable MATLAB file ({err}). Get it again.") from None
        out = {}
        for key in keys:
            if key not in content:
                found = sorted(k for k in content if not k.startswith("__"))
                raise ValueError(f"{path} must hold the key {key!r}. Received: keys {found}.")
            value = np.atleast_1d(np.asarray(content[key]))
            if value.ndim != 1 or value.dtype.kind not in "iuf" or not np.all(value == np.round(value)):
                raise ValueError(f"{path}: {key!r} must be a 1-D list of integers. Received: dtype "
                                 f"{value.dtype}, shape {value.shape}.")
            out[key] = value.astype(np.int64)
        return out


def _find(name, folder):
    cfg = _CONFIG[name]
    spec = verify_lib.FILES[name]
    tgz = os.path.join(folder, cfg["archive"])
    jpg = os.path.join(folder, "jpg")
    if os.path.isfile(tgz):
        images = ("tgz", tgz)
    elif os.path.isdir(jpg):
        images = ("dir", folder)
    else:
        return None, []
    mats, missing = {}, []
    for role in cfg["mats"] + cfg["optional_mats"]:
        path = os.path.join(folder, spec[role].filename)
        if os.path.isfile(path):
            mats[role] = path
        elif role in cfg["mats"]:
            missing.append(spec[role].filename)
    return (images, mats), missing


def locate(name, roots, *, download_ok=False, verify=True, cache_dir=None):
    cfg = _CONFIG[name]
    for folder in roots.candidates():
        found, missing = _find(name, folder)
        if found is None:
            continue
        if missing and download_ok:
            break  # fetch the missing files (into data_dir or the cache folder)
        if missing:
            raise FileNotFoundError(f"{folder} holds {cfg['title']} images but not {', '.join(missing)}. "
                                    f"Expected:\n{cfg['layout']}\nOfficial source: {cfg['url']}")
        return Source(name, folder, found[0], found[1], verify, cache_dir)
    if download_ok:
        target = roots.download_target
        download.fetch(list(verify_lib.FILES[name].values()), target, verify=verify)
        found, _ = _find(name, target)
        return Source(name, target, found[0], found[1], verify, cache_dir)
    raise discovery.not_found(name, cfg["title"], roots.looked, cfg["layout"], cfg["url"], roots.download_dir)


def _tree(source):
    if source.images_kind == "tgz":
        return archives.TarTree(source.images_path)
    return archives.DirTree(source.images_path, under="jpg")


def _decode_one(name, data, *, where, size, resample):
    return images_lib.decode(data, where, size=size, resample=resample)


def decode(source, part, settings):
    """{"all": {"images": uint8 (N, h, w, 3), "labels": int32 (N,)}}, images in index order."""
    cfg = _CONFIG[source.name]
    if source.name == "flower17":
        count = FLOWER17_SIZE
        labels = np.arange(count) // FLOWER17_PER_CLASS  # docs/datasets.md §4.2: label = (index − 1) // 80
    else:
        raw = source.load_mat("labels", ["labels"])["labels"]
        if raw.size == 0 or raw.min() < 1:
            raise ValueError(f"{source.mats['labels']}: 'labels' must be 1-based classes 1..102. Received: "
                             f"min {raw.min() if raw.size else None}.")
        count, labels = len(raw), raw - 1
    tree = _tree(source)
    pattern = re.compile(r"^jpg/image_(\d{%d})\.jpg$" % cfg["digits"])
    present = {int(m.group(1)): n for n in tree.names if (m := pattern.match(n))}
    wanted = range(1, count + 1)
    missing = [i for i in wanted if i not in present]
    if missing:
        fmt = "image_%0{}d.jpg".format(cfg["digits"])
        shown = ", ".join(fmt % i for i in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ValueError(f"{tree.path} must hold jpg/{fmt % 1} .. jpg/{fmt % count} ({count:,} images). "
                         f"Received: {len(missing):,} missing ({shown}). Expected:\n{cfg['layout']}")
    names = [present[i] for i in wanted]
    size, resample = tuple(settings["image_size"]), settings["resample"]
    decoded = tree.decode(names, lambda n, data: _decode_one(n, data, where=tree.where(n), size=size,
                                                               resample=resample))
    return {part: {"images": np.stack(decoded), "labels": labels.astype(np.int32)}}


def _ids_to_positions(ids, count, where):
    if ids.size and (ids.min() < 1 or ids.max() > count):
        raise ValueError(f"{where} must hold 1-based image ids in 1..{count}. Received: min {ids.min()}, max "
                         f"{ids.max()}.")
    if len(np.unique(ids)) != len(ids):
        raise ValueError(f"{where} must not repeat an image id. Received: {len(ids) - len(np.unique(ids))} "
                         "repeats.")
    return ids - 1


def select(name, split, source, arrays, split_seed):
    count = len(arrays["labels"])
    if split == "all":
        return slice(None)
    if name == "flower17":
        if split in ("train", "test", "rar_train", "rar_test"):
            train, test = rar_split(RAR_SEED if split_seed is None else split_seed)
            return train if split.endswith("train") else test
        match = re.fullmatch(r"official([123])_(train|validation|test)", split)
        key = {"train": "trn", "validation": "val", "test": "tst"}[match.group(2)] + match.group(1)
        ids = source.load_mat("splits", [key])[key]
        return _ids_to_positions(ids, count, f"{source.mats['splits']} key {key!r}")
    key = FLOWERS102_SPLIT_KEYS[split]
    ids = source.load_mat("setid", [key])[key]
    return _ids_to_positions(ids, count, f"{source.mats['setid']} key {key!r}")
