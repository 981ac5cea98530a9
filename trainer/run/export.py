"""The trained model out: `workdir/export/`, written by the chief at the end of a run.

  export/model.keras    the model as trained (float32 inputs as the trainer feeds them: images
                        in [0, 1]; the task's raw outputs, e.g. logits), compiled with the run's
                        optimizer (unwrapped from a LossScaleOptimizer) and the task's Keras
                        loss, so the optimizer carries the schedule and `iterations` (the global
                        step): `model.fit` on it continues at lr(iterations). Loads with plain
                        `keras.models.load_model(path)` once `trainer.schedules` is imported
                        (it registers WarmupCosineDecay; without it both Keras 3 and tf_keras
                        refuse the file: Keras 3 imports no module of a custom object, and
                        tf_keras's optimizer does not find the schedule), under the default
                        dtype policy (see `_write_keras` for mixed_float16).
  export/serving/       a TF SavedModel: `serving_default` takes the inputs as the dataset
                        stores them (uint8 images, or float32 features), `serving_float`
                        (images) float images in [0, 1] of any size; `trainer.run.serving`.
  export/export.json    what was written: the global step, the task, each signature's input
                        contract (dtype, shape, value range, the scaling and resizing the
                        inputs went through), what to import to load model.keras, and for a
                        part that could not be written, why. Written last: its presence marks
                        a complete export. `trainer.load_export` reads it all back.

Atomic: everything is written into a temporary sibling (`workdir/export.tmp-*`) and then
renamed to `export/`, so a reader sees no `export/`, the previous complete one, or the new
complete one; never half of one (see `trainer.rundir.files.publish_directory` for what gs://
can and cannot promise).

With `config.ema_decay` the export holds the moving average of the weights (`trainer.ema`;
export.json says `"weights": "ema (decay ...)"`), the weights the run evaluated as `ema_*`;
the raw weights stay in the checkpoints.

The export is made from a fresh copy of the model built outside the strategy (the config's
model function called again under the run's dtype policy, then the trained weights and
optimizer state copied in), so it holds plain variables whatever strategy trained it. Every
worker reads the values (sync-on-read variables need all of them); only the chief writes.

A model that cannot be saved as `.keras` (a subclassed model without `get_config` or not
registered with `@keras.saving.register_keras_serializable()`) does not fail the run: the
checkpoint is intact, `serving/` is still written, and one warning says what to add.
"""

import contextlib
import json
import os
import uuid

from absl import logging
import numpy as np
import tensorflow as tf

from trainer import data, models
from trainer.base import plugins, testpoints
from trainer.base.compat import LEGACY_KERAS, keras, unwrap_optimizer
from trainer.base.errors import first_line, stop_in
from trainer.distribute.precision import global_policy
from trainer.run import console, serving
from trainer.rundir import files as workdir_lib
from trainer.rundir import layout, record
from trainer.rundir.layout import EXPORT as EXPORT_DIR, MANIFEST, MODEL_FILE, SERVING_DIR

REGISTER_ADVICE = (
    "decorate the model class with @keras.saving.register_keras_serializable() and give it a "
    "get_config() returning its constructor arguments (and from_config if they are not plain "
    "values); load it in a process that imports the class's module")


def load_advice(config):
  """export.json's "load": what a process must import before `keras.models.load_model` reads
  model.keras (Keras 3 imports no module of a saved object; without them it says only that
  the file 'could not be deserialized properly')."""
  modules = ["trainer.schedules"]  # registers the schedule the optimizer carries
  for field in ("model", "task"):  # a plug-in's module registers its classes, if it has any
    value = getattr(config, field)
    if plugins.is_import_path(value):
      modules.append(value.split(":")[0])
  imports = ", ".join(f"import {m}" for m in modules)
  return (f"model.keras: {imports}, then keras.models.load_model(path); or "
          f"trainer.load_export(path), which does both (path: the workdir or its export/)")


def export_dir(workdir):
  return os.path.join(workdir, EXPORT_DIR)


def write(parts, workdir, chief=True, keep_current=True, source=None):
  """Exports the model of `parts` at its current global step to `workdir/export/`.

  Call it on every worker, outside `strategy.scope()`, under no particular dtype policy: the
  values are read on all workers (sync-on-read variables all-reduce), the copy is built under
  `parts.policy`, and only the chief writes. Never raises for a model that cannot be saved
  or a write that fails: it logs one warning saying what was not written and why.

  Args:
    parts: the run's `trainer.step.build.Parts` (trained or restored).
    workdir: the run's directory (local, gs://, ...).
    chief: whether this worker writes (`trainer.distribute.strategy.is_chief`).
    keep_current: keep an existing complete export of the same global step (a finished run
      started again) instead of writing it again.
    source: where the weights come from when not the run's end (e.g. its best eval), for
      export.json's `from`.

  Returns:
    On the chief, the manifest of the export now in `workdir/export` (None if nothing could
    be written); None on other workers.
  """
  try:
    step = int(parts.optimizer.iterations.numpy())
    snapshot = _Snapshot(parts)  # on every worker, in the same order
  except Exception as e:  # pylint: disable=broad-except  (the same on every worker)
    _let_stops_through(e)
    if chief:
      logging.warning("export: nothing written to %s: cannot read the model's variables (%s)",
                      export_dir(workdir), first_line(e, 300))
    return None
  if not chief:
    return None
  current = record.read_export_manifest(workdir)
  if (keep_current and current and current.get("step") == step
      and not current.get("not_written")):
    missing = record.export_missing(workdir, current)
    if not missing:
      logging.info("export: %s is already the model at step %d; kept", export_dir(workdir),
                   step)
      return current
    logging.warning("export: %s lost %s since it was written; writing it again",
                    export_dir(workdir), ", ".join(missing))
  try:
    with testpoints.point("export"):
      return _write(parts, snapshot, workdir, step, source)
  except Exception as e:  # pylint: disable=broad-except  (the run itself has succeeded)
    _let_stops_through(e)
    logging.warning("export: nothing written to %s (%s); the checkpoints in %s are intact",
                    export_dir(workdir), first_line(e, 300), layout.checkpoint_dir(workdir))
    return None


def _let_stops_through(error):
  """A stop by a signal (errors.Stopped is an Exception, raised wherever the main thread is)
  is not a part that cannot be written: it ends the run, and the same command again exports."""
  stop = stop_in(error)
  if stop is not None:
    raise stop


class _Snapshot:
  """The values of the model's weights and of the (unwrapped) optimizer's variables."""

  def __init__(self, parts):
    ema = parts.learner.ema  # the averaged weights are the ones to serve (raw: checkpoints)
    with ema.swapped() if ema is not None else contextlib.nullcontext():
      self.weights = parts.model.get_weights()
    self.averaged = ema is not None
    self.optimizer = unwrap_optimizer(parts.optimizer)
    self.optimizer_values = [np.asarray(v.numpy()) for v in _optimizer_variables(self.optimizer)]
    # optimizer.lr_mults froze some variables: the run's optimizer has no slots for them.
    self.frozen = bool(parts.rates is not None and parts.rates.frozen)
    self.optimizer_names = ([_own_name(v) for v in _optimizer_variables(self.optimizer)]
                            if self.frozen else [])


def _own_name(variable):
  """An optimizer variable's name without the optimizer's ('conv1_kernel_momentum')."""
  return variable.path.split("/", 1)[-1]


def _optimizer_variables(optimizer):
  variables = optimizer.variables
  return list(variables() if callable(variables) else variables)


def _write(parts, snapshot, workdir, step, source=None):
  final = export_dir(workdir)
  _remove_leftovers(workdir)
  tmp = os.path.join(workdir, f"{layout.EXPORT_TMP}{uuid.uuid4().hex[:8]}")
  tf.io.gfile.makedirs(tmp)
  try:
    manifest, problems = _write_parts(parts, snapshot, tmp, step, source)
    if not manifest["written"]:
      logging.warning("export: nothing written (%s); the checkpoints in %s are intact%s",
                      "; ".join(problems), layout.checkpoint_dir(workdir),
                      "" if record.read_export_manifest(workdir) is None else
                      f"; {final} still holds the export of an earlier step")
      return None
    with tf.io.gfile.GFile(os.path.join(tmp, MANIFEST), "w") as f:  # last: marks it complete
      f.write(json.dumps(manifest, indent=2, sort_keys=True))
    workdir_lib.publish_directory(tmp, final, MANIFEST, layout.EXPORT_OLD)
  finally:
    if tf.io.gfile.exists(tmp):
      workdir_lib.remove(tmp)
  if problems:
    logging.warning("export: %s; wrote %s", "; ".join(problems),
                    ", ".join(os.path.join(final, p) for p in manifest["written"]))
  else:
    logging.info("export: %s (step %d)", ", ".join(
        os.path.join(final, p) for p in manifest["written"]), step)
  return manifest


def _write_parts(parts, snapshot, tmp, step, source=None):
  """Writes model.keras and serving/ into `tmp`; returns (manifest, [problem lines])."""
  info, task, config = parts.info, parts.task, parts.config
  manifest = {
      "step": step, "task": config.task, "model": config.model, "dataset": config.dataset,
      "dtype_policy": parts.policy,
      "weights": (f"ema (decay {config.ema_decay})" if snapshot.averaged else "raw"),
      "from": source or "the end of the run",
      "keras": keras.__version__, "load": load_advice(config),
      **serving.contract(info, task, parts.spec.num_outputs, data.describe_inputs(info)),
      "written": [], "not_written": {}}
  problems = []
  with global_policy(parts.policy):
    model = _copy(parts, snapshot)
    _write_part(MODEL_FILE, tmp, manifest, problems,
                lambda path: _write_keras(model, parts, snapshot, path, step),
                lambda reason: (f"{MODEL_FILE} not written: the model cannot be saved and "
                                f"loaded back as .keras ({reason}); to get it, "
                                f"{REGISTER_ADVICE}"))
    _write_part(SERVING_DIR, tmp, manifest, problems,
                lambda path: serving.write(model, task, info, path),
                lambda reason: (f"{SERVING_DIR}/ not written: the model cannot be exported as "
                                f"a SavedModel ({reason})"))
  return manifest, problems


def _write_part(name, tmp, manifest, problems, write, problem):
  """`write(tmp/name)`, listed in the manifest as written; a part that fails (a user's model
  may not save) is listed as not written, with `problem(reason)` among `problems`, and what
  it left is removed. A stop by a signal is not a failure: it goes through."""
  path = os.path.join(tmp, name)
  try:
    write(path)
    manifest["written"].append(name)
  except Exception as e:  # pylint: disable=broad-except
    _let_stops_through(e)
    reason = first_line(e, 300)
    manifest["not_written"][name] = reason
    problems.append(problem(reason))
    if tf.io.gfile.exists(path):
      workdir_lib.remove(path)


def _copy(parts, snapshot):
  """The config's model built again outside the strategy, holding the trained weights."""
  model = models.build(parts.config.model, parts.info.input_shape, parts.spec.num_outputs,
                       fn=parts.spec.model_fn)
  model.set_weights(snapshot.weights)
  return model


def _write_keras(model, parts, snapshot, path, step):
  """model.keras: compiled with a copy of the run's optimizer holding its state; checked by
  loading it back (the in-process load sees the classes this process registered)."""
  original = snapshot.optimizer
  optimizer = type(original).from_config(original.get_config())
  optimizer.build(model.trainable_variables)
  variables = _optimizer_variables(optimizer)
  shapes = [tuple(v.shape) for v in variables]
  values = snapshot.optimizer_values
  if snapshot.frozen:
    # The copy is a plain Keras optimizer over every trainable variable (lr_mults are the
    # trainer's): the variables the run froze get zero slots, the others theirs, by name.
    by_name = dict(zip(snapshot.optimizer_names, values))
    values = [by_name.get(_own_name(v), np.zeros(v.shape, v.dtype)) for v in variables]
  if shapes != [tuple(v.shape) for v in values]:
    raise ValueError(f"the optimizer copy has variables of shapes {shapes}, the run's "
                     f"{[tuple(v.shape) for v in values]}")
  for variable, value in zip(variables, values):
    variable.assign(value)
  # Keras 3 would wrap the optimizer of a mixed_float16 model in a LossScaleOptimizer here;
  # unwrapped, the file loads with its optimizer state under the default policy, as a fresh
  # process loads it (tf_keras saves and loads the wrapper whatever the policy).
  model.compile(optimizer=optimizer, loss=parts.task.keras_loss(),
                **({} if LEGACY_KERAS else {"auto_scale_loss": False}))
  with console.quiet_saving():
    model.save(path)
    with global_policy("float32"):  # as a fresh process loads it
      loaded = keras.models.load_model(path)
  if loaded.optimizer is None:
    raise ValueError("it loads without its optimizer")
  loaded_step = int(unwrap_optimizer(loaded.optimizer).iterations.numpy())
  if loaded_step != step:
    raise ValueError(f"it loads at optimizer step {loaded_step}, not {step}")


def _remove_leftovers(workdir):
  """Temporary and replaced exports of a process that died while exporting."""
  for pattern in (layout.EXPORT_TMP + "*", layout.EXPORT_OLD + "*"):
    for path in tf.io.gfile.glob(os.path.join(workdir, pattern)):
      workdir_lib.remove(path)
