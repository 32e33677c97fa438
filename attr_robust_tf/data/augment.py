"""Online augmentation with pure TF ops: a random rotation and translation per image (docs/datasets.md §3.3, §4.3; the
reference's offline version also warped projectively, which is not done here)."""
import math

import tensorflow as tf

MAX_ROTATION_DEGREES = 15.0
MAX_TRANSLATION_PIXELS = 5.0


def affine_transforms(angles, translations, height, width):
    """Rows [a0, a1, a2, b0, b1, b2, 0, 0] for `ImageProjectiveTransformV3`: rotate by `angles` (radians,
    counter-clockwise on screen) about the image centre, then shift by `translations` (N, 2) = (dx, dy) pixels.

    The op maps each *output* pixel p to the input point R(−θ)(p − c − t) + c, with c the centre.
    """
    angles = tf.convert_to_tensor(angles, tf.float32)
    translations = tf.convert_to_tensor(translations, tf.float32)
    cos, sin = tf.cos(angles), tf.sin(angles)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    ux, uy = translations[:, 0] + cx, translations[:, 1] + cy  # (N,) each: centre after the shift
    # Screen coordinates have y pointing down, so a counter-clockwise turn on screen uses −θ in the usual matrix.
    a0, a1, a2 = cos, -sin, cx - cos * ux + sin * uy
    b0, b1, b2 = sin, cos, cy - sin * ux - cos * uy
    zeros = tf.zeros_like(angles)
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)  # (N, 8)


def transform(images, angles, translations, *, interpolation="BILINEAR", fill_mode="NEAREST"):
    """Applies `affine_transforms` to float images (N, H, W, C); edge pixels extend outwards (the reference's
    `mode='edge'`)."""
    height, width = images.shape[1], images.shape[2]
    if height is None or width is None:
        height, width = tf.shape(images)[1], tf.shape(images)[2]
    transforms = affine_transforms(angles, translations, tf.cast(height, tf.float32), tf.cast(width, tf.float32))
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=tf.stack([height, width]),
        fill_value=tf.constant(0.0), interpolation=interpolation, fill_mode=fill_mode)


def random_affine(images, seed, *, max_degrees=MAX_ROTATION_DEGREES, max_pixels=MAX_TRANSLATION_PIXELS):
    """Rotation uniform in ±`max_degrees` and translation uniform in ±`max_pixels` per axis, per image.

    Args:
        images: float (N, H, W, C).
        seed: int32/int64 shape-(2,) tensor for the stateless random ops: equal seeds give equal results.
    """
    n = tf.shape(images)[0]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2)
    limit = max_degrees * math.pi / 180.0
    angles = tf.random.stateless_uniform([n], seeds[0], -limit, limit)
    shifts = tf.random.stateless_uniform([n, 2], seeds[1], -max_pixels, max_pixels)
    return tf.clip_by_value(transform(images, angles, shifts), 0.0, 1.0)
