"""Image ops on uint8 batches: augmentation, resizing to a fixed size, conversion to float.

Owns what happens to an image's pixels between the split and the model: the random
translation (and flip) of `gather_augmented`, whose draws come from `sampling.example_draws`
keyed by stream position, the resize of variable-size images, and the uint8 -> float32 [0, 1]
conversion that every pipeline (tf.data or a compiled loop) must apply bit-identically.
"""

import tensorflow as tf

from trainer.data import sampling


def gather_augmented(images, idx, seed, positions, flip):
  """images[idx], each randomly translated by up to max(1, H // 8) pixels (zero fill) and,
  with `flip`, randomly mirrored left-right; the draws are keyed by (seed, positions).

  One gather from the flat split does selection, translation and flip together: on small
  images this is the input's main cost inside a compiled loop, and pad + crop + reverse ops
  on the gathered batch cost more (measured: docs/benchmarks.md).
  """
  _, h, w, c = images.shape
  pad = max(1, min(h, w) // 8)
  # Each draw row is keyed by its own constant: without flips the third is never made.
  draws = sampling.example_draws(seed, positions, 3 if flip else 2, 2 * pad + 1)
  cols = tf.range(w)[None]
  if flip:
    cols = tf.where((draws[2] % 2 == 1)[:, None], w - 1 - cols, cols)
  rows = draws[0][:, None] - pad + tf.range(h)[None]  # [b, h] source rows
  cols = draws[1][:, None] - pad + cols  # [b, w] source columns
  inside = (((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :])
  dtype = tf.int64 if images.shape[0] * h * w >= 2**31 else tf.int32
  flat = (tf.cast(idx, dtype)[:, None, None] * (h * w)
          + tf.cast(tf.clip_by_value(rows, 0, h - 1), dtype)[:, :, None] * w
          + tf.cast(tf.clip_by_value(cols, 0, w - 1), dtype)[:, None, :])
  x = tf.gather(tf.reshape(images, [-1, c]), flat)  # [b, h, w, c]
  return tf.where(inside[..., None], x, tf.zeros_like(x))


def to_float(images):
  """uint8 images as float32 in [0, 1]; other inputs (float features) as float32, unscaled."""
  if images.dtype != tf.uint8:
    return tf.cast(images, tf.float32)
  # A multiply, not `/ 255`: XLA rewrites the division into this, and the tf.data path and a
  # compiled loop calling `batch_at` must produce identical bits.
  return tf.cast(images, tf.float32) * (1.0 / 255.0)


def fixed_size(image, shape):
  """`image` resized (antialiased, rounded back to uint8) to `shape` unless already that size."""
  if image.shape[:2] == tuple(shape[:2]):
    return image
  image = _resize(image, shape[:2])
  return tf.ensure_shape(tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8), shape)


def fixed_size_float(images, shape):
  """Float images [N, h, w, C] in [0, 1] of any h and w at `shape` (H, W, C): `fixed_size`'s
  resize in float, not rounded to 1/255 steps; unchanged when already H x W (decided when
  the batch arrives, as exported signatures see sizes only then)."""
  size = tf.shape(images)[1:3]
  same = tf.reduce_all(tf.equal(size, tf.constant(shape[:2], tf.int32)))
  images = tf.cond(same, lambda: tf.identity(images),
                   lambda: tf.clip_by_value(_resize(images, shape[:2]), 0.0, 1.0))
  return tf.ensure_shape(images, [None, *shape])


def _resize(images, size):
  """The pipelines' one resize: antialiased bilinear, aspect ratio not kept; float32 out."""
  return tf.image.resize(images, size, antialias=True)
