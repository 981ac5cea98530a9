"""What a resume checks a dataset against: its fingerprint, recorded in config.json's "data".

A `folder:` dataset is files that can change between two runs of one workdir. Its steps per
epoch (which config.json's plan records) stay the same when an image is replaced, or moved to
another class, so the fingerprint holds the images per class and split, and one SHA-256 of
every file's split, class, name, size and content hash (read in the same pass that decodes
it). `trainer.rundir.resume` refuses to resume a run on data whose fingerprint changed.
"""

import hashlib
import os


def of_folder(classes, splits, files):
  """The fingerprint of a folder: dataset: `classes` (names by label), `splits` {'train',
  'eval': [(path, label)]} and `files` {split: [(size, content hash)]} in the same order."""
  digest = hashlib.sha256()
  counts = {c: [0, 0] for c in classes}  # [train, eval] images per class
  for column, split in enumerate(("train", "eval")):
    for (path, label), (size, content) in zip(splits[split], files[split]):
      counts[classes[label]][column] += 1
      digest.update(f"{split}/{classes[label]}/{os.path.basename(path)}\t{size}\t{content}\n"
                    .encode())
  return {"images": counts, "files": digest.hexdigest()}


def change(old, new):
  """How fingerprint `new` differs from `old`, in a few words, or '' (the same, or either
  unknown: a config.json from before fingerprints, or data that has none)."""
  if not old or not new or old == new:
    return ""
  before, after = old.get("images", {}), new.get("images", {})
  for name in sorted(set(before) | set(after)):
    a, b = before.get(name), after.get(name)
    if a != b:
      if a is None or b is None:
        return f"class {name!r} {'added' if a is None else 'removed'}"
      return (f"class {name!r} had {a[0]} train and {a[1]} eval images, now {b[0]} and "
              f"{b[1]}")
  return "the same images per class, but other files (names, sizes or contents)"
