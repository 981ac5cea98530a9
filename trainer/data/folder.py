"""`folder:PATH`: your own images, one sub-directory per class, held in memory.

Layout rules (PATH: relative to the working directory, `~/...`, or any tf.io.gfile path):

- Split layout: PATH has a `train/` sub-directory. Then the held-out split is `test/`, else
  `validation/`, beside it; `train/` and the held-out directory hold one sub-directory per
  class, with the same class names in both, each with at least one image. Any other
  sub-directory of PATH is an error (validation/ beside test/ is ignored), and
  `eval_fraction` must stay at its default (the directories are the split).
- Single tree: otherwise PATH itself holds one sub-directory per class. Each class is split
  on its own: of its n >= 2 files, k = floor(n * eval_fraction + 0.5) (at least 1, at most
  n - 1) are held out, namely the k whose `class/file` names have the smallest SHA-256. The
  split depends on the file names only: the same for every training seed and every machine.
  `eval_fraction` must be in (0, 1).
- Names starting with '.' are ignored everywhere (.DS_Store, .ipynb_checkpoints); so are plain
  files beside the class directories (a README). A class directory holds image files only
  (.png, .jpg, .jpeg, .bmp, .gif, any case) and at least one; anything else is an error.
- Labels: the class names in sorted (code point) order are labels 0..K-1, K >= 2. Each split
  is ordered by label, then by file name.
- Pixels: decoded (a GIF's first frame; 16-bit PNGs scaled to 8 bits), converted to RGB
  (gray replicated, alpha dropped), resized to image_size x image_size (0: DEFAULT_SIZE) with
  antialiasing, aspect ratio not kept, rounded to uint8. A BMP with a colour palette is an
  error: TensorFlow's decoder would read its palette indices as gray levels.

Both splits are decoded once, in `folder_info` (which `get_dataset_info` caches per process),
so an unreadable image is a ConfigError before anything is written; each split must fit in
`info.IN_MEMORY_MAX_BYTES`. Decoding is tf.data directly: `tf.io.read_file`, then
`tf.io.decode_image` + `augment.fixed_size`, as two parallel maps. `tfds.ImageFolder` runs the
same decoder (benchmarks/folder_decode.py times both) but has no single-tree layout, lists only
PNG and JPEG, and shuffles the files, so it would add a re-sort and no speed.
"""

import hashlib
import math
import os
import time

from absl import logging
import numpy as np
import tensorflow as tf

from trainer.base import validate
from trainer.base.choices import FOLDER_PREFIX
from trainer.data import augment
from trainer.data import fingerprint
from trainer.data import info as info_lib
from trainer.base.errors import ConfigError, reason

PREFIX = FOLDER_PREFIX
DEFAULT_SIZE = 64  # image_size 0
MAX_SIZE = 1024  # a larger side is a mistake for a dataset held in memory
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
HELD_OUT = ("test", "validation")  # the held-out directory of the split layout, by preference
# The only eval_fraction a split layout accepts: the default (configs/default.py's).
DEFAULT_EVAL_FRACTION = info_lib.DEFAULT_EVAL_FRACTION


def folder_info(name: str, image_size: int = 0,
                eval_fraction: float = DEFAULT_EVAL_FRACTION) -> info_lib.DatasetInfo:
  """The DatasetInfo of `name` = 'folder:PATH', with both splits decoded into memory.

  Its `loader(split)` ('train' or 'eval') returns the split's read-only `(images uint8
  [N, s, s, 3], labels int32 [N])`, the same arrays on every call.

  Raises:
    ConfigError: one line naming `dataset`, `image_size` or `eval_fraction`.
  """
  size = _image_size(image_size)
  shape = (size, size, 3)
  classes, splits = list_files(name, eval_fraction)
  for split, examples in splits.items():
    _check_fits(name, split, len(examples), shape)
  arrays, files = {}, {split: [] for split in splits}
  for split, examples in splits.items():
    arrays[split] = decode(name, examples, shape, files[split])
  return info_lib.DatasetInfo(
      name=name, num_classes=len(classes), image_shape=shape,
      num_train_examples=len(splits["train"]), num_eval_examples=len(splits["eval"]),
      input_dtype="uint8", label_dtype="int32", loader=lambda split: arrays[split],
      fingerprint=fingerprint.of_folder(classes, splits, files))


def contains(name, path) -> bool:
  """Whether `path` (e.g. a workdir) is inside the directory of `name` = 'folder:PATH'."""
  if not name.startswith(PREFIX):
    return False
  root = os.path.expanduser(name[len(PREFIX):])
  if "://" in root or "://" in path:
    root, path = root.rstrip("/"), path.rstrip("/")
  else:
    root, path = os.path.realpath(root), os.path.realpath(path)
  return path == root or path.startswith(root.rstrip("/") + "/")


def list_files(name: str, eval_fraction: float = DEFAULT_EVAL_FRACTION):
  """`(class names, {'train': [(path, label)], 'eval': [...]})` by the layout rules; no decoding."""
  fraction = validate.number("eval_fraction", eval_fraction)
  root = _root(name)
  dirs, _ = _entries(root)
  if "train" in dirs:
    held = next((d for d in HELD_OUT if d in dirs), None)
    if held is None:
      raise ConfigError(f"dataset: {name!r} has train/ but no test/ or validation/ beside it "
                        "(or put the classes directly in it: one tree, split by eval_fraction)")
    others = [d for d in dirs if d not in ("train", *HELD_OUT)]
    if others:
      raise ConfigError(f"dataset: {name!r} has train/ and {held}/, so its other "
                        f"sub-directories ({', '.join(d + '/' for d in others)}) would be "
                        "ignored; move or remove them")
    if fraction != DEFAULT_EVAL_FRACTION:
      raise ConfigError(f"eval_fraction: {name!r} has train/ and {held}/, which are the split; "
                        f"leave eval_fraction at {DEFAULT_EVAL_FRACTION} (got {eval_fraction!r})")
    train = _classes(name, root, "train/")
    test = _classes(name, root, f"{held}/")
    if set(train) != set(test):
      raise ConfigError(
          f"dataset: {name!r}: train/ and {held}/ have different classes (only in train/: "
          f"{_names(set(train) - set(test))}; only in {held}/: {_names(set(test) - set(train))})")
    classes = sorted(train)
    return classes, {"train": _labelled(classes, train), "eval": _labelled(classes, test)}
  if not 0 < fraction < 1:
    raise ConfigError(f"eval_fraction: must be in (0, 1) for {name!r}, one tree of classes "
                      f"split per class, got {eval_fraction!r}")
  tree = _classes(name, root, "")
  classes = sorted(tree)
  train, test = {}, {}
  for c in classes:
    paths = tree[c]
    if len(paths) < 2:
      raise ConfigError(f"dataset: {name!r}: class {c!r} has 1 image; splitting a single tree "
                        "by eval_fraction needs at least 2 per class (or use train/ and test/)")
    k = min(len(paths) - 1, max(1, math.floor(len(paths) * fraction + 0.5)))
    held_out = set(sorted(paths, key=lambda p, c=c: _digest(c, p))[:k])
    train[c] = [p for p in paths if p not in held_out]
    test[c] = [p for p in paths if p in held_out]
  return classes, {"train": _labelled(classes, train), "eval": _labelled(classes, test)}


def decode(name: str, examples, shape, files=None) -> tuple[np.ndarray, np.ndarray]:
  """`(images uint8 [N, *shape], labels int32 [N])` of `examples` [(path, label)], in order.

  Parallel tf.data maps read, decode and resize; a file that fails is named in a ConfigError.
  A list `files` gets (size in bytes, content hash) of each file, in order, from the same read.
  """
  start = time.perf_counter()
  paths = [p for p, _ in examples]
  for path in paths:
    if path.lower().endswith(".bmp"):
      _check_bmp(path)
  images = np.empty((len(paths), *shape), np.uint8)  # filled in place: no second copy
  try:
    batches = _images(paths, shape, files is not None).batch(256).as_numpy_iterator()
    for i, batch in enumerate(batches):
      if files is not None:
        batch, sizes, hashes = batch
        files.extend(zip(sizes.tolist(), (h.tobytes().hex() for h in hashes)))
      images[256 * i:256 * i + len(batch)] = batch
  except tf.errors.OpError:
    # TF's error does not say which file; a pass that skips failures finds it by its index.
    done = np.zeros(len(paths), bool)
    indexed = tf.data.Dataset.zip(tf.data.Dataset.range(len(paths)), _images(paths, shape))
    for i, _ in indexed.ignore_errors().as_numpy_iterator():
      done[i] = True
    bad = paths[int(np.argmin(done))]
    raise ConfigError(f"dataset: {bad} is not a readable image ({_why(bad, shape)}); "
                      f"{name!r} takes PNG, JPEG, BMP and GIF files") from None
  labels = np.array([label for _, label in examples], np.int32)
  images.flags.writeable = labels.flags.writeable = False  # shared by every caller
  logging.info("%s: decoded %d images to %s in %.1f s", name, len(paths), shape,
               time.perf_counter() - start)
  return images, labels


def _images(paths, shape, with_files=False):
  """The images at `paths`, in order: reading and decoding+resizing as two parallel maps
  (`with_files`: each with its file's size and farmhash fingerprint, `tf.fingerprint`)."""
  ds = tf.data.Dataset.from_tensor_slices(paths)
  ds = ds.map(tf.io.read_file, num_parallel_calls=tf.data.AUTOTUNE)
  if with_files:
    return ds.map(lambda data: (_from_bytes(data, shape), tf.strings.length(data),
                                tf.fingerprint(data[None])[0]),
                  num_parallel_calls=tf.data.AUTOTUNE)
  return ds.map(lambda data: _from_bytes(data, shape), num_parallel_calls=tf.data.AUTOTUNE)


def load_image(path, shape):
  """One file as uint8 `shape` (h, w, 3): decode (first frame), to RGB, antialiased resize."""
  return _from_bytes(tf.io.read_file(path), shape)


def _from_bytes(data, shape):
  image = tf.io.decode_image(data, channels=3, expand_animations=False)
  return augment.fixed_size(image, shape)


def _image_size(image_size):
  size = validate.integer("image_size", image_size, 0)
  if size > MAX_SIZE:
    raise ConfigError(f"image_size: must be at most {MAX_SIZE} for a folder: dataset (held in "
                      f"memory), got {image_size!r}")
  return size or DEFAULT_SIZE


def _root(name):
  path = name[len(PREFIX):]
  if not path.strip():
    raise ConfigError(f"dataset: {name!r} names no directory; use folder:PATH")
  root = os.path.expanduser(path)
  if not tf.io.gfile.exists(root):
    raise ConfigError(f"dataset: {name!r}: {root} does not exist")
  if not tf.io.gfile.isdir(root):
    raise ConfigError(f"dataset: {name!r}: {root} is a file, not a directory of class "
                      "sub-directories")
  return root


def _entries(path):
  """(sub-directory names, file names) of `path`, sorted, without names starting with '.'."""
  try:
    names = sorted(n.rstrip("/") for n in tf.io.gfile.listdir(path) if not n.startswith("."))
  except tf.errors.OpError as e:
    raise ConfigError(f"dataset: cannot list {path} ({reason(e)})") from None
  dirs = [n for n in names if tf.io.gfile.isdir(os.path.join(path, n))]
  return dirs, sorted(set(names) - set(dirs))


def _classes(name, root, where):
  """{class name: sorted image paths} of the class directories in root/where."""
  top = os.path.join(root, where) if where else root
  classes, _ = _entries(top)
  if not classes:
    raise ConfigError(f"dataset: {name!r} has no class sub-directories in {where or 'it'} "
                      "(layout: PATH/<class>/<image>, or PATH/train/<class>/ and "
                      "PATH/test/<class>/)")
  if len(classes) < 2:
    raise ConfigError(f"dataset: {name!r} has 1 class ({where}{classes[0]}/); a classifier "
                      "needs at least 2 class sub-directories")
  out = {}
  for c in classes:
    subdirs, files = _entries(os.path.join(top, c))
    if subdirs:
      raise ConfigError(f"dataset: {os.path.join(top, c, subdirs[0])} is a directory inside "
                        f"class {c!r}; a class directory holds image files only")
    for f in files:
      if not f.lower().endswith(EXTENSIONS):
        raise ConfigError(f"dataset: {os.path.join(top, c, f)} is not a "
                          f"{', '.join(EXTENSIONS)} file; a class directory holds images only")
    if not files:
      raise ConfigError(f"dataset: {name!r}: class {where}{c}/ has no images")
    out[c] = [os.path.join(top, c, f) for f in files]
  return out


def _labelled(classes, paths_by_class):
  return [(p, label) for label, c in enumerate(classes) for p in paths_by_class[c]]


def _digest(class_name, path):
  return hashlib.sha256(f"{class_name}/{os.path.basename(path)}".encode()).digest()


def _names(names):
  return ", ".join(sorted(names)) or "none"


def _check_fits(name, split, n, shape):
  nbytes, limit = n * math.prod(shape), info_lib.IN_MEMORY_MAX_BYTES  # the limit read now
  if nbytes > limit:
    raise ConfigError(
        f"dataset: {name!r}: the {split} split, {n} images of {'x'.join(map(str, shape))}, is "
        f"{nbytes:,} bytes, more than the {limit:,} held in memory (IN_MEMORY_MAX_BYTES); use a "
        "smaller image_size, or make it a TFDS dataset (a builder whose examples come from "
        "these files, e.g. via tfds.ImageFolder), `tfds build` it and use its name")


def _check_bmp(path):
  """A BMP whose colour table is not gray is refused: TF's decoder reads its indices as gray."""
  try:
    with tf.io.gfile.GFile(path, "rb") as f:
      head = f.read(14 + 124 + 4 * 256)  # file header, the largest info header, a full table
  except tf.errors.OpError:
    return  # unreadable: the decoding pass names it
  if head[:2] != b"BM" or len(head) < 54 or int.from_bytes(head[28:30], "little") > 8:
    return  # not a BMP (decoding will say so), or true colour
  start = 14 + int.from_bytes(head[14:18], "little")
  count = int.from_bytes(head[46:50], "little") or 2 ** int.from_bytes(head[28:30], "little")
  table = head[start:start + 4 * count]
  if any(len(set(table[i:i + 3])) > 1 for i in range(0, len(table) - 2, 4)):
    raise ConfigError(f"dataset: {path} is a BMP with a colour palette, which TensorFlow "
                      "decodes as gray; save it as a 24-bit BMP or a PNG")


def _why(path, shape):
  """TF's reason for not decoding `path`, in one line."""
  try:
    load_image(path, shape)
  except tf.errors.OpError as e:
    return reason(e) or type(e).__name__
  return "it failed in the decoding pass"
