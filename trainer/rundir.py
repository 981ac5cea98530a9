"""A run's directory as `trainer.evaluate` reads it: is it a run, which checkpoints and export
does it have. Pure Python on local paths, so a user mistake is one line in a fraction of a
second before TensorFlow loads; tf.io.gfile (imported on first use) for gs:// and others.
"""

import json
import os

from trainer.errors import ConfigError

# trainer.export's names (that module imports TensorFlow, which these checks must not wait for).
EXPORT_DIR, MANIFEST = "export", "export.json"


class Files:
  """os.path for local paths, tf.io.gfile (imported on first use) for remote ones."""

  def __init__(self, path):
    self.remote = "://" in path

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


def check(workdir, checkpoint=None, export=False):
  """Raises ConfigError if `workdir` has no run, no ckpt-`checkpoint`, or (`export`) no
  export; reads only. Returns the parsed config.json."""
  fs = Files(workdir)
  if not workdir:
    raise ConfigError("workdir: give --workdir=DIR, the directory of a run")
  if not fs.exists(workdir):
    raise ConfigError(f"workdir: no such directory {workdir!r}; give the --workdir of a run")
  if not fs.isdir(workdir):
    raise ConfigError(f"workdir: {workdir!r} is a file; give the directory of a run")
  path = os.path.join(workdir, "config.json")
  if not fs.exists(path):
    raise ConfigError(f"workdir: {workdir!r} has no config.json, so it is not a run's "
                      f"directory (a run writes it before its first step)")
  try:
    saved = json.loads(fs.read(path))
    if not (isinstance(saved, dict) and isinstance(saved.get("config"), dict)
            and isinstance(saved.get("plan"), dict)):
      raise ValueError("not a {config, plan} object")
  except Exception as e:  # pylint: disable=broad-except  (bad JSON, OSError, TF's OpError)
    raise ConfigError(f"workdir: {path} is unreadable ({type(e).__name__}: "
                      f"{(str(e).splitlines() or [''])[0][:120]})") from None
  if export:
    if not fs.exists(os.path.join(workdir, EXPORT_DIR, MANIFEST)):
      raise ConfigError(f"export: no export in {workdir!r} (no {EXPORT_DIR}/{MANIFEST}); a run "
                        f"writes it when it reaches total_steps; drop --export to evaluate a "
                        f"checkpoint")
    return saved
  directory = os.path.join(workdir, "checkpoints")
  steps = sorted(int(n[len("ckpt-"):-len(".index")]) for n in fs.listdir(directory)
                 if n.startswith("ckpt-") and n.endswith(".index")
                 and n[len("ckpt-"):-len(".index")].isdigit())
  if checkpoint is not None and checkpoint not in steps:
    raise ConfigError(f"checkpoint: no checkpoint of step {checkpoint} in {directory} "
                      f"(there are: {', '.join(map(str, steps)) or 'none'})")
  if not steps:
    raise ConfigError(f"workdir: no checkpoint in {directory} yet; train first (or "
                      f"--export to evaluate the export)")
  return saved
