"""Input pipelines: any TFDS image-classification dataset, offline `digits`, `synthetic`.

Batch units: `config.global_batch_size` is summed over all replicas; every replica receives
per-replica batches of global_batch_size / num_replicas_in_sync examples. Images arrive as
float32 in [0, 1], labels as int32.

Determinism. A dataset whose train split fits in host memory (at most IN_MEMORY_MAX_BYTES as
uint8) is loaded once and read by random access: input pipeline p (of P) owns the examples
p, p + P, p + 2P, ... and reads them as one endless stream, epoch after epoch, each epoch in a
fresh pseudorandom order keyed by (seed, p, epoch); an example's augmentation is keyed by
(seed, p, its position in the stream). At global step s a pipeline feeding R local replicas
draws `batch_at(s, ...)` of R * b examples, a pure function, and deals it out in R consecutive
slices of b. So the examples and their augmentation at a step depend only on (seed, step,
dataset, global batch, number of input pipelines), not on how many replicas share them, and
`make_train_dataset(..., start_step=k)` resumes exactly, with no iterator state in the
checkpoint.

Bigger datasets stream from the TFDS files (file shuffle + SHUFFLE_BUFFER, seeded). That stream
is reproducible from step 0 but a resumed run does not replay it: it restarts with a fresh,
(seed, start_step)-keyed shuffle, so its position is approximate.

Images of variable size (e.g. imagenet2012) are resized to RESIZE_TO (aspect ratio not kept).
"""

import dataclasses
import math

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from trainer import digits_dataset  # noqa: F401  (registers the 'digits' TFDS builder)
from trainer.errors import ConfigError

IN_MEMORY_MAX_BYTES = 2 * 1024**3  # train split as uint8; above this, stream from files
SHUFFLE_BUFFER = 10_000  # examples, per input pipeline, streaming path only
RESIZE_TO = 224  # side of variable-size images, e.g. imagenet2012
# Mirroring a digit or letter can turn it into another class (or into no class at all).
NO_FLIP = frozenset({"digits", "mnist", "emnist", "kmnist", "binarized_mnist",
                     "mnist_corrupted", "svhn_cropped", "omniglot"})
_FEISTEL_ROUNDS = 6


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the model and the step arithmetic need to know about a dataset."""

  name: str
  num_classes: int
  image_shape: tuple[int, int, int]  # (H, W, C) of the images the model sees
  num_train_examples: int
  num_eval_examples: int


_SYNTHETIC = DatasetInfo("synthetic", 10, (32, 32, 3), 50_000, 1_000)  # nominal counts


def get_dataset_info(config) -> DatasetInfo:
  """Returns the dataset's metadata (prepares `digits` on first use; reads no examples)."""
  if _name(config) == "synthetic":
    return _SYNTHETIC
  builder = _builder(config)
  return DatasetInfo(
      name=config.dataset,
      num_classes=int(builder.info.features["label"].num_classes),
      image_shape=_image_shape(builder),
      num_train_examples=int(builder.info.splits[_split(builder, "train")].num_examples),
      num_eval_examples=int(builder.info.splits[_split(builder, "eval")].num_examples))


def make_train_dataset(config, strategy, start_step: int = 0) -> tf.distribute.DistributedDataset:
  """Endless training input; the first element of each replica is its batch at `start_step`.

  Args:
    config: uses dataset, data_dir, global_batch_size (summed over replicas), seed, augment,
      jit_compile (in-memory splits: each batch is drawn by one XLA program).
    strategy: the tf.distribute.Strategy whose replicas consume the batches.
    start_step: global step to start from (the optimizer's `iterations` when resuming).

  Returns:
    Per replica `(images float32 [b, H, W, C] in [0, 1], labels int32 [b])` with
    b = global_batch_size / num_replicas_in_sync.
  """
  _check_batch(config, strategy)
  return strategy.distribute_datasets_from_function(train_dataset_fn(config, start_step))


def train_dataset_fn(config, start_step: int = 0):
  """The `dataset_fn(input_context)` that `make_train_dataset` distributes.

  Called with `tf.distribute.InputContext()` (one pipeline, one replica) it gives the plain
  `tf.data.Dataset` of global batches a single-device run trains on, e.g. for `Model.fit`.
  """
  if isinstance(start_step, bool) or int(start_step) != start_step or start_step < 0:
    raise ValueError(f"start_step must be an integer >= 0, got {start_step!r}")
  start_step = int(start_step)  # also accepts a scalar tensor such as optimizer.iterations
  info = get_dataset_info(config)
  if info.name == "synthetic":
    return _synthetic_train_fn(config, info)
  flip = bool(config.augment) and _base_name(info.name) not in NO_FLIP
  if _fits_in_memory(info):
    images, labels = load_in_memory(config, "train")
    return _in_memory_train_fn(config, images, labels, start_step, flip)
  return _streaming_train_fn(config, info, start_step, flip)


def make_device_batch_fn(config, strategy):
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
  _check_batch(config, strategy)
  info = get_dataset_info(config)
  if strategy.num_replicas_in_sync != 1 or info.name == "synthetic" or not _fits_in_memory(info):
    return None
  flip = bool(config.augment) and _base_name(info.name) not in NO_FLIP
  images, labels = load_in_memory(config, "train")
  with strategy.scope(), tf.device(strategy.extended.worker_devices[0]):
    images, labels = tf.constant(images), tf.constant(labels)
  batch = int(config.global_batch_size)
  return lambda step: batch_at(step, images, labels, batch, config.seed, 0, config.augment, flip)


def make_eval_dataset(config, strategy) -> tf.distribute.DistributedDataset:
  """One pass over the held-out split ('test', else 'validation'), in order, no augmentation.

  Every example appears exactly once. The last batches are padded (zero images, label 0,
  weight 0) so shapes stay static and every replica gets the same number of batches.

  Returns:
    Per replica `(images float32 [b, H, W, C], labels int32 [b], weights float32 [b])`, with
    b = global_batch_size / num_replicas_in_sync and weights 1.0 for real examples.
  """
  _check_batch(config, strategy)
  info = get_dataset_info(config)
  if info.name == "synthetic" or _fits_in_memory(info):
    images, labels = load_in_memory(config, "eval")
    fn = _in_memory_eval_fn(config, images, labels)
  else:
    fn = _streaming_eval_fn(config, info)
  return strategy.distribute_datasets_from_function(fn)


def load_in_memory(config, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
  """Loads a whole split: `split` is 'train' or 'eval' (the held-out split).

  Returns:
    `(images uint8 [N, H, W, C], labels int32 [N])` in the split's stored order, images at
    `get_dataset_info(config).image_shape`. For `synthetic`, fixed random data of the
    nominal size.
  """
  if split not in ("train", "eval"):
    raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
  if _name(config) == "synthetic":
    n = _SYNTHETIC.num_train_examples if split == "train" else _SYNTHETIC.num_eval_examples
    rng = np.random.default_rng([int(config.seed), split == "eval"])
    return (rng.integers(0, 256, (n, *_SYNTHETIC.image_shape), dtype=np.uint8),
            rng.integers(0, _SYNTHETIC.num_classes, n, dtype=np.int32))
  builder = _builder(config)
  shape = _image_shape(builder)
  ds = builder.as_dataset(split=_split(builder, split), shuffle_files=False,
                          read_config=tfds.ReadConfig(try_autocache=False))
  ds = ds.map(lambda ex: (_fixed_size(ex["image"], shape), tf.cast(ex["label"], tf.int32)),
              num_parallel_calls=tf.data.AUTOTUNE)
  chunks = list(ds.batch(4096).as_numpy_iterator())
  if not chunks:
    raise ConfigError(f"dataset: {config.dataset!r} has an empty {split} split")
  return (np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks]))


def batch_at(element, images, labels, batch_size: int, seed: int, pipeline_id: int = 0,
             augment: bool = False, flip: bool = False):
  """Batch number `element` (of `batch_size`) of one input pipeline's endless training stream.

  Pure TF and XLA-compilable (usable inside a compiled loop on device-resident data). The
  trainer draws element = global step with batch_size = the pipeline's share of the global
  batch. Stream position k = element * batch_size + j is the same example, augmented the
  same way, whatever `batch_size` slices the stream.

  Args:
    element: int64 scalar, the batch number within this pipeline's stream.
    images: uint8 [n, H, W, C], this pipeline's examples (`shard(all_images, P, p)`).
    labels: int32 [n], this pipeline's labels.
    batch_size: examples per batch (static).
    seed: config.seed.
    pipeline_id: this pipeline's InputContext.input_pipeline_id.
    augment: random translation by up to max(1, H // 8) pixels (zero fill).
    flip: also random horizontal flips (only with augment).

  Returns:
    `(images float32 [batch_size, H, W, C] in [0, 1], labels int32 [batch_size])`.
  """
  perm_seed, aug_seed = _pipeline_seeds(seed, pipeline_id)
  element = tf.cast(element, tf.int64)
  idx = example_indices(element, int(images.shape[0]), batch_size, perm_seed)
  if augment:
    positions = element * batch_size + tf.range(batch_size, dtype=tf.int64)
    x = _gather_augmented(images, idx, aug_seed, positions, flip)
  else:
    x = tf.gather(images, idx)
  return _to_float(x), tf.gather(labels, idx)


def example_indices(element, num_examples: int, batch_size: int, seed):
  """Indices (int32 [batch_size]) of per-replica batch `element` in an endless shuffled stream.

  Stream position k = element * batch_size + j lies in epoch k // num_examples; each epoch is
  a permutation of range(num_examples) keyed by (seed, epoch), evaluated pointwise (a Feistel
  network whose round functions hash the half-block with per-epoch random keys, cycle-walked
  into range), so the cost is O(batch_size), independent of num_examples. Batches run on
  across epoch boundaries.

  Args:
    element: int64 scalar, the per-replica batch number within the stream.
    num_examples: examples in the stream (one pipeline's shard).
    batch_size: per-replica batch size.
    seed: int64 [2] stateless seed of the stream (batch_at uses one per (seed, pipeline)).
  """
  n, b = int(num_examples), int(batch_size)
  k = tf.cast(element, tf.int64) * b + tf.range(b, dtype=tf.int64)
  first = k[0] // n
  # One row of round keys per epoch this batch touches (a batch spans at most this many).
  keys = tf.stack([_round_keys(seed, first + i) for i in range((b - 1) // n + 2)])
  return _permute(tf.cast(k % n, tf.uint32), tf.gather(keys, k // n - first), n)


def shard(array: np.ndarray, num_pipelines: int, pipeline_id: int) -> np.ndarray:
  """The examples input pipeline `pipeline_id` owns: every num_pipelines-th, from its id."""
  return array[pipeline_id::num_pipelines]


def _half_bits(n):
  return (max(2, (n - 1).bit_length()) + 1) // 2


def _mix(x):
  """A 32-bit integer hash (murmur3's finaliser) of uint32 x: cheap, elementwise, no lookups."""
  x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16)) * tf.constant(0x85EBCA6B,
                                                                              tf.uint32)
  x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 13)) * tf.constant(0xC2B2AE35,
                                                                              tf.uint32)
  return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))


def _example_draws(seed, positions, rows, maxval):
  """int32 [rows, b] in [0, maxval): random draws keyed by (seed, stream position)."""
  keys = tf.bitcast(tf.random.stateless_uniform([2], seed, minval=None, maxval=None,
                                                dtype=tf.int32, alg="philox"), tf.uint32)
  low = tf.cast(tf.bitwise.bitwise_and(positions, 0xFFFFFFFF), tf.uint32)
  high = tf.cast(tf.bitwise.right_shift(positions, 32), tf.uint32)
  h = _mix(tf.bitwise.bitwise_xor(_mix(tf.bitwise.bitwise_xor(low, keys[0])) + high, keys[1]))
  draws = [_mix(h + tf.constant((0x9E3779B9 * (i + 1)) % 2**32, tf.uint32)) % maxval
           for i in range(rows)]
  return tf.cast(tf.stack(draws), tf.int32)


def _round_keys(seed, epoch):
  """uint32 [_FEISTEL_ROUNDS]: the round keys of one epoch's permutation."""
  epoch_seed = tf.random.experimental.stateless_fold_in(seed, epoch, alg="philox")
  keys = tf.random.stateless_uniform([_FEISTEL_ROUNDS], epoch_seed, minval=None, maxval=None,
                                     dtype=tf.int32, alg="philox")
  return tf.bitcast(keys, tf.uint32)


def _permute(pos, keys, n):
  """Applies to each position (uint32 [b]) the permutation of range(n) its keys ([b, R]) pick."""
  half = _half_bits(n)
  mask = tf.constant((1 << half) - 1, tf.uint32)

  def encrypt(x):  # a bijection of range(2**(2 * half)): a balanced Feistel network
    left, right = tf.bitwise.right_shift(x, half), tf.bitwise.bitwise_and(x, mask)
    for r in range(_FEISTEL_ROUNDS):
      f = tf.bitwise.bitwise_and(_mix(tf.bitwise.bitwise_xor(right, keys[:, r])), mask)
      left, right = right, tf.bitwise.bitwise_xor(left, f)
    return tf.bitwise.bitwise_or(tf.bitwise.left_shift(left, half), right)

  # Cycle-walking: re-encrypting values that land outside range(n) keeps it a bijection there.
  limit = tf.constant(n, tf.uint32)
  out = tf.while_loop(lambda x: tf.reduce_any(x >= limit),
                      lambda x: (tf.where(x >= limit, encrypt(x), x),), (encrypt(pos),))[0]
  return tf.cast(out, tf.int32)


def _gather_augmented(images, idx, seed, positions, flip):
  """images[idx], each randomly translated by up to max(1, H // 8) pixels (zero fill) and,
  with `flip`, randomly mirrored left-right; the draws are keyed by (seed, positions).

  One gather from the flat split does selection, translation and flip together: on small
  images this is the input's main cost inside a compiled loop (pad + crop + reverse ops on
  the gathered batch cost ~2x more, measured on digits).
  """
  _, h, w, c = images.shape
  b = int(idx.shape[0])
  pad = max(1, min(h, w) // 8)
  draws = _example_draws(seed, positions, 3, 2 * pad + 1)
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


def _pipeline_seeds(seed, pipeline_id):
  base = tf.constant([int(seed), int(pipeline_id)], tf.int64)
  return (tf.random.experimental.stateless_fold_in(base, 0, alg="philox"),
          tf.random.experimental.stateless_fold_in(base, 1, alg="philox"))


def _layout(config, ctx):
  """(per-replica batch, replicas per pipeline, num pipelines, pipeline id)."""
  return (ctx.get_per_replica_batch_size(int(config.global_batch_size)),
          ctx.num_replicas_in_sync // ctx.num_input_pipelines, ctx.num_input_pipelines,
          ctx.input_pipeline_id)


def _in_memory_train_fn(config, images, labels, start_step, flip):
  def dataset_fn(ctx):
    b, local_replicas, num_pipelines, pid = _layout(config, ctx)
    if images.shape[0] < num_pipelines:
      raise ConfigError(f"dataset: {config.dataset!r} has {images.shape[0]} train examples, "
                        f"fewer than the {num_pipelines} input pipelines")
    x = tf.constant(shard(images, num_pipelines, pid))
    y = tf.constant(shard(labels, num_pipelines, pid))
    # One draw per step for all local replicas: the per-draw cost does not grow with them.
    draw = lambda s: batch_at(s, x, y, b * local_replicas, config.seed, pid,  # noqa: E731
                              config.augment, flip)
    if config.get("jit_compile", True):  # ~5x cheaper: ~100 vs ~480 us for 64 digits, 2 cores
      draw = tf.function(draw, jit_compile=True)
    ds = tf.data.Dataset.range(start_step, 2**62).map(draw, num_parallel_calls=tf.data.AUTOTUNE)
    if local_replicas > 1:
      ds = ds.rebatch(b)  # R consecutive slices, dealt to local replicas 0..R-1 in order
    return ds.prefetch(tf.data.AUTOTUNE)

  return dataset_fn


def _in_memory_eval_fn(config, images, labels):
  def dataset_fn(ctx):
    b, local_replicas, num_pipelines, pid = _layout(config, ctx)
    x, y = shard(images, num_pipelines, pid), shard(labels, num_pipelines, pid)
    n = len(x)
    total = _eval_batches_per_pipeline(len(images), b, local_replicas, num_pipelines) * b
    # Index n is an extra all-zero example with weight 0: the padding.
    x = tf.constant(np.concatenate([x, np.zeros_like(images[:1])]))
    y = tf.constant(np.concatenate([y, np.zeros(1, np.int32)]))
    w = tf.constant(np.concatenate([np.ones(n, np.float32), np.zeros(1, np.float32)]))
    idx = np.concatenate([np.arange(n), np.full(total - n, n)]).astype(np.int32)
    ds = tf.data.Dataset.from_tensor_slices(idx.reshape(-1, b))
    ds = ds.map(lambda i: (_to_float(tf.gather(x, i)), tf.gather(y, i), tf.gather(w, i)))
    return ds.prefetch(tf.data.AUTOTUNE)

  return dataset_fn


def _eval_batches_per_pipeline(num_examples, b, local_replicas, num_pipelines):
  """Same count for every pipeline (and so every replica), enough for the largest shard."""
  per_replica = math.ceil(math.ceil(num_examples / num_pipelines) / (b * local_replicas))
  return max(1, per_replica) * local_replicas


def _synthetic_train_fn(config, info):
  def dataset_fn(ctx):
    b, _, _, pid = _layout(config, ctx)
    seed = tf.constant([int(config.seed), pid], tf.int64)
    x = tf.random.stateless_uniform([b, *info.image_shape], seed)
    y = tf.random.stateless_uniform([b], seed + 1, maxval=info.num_classes, dtype=tf.int32)
    return tf.data.Dataset.from_tensors((x, y)).repeat()

  return dataset_fn


def _streaming_train_fn(config, info, start_step, flip):
  builder = _builder(config)
  decode = builder.info.features["image"].decode_example
  # A resumed stream cannot replay the old one; reshuffle it rather than repeat step 0's order.
  shuffle_seed = int(config.seed) % 2**31
  if start_step:
    shuffle_seed = int(np.random.SeedSequence([shuffle_seed, start_step]).generate_state(1)[0])
    shuffle_seed %= 2**31

  def dataset_fn(ctx):
    b, local_replicas, _, pid = _layout(config, ctx)
    _, aug_seed = _pipeline_seeds(config.seed, pid)
    read_config = tfds.ReadConfig(input_context=ctx, shuffle_seed=shuffle_seed,
                                  try_autocache=False)
    ds = builder.as_dataset(split=_split(builder, "train"), shuffle_files=True,
                            read_config=read_config,
                            decoders={"image": tfds.decode.SkipDecoding()})
    ds = ds.repeat().shuffle(SHUFFLE_BUFFER, seed=shuffle_seed)
    ds = ds.map(lambda ex: (_fixed_size(decode(ex["image"]), info.image_shape),
                            tf.cast(ex["label"], tf.int32)), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(b, drop_remainder=True)
    steps = tf.data.Dataset.range(start_step * local_replicas, 2**62)

    def finish(e, batch):
      x = batch[0]
      if config.augment:
        x = _gather_augmented(x, tf.range(b), aug_seed, e * b + tf.range(b, dtype=tf.int64),
                              flip)
      return _to_float(x), batch[1]

    ds = tf.data.Dataset.zip(steps, ds).map(finish, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)

  return dataset_fn


def _streaming_eval_fn(config, info):
  builder = _builder(config)
  decode = builder.info.features["image"].decode_example
  shape = info.image_shape

  def dataset_fn(ctx):
    b, local_replicas, num_pipelines, pid = _layout(config, ctx)
    n_all = info.num_eval_examples
    n = len(range(pid, n_all, num_pipelines))
    total = _eval_batches_per_pipeline(n_all, b, local_replicas, num_pipelines) * b
    # Example-level sharding (every pipeline reads the split, decodes only its share) makes
    # the per-pipeline counts exact, which equal batch counts need.
    ds = builder.as_dataset(split=_split(builder, "eval"), shuffle_files=False,
                            read_config=tfds.ReadConfig(try_autocache=False),
                            decoders={"image": tfds.decode.SkipDecoding()})
    ds = ds.shard(num_pipelines, pid).map(
        lambda ex: (_fixed_size(decode(ex["image"]), shape), tf.cast(ex["label"], tf.int32),
                    tf.constant(1.0)), num_parallel_calls=tf.data.AUTOTUNE)
    pad = tf.data.Dataset.from_tensors(
        (tf.zeros(shape, tf.uint8), tf.constant(0), tf.constant(0.0))).repeat(total - n)
    ds = ds.concatenate(pad).take(total).batch(b, drop_remainder=True)
    ds = ds.map(lambda x, y, w: (_to_float(x), y, w))
    return ds.prefetch(tf.data.AUTOTUNE)

  return dataset_fn


def _name(config) -> str:
  name = config.dataset
  if not isinstance(name, str) or not name:
    raise ConfigError(f"dataset: {name!r} is not a dataset name; use a TFDS image-classification "
                      "name (e.g. mnist, cifar10), 'digits' or 'synthetic'")
  return name


def _base_name(name: str) -> str:
  return name.split("/")[0].split(":")[0]


def _check_batch(config, strategy):
  gbs, replicas = config.global_batch_size, strategy.num_replicas_in_sync
  if isinstance(gbs, bool) or not isinstance(gbs, (int, np.integer)) or gbs < 1:
    raise ConfigError(f"global_batch_size: must be a positive integer, got {gbs!r}")
  if gbs % replicas:
    raise ConfigError(f"global_batch_size: {gbs} is not divisible by the {replicas} replicas "
                      f"in sync; use a multiple of {replicas}")


def _builder(config) -> tfds.core.DatasetBuilder:
  """The prepared TFDS builder; validates the name and features; prepares only `digits`."""
  name, data_dir = _name(config), config.data_dir or None
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise ConfigError(f"dataset: {name!r} is not a TFDS dataset; use a TFDS image-classification "
                      "name (e.g. mnist, cifar10), 'digits' or 'synthetic'") from None
  features = builder.info.features
  if not (isinstance(features, tfds.features.FeaturesDict) and "image" in features
          and isinstance(features["image"], tfds.features.Image) and "label" in features
          and isinstance(features["label"], tfds.features.ClassLabel)):
    raise ConfigError(f"dataset: {name!r} is not an image-classification dataset (needs an "
                      "'image' feature and a ClassLabel 'label' feature)")
  if tf.as_dtype(features["image"].dtype) != tf.uint8:
    raise ConfigError(f"dataset: {name!r} has {tf.as_dtype(features['image'].dtype).name} "
                      "images; only uint8 images are supported")
  if not builder.is_prepared():
    if _base_name(name) != "digits":
      where = data_dir or "the TFDS default data_dir"
      raise ConfigError(
          f"dataset: {name!r} is not prepared in {where} and nothing is downloaded at run time; "
          f"run `tfds build {name} --data_dir=DIR` and set data_dir=DIR")
    try:
      builder.download_and_prepare()  # no network: the data ships with scikit-learn
    except Exception:  # another process may have finished preparing it first
      if not tfds.builder(name, data_dir=data_dir).is_prepared():
        raise
    builder = tfds.builder(name, data_dir=data_dir)
  return builder


def _split(builder, which: str) -> str:
  splits = builder.info.splits
  names = ("train",) if which == "train" else ("test", "validation")
  for name in names:
    if name in splits:
      return name
  raise ConfigError(f"dataset: {builder.name!r} has no {' or '.join(map(repr, names))} split "
                    f"(it has {', '.join(splits.keys()) or 'none'})")


def _image_shape(builder) -> tuple[int, int, int]:
  h, w, c = builder.info.features["image"].shape
  if c is None:
    raise ConfigError(f"dataset: {builder.name!r} images have no fixed channel count")
  if h is None or w is None:
    h = w = RESIZE_TO
  return int(h), int(w), int(c)


def _to_float(images):
  # A multiply, not `/ 255`: XLA rewrites the division into this, and the tf.data path and a
  # compiled loop calling `batch_at` must produce identical bits.
  return tf.cast(images, tf.float32) * (1.0 / 255.0)


def _fixed_size(image, shape):
  if image.shape[:2] == tuple(shape[:2]):
    return image
  image = tf.image.resize(image, shape[:2], antialias=True)
  return tf.ensure_shape(tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8), shape)


def _fits_in_memory(info: DatasetInfo) -> bool:
  return info.num_train_examples * math.prod(info.image_shape) <= IN_MEMORY_MAX_BYTES
