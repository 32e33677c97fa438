"""Decoded-array caches: one dict per process, plus `.npz` files for the sets that are slow to decode.

Every write goes to a temporary name in the target folder and is renamed into place, so an interrupted or
failed load never leaves a half-written file (docs/conventions.md §7).
"""
import hashlib
import json
import os
import tempfile

import numpy as np

ENV_CACHE = "ATTR_ROBUST_CACHE"

# (dataset, part, source fingerprint, settings) -> (images, labels, extras); arrays are read-only.
_MEMORY = {}


def resolve_dir(cache_dir=None):
    """`cache_dir`, else $ATTR_ROBUST_CACHE, else $XDG_CACHE_HOME/attr_robust_tf (~/.cache/attr_robust_tf)."""
    if cache_dir is not None:
        return os.fspath(cache_dir)
    if os.environ.get(ENV_CACHE):
        return os.environ[ENV_CACHE]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "attr_robust_tf")


def _temp_in(path):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    return fd, tmp


def atomic_write_text(path, text):
    fd, tmp = _temp_in(path)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def atomic_write_npz(path, **arrays):
    fd, tmp = _temp_in(path)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def key_digest(settings):
    """A short stable digest of a JSON-serialisable settings dict."""
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:16]


def npz_path(cache_dir, dataset, part, settings):
    return os.path.join(resolve_dir(cache_dir), "arrays", f"{dataset}-{part}-{key_digest(settings)}.npz")


def read_npz(path, settings):
    """The arrays stored at `path` if it exists and was written with `settings`, else None."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            if str(f["settings"]) != json.dumps(settings, sort_keys=True, default=str):
                return None
            return {k: f[k] for k in f.files if k != "settings"}
    except (OSError, ValueError, KeyError):
        return None  # unreadable cache: decode again and overwrite it


def write_npz(path, settings, arrays):
    atomic_write_npz(path, settings=np.asarray(json.dumps(settings, sort_keys=True, default=str)), **arrays)


def remember(key, value):
    for array in value.values():
        array.flags.writeable = False  # callers get views of the cached arrays
    _MEMORY[key] = value
    return value


def recall(key):
    return _MEMORY.get(key)


def clear_memory():
    _MEMORY.clear()
