"""The trainer's input: which pipeline serves a dataset, distributed over a strategy.

Owns the choice between the in-memory, streaming and synthetic pipelines (by
`DatasetInfo.fits_in_memory` and the name), whether augmentation may flip, and handing the
per-pipeline `dataset_fn` to `strategy.distribute_datasets_from_function`. Every function
takes its settings as arguments and trusts them: `config.resolve` has already checked that
the global batch is a positive integer that the replicas divide.
"""

from absl import logging
import tensorflow as tf

from trainer.data import augment
from trainer.data import in_memory
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
    return in_memory.train_fn(info.name, images, labels, global_batch_size, seed, augment, flip,
                              start_step, jit)
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
  """`batch(step)` drawing the training batch of global `step` from device-resident data.

  The device-resident input mode: the whole train split is copied to the device once and each
  batch is gathered inside the compiled loop, so the loop has no tf.data iterator in it and
  XLA can compile all `steps_per_loop` steps as one program. Batches are exactly those of
  `make_train_dataset` (same `batch_at`), so the two modes train identically.

  Returns:
    A function from an int64 global step to `(images, labels)` as in `make_train_dataset`,
    or None when the mode does not apply: more than one replica, a synthetic or streaming
    dataset.
  """
  if strategy.num_replicas_in_sync != 1 or info.name == "synthetic" or not info.fits_in_memory:
    return None
  flip = bool(augment) and info.flip_allowed
  images, labels = in_memory.load_in_memory(info, "train")
  with strategy.scope(), tf.device(strategy.extended.worker_devices[0]):
    images, labels = tf.constant(images), tf.constant(labels)
  batch = int(global_batch_size)
  return lambda step: in_memory.batch_at(step, images, labels, batch, seed, 0, augment, flip)


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
    fn = _user_stream(info.streams["eval"], with_weights=True)
  elif info.name == "synthetic" or info.fits_in_memory:
    images, labels = in_memory.load_in_memory(info, "eval", seed)
    fn = in_memory.eval_fn(images, labels, global_batch_size)
  else:
    fn = streaming.eval_fn(info, global_batch_size)
  return strategy.distribute_datasets_from_function(fn)


def _user_stream(fn, with_weights):
  """A user's `fn(ctx)` of per-replica (x, y[, w]) batches, as the trainer's pipelines give
  them: float32 inputs (uint8 scaled to [0, 1]), int32 or float32 labels, weights for eval."""

  def convert(x, y, w=None):
    y = tf.cast(y, tf.int32 if y.dtype.is_integer else tf.float32)
    batch = (augment.to_float(x), y)
    if with_weights:
      batch += (tf.ones(tf.shape(y)[:1], tf.float32) if w is None else tf.cast(w, tf.float32),)
    return batch

  return lambda ctx: fn(ctx).map(convert, num_parallel_calls=tf.data.AUTOTUNE)
