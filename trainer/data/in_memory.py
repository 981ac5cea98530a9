"""Pipelines over a split held in host memory, read by random access; and `synthetic`.

Owns loading a whole split (`load_in_memory`), the pure batch draw `batch_at` that both the
tf.data path and the device-resident loop use, and the per-pipeline `dataset_fn`s built on
them: the endless, exactly resumable train stream, the padded in-order eval pass, and the
fixed random batches of `synthetic`.
"""

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from trainer.data import augment as augment_lib
from trainer.data import info as info_lib
from trainer.data import sampling
from trainer.base.errors import ConfigError


def load_in_memory(info: info_lib.DatasetInfo, split: str = "train",
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Loads a whole split: `split` is 'train' or 'eval' (the held-out split).

  Args:
    info: the dataset, from `get_dataset_info`.
    split: 'train' or 'eval'.
    seed: the run's seed; only `synthetic` data depends on it.

  Returns:
    `(images uint8 [N, H, W, C], labels int32 [N])` in the split's stored order, images at
    `info.image_shape` (other sources: their inputs and labels as `info` describes them).
    For `synthetic`, fixed random data of the nominal size.
  """
  if split not in ("train", "eval"):
    raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
  if info.name == "synthetic":
    n = info.num_train_examples if split == "train" else info.num_eval_examples
    rng = np.random.default_rng([int(seed), split == "eval"])
    return (rng.integers(0, 256, (n, *info.image_shape), dtype=np.uint8),
            rng.integers(0, info.num_classes, n, dtype=np.int32))
  if info.loader is not None:  # folder: and a user's arrays, already checked and in memory
    return info.loader(split)
  builder, shape = info.builder, info.image_shape
  ds = builder.as_dataset(split=info_lib.split_name(builder, split), shuffle_files=False,
                          read_config=tfds.ReadConfig(try_autocache=False))
  ds = ds.map(lambda ex: (augment_lib.fixed_size(ex["image"], shape),
                          tf.cast(ex["label"], tf.int32)), num_parallel_calls=tf.data.AUTOTUNE)
  chunks = list(ds.batch(4096).as_numpy_iterator())
  if not chunks:
    raise ConfigError(f"dataset: {info.name!r} has an empty {split} split")
  return (np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks]))


def batch_at(element, images, labels, batch_size: int, seed: int, pipeline_id: int = 0,
             augment: bool = False, flip: bool = False):
  """Batch number `element` (of `batch_size`) of the endless training stream over a split.

  Pure TF and XLA-compilable (usable inside a compiled loop on device-resident data). Stream
  position k = element * batch_size + j is the same example, augmented the same way, whatever
  `batch_size` slices the stream. The trainer draws the global batch of step s as positions
  s * B ... s * B + B - 1 of one stream: a draw of B/Q examples (a pipeline's or a replica's
  share, Q shares) is element s * Q + q.

  Args:
    element: int64 scalar, the batch number within the stream.
    images: uint8 [n, H, W, C], the whole split.
    labels: int32 [n], its labels.
    batch_size: examples per batch (static).
    seed: the run's seed.
    pipeline_id: keys the stream with `seed`; every pipeline and replica of the trainer reads
      stream 0.
    augment: random translation by up to max(1, H // 8) pixels (zero fill).
    flip: also random horizontal flips (only with augment).

  Returns:
    `(images float32 [batch_size, H, W, C] in [0, 1], labels int32 [batch_size])`.
  """
  perm_seed, aug_seed = sampling.pipeline_seeds(seed, pipeline_id)
  element = tf.cast(element, tf.int64)
  idx = sampling.example_indices(element, int(images.shape[0]), batch_size, perm_seed)
  if augment:
    positions = element * batch_size + tf.range(batch_size, dtype=tf.int64)
    x = augment_lib.gather_augmented(images, idx, aug_seed, positions, flip)
  else:
    x = tf.gather(images, idx)
  return augment_lib.to_float(x), tf.gather(labels, idx)


def train_fn(images, labels, global_batch_size, seed, augment, flip=False, start_step=0,
             jit=True):
  """`dataset_fn(ctx)`: endless train batches of the split `images`, `labels` from start_step.

  Every input pipeline draws from the one stream over the whole split that a single process
  reads: at global step s, pipeline p (of P, feeding R local replicas of b examples) draws
  `batch_at(s * P + p, ...)` of R * b examples, its slice of the global batch of step s. So
  P workers train on the very batches of one process (issue 22: sharding the split per
  pipeline gave them other examples, and so another update). Each pipeline holds the whole
  split, which fits in host memory by definition. `jit`: draw each batch as one XLA program.
  """

  def dataset_fn(ctx):
    b, local_replicas, num_pipelines, pid = sampling.layout(global_batch_size, ctx)
    x, y = tf.constant(images), tf.constant(labels)
    # One draw per step for all local replicas: the per-draw cost does not grow with them.
    # Stream position k is the same example whatever batch slices it, so element s * P + p of
    # R * b examples is positions [s * B + p * R * b, s * B + (p + 1) * R * b) of the stream.
    draw = lambda s: batch_at(s * num_pipelines + pid, x, y,  # noqa: E731
                              b * local_replicas, seed, 0, augment, flip)
    # One XLA program per draw is much cheaper than the same ops run one by one in tf.data
    # (measured: docs/benchmarks.md).
    if jit:
      draw = tf.function(draw, jit_compile=True)
    ds = tf.data.Dataset.range(start_step, 2**62).map(draw, num_parallel_calls=tf.data.AUTOTUNE)
    if local_replicas > 1:
      ds = ds.rebatch(b)  # R consecutive slices, dealt to local replicas 0..R-1 in order
    return ds.prefetch(tf.data.AUTOTUNE)

  return dataset_fn


def eval_fn(images, labels, global_batch_size):
  """`dataset_fn(ctx)`: one in-order pass over `images`, `labels`, padded with weight-0 zeros."""

  def dataset_fn(ctx):
    b, local_replicas, num_pipelines, pid = sampling.layout(global_batch_size, ctx)
    x, y = sampling.shard(images, num_pipelines, pid), sampling.shard(labels, num_pipelines, pid)
    n = len(x)
    total = sampling.eval_batches_per_pipeline(len(images), b, local_replicas,
                                               num_pipelines) * b
    # Index n is an extra all-zero example with weight 0: the padding.
    x = tf.constant(np.concatenate([x, np.zeros_like(images[:1])]))
    y = tf.constant(np.concatenate([y, np.zeros_like(labels[:1])]))
    w = tf.constant(np.concatenate([np.ones(n, np.float32), np.zeros(1, np.float32)]))
    idx = np.concatenate([np.arange(n), np.full(total - n, n)]).astype(np.int32)
    ds = tf.data.Dataset.from_tensor_slices(idx.reshape(-1, b))
    ds = ds.map(lambda i: (augment_lib.to_float(tf.gather(x, i)), tf.gather(y, i),
                           tf.gather(w, i)))
    return ds.prefetch(tf.data.AUTOTUNE)

  return dataset_fn


def synthetic_train_fn(info, global_batch_size, seed):
  """`dataset_fn(ctx)`: one fixed random batch per pipeline, repeated (float32 [0, 1))."""

  def dataset_fn(ctx):
    b, _, _, pid = sampling.layout(global_batch_size, ctx)
    pipeline_seed = tf.constant([int(seed), pid], tf.int64)
    x = tf.random.stateless_uniform([b, *info.image_shape], pipeline_seed)
    y = tf.random.stateless_uniform([b], pipeline_seed + 1, maxval=info.num_classes,
                                    dtype=tf.int32)
    return tf.data.Dataset.from_tensors((x, y)).repeat()

  return dataset_fn
