"""Paths that may be local or remote (gs://, ...): one rule for telling them apart, and file
reads that stay TensorFlow-free on local paths (so a mistake is one line before TF loads)."""

import os


def is_remote(path) -> bool:
  """Whether `path` names an object store or other filesystem TensorFlow reaches (gs://...)."""
  return isinstance(path, str) and "://" in path


class Files:
  """os.path for local paths, tf.io.gfile (imported on first use) for remote ones."""

  def __init__(self, path):
    self.remote = is_remote(path)

  def _gfile(self):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.io.gfile

  def exists(self, path):
    return self._gfile().exists(path) if self.remote else os.path.exists(path)

  def isdir(self, path):
    return self._gfile().isdir(path) if self.remote else os.path.isdir(path)

  def listdir(self, path):
    if not self.isdir(path):
      return []
    return [n.rstrip("/") for n in (self._gfile().listdir(path) if self.remote
                                     else os.listdir(path))]

  def read(self, path):
    if self.remote:
      with self._gfile().GFile(path) as f:
        return f.read()
    with open(path, encoding="utf-8") as f:
      return f.read()
