"""Pipelines that stream a split from its TFDS files, for splits too big for host memory.

Owns the seeded file shuffle + SHUFFLE_BUFFER train stream (reproducible from step 0; a
resumed run reshuffles with a (seed, start_step)-keyed order instead of replaying it) and the
example-sharded, padded eval pass. Images are decoded (and resized) per example.
"""

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from trainer.data import augment as augment_lib
from trainer.data import info as info_lib
from trainer.data import sampling

SHUFFLE_BUFFER = 10_000  # examples, per input pipeline


def train_fn(info, global_batch_size, seed, augment, flip, start_step=0):
  """`dataset_fn(ctx)`: endless shuffled train batches read from `info.builder`'s files."""
  builder = info.builder
  decode = builder.info.features["image"].decode_example
  # A resumed stream cannot replay the old one; reshuffle it rather than repeat step 0's order.
  shuffle_seed = int(seed) % 2**31
  if start_step:
    shuffle_seed = int(np.random.SeedSequence([shuffle_seed, start_step]).generate_state(1)[0])
    shuffle_seed %= 2**31

  def dataset_fn(ctx):
    b, local_replicas, _, pid = sampling.layout(global_batch_size, ctx)
    _, aug_seed = sampling.pipeline_seeds(seed, pid)
    read_config = tfds.ReadConfig(input_context=ctx, shuffle_seed=shuffle_seed,
                                  try_autocache=False)
    ds = builder.as_dataset(split=info_lib.split_name(builder, "train"), shuffle_files=True,
                            read_config=read_config,
                            decoders={"image": tfds.decode.SkipDecoding()})
    ds = ds.repeat().shuffle(SHUFFLE_BUFFER, seed=shuffle_seed)
    ds = ds.map(lambda ex: (augment_lib.fixed_size(decode(ex["image"]), info.image_shape),
                            tf.cast(ex["label"], tf.int32)), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(b, drop_remainder=True)
    steps = tf.data.Dataset.range(start_step * local_replicas, 2**62)

    def finish(e, batch):
      x = batch[0]
      if augment:
        x = augment_lib.gather_augmented(x, tf.range(b), aug_seed,
                                         e * b + tf.range(b, dtype=tf.int64), flip)
      return augment_lib.to_float(x), batch[1]

    ds = tf.data.Dataset.zip(steps, ds).map(finish, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)

  return dataset_fn


def eval_fn(info, global_batch_size):
  """`dataset_fn(ctx)`: one in-order pass over the held-out split, padded with weight-0 zeros."""
  builder = info.builder
  decode = builder.info.features["image"].decode_example
  shape = info.image_shape

  def dataset_fn(ctx):
    b, local_replicas, num_pipelines, pid = sampling.layout(global_batch_size, ctx)
    n_all = info.num_eval_examples
    n = len(range(pid, n_all, num_pipelines))
    total = sampling.eval_batches_per_pipeline(n_all, b, local_replicas, num_pipelines) * b
    # Example-level sharding (every pipeline reads the split, decodes only its share) makes
    # the per-pipeline counts exact, which equal batch counts need.
    ds = builder.as_dataset(split=info_lib.split_name(builder, "eval"), shuffle_files=False,
                            read_config=tfds.ReadConfig(try_autocache=False),
                            decoders={"image": tfds.decode.SkipDecoding()})
    ds = ds.shard(num_pipelines, pid).map(
        lambda ex: (augment_lib.fixed_size(decode(ex["image"]), shape),
                    tf.cast(ex["label"], tf.int32), tf.constant(1.0)),
        num_parallel_calls=tf.data.AUTOTUNE)
    pad = tf.data.Dataset.from_tensors(
        (tf.zeros(shape, tf.uint8), tf.constant(0), tf.constant(0.0))).repeat(total - n)
    ds = ds.concatenate(pad).take(total).batch(b, drop_remainder=True)
    ds = ds.map(lambda x, y, w: (augment_lib.to_float(x), y, w))
    return ds.prefetch(tf.data.AUTOTUNE)

  return dataset_fn
