"""`download=True`: fetch official files once, check them, and rename them into place (never on by default)."""
import os
import tempfile
import urllib.error
import urllib.request

from attr_robust_tf.data import idx
from attr_robust_tf.data import verify as verify_lib


def fetch(specs, folder, *, verify=True, timeout=60):
    """Downloads every `FileSpec` in `specs` that `folder` does not hold yet; returns the local paths.

    Each file is streamed to a temporary name in `folder`, checked (IDX: MD5 of the decompressed bytes), and
    renamed only if it passes, so a failed or interrupted download leaves nothing behind.
    """
    os.makedirs(folder, exist_ok=True)
    paths = []
    for spec in specs:
        target = os.path.join(folder, spec.url.rsplit("/", 1)[-1])
        paths.append(target)
        if os.path.exists(target):
            continue
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(target) + ".", suffix=".part", dir=folder)
        try:
            with os.fdopen(fd, "wb") as out:
                try:
                    with urllib.request.urlopen(spec.url, timeout=timeout) as response:
                        while block := response.read(1 << 20):
                            out.write(block)
                except (urllib.error.URLError, OSError) as err:
                    raise OSError(f"Could not download {spec.url} ({err}). Place the file at {target} by hand "
                                  "(see docs/data.md).") from None
            if verify:
                if spec.decompressed:
                    verify_lib.check_bytes(idx.read_bytes(tmp), spec, spec.url)
                else:
                    got = verify_lib.md5_file(tmp)
                    if got != spec.md5:
                        raise verify_lib.ChecksumError(
                            verify_lib.mismatch_message(spec.url, spec, got, os.path.getsize(tmp)))
            os.replace(tmp, target)
        except BaseException:
            try:
                os.remove(tmp)
            except OSError:
                pass
            raise
    return paths
