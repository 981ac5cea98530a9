"""Reading a run back: its config.json, which checkpoints and export it has.

Pure Python on local paths, so a user mistake is one line in a fraction of a second before
TensorFlow loads; tf.io.gfile (imported on first use) for gs:// and other remote paths.
"""

import json
import os

from trainer.base.errors import ConfigError, first_line, reason
from trainer.base.fs import Files
from trainer.rundir import layout


def _reach(workdir, call, *args):
  """`call(*args)` on a path of `workdir`; a remote workdir TF cannot reach (a gs:// bucket
  that does not exist, no credentials, no network) is one line naming `workdir`."""
  try:
    return call(*args)
  except Exception as e:  # pylint: disable=broad-except  (TF's OpError, loaded on first use)
    if not Files(workdir).remote or not hasattr(e, "error_code"):
      raise
    raise ConfigError(f"workdir: cannot use {workdir} ({first_line(e, 200)}); check the path "
                      f"and your access to it") from None


def read_config_json(workdir):
  """The `{"config": {...}, "plan": {...}, ...}` object of `workdir/config.json`, or None if
  there is none.

  Raises:
    ValueError: the file is there but is no such object (bad JSON, another shape, unreadable);
      a ConfigError naming `workdir` if a remote workdir cannot be reached.
  """
  fs = Files(workdir)
  path = os.path.join(workdir, layout.CONFIG)
  if not _reach(workdir, fs.exists, path):
    return None
  try:
    saved = json.loads(fs.read(path))
  except Exception as e:  # pylint: disable=broad-except  (bad JSON, OSError, TF's OpError)
    raise ValueError(f"{type(e).__name__}: {reason(e, 120)}") from None
  if not (isinstance(saved, dict) and isinstance(saved.get("config"), dict)
          and isinstance(saved.get("plan"), dict)):
    raise ValueError("not a {config, plan} object")
  return saved


def read_run(workdir):
  """The parsed config.json of the run in `workdir`; reads only.

  Raises:
    ConfigError: `workdir` is no run (missing, a file, no or an unreadable config.json).
  """
  fs = Files(workdir)
  if not workdir:
    raise ConfigError("workdir: give --workdir=DIR, the directory of a run")
  if not _reach(workdir, fs.exists, workdir):
    raise ConfigError(f"workdir: no such directory {workdir!r}; give the --workdir of a run")
  if not fs.isdir(workdir):
    raise ConfigError(f"workdir: {workdir!r} is a file; give the directory of a run")
  path = os.path.join(workdir, layout.CONFIG)
  try:
    saved = read_config_json(workdir)
  except ValueError as e:
    raise ConfigError(f"workdir: {path} is unreadable ({e})") from None
  if saved is None:
    raise ConfigError(f"workdir: {workdir!r} has no {layout.CONFIG}, so it is not a run's "
                      f"directory (a run writes it before its first step)")
  return saved


def require_export(workdir):
  """Raises ConfigError unless `workdir` holds a complete export."""
  if not Files(workdir).exists(os.path.join(workdir, layout.EXPORT, layout.MANIFEST)):
    raise ConfigError(f"export: no export in {workdir!r} (no {layout.EXPORT}/"
                      f"{layout.MANIFEST}); a run writes it when it reaches total_steps; drop "
                      f"--export to evaluate a checkpoint")


def require_checkpoint(workdir, checkpoint=None):
  """Raises ConfigError unless `workdir` has checkpoint `checkpoint` (None: any)."""
  directory = layout.checkpoint_dir(workdir)
  steps = layout.checkpoint_steps(workdir)
  if checkpoint is not None and checkpoint not in steps:
    raise ConfigError(f"checkpoint: no checkpoint of step {checkpoint} in {directory} "
                      f"(there are: {', '.join(map(str, steps)) or 'none'})")
  if not steps:
    raise ConfigError(f"workdir: no checkpoint in {directory} yet; train first (or "
                      f"--export to evaluate the export)")


def read_export_manifest(workdir):
  """The complete export's export.json as a dict, or None (no export, or an incomplete one)."""
  path = os.path.join(workdir, layout.EXPORT, layout.MANIFEST)
  try:
    manifest = json.loads(Files(workdir).read(path))
  except Exception as e:  # pylint: disable=broad-except  (TF's OpError, loaded on first use)
    if isinstance(e, (OSError, ValueError)) or hasattr(e, "error_code"):
      return None
    raise
  return manifest if isinstance(manifest, dict) and "step" in manifest else None


def export_missing(workdir, manifest):
  """What `manifest` (export.json) lists as written that is not in workdir's export (a
  SavedModel without its saved_model.pb is not there)."""
  fs, out = Files(workdir), []
  for name in manifest.get("written", []):
    path = os.path.join(workdir, layout.EXPORT, name)
    if name == layout.SERVING_DIR:
      path = os.path.join(path, "saved_model.pb")
    if not fs.exists(path):
      out.append(name)
  return out
