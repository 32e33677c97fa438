"""One read interface over a zip, a tar(.gz) or an extracted folder: member names are POSIX paths relative to the
archive root, so `GTSRB/Final_Test/Images/00000.ppm` means the same file in the zip and in its extracted tree."""
import hashlib
import os
import tarfile
import zipfile
import zlib

from attr_robust_tf.data import images as images_lib


class ZipTree:
    def __init__(self, path):
        self.path = os.fspath(path)
        try:
            self._zip = zipfile.ZipFile(self.path)
            infos = self._zip.infolist()
        except (zipfile.BadZipFile, OSError) as err:
            raise ValueError(f"{self.path} is not a readable zip archive ({err}); it is truncated or corrupt. "
                             "Get it again.") from None
        self.names = {i.filename for i in infos if not i.is_dir()}
        # Folders, including those only implied by member paths (zips need not store folder entries).
        self.dirs = {i.filename.rstrip("/") for i in infos if i.is_dir()}
        self.dirs |= {n.rsplit("/", 1)[0] for n in self.names if "/" in n}

    def where(self, name):
        return f"{name} in {self.path}"

    def read(self, name):
        try:
            return self._zip.read(name)  # zipfile serialises reads of the shared file with a lock
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise ValueError(f"{self.where(name)} could not be read ({err}); the archive is corrupt.") from None

    def decode(self, names, fn):
        return images_lib.parallel_map(lambda n: fn(n, self.read(n)), names)

    def close(self):
        self._zip.close()


class DirTree:
    """An extracted tree below `root`; only `under` (a relative folder) is listed when given, or only the
    files `only` (relative names) when given."""

    def __init__(self, root, *, under=None, only=None):
        self.path = os.fspath(root)
        self.names, self.dirs = set(), set()
        if only is not None:
            self.names = set(only)
            return
        start = os.path.join(self.path, *under.strip("/").split("/")) if under else self.path
        for folder, subdirs, files in os.walk(start):
            rel = os.path.relpath(folder, self.path).replace(os.sep, "/")
            rel = "" if rel == "." else rel + "/"
            self.dirs.update(rel + d for d in subdirs)
            self.names.update(rel + f for f in files)

    def where(self, name):
        return os.path.join(self.path, *name.split("/"))

    def read(self, name):
        with open(self.where(name), "rb") as f:
            return f.read()

    def decode(self, names, fn):
        return images_lib.parallel_map(lambda n: fn(n, self.read(n)), names)

    def digest(self, names=None):
        """A digest of (name, size, mtime) of `names` (default all): the cache key of an extracted tree."""
        h = hashlib.sha1()
        for name in sorted(self.names if names is None else names):
            st = os.stat(self.where(name))
            h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()

    def close(self):
        pass


class TarTree:
    """A tar or tar.gz archive, read sequentially (seeking back in a gzip stream would decompress it again)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        try:
            with tarfile.open(self.path, "r:*") as tar:
                self.names = {_norm(m.name) for m in tar.getmembers() if m.isfile()}
        except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
            raise ValueError(f"{self.path} is not a readable tar archive ({err}); it is truncated or corrupt. "
                             "Get it again.") from None
        self.dirs = {n.rsplit("/", 1)[0] for n in self.names if "/" in n}

    def where(self, name):
        return f"{name} in {self.path}"

    def decode(self, names, fn, chunk=512):
        wanted, out, batch = set(names), {}, []

        def flush():
            for name, value in zip([b[0] for b in batch], images_lib.parallel_map(lambda b: fn(*b), batch)):
                out[name] = value
            batch.clear()

        try:
            with tarfile.open(self.path, "r:*") as tar:
                for member in tar:
                    name = _norm(member.name)
                    if member.isfile() and name in wanted:
                        batch.append((name, tar.extractfile(member).read()))
                        if len(batch) >= chunk:
                            flush()
        except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
            raise ValueError(f"{self.path} could not be read to the end ({err}); it is truncated or corrupt. "
                             "Get it again.") from None
        flush()
        return [out[n] for n in names]

    def close(self):
        pass


def _norm(name):
    return name[2:] if name.startswith("./") else name
