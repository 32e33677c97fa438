"""The IDX format of MNIST and Fashion-MNIST (docs/datasets.md §1.6): gzipped or not, read into NumPy."""
import hashlib
import zlib

import numpy as np

# IDX dtype byte -> big-endian NumPy dtype.
DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
          0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_CODES = {dtype: code for code, dtype in DTYPES.items()}


def gunzip(raw, where):
    """The decompressed bytes of a gzip stream (all members), or `raw` itself if it is not gzipped."""
    if raw[:2] != b"\x1f\x8b":
        return raw
    parts = []
    while raw:
        d = zlib.decompressobj(31)  # 31 = gzip header and trailer
        try:
            parts.append(d.decompress(raw))
        except zlib.error as err:
            raise ValueError(f"{where} is not a valid gzip file ({err}). Get the file again.") from None
        if not d.eof:
            raise ValueError(f"{where} is truncated: the gzip stream ends early. Get the file again.")
        raw = d.unused_data if d.unused_data[:2] == b"\x1f\x8b" else b""
    return b"".join(parts)


def read_bytes(path):
    """The decompressed content of the IDX file at `path` (`.gz` or raw, detected by the gzip magic)."""
    with open(path, "rb") as f:
        raw = f.read()
    return gunzip(raw, path)


def parse(data, where, *, magic=None):
    """The array stored in IDX bytes `data`; `magic` (e.g. 0x00000803) is checked when given.

    Raises ValueError naming `where` for a wrong magic, an unknown dtype, or a length that does not match the
    header (truncated or extra bytes).
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in DTYPES:
        raise ValueError(f"{where} is not an IDX file: it must start with 00 00 <dtype> <ndim>. Received: first "
                         f"bytes {data[:4].hex()}.")
    code, ndim = data[2], data[3]
    if magic is not None and int.from_bytes(data[:4], "big") != magic:
        raise ValueError(f"{where} must have IDX magic {magic:08x}. Received: {data[:4].hex()}. Images and "
                         "labels may be swapped.")
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise ValueError(f"{where} is truncated: its header needs {offset} bytes. Received: {len(data)} bytes.")
    shape = tuple(int(s) for s in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - offset != expected:
        state = "truncated" if len(data) - offset < expected else "longer than its header says"
        raise ValueError(f"{where} is {state}: header shape {shape} needs {expected:,} data bytes. Received: "
                         f"{len(data) - offset:,} bytes. Get the file again.")
    return np.frombuffer(data, dtype, offset=offset).reshape(shape)


def _header_and_data(array):
    array = np.asarray(array)
    dtype = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    header = bytes([0, 0, _CODES[dtype], array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header, np.ascontiguousarray(array.astype(dtype, copy=False))


def encode(array):
    """IDX bytes of `array` (the inverse of `parse`)."""
    header, data = _header_and_data(array)
    return header + data.tobytes()


def md5(array):
    """(MD5 hex digest, byte length) of `encode(array)`, without building the bytes."""
    header, data = _header_and_data(array)
    digest = hashlib.md5(header)
    digest.update(memoryview(data).cast("B"))
    return digest.hexdigest(), len(header) + data.nbytes
