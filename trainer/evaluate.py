r"""Evaluate a run's checkpoint, or its export, on the eval split, with the config it trained.

  python -m trainer.evaluate --workdir=runs/digits                  # the latest readable checkpoint
  python -m trainer.evaluate --workdir=runs/digits --checkpoint=200 # checkpoints/ckpt-200
  python -m trainer.evaluate --workdir=runs/digits --export         # export/serving

The run is rebuilt from `workdir/config.json` through `trainer.build` (the model, the task and
the eval data it trained with; `--data_dir` if the data lives elsewhere now), the checkpoint
restored and evaluated with the trainer's own eval loop, so the final checkpoint gives the
final eval numbers of the run. `--export` evaluates the SavedModel in `export/serving` through
the same eval data instead: raw inputs in, the task's serving outputs back, and the metrics
computed by the task from those (for classification the accuracy, and the loss -log p[label]
from the probabilities).

Prints one summary line and one JSON line on stdout. Reads only: nothing in the workdir is
written, so it may run while the run trains. Exit status: 0; 2 a user mistake (no such
workdir, no config.json, no checkpoint N, no export, a bad flag; one line on stderr); 5 the
checkpoint asked for is unreadable.
"""

import json
import os

from absl import app, flags

from trainer import console, errors
from trainer.rundir import EXPORT_DIR, MANIFEST, Files, check  # noqa: F401  (evaluate.check)
from trainer.choices import STRATEGIES
from trainer.errors import ConfigError

FLAGS = flags.FLAGS


def _define_flags():
  """Defined when run as a program (trainer.main defines some of the same names)."""
  defs = (
      (flags.DEFINE_string, "workdir", "", "The run's directory (local or gs://)."),
      (flags.DEFINE_integer, "checkpoint", None, "Evaluate checkpoints/ckpt-N (a global step); "
       "default: the latest readable checkpoint."),
      (flags.DEFINE_bool, "export", False, "Evaluate export/serving (the SavedModel) instead "
       "of a checkpoint."),
      (flags.DEFINE_string, "data_dir", "", "The TFDS data_dir; default: the run's."),
      (flags.DEFINE_string, "strategy", "auto", f"One of {', '.join(STRATEGIES)}."),
      (flags.DEFINE_string, "tpu", "", "With --strategy=tpu/auto: 'local', a name, or "
       "grpc://HOST:PORT."),
      (flags.DEFINE_integer, "cpu_devices", 0, "Split the host CPU into N logical devices."),
  )
  for define, name, default, help_text in defs:
    if name not in FLAGS:
      define(name, default, help_text)


def load_config(workdir, data_dir=""):
  """The run's ConfigDict from workdir/config.json (fields it predates at their defaults)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from configs import default  # pylint: disable=g-import-not-at-top
  blob = json.loads(Files(workdir).read(os.path.join(workdir, "config.json")))
  config = ml_collections.ConfigDict(_merge(default.get_config().to_dict(), blob["config"]))
  if data_dir:
    config.data_dir = data_dir
  return config


def _merge(base, saved):
  out = dict(base)
  for key, value in saved.items():
    out[key] = (_merge(base[key], value) if isinstance(value, dict)
                and isinstance(base.get(key), dict) else value)
  return out


def _resolve(config, strategy):
  from trainer import build  # pylint: disable=g-import-not-at-top  (TF-free until here)
  return build.resolve(config, strategy)


def restore(workdir, checkpoint=None, strategy=None, data_dir=""):
  """The run's parts rebuilt from workdir/config.json, checkpoint `checkpoint` restored.

  Args:
    workdir: the run's directory.
    checkpoint: a global step with a checkpoint; default: the latest readable one.
    strategy: default `trainer.strategy.get_strategy('auto')`.
    data_dir: the TFDS data_dir; default: the run's.

  Returns:
    (`trainer.build.Parts`, the restored checkpoint's path). `trainer.export.write(parts, DIR)`
    exports that checkpoint's model.

  Raises:
    ConfigError: no run, no such checkpoint (none at all), or a config that no longer builds.
    CheckpointError: the checkpoint is unreadable (none of them is, without `checkpoint`).
  """
  # pylint: disable=g-import-not-at-top
  from trainer import build, checkpoints
  from trainer import strategy as strategy_lib
  from trainer.errors import CheckpointError
  check(workdir, checkpoint)
  config = load_config(workdir, data_dir)
  strategy = strategy or strategy_lib.get_strategy("auto")
  info, plan, policy = _resolve(config, strategy)
  with build.global_policy(policy):
    parts = build.build(config, strategy, info, plan, policy)
  ckpt = checkpoints.Checkpointer(workdir, strategy, config.max_checkpoints,
                                  **parts.trackables())
  if checkpoint is None:
    path = ckpt.restore_latest()
    if path is None:
      raise ConfigError(f"workdir: no checkpoint in {ckpt.directory} yet; train first")
  else:
    path = os.path.join(ckpt.directory, f"ckpt-{checkpoint}")
    problem = checkpoints.unreadable(path)
    if problem is not None:
      raise CheckpointError(f"checkpoint: {path} is unreadable ({problem})")
    ckpt.checkpoint.restore(path).assert_existing_objects_matched()
  return parts, path


def evaluate_checkpoint(workdir, checkpoint=None, strategy=None, data_dir=""):
  """Evaluates checkpoints/ckpt-`checkpoint` (default: the latest readable one) with the
  trainer's own eval loop. Arguments and errors as for `restore`.

  Returns:
    {'source': 'checkpoint', 'path', 'step', 'examples', **the task's eval metrics}.
  """
  # pylint: disable=g-import-not-at-top
  from trainer import build, data, loop
  parts, path = restore(workdir, checkpoint, strategy, data_dir)
  c = parts.config
  with build.global_policy(parts.policy):
    # An eval-only Trainer: no training input is made (its train loop is never called).
    trainer = loop.Trainer(parts.strategy, parts.learner, parts.compile_plan,
                           data.make_eval_dataset(parts.info, parts.strategy,
                                                  c.global_batch_size, c.seed))
    metrics = trainer.evaluate()
  examples = parts.learner.eval_sums.totals()["count"]
  return {"source": "checkpoint", "path": path,
          "step": int(parts.optimizer.iterations.numpy()), "examples": int(examples), **metrics}


def evaluate_export(workdir, data_dir=""):
  """Evaluates export/serving through the eval data the run used.

  Returns:
    {'source': 'export', 'path', 'step', 'examples', **the task's eval metrics}.

  Raises:
    ConfigError: no run, no export, an export without serving/, or a task that cannot turn
      its serving outputs back into outputs (`Task.outputs_from_serving`).
  """
  # pylint: disable=g-import-not-at-top
  import tensorflow as tf
  from trainer import data
  from trainer import export as export_lib
  from trainer import learner as learner_lib
  from trainer import task as task_lib
  check(workdir, export=True)
  config = load_config(workdir, data_dir)
  manifest = export_lib.read_manifest(workdir)
  directory = export_lib.export_dir(workdir)
  if manifest is None:
    raise ConfigError(f"export: {directory}/{export_lib.MANIFEST} is unreadable; run the "
                      f"training command again to write the export anew")
  if export_lib.SERVING_DIR not in manifest.get("written", []):
    reason = manifest.get("not_written", {}).get(export_lib.SERVING_DIR, "not written")
    raise ConfigError(f"export: {directory} has no {export_lib.SERVING_DIR}/ ({reason})")
  task = task_lib.get_task(config.task)
  if (type(task).serving_outputs is not task_lib.Task.serving_outputs
      and type(task).outputs_from_serving is task_lib.Task.outputs_from_serving):
    raise ConfigError(f"task: {config.task!r} overrides serving_outputs but not "
                      f"outputs_from_serving, so --export cannot compute its metrics; define "
                      f"outputs_from_serving or evaluate a checkpoint")
  strategy = tf.distribute.get_strategy()  # the default: the SavedModel is not distributed
  info, _, _ = _resolve(config, strategy)
  serving = manifest["serving"]
  path = os.path.join(directory, export_lib.SERVING_DIR)
  loaded = tf.saved_model.load(path)  # kept: the signature only references its variables
  serve = loaded.signatures[serving["signature"]]
  sums = learner_lib.Sums("export_eval", task, task.num_outputs(info))
  raw_uint8 = serving["input_dtype"] == "uint8"

  @tf.function
  def run(dataset):
    for inputs, labels, weights in dataset:
      if raw_uint8:  # the pipelines give u * (1/255) in float32: round(x * 255) is u exactly
        inputs = tf.cast(tf.round(inputs * 255.0), tf.uint8)
      outputs = task.outputs_from_serving(serve(**{serving["input"]: inputs})[serving["output"]])
      sums.update(task.per_example_loss(labels, outputs), outputs, labels, weights)

  run(data.make_eval_dataset(info, strategy, config.global_batch_size, config.seed))
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


def main(argv):
  if len(argv) > 1:
    raise ConfigError(f"unexpected arguments {argv[1:]}; flags look like --name=value")
  verbose = FLAGS.verbosity >= 1
  console.quiet_tf(verbose)
  if not verbose:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
  if FLAGS.export and FLAGS.checkpoint is not None:
    raise ConfigError("checkpoint: give --checkpoint=N or --export, not both")
  if "://" not in FLAGS.workdir:  # user mistakes before TensorFlow loads (remote: below)
    check(FLAGS.workdir, FLAGS.checkpoint, FLAGS.export)
  with console.startup_lines_hidden(verbose):
    from trainer import strategy as strategy_lib  # pylint: disable=g-import-not-at-top
    check(FLAGS.workdir, FLAGS.checkpoint, FLAGS.export)
    strategy = None
    if not FLAGS.export:
      if FLAGS.cpu_devices:
        strategy_lib.setup_cpu_devices(FLAGS.cpu_devices)
      strategy = strategy_lib.get_strategy(FLAGS.strategy, FLAGS.tpu)
      strategy_lib.make_first_iterator(strategy)
  if FLAGS.export:
    result = evaluate_export(FLAGS.workdir, FLAGS.data_dir)
  else:
    result = evaluate_checkpoint(FLAGS.workdir, FLAGS.checkpoint, strategy, FLAGS.data_dir)
  print(summary_line(result))
  print(json.dumps(result, sort_keys=True))


def _parse_flags(argv):
  """absl's parser, but a bad flag is one line and exit status 2."""
  argv = [a if a != "-v" else "--verbosity=1" for a in argv]
  try:
    return FLAGS(argv)
  except flags.Error as e:
    errors.exit_with(ConfigError(str(e).splitlines()[0]))


def run():
  _define_flags()
  app.run(errors.exit_on_error(main), flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
