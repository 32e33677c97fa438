"""Atomic file writes on `tf.io.gfile`: a reader sees the old file or the new one, never a part."""
import os

import tensorflow as tf


def write_atomic(path, content):
    """Writes `path` atomically: a temporary file in the same folder, then a rename over `path`.

    `content` is text, bytes, or a function that writes the file at the temporary path it is given
    (`lambda tmp: model.save(tmp)`; the temporary name ends with the name of `path`, so suffix checks pass). On
    `tf.io.gfile`, so the path may be local or remote (gs://, hdfs://); a reader sees the old file or the new one,
    never a part. The one atomic-write helper of the package.
    """
    path = os.fspath(path)
    folder, name = os.path.split(path)
    if folder:
        tf.io.gfile.makedirs(folder)
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{name}")
    try:
        if callable(content):
            content(tmp)
        else:
            with tf.io.gfile.GFile(tmp, "wb" if isinstance(content, bytes) else "w") as f:
                f.write(content)
        tf.io.gfile.rename(tmp, path, overwrite=True)
    except BaseException:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.remove(tmp)
        raise
