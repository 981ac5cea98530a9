"""Checkpoints of model + optimizer (whose `iterations` is the global step).

Every worker takes part in a save (the variables are distributed), but only the chief's goes
to `workdir/checkpoints`; other workers write to a scratch directory that is deleted after
each save, as TF's multi-worker saving requires.

What a reader sees. TF writes a checkpoint's data and index first and then, atomically, the
`checkpoint` state file that lists it, so a process killed at any point leaves the listed
checkpoints complete; the state file is the commit point. Files can still go bad later (a
disk error, a power cut before the page cache reached the disk, a partial copy), so
`restore_latest` reads every tensor of a candidate (each one is checksummed) before restoring
it, and falls back to the previous one with a warning naming the bad one. Files newer than
the last committed checkpoint are an interrupted save and are ignored (the next save of that
step overwrites them); without a state file every `ckpt-N` is a candidate. A save
that fails (disk full, permissions) removes its partial files and raises `CheckpointError`
naming the checkpoint that is still the latest (the one this process restored or last
saved: the state file may be what failed) and advice that fits the error.

Housekeeping at restore (the chief, with the workdir locked): what interrupted writes left
(`checkpoints/checkpoint.tmp<hex>`, `ckpt-N_temp`, `config.json.tmp`, ...) is deleted, and
checkpoints the state file does not list (it was lost, garbage, or a sweep was interrupted)
are listed again, so `max_checkpoints` deletes them in turn instead of never.

A checkpoint that does not fit the model and optimizer the config builds (another model,
optimizer or precision: a resume under `--allow_config_change`, or a workdir without its
config.json) is a `ConfigError` naming it, before anything is written.
"""

import os
import time

import tensorflow as tf
from absl import logging

from trainer.base import preemption, testpoints
from trainer.base.errors import CheckpointError, ConfigError, first_line
from trainer.distribute import strategy as strategy_lib
from trainer.rundir import files as workdir_lib
from trainer.run import checkpoint_files, retention
from trainer.rundir import layout


class Checkpointer:
  """A `tf.train.CheckpointManager` numbered by global step.

  Args:
    workdir: the run's directory (local or gs://).
    strategy: the strategy the trackables were built under.
    max_to_keep: how many recent checkpoints to keep (beside the best and every keep_every-th:
      `trainer.run.retention`).
    keep_every: keep every checkpoint of a multiple of this step for good (0: none).
    best_steps: () -> the steps of the best evals, whose checkpoints are kept (None: none).
    **trackables: what to save, e.g. model=..., optimizer=..., run_state=...
  """

  def __init__(self, workdir, strategy, max_to_keep, keep_every=0, best_steps=None,
               **trackables):
    self.workdir = workdir
    self.directory = layout.checkpoint_dir(workdir)
    self._strategy = strategy
    self._chief = strategy_lib.is_chief(strategy)
    self._max_to_keep = max_to_keep
    self._keep_every = keep_every
    self._best_steps = best_steps or (lambda: ())
    self._trackables = trackables
    self.checkpoint = tf.train.Checkpoint(**trackables)
    self._manager = self._make_manager()
    self.latest = None  # the checkpoint restored or last saved by this process

  def _make_manager(self):
    # Nothing deleted by TF: trainer.run.retention decides (latest, best, every N-th).
    return tf.train.CheckpointManager(
        self.checkpoint, strategy_lib.write_dir(self.directory, self._strategy), None)

  def restore_latest(self):
    """Restores the newest readable checkpoint in the chief's directory, if any.

    Returns:
      The restored checkpoint's path, or None for a fresh start.

    Raises:
      CheckpointError: checkpoints were written but none of them is readable.
      ConfigError: the newest readable checkpoint does not fit the model and optimizer.
    """
    with testpoints.point("restore"):
      if self._chief:
        workdir_lib.remove_stale_temporaries(self.workdir)
      path = self._restore_latest()
      self.latest = path
      if self._chief and path is not None:
        self._list_unlisted(path)
      return path

  def restore_for_reading(self, step=None, attempts=5):
    """Restores checkpoint `step` (None: the newest readable one) without changing anything
    in the workdir, for a reader beside a live run (`trainer.evaluate`). The run may delete
    the checkpoint being read (max_checkpoints): then the newest one is tried again, up to
    `attempts` times; a given `step` that disappears is one line.

    Returns:
      The restored checkpoint's path.

    Raises:
      ConfigError: no checkpoint yet, or checkpoint `step` was deleted while being read.
      CheckpointError: the checkpoint is unreadable (none of them is, without `step`).
    """
    error = None
    for attempt in range(attempts):
      path = None if step is None else layout.checkpoint_path(self.workdir, step)
      try:
        if path is None:
          path = self._restore_latest()
          if path is None:
            raise ConfigError(f"workdir: no checkpoint in {self.directory} yet; train first")
        else:
          problem = checkpoint_files.unreadable(path)
          if problem is not None and checkpoint_files.present(path):
            raise CheckpointError(f"checkpoint: {path} is unreadable ({problem})")
          self._restore(path)  # NotFoundError if it was deleted
        self.latest = path
        return path
      except tf.errors.NotFoundError as e:
        if step is not None:
          raise ConfigError(f"checkpoint: {path} was deleted while it was being read (the run "
                            f"keeps only its latest max_checkpoints); evaluate a newer one"
                            ) from None
        error = e
      except CheckpointError as e:  # every candidate unreadable: deleted under us, or bad
        if step is not None or not layout.checkpoint_steps(self.workdir):
          raise
        error = e
      logging.info("A checkpoint being read was deleted (%s); reading the newest again.",
                   first_line(error))
      time.sleep(0.2 * (attempt + 1))
    if isinstance(error, CheckpointError):
      raise error
    raise CheckpointError(f"workdir: the checkpoints in {self.directory} kept being deleted "
                          f"while being read ({attempts} attempts); try again")

  def restore_step(self, step):
    """Restores checkpoint `step` (verified first), changing nothing on disk.

    Raises:
      CheckpointError: it is unreadable.
    """
    path = layout.checkpoint_path(self.workdir, step)
    problem = checkpoint_files.unreadable(path)
    if problem is not None:
      raise CheckpointError(f"checkpoint: {path} is unreadable ({problem})")
    self._restore(path)
    return path

  def _restore_latest(self):
    candidates, committed = self._candidates()
    problems = []
    for number, path in candidates:
      if committed is not None and number > committed:
        logging.warning("Ignoring %s: written after the last committed checkpoint (a save "
                        "that was interrupted); the next save of that step replaces it.", path)
        continue
      problem = checkpoint_files.unreadable(path)
      if problem is None:
        self._restore(path)
        if problems:
          logging.warning("Resuming from %s, the newest readable checkpoint.", path)
        logging.info("Restored %s", path)
        return path
      problems.append(f"{os.path.basename(path)}: {problem}")
      logging.warning("Checkpoint %s is unreadable (%s); trying the previous one.", path,
                      problem)
    if committed is not None or problems:
      raise CheckpointError(
          f"workdir: no readable checkpoint in {self.directory} "
          f"({'; '.join(problems) or 'the state file lists ckpt-' + str(committed)}); "
          f"move that directory away to start again from step 0")
    return None

  def _restore(self, path):
    """Restores `path`; a checkpoint of another model or optimizer is a ConfigError. One
    written before the run's state existed restores without it (the state starts fresh)."""
    checkpoint = self.checkpoint
    if "run_state" in self._trackables and not any(
        name.startswith("run_state/") for name, _ in tf.train.list_variables(path)):
      checkpoint = tf.train.Checkpoint(
          **{k: v for k, v in self._trackables.items() if k != "run_state"})
    try:
      checkpoint.restore(path).assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.InvalidArgumentError) as e:
      raise ConfigError(
          f"model: the checkpoint {path} does not fit the model and optimizer this config "
          f"builds ({first_line(e, 160)}); it was written under another model, dataset "
          f"shape, optimizer or precision, which --allow_config_change cannot change: resume "
          f"with the config it was written with, or give a new workdir") from None

  def _list_unlisted(self, restored):
    """Lists in the state file every checkpoint up to `restored` it does not list (a lost or
    garbage state file, an interrupted sweep), so max_checkpoints deletes them in turn."""
    state = checkpoint_files.state(self.directory)
    listed = {layout.checkpoint_number(p) for p in ([*state.all_model_checkpoint_paths,
                                    state.model_checkpoint_path] if state else [])} - {None}
    upto = layout.checkpoint_number(restored)
    present = set(layout.checkpoint_steps(self.workdir))
    unlisted = {n for n in present if n <= upto} - listed
    if state is not None and not unlisted:
      return
    latest = layout.checkpoint_number(state.model_checkpoint_path) if state else upto
    numbers = sorted((listed | unlisted | {latest}) - {latest}) + [latest]
    logging.warning("The checkpoint state file in %s did not list %s; listing %s again so "
                    "max_checkpoints=%d applies to them.", self.directory,
                    "anything" if state is None else "all checkpoints",
                    ", ".join(f"ckpt-{n}" for n in sorted(unlisted)) or f"ckpt-{latest}",
                    self._max_to_keep)
    # With timestamps after last_preserved_timestamp: TF's manager treats listed checkpoints
    # without them as preserved for good (keep_checkpoint_every_n_hours) and never deletes them.
    now = time.time()
    tf.compat.v1.train.update_checkpoint_state(
        self.directory, f"ckpt-{latest}", [f"ckpt-{n}" for n in numbers],
        all_model_checkpoint_timestamps=[now - len(numbers) + i for i in range(len(numbers))],
        last_preserved_timestamp=now - len(numbers) - 1)
    self._manager = self._make_manager()

  def _candidates(self):
    """[(number, path)] newest first, and the number the state file commits (or None).

    Both what the state file lists (so a listed checkpoint whose files are gone is reported)
    and every `ckpt-N.index` present (so a lost state file loses nothing).
    """
    found = [layout.checkpoint_path(self.workdir, n)
             for n in layout.checkpoint_steps(self.workdir)]
    state = checkpoint_files.state(self.directory)  # None if missing or unparsable
    listed = [os.path.join(self.directory, os.path.basename(p)) for p in (
        [*state.all_model_checkpoint_paths, state.model_checkpoint_path] if state else [])]
    numbers = {layout.checkpoint_number(p): p for p in listed + found}
    numbers.pop(None, None)
    committed = layout.checkpoint_number(state.model_checkpoint_path) if state else None
    return sorted(numbers.items(), reverse=True), committed

  def save(self, step):
    """Writes a checkpoint numbered `step` (global steps); returns its path on the chief.

    Raises:
      CheckpointError: the write failed (e.g. disk full); its partial files are removed
        and the previous checkpoint is still the latest.
    """
    try:
      with preemption.critical(), testpoints.point("save"):  # a stop at once waits for the commit
        path = self._manager.save(checkpoint_number=step)
    except (tf.errors.OpError, OSError) as e:
      raise checkpoint_files.write_failed(self._manager.directory, step, e, self.latest) from e
    if not self._chief:
      tf.io.gfile.rmtree(self._manager.directory)
      return None
    self.latest = path
    with preemption.critical():  # the state file is rewritten before files are deleted
      if retention.prune(self.workdir, self._max_to_keep, self._best_steps(), self._keep_every):
        self._manager = self._make_manager()  # TF's manager re-reads what is listed
    return path
