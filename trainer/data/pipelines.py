"""The trainer's input: which pipeline serves a dataset, distributed over a strategy.

Owns the choice between the in-memory, streaming and synthetic pipelines (by
`DatasetInfo.fits_in_memory` and the name), whether augmentation may flip, and handing the
per-pipeline `dataset_fn` to `strategy.distribute_datasets_from_function`. Every function
takes its settings as arguments and trusts them: `config.resolve` has already checked that
the global batch is a positive integer that the replicas divide.
"""

from absl import logging
import tensorflow as tf

from trainer.base.compat import LEGACY_KERAS
from trainer.data import augment
from trainer.data import in_memory
from trainer.data import sampling
from trainer.data import streaming
from trainer.data.info import DatasetInfo


def train_dataset_fn(info: DatasetInfo, global_batch_size: int, seed: int, augment: bool,
                     jit: bool = True, start_step: int = 0):
  """The `dataset_fn(input_context)` that `make_train_dataset` distributes.

  Called with `tf.distribute.InputContext()` (one pipeline, one replica) it gives the plain
  `tf.data.Dataset` of global batches a single-device run trains on, e.g. for `Model.fit`.
  Arguments as for `make_train_dataset`.
  """
  if isinstance(start_step, bool) or int(start_step) != start_step or start_step < 0:
    raise ValueError(f"start_step must be an integer >= 0, got {start_step!r}")
  start_step = int(start_step)  # also accepts a scalar tensor such as optimizer.iterations
  if info.name == "synthetic":
    return in_memory.synthetic_train_fn(info, global_batch_size, seed)
  if info.streams is not None:
    if start_step:
      logging.warning("Resuming at step %d: %s is a tf.data stream of your own, so it restarts "
                      "from its beginning (arrays would resume exactly).", start_step, info.name)
    return _user_stream(info.streams["train"], with_weights=False)
  flip = bool(augment) and info.flip_allowed
  if info.fits_in_memory:
    images, labels = in_memory.load_in_memory(info, "train")
    return in_memory.train_fn(images, labels, global_batch_size, seed, augment, flip, start_step,
                              jit)
  return streaming.train_fn(info, global_batch_size, seed, augment, flip, start_step)


def make_train_dataset(info: DatasetInfo, strategy, global_batch_size: int, seed: int,
                       augment: bool, jit: bool = True,
                       start_step: int = 0) -> tf.distribute.DistributedDataset:
  """Endless training input; the first element of each replica is its batch at `start_step`.

  Args:
    info: the dataset, from `get_dataset_info`.
    strategy: the tf.distribute.Strategy whose replicas consume the batches.
    global_batch_size: examples per step, summed over replicas (a multiple of them).
    seed: keys the order and the augmentation of the examples.
    augment: random translation (and flips, unless the dataset is in NO_FLIP).
    jit: in-memory splits: draw each batch as one XLA program (the config's jit_compile).
    start_step: global step to start from (the optimizer's `iterations` when resuming).

  Returns:
    Per replica `(images float32 [b, H, W, C] in [0, 1], labels int32 [b])` with
    b = global_batch_size / num_replicas_in_sync.
  """
  return strategy.distribute_datasets_from_function(
      train_dataset_fn(info, global_batch_size, seed, augment, jit, start_step))


def make_device_batch_fn(info: DatasetInfo, strategy, global_batch_size: int, seed: int,
                         augment: bool):
  """`(batch, data)`: the device-resident input mode of one replica or of MirroredStrategy.

  The whole train split is copied to each replica's device once and each replica gathers its
  batch inside the compiled loop, so the loop has no tf.data iterator in it. Called in a
  replica context, `batch(step, data)` is that replica's share of global step `step`: with
  R replicas, replica r's is `batch_at(step * R + r, ...)` of global_batch_size / R examples,
  the very examples `make_train_dataset`'s rebatch gives it (and one replica sees in the same
  step), so the two modes train identically (tested).

  Returns:
    `(batch, data)`, `data` a tuple of device tensors (one replica) or a per-replica value to
    pass through `strategy.run`; or None when the mode does not apply (see `device_possible`).
  """
  if not device_possible(info, strategy):
    return None
  flip = bool(augment) and info.flip_allowed
  images, labels = in_memory.load_in_memory(info, "train")
  replicas = strategy.num_replicas_in_sync
  per_replica = int(global_batch_size) // replicas
  devices = strategy.extended.worker_devices

  def on_device(replica):
    with tf.device(devices[replica]):
      return tf.constant(images), tf.constant(labels)

  with strategy.scope():
    if replicas == 1:
      data = on_device(0)
    else:
      data = strategy.experimental_distribute_values_from_function(
          lambda ctx: on_device(ctx.replica_id_in_sync_group))

  def batch(step, data):
    element = step
    if replicas > 1:
      ctx = tf.distribute.get_replica_context()
      element = step * replicas + tf.cast(ctx.replica_id_in_sync_group, step.dtype)
    return in_memory.batch_at(element, *data, per_replica, seed, 0, augment, flip)

  return batch, data


def device_possible(info: DatasetInfo, strategy) -> bool:
  """Whether the train split can live on the replicas' devices: an in-memory split, and one
  replica, or MirroredStrategy on one worker under Keras 3 (its update needs
  trainer/local_update.py, written against Keras 3's optimizer)."""
  if info.name == "synthetic" or not info.fits_in_memory:
    return False
  return strategy.num_replicas_in_sync == 1 or replica_update(strategy)


def replica_update(strategy) -> bool:
  """Whether device-resident input runs `loop.make_replica_train_loop` (all-reduce, then a
  local update per replica) rather than `train_step`."""
  return isinstance(strategy, tf.distribute.MirroredStrategy) and not LEGACY_KERAS


def make_eval_dataset(info: DatasetInfo, strategy, global_batch_size: int,
                      seed: int = 0) -> tf.distribute.DistributedDataset:
  """One pass over the held-out split ('test', else 'validation'), in order, no augmentation.

  Every example appears exactly once. The last batches are padded (zero images, label 0,
  weight 0) so shapes stay static and every replica gets the same number of batches.
  `seed` only matters for `synthetic`, whose eval data it generates.

  Returns:
    Per replica `(images float32 [b, H, W, C], labels int32 [b], weights float32 [b])`, with
    b = global_batch_size / num_replicas_in_sync and weights 1.0 for real examples.
  """
  if info.streams is not None:
    # A .repeat() left in a user's eval function (the commonest tf.data slip) made the eval
    # endless: take the batches that cover num_eval_examples, as the other pipelines give.
    fn = _user_stream(info.streams["eval"], with_weights=True, batches=lambda ctx: (
        sampling.eval_batches_per_pipeline(info.num_eval_examples,
                                           *sampling.layout(global_batch_size, ctx)[:3])))
  elif info.name == "synthetic" or info.fits_in_memory:
    images, labels = in_memory.load_in_memory(info, "eval", seed)
    fn = in_memory.eval_fn(images, labels, global_batch_size)
  else:
    fn = streaming.eval_fn(info, global_batch_size)
  return strategy.distribute_datasets_from_function(fn)


def _user_stream(fn, with_weights, batches=None):
  """A user's `fn(ctx)` of per-replica (x, y[, w]) batches, as the trainer's pipelines give
  them: float32 inputs (uint8 scaled to [0, 1]), int32 or float32 labels, weights for eval;
  at most `batches(ctx)` of them if given."""

  def convert(x, y, w=None):
    y = tf.cast(y, tf.int32 if y.dtype.is_integer else tf.float32)
    batch = (augment.to_float(x), y)
    if with_weights:
      batch += (tf.ones(tf.shape(y)[:1], tf.float32) if w is None else tf.cast(w, tf.float32),)
    return batch

  def dataset_fn(ctx):
    ds = fn(ctx).map(convert, num_parallel_calls=tf.data.AUTOTUNE)
    return ds if batches is None else ds.take(batches(ctx))

  return dataset_fn
