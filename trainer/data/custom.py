"""`dataset = 'package.module:function'`: your own data, from a function of yours.

The function takes no arguments and returns a dict, in one of two forms:

  Arrays (held in memory, drawn by global step like `digits`: deterministic and exactly
  resumable, device-resident where they fit):
    {"train": (x_train, y_train), "eval": (x_eval, y_eval)}       # "test" works for "eval"
    x: uint8 images [N, H, W, C] (scaled to [0, 1], augmentable) or float features [N, ...];
    y: int class ids [N] (classification; "num_classes" may be given, else max + 1) or float
    targets [N] / [N, k] (regression).

  tf.data (streamed; a resumed run restarts the stream, as streamed TFDS datasets do):
    {"train": train_fn, "eval": eval_fn, "num_train_examples": N, "num_eval_examples": M,
     "num_classes": K}                                              # K only for classification
    train_fn(ctx) -> an endless tf.data.Dataset of per-replica batches (x, y) of
    ctx.get_per_replica_batch_size(global_batch_size) examples, sharded by
    ctx.input_pipeline_id (`tf.distribute.InputContext`); eval_fn(ctx) -> one pass of
    per-replica batches (x, y) or (x, y, weight), every batch full (pad with weight 0).
    The eval takes only the batches that cover num_eval_examples (a `.repeat()` left in
    eval_fn is harmless; fewer examples are one warning); a train dataset that ends stops
    the run with one line.
    The global batch size is `ctx.get_per_replica_batch_size(...)`'s business: the trainer
    passes the context that strategy.distribute_datasets_from_function makes.

Every mistake (an import that fails, a wrong return, mismatched lengths or shapes, labels
out of range or more than MAX_CLASSES classes, an empty split) is one ConfigError line naming
`dataset`.
"""

import numpy as np

from trainer.base import plugins
from trainer.data.info import DatasetInfo
from trainer.base.errors import ConfigError, first_line, reason

MAX_CLASSES = 1_000_000  # more outputs than any classifier has: a label that is no class id


def function_info(name, image_size=0) -> DatasetInfo:
  """The DatasetInfo of `name` = 'package.module:function' (calls the function once)."""
  function = plugins.load_function("dataset", name)
  try:
    result = function()
  except Exception as e:  # pylint: disable=broad-except  (the user's code may raise anything)
    raise ConfigError(f"dataset: {name!r} raised {first_line(e, 160)} when called; fix the "
                      f"function (see trainer.data.custom for what it returns)") from None
  if not isinstance(result, dict) or "train" not in result:
    raise ConfigError(f"dataset: {name!r} returned {type(result).__name__}; it must return a "
                      f"dict with 'train' and 'eval' (see trainer.data.custom)")
  eval_key = next((k for k in ("eval", "test", "validation") if k in result), None)
  if eval_key is None:
    raise ConfigError(f"dataset: {name!r} returned no 'eval' (or 'test') split")
  if image_size:
    raise ConfigError(f"image_size: only folder: and TFDS images are resized; the data of "
                      f"{name!r} is used as it is returned (leave image_size at 0)")
  if callable(result["train"]):
    return _streamed(name, result, eval_key)
  return _arrays(name, result, eval_key)


def _split(name, result, key):
  value = result[key]
  if not (isinstance(value, (tuple, list)) and len(value) == 2):
    raise ConfigError(f"dataset: {name!r} split {key!r} must be a pair (inputs, labels)")
  try:
    x, y = np.asarray(value[0]), np.asarray(value[1])
  except ValueError as e:  # ragged: examples of different shapes
    raise ConfigError(f"dataset: {name!r} split {key!r} is not two arrays ({reason(e, 120)}); "
                      f"every example must have the same shape") from None
  if len(x) == 0:
    raise ConfigError(f"dataset: {name!r} split {key!r} is empty")
  if len(x) != len(y):
    raise ConfigError(f"dataset: {name!r} split {key!r} has {len(x)} inputs but {len(y)} labels")
  if x.dtype != np.uint8:
    if not np.issubdtype(x.dtype, np.number):
      raise ConfigError(f"dataset: {name!r} split {key!r} inputs are {x.dtype}, not numbers")
    x = x.astype(np.float32)
  if np.issubdtype(y.dtype, np.integer):
    y = y.astype(np.int32)
  elif np.issubdtype(y.dtype, np.floating):
    y = y.astype(np.float32)
  else:
    raise ConfigError(f"dataset: {name!r} split {key!r} labels are {y.dtype}; give int class "
                      f"ids or float targets")
  return x, y


def _check_classes(name, num_classes, why):
  """A class count no classifier has is a label that is not a class id (it ran out of memory
  allocating the model's last layer, and was reported as a global batch too large)."""
  if num_classes > MAX_CLASSES:
    raise ConfigError(f"dataset: {name!r} has {num_classes:,} classes ({why}); labels must be "
                      f"class ids 0..K-1 with K at most {MAX_CLASSES:,}")


def _arrays(name, result, eval_key):
  splits = {"train": _split(name, result, "train"), "eval": _split(name, result, eval_key)}
  (x, y), (xe, ye) = splits["train"], splits["eval"]
  if x.shape[1:] != xe.shape[1:] or x.dtype != xe.dtype:
    raise ConfigError(f"dataset: {name!r} train inputs are {x.dtype} {x.shape[1:]} but eval "
                      f"inputs {xe.dtype} {xe.shape[1:]}")
  if y.shape[1:] != ye.shape[1:] or y.dtype != ye.dtype:
    raise ConfigError(f"dataset: {name!r} train labels are {y.dtype} {y.shape[1:]} but eval "
                      f"labels {ye.dtype} {ye.shape[1:]}")
  num_classes = 0
  if y.dtype == np.int32:
    if y.ndim != 1:
      raise ConfigError(f"dataset: {name!r} class labels must be [N], got shape {y.shape}")
    given = result.get("num_classes")
    num_classes = int(given or max(y.max(), ye.max()) + 1)
    _check_classes(name, num_classes, "its num_classes" if given else
                   f"its largest label is {num_classes - 1}")
    for key, labels in (("train", y), (eval_key, ye)):
      if labels.min() < 0 or labels.max() >= num_classes:
        raise ConfigError(f"dataset: {name!r} split {key!r} has labels outside "
                          f"0..{num_classes - 1}")
  return DatasetInfo(name, num_classes, tuple(x.shape[1:]), len(x), len(xe),
                     input_dtype=x.dtype.name, label_dtype=y.dtype.name,
                     label_shape=tuple(y.shape[1:]), loader=splits.__getitem__)


def _streamed(name, result, eval_key):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  fns = {"train": result["train"], "eval": result[eval_key]}
  if not callable(fns["eval"]):
    raise ConfigError(f"dataset: {name!r} gives a train function but no eval function")
  for key in ("num_train_examples", "num_eval_examples"):
    if not isinstance(result.get(key), int) or result[key] < 1:
      raise ConfigError(f"dataset: {name!r} must give {key} (an int >= 1) with its functions")
  try:
    spec = fns["train"](tf.distribute.InputContext()).element_spec
  except Exception as e:  # pylint: disable=broad-except  (the user's code)
    raise ConfigError(f"dataset: {name!r}'s train function failed: {first_line(e, 160)}"
                      ) from None
  if not (isinstance(spec, tuple) and len(spec) == 2):
    raise ConfigError(f"dataset: {name!r}'s train function must yield (inputs, labels) "
                      f"batches, got {spec}")
  x, y = spec
  labels_int = y.dtype.is_integer
  num_classes = int(result.get("num_classes") or 0)
  if labels_int and num_classes < 2:
    raise ConfigError(f"dataset: {name!r} yields class labels: give num_classes (>= 2)")
  _check_classes(name, num_classes, "its num_classes")
  return DatasetInfo(name, num_classes, tuple(x.shape[1:]), result["num_train_examples"],
                     result["num_eval_examples"], input_dtype=x.dtype.name,
                     label_dtype="int32" if labels_int else "float32",
                     label_shape=tuple(y.shape[1:]), streams=fns)
