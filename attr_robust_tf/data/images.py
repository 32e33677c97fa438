"""Decoding and resizing with Pillow, run over a thread pool (Pillow's resampling runs without the GIL)."""
import concurrent.futures
import io
import os

import numpy as np
from PIL import Image

RESAMPLE = {
    "lanczos": Image.Resampling.LANCZOS,  # docs/datasets.md §3.3, §4.3: the reference's ANTIALIAS is LANCZOS
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "nearest": Image.Resampling.NEAREST,
}


def workers():
    return min(8, os.cpu_count() or 1)


def parallel_map(fn, items):
    """`[fn(x) for x in items]` on a thread pool, in order; the first exception propagates.

    Items go to the threads in chunks: one future per image costs as much as decoding a small PPM.
    """
    items = list(items)
    n_workers = workers()
    if len(items) < 64 or n_workers == 1:
        return [fn(x) for x in items]
    size = max(16, -(-len(items) // (4 * n_workers)))
    chunks = [items[i:i + size] for i in range(0, len(items), size)]
    with concurrent.futures.ThreadPoolExecutor(n_workers) as pool:
        return [y for chunk in pool.map(lambda c: [fn(x) for x in c], chunks) for y in chunk]


def decode(data, where, *, mode="RGB", box=None, size=None, resample="lanczos", expected_size=None):
    """Decodes image bytes to uint8 (H, W, C): converted to `mode`, cropped to `box`, resized to `size` (h, w).

    `box` is (left, upper, right, lower) with right/lower exclusive, as in `PIL.Image.crop`. `expected_size`
    (width, height), when given, must equal the decoded size (ValueError naming `where` otherwise).
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            img = img.convert(mode)
    except (OSError, ValueError, SyntaxError) as err:  # UnidentifiedImageError is an OSError
        raise ValueError(f"{where} could not be decoded as an image ({err}). The file is corrupt; get it "
                         "again.") from None
    if expected_size is not None and img.size != tuple(expected_size):
        raise ValueError(f"{where} must be {expected_size[0]}x{expected_size[1]} pixels (width x height) as its "
                         f"annotation says. Received: {img.size[0]}x{img.size[1]}.")
    if box is not None:
        img = img.crop(box)
    if size is not None and (img.height, img.width) != tuple(size):
        img = img.resize((size[1], size[0]), RESAMPLE[resample])
    array = np.asarray(img, np.uint8)
    return array[..., None] if array.ndim == 2 else array


def resize_array(images, size, resample="lanczos"):
    """Resizes uint8 (N, H, W, C) images to `size` (h, w) one by one with Pillow."""
    if tuple(images.shape[1:3]) == tuple(size):
        return images
    channels = images.shape[-1]

    def one(image):
        img = Image.fromarray(image[..., 0] if channels == 1 else image)
        out = np.asarray(img.resize((size[1], size[0]), RESAMPLE[resample]), np.uint8)
        return out[..., None] if out.ndim == 2 else out

    return np.stack(parallel_map(one, images)) if len(images) else np.zeros((0, *size, channels), np.uint8)
