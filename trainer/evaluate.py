r"""Evaluate a run's checkpoint, or its export, on the eval split, with the config it trained.

  python -m trainer.evaluate --workdir=runs/digits                  # the latest readable checkpoint
  python -m trainer.evaluate --workdir=runs/digits --checkpoint=200 # checkpoints/ckpt-200
  python -m trainer.evaluate --workdir=runs/digits --checkpoint=best  # the best eval's
  python -m trainer.evaluate --workdir=runs/digits --export         # export/serving

The run is rebuilt from `workdir/config.json` through the public builder (the model, the task
and the eval data it trained with; `--data_dir` if the data lives elsewhere now), the
checkpoint restored and evaluated with the trainer's own eval loop, so the final checkpoint
gives the final eval numbers of the run. `--export` evaluates the SavedModel in
`export/serving` through the same eval data instead: raw inputs in, the task's serving
outputs back, and the metrics computed by the task from those (for classification the
accuracy, and the loss -log p[label] from the probabilities).

A plug-in (`model`, `dataset` or `task` naming `package.module:function`) is code that only
config.json names: it is imported only if you name it too, `--model=...`, `--dataset=...`,
`--task=...` with the value config.json records, or `--trust_plugins` for all of them.

Prints one summary line and one JSON line on stdout. Reads only: nothing in the workdir is
written or deleted, and no lock is taken, so it may run while the run trains (a checkpoint
that the run deletes meanwhile is replaced by the newest one then, or reported in one line).
Exit status: 0; 2 a user mistake (no such workdir, no config.json, no checkpoint N, no export,
a bad flag; one line on stderr); 5 the checkpoint asked for is unreadable.
"""

import json
import os

from absl import app, flags

from trainer.base import errors, plugins
from trainer.base.choices import STRATEGIES
from trainer.base.errors import ConfigError
from trainer.base.fs import is_remote
from trainer.config import files as config_files
from trainer.rundir import layout, record
from trainer.run import cli

FLAGS = flags.FLAGS
ATTEMPTS = 5  # a live run may delete the checkpoint being read: try the newest again


def _define_flags():
  """Defined when run as a program (trainer.main defines some of the same names)."""
  defs = (
      (flags.DEFINE_string, "workdir", "", "The run's directory (local or gs://)."),
      (flags.DEFINE_string, "checkpoint", None, "Evaluate checkpoints/ckpt-N (N a global step) "
       "or 'best' (the best eval's checkpoint, keep_best); default: the latest readable one."),
      (flags.DEFINE_bool, "export", False, "Evaluate export/serving (the SavedModel) instead "
       "of a checkpoint."),
      (flags.DEFINE_string, "data_dir", "", "The TFDS data_dir; default: the run's."),
      (flags.DEFINE_string, "strategy", "auto", f"One of {', '.join(STRATEGIES)}."),
      (flags.DEFINE_string, "tpu", "", "With --strategy=tpu/auto: 'local', a name, or "
       "grpc://HOST:PORT."),
      (flags.DEFINE_integer, "cpu_devices", 0, "Split the host CPU into N logical devices."),
      *((flags.DEFINE_string, field, "", f"Import the plug-in config.json names as its "
         f"{field}: give the same package.module:function (the code you accept).")
        for field in plugins.FIELDS),
      (flags.DEFINE_bool, "trust_plugins", False, "Import every plug-in config.json names."),
  )
  for define, name, default, help_text in defs:
    if name not in FLAGS:
      define(name, default, help_text)


def load_config(workdir, data_dir="", plugins_named=()):
  """The run's ConfigDict from workdir/config.json (fields it predates at their defaults).

  Raises:
    ConfigError: no run, or config.json names a plug-in (code) that is not in
      `plugins_named` (the `package.module:function` values the caller accepts; True: all).
  """
  source = os.path.join(workdir, layout.CONFIG)
  config = config_files.from_record(record.read_run(workdir)["config"], source)
  plugins.check_named(config, source, plugins_named,
                      how="pass plugins_named=[{value!r}]")
  if data_dir:
    config.data_dir = data_dir
  return config


def _spec(config, strategy):
  from trainer import config as config_lib  # pylint: disable=g-import-not-at-top  (TF)
  return config_lib.resolve(config, strategy)


def restore(workdir, checkpoint=None, strategy=None, data_dir="", plugins_named=()):
  """The run's parts rebuilt from workdir/config.json, checkpoint `checkpoint` restored.
  Reads only.

  Args:
    workdir: the run's directory.
    checkpoint: a global step with a checkpoint; default: the latest readable one.
    strategy: default `trainer.distribute.strategy.get_strategy('auto')`.
    data_dir: the TFDS data_dir; default: the run's.
    plugins_named: the plug-ins config.json names that may be imported (`load_config`).

  Returns:
    (`trainer.step.build.Parts`, the restored checkpoint's path). `trainer.run.export.write(
    parts, DIR)` exports that checkpoint's model.

  Raises:
    ConfigError: no run, no such checkpoint (none at all), or a config that no longer builds.
    CheckpointError: the checkpoint is unreadable (none of them is, without `checkpoint`).
  """
  # pylint: disable=g-import-not-at-top
  from trainer.distribute import strategy as strategy_lib
  from trainer.distribute.precision import global_policy
  from trainer.run import checkpoint_reader
  from trainer.step import build
  config = load_config(workdir, data_dir, plugins_named)
  record.require_checkpoint(workdir, checkpoint)
  strategy = strategy or strategy_lib.get_strategy("auto")
  spec = _spec(config, strategy)

  def fresh_parts():  # for each attempt: a restore cut short leaves state in its objects
    with global_policy(spec.policy):
      parts = build.build(spec, strategy)
    return parts, parts.trackables()

  # A reader, not a Checkpointer: it creates, deletes and rewrites nothing in the workdir.
  return checkpoint_reader.restore_for_reading(workdir, fresh_parts, checkpoint, ATTEMPTS)


def evaluate_checkpoint(workdir, checkpoint=None, strategy=None, data_dir="",
                        plugins_named=()):
  """Evaluates checkpoints/ckpt-`checkpoint` (default: the latest readable one) with the
  trainer's own eval loop. Arguments and errors as for `restore`.

  Returns:
    {'source': 'checkpoint', 'path', 'step', 'examples', **the task's eval metrics}.
  """
  # pylint: disable=g-import-not-at-top
  from trainer.distribute.precision import global_policy
  from trainer.step import build
  parts, path = restore(workdir, checkpoint, strategy, data_dir, plugins_named)
  with global_policy(parts.policy):
    metrics = build.make_runner(parts, train=False).evaluate()
  examples = parts.learner.eval_sums.totals()["count"]
  return {"source": "checkpoint", "path": path,
          "step": int(parts.optimizer.iterations.numpy()), "examples": int(examples), **metrics}


def evaluate_export(workdir, data_dir="", plugins_named=()):
  """Evaluates export/serving through the eval data the run used (`plugins_named`: as for
  `load_config`).

  Returns:
    {'source': 'export', 'path', 'step', 'examples', **the task's eval metrics}.

  Raises:
    ConfigError: no run, a plug-in not named, no export, an export without serving/, or a
      task that cannot turn its serving outputs back into outputs
      (`Task.outputs_from_serving`).
  """
  # pylint: disable=g-import-not-at-top
  import tensorflow as tf
  from trainer import data
  from trainer import task as task_lib
  from trainer.run import export as export_lib
  from trainer.step import learner as learner_lib
  config = load_config(workdir, data_dir, plugins_named)
  record.require_export(workdir)
  manifest = record.read_export_manifest(workdir)
  directory = export_lib.export_dir(workdir)
  if manifest is None:
    raise ConfigError(f"export: {directory}/{layout.MANIFEST} is unreadable; run the "
                      f"training command again to write the export anew")
  path = os.path.join(directory, layout.SERVING_DIR)
  if layout.SERVING_DIR not in manifest.get("written", []) or not tf.io.gfile.isdir(path):
    why = manifest.get("not_written", {}).get(layout.SERVING_DIR, "it is missing")
    raise ConfigError(f"export: {directory} has no {layout.SERVING_DIR}/ ({why}); run the "
                      f"training command again to write the export anew")
  strategy = tf.distribute.get_strategy()  # the default: the SavedModel is not distributed
  spec = _spec(config, strategy)
  task = spec.task
  if (type(task).serving_outputs is not task_lib.Task.serving_outputs
      and type(task).outputs_from_serving is task_lib.Task.outputs_from_serving):
    raise ConfigError(f"task: {config.task!r} overrides serving_outputs but not "
                      f"outputs_from_serving, so --export cannot compute its metrics; define "
                      f"outputs_from_serving or evaluate a checkpoint")
  serving = manifest["serving"]
  loaded = tf.saved_model.load(path)  # kept: the signature only references its variables
  serve = loaded.signatures[serving["signature"]]
  sums = learner_lib.Sums("export_eval", task, spec.num_outputs)
  raw_uint8 = serving["input_dtype"] == "uint8"

  @tf.function
  def run(dataset):
    for inputs, labels, weights in dataset:
      if raw_uint8:  # the pipelines give u * (1/255) in float32: round(x * 255) is u exactly
        inputs = tf.cast(tf.round(inputs * 255.0), tf.uint8)
      outputs = task.outputs_from_serving(serve(**{serving["input"]: inputs})[serving["output"]])
      sums.update(task.per_example_loss(labels, outputs), outputs, labels, weights)

  run(data.make_eval_dataset(spec.info, strategy, config.global_batch_size, config.seed))
  result = sums.result()
  examples = result.pop("examples")
  return {"source": "export", "path": path, "step": int(manifest["step"]),
          "examples": int(examples), **{k: float(v) for k, v in result.items()}}


def summary_line(result):
  """`eval: loss 0.08, accuracy 0.97 (checkpoint .../ckpt-600, step 600, 360 examples)`."""
  metrics = ", ".join(f"{k} {v:.4g}" for k, v in result.items()
                      if k not in ("source", "path", "step", "examples"))
  return (f"eval: {metrics} ({result['source']} {result['path']}, step {result['step']}, "
          f"{result['examples']} examples)")


def _check_record(workdir):
  """The run's config.json read, and the plug-ins it names checked against what the command
  line names (--model, --dataset, --task, or --trust_plugins); returns those."""
  if FLAGS.trust_plugins:
    record.read_run(workdir)
    return True
  recorded, path = record.read_run(workdir)["config"], os.path.join(workdir, layout.CONFIG)
  named = {field: FLAGS[field].value for field in plugins.FIELDS if FLAGS[field].value}
  for field, value in named.items():  # they choose nothing: another value is a mistake
    if recorded.get(field) != value:
      raise ConfigError(f"{field}: --{field}={value} but {path} records "
                        f"{recorded.get(field)!r}; --{field} only names the run's plug-in, to "
                        f"import it")
  named = set(named.values())
  plugins.check_named(recorded, path, named, how="give --{field}={value} (or --trust_plugins)")
  return named


def _checkpoint_flag(value):
  """--checkpoint: None (the latest), a step, or 'best'."""
  if value is None or value == "best":
    return value
  if value.isdigit():
    return int(value)
  raise ConfigError(f"checkpoint: must be a global step (an integer >= 0) or 'best', got "
                    f"{value!r}")


def main(argv):
  cli.no_arguments(argv)
  verbose = FLAGS.verbosity >= 1
  cli.quiet(verbose)
  if FLAGS.export and FLAGS.checkpoint is not None:
    raise ConfigError("checkpoint: give --checkpoint=N or --export, not both")
  step = _checkpoint_flag(FLAGS.checkpoint)
  remote = is_remote(FLAGS.workdir)
  if not remote:  # user mistakes before TensorFlow loads (remote: once it has)
    named = _check_record(FLAGS.workdir)
    if FLAGS.export:
      record.require_export(FLAGS.workdir)
    else:
      record.require_checkpoint(FLAGS.workdir, None if step == "best" else step)
  strategy = None
  if FLAGS.export:
    cli.load_tensorflow(verbose)
  else:
    strategy = cli.strategy(FLAGS.strategy, FLAGS.tpu, FLAGS.cpu_devices, verbose)
  if remote:
    named = _check_record(FLAGS.workdir)
  if step == "best":
    from trainer.run import best  # pylint: disable=g-import-not-at-top
    step = best.best_step(FLAGS.workdir)
  if FLAGS.export:
    result = evaluate_export(FLAGS.workdir, FLAGS.data_dir, named)
  else:
    result = evaluate_checkpoint(FLAGS.workdir, step, strategy, FLAGS.data_dir, named)
  print(summary_line(result))
  print(json.dumps(result, sort_keys=True))


def _usage():
  return f"{__doc__}\nflags:\n{cli.flags_help(__name__)}\n"


def run():
  _define_flags()
  app.run(errors.exit_on_error(main), flags_parser=lambda argv: cli.parse(argv, _usage))


if __name__ == "__main__":
  run()
