"""trainer.export: workdir/export/ at the end of a run that reached total_steps.

model.keras loads with plain `keras.models.load_model` (after `import trainer.schedules`) and
predicts what the trainer's own model predicts; its optimizer carries the schedule and the
global step, so `fit` continues at lr(iterations); serving/ maps raw inputs to the task's
serving outputs; the export is published atomically; a model that cannot be saved as .keras
costs one warning, not the run.
"""

import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import build_parts, cpu, main_env, mirrored, small_run
from trainer.distribute import precision
from trainer import data
from trainer import evaluate
from trainer.run import export, serving
from trainer.rundir import record
from trainer import models
from trainer import schedules
from trainer.run import train
from trainer.base.compat import LEGACY_KERAS, keras, unwrap_optimizer
from trainer.data import augment

# A run of 24 steps whose final learning rate is not 0, so a fit after it moves the weights.
FINISHED = {"schedule.final_lr": 2e-4}


# Runs shared with tests/test_evaluate.py, which imports these fixtures: pytest would make a
# session fixture once per module that has it, so the runs are kept here, made once.
_RUNS = {}


def _once(name, tmp_path_factory, config):
  if name not in _RUNS:
    workdir = str(tmp_path_factory.mktemp(name) / "w")
    _RUNS[name] = workdir, train.train_and_evaluate(config, workdir, cpu())
  return _RUNS[name]


@pytest.fixture(scope="session")
def finished_run(data_dir, tmp_path_factory):
  """(workdir, result) of a SMALL_RUN that reached total_steps (checkpoints 8, 16, 24).
  Do not change it: copy it."""
  return _once("finished", tmp_path_factory, small_run(data_dir, **FINISHED))


def regression_data():
  """`dataset = 'tests.test_export:regression_data'`: 6 float features, a linear target."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(320, 6)).astype(np.float32)
  y = (x @ rng.normal(size=6) + 0.1 * rng.normal(size=320)).astype(np.float32)
  return {"train": (x[:256], y[:256]), "eval": (x[256:], y[256:])}


REGRESSION = {"dataset": "tests.test_export:regression_data", "task": "regression",
              "model": "mlp", "augment": False}


@pytest.fixture(scope="session")
def regression_run(data_dir, tmp_path_factory):
  """(workdir, result) of SMALL_RUN on `regression_data` with task=regression."""
  return _once("regression", tmp_path_factory, small_run(data_dir, **REGRESSION))


def eval_split(workdir):
  """The run's eval split as stored (uint8 images or float features) and its labels."""
  config = evaluate.load_config(workdir, plugins_named=True)  # this test's own runs
  info = data.get_dataset_info(config.dataset, config.data_dir, config.image_size,
                               config.eval_fraction)
  return data.load_in_memory(info, "eval")


def trainer_outputs(workdir, checkpoint=None):
  """The trainer's own model, restored from the run's checkpoint, on the eval split."""
  parts, _ = evaluate.restore(workdir, checkpoint, cpu(), plugins_named=True)
  inputs, _ = eval_split(workdir)
  return parts.model(augment.to_float(tf.constant(inputs)), training=False).numpy()


def listing(directory):
  return sorted(os.path.relpath(p, directory)
                for p in glob.glob(os.path.join(directory, "**"), recursive=True))


def test_a_finished_run_writes_model_keras_serving_and_manifest(finished_run):
  workdir, _ = finished_run
  manifest = json.load(open(os.path.join(workdir, "export", "export.json")))
  assert manifest["step"] == 24
  assert manifest["written"] == ["model.keras", "serving"] and manifest["not_written"] == {}
  contract = manifest["serving"].pop("contract")
  assert manifest["serving"] == {"signature": "serving_default", "input": "inputs",
                                 "input_dtype": "uint8", "input_shape": [None, 8, 8, 1],
                                 "input_range": [0, 255], "output": "probabilities",
                                 "output_shape": [None, 10]}
  # The scaling the stored images went through, and what the model sees.
  assert "uint8 images [N, 8, 8, 1] in 0..255" in contract and "times 255/16" in contract
  assert "* 1/255" in contract and "NumPy" in contract
  contract = manifest["serving_float"].pop("contract")
  assert manifest["serving_float"] == {"signature": "serving_float", "input": "images",
                                       "input_dtype": "float32",
                                       "input_shape": [None, None, None, 1],
                                       "input_range": [0.0, 1.0], "output": "probabilities",
                                       "output_shape": [None, 10]}
  assert "resized to 8x8" in contract and "antialiased" in contract
  assert manifest["load"].startswith("model.keras: import trainer.schedules, then ")
  assert "trainer.load_export" in manifest["load"]
  assert os.path.isfile(os.path.join(workdir, "export", "model.keras"))
  assert os.path.isfile(os.path.join(workdir, "export", "serving", "saved_model.pb"))
  assert not glob.glob(os.path.join(workdir, "export.*"))  # no temporary or replaced exports


def test_model_keras_and_serving_predict_what_the_trainers_model_does(finished_run):
  workdir, _ = finished_run
  images, _ = eval_split(workdir)
  expected = trainer_outputs(workdir)
  model = keras.models.load_model(os.path.join(workdir, "export", "model.keras"))
  np.testing.assert_allclose(model.predict(augment.to_float(images).numpy(), verbose=0),
                             expected, rtol=1e-5, atol=1e-6)
  serve = tf.saved_model.load(os.path.join(workdir, "export", "serving"))
  served = serve.signatures["serving_default"](inputs=tf.constant(images))
  assert set(served) == {"probabilities"}
  assert served["probabilities"].dtype == tf.float32
  np.testing.assert_allclose(served["probabilities"].numpy(), tf.nn.softmax(expected).numpy(),
                             rtol=1e-5, atol=1e-6)


def applied_learning_rates(model, x, y, steps):
  """Fits `steps` batches; returns [(global step, the rate its update used)], as the
  optimizer reports it."""

  class Record(keras.callbacks.Callback):
    """Keras 3 evaluates the schedule at `iterations` in the update, so its `learning_rate`
    before a batch is the one that batch uses; tf_keras stores the rate of each update in a
    variable, read after the batch."""

    def __init__(self):
      super().__init__()
      self.seen = []

    def _read(self, offset):
      opt = model.optimizer
      self.seen.append((int(opt.iterations.numpy()) - offset,
                        float(np.asarray(opt.learning_rate))))

    def on_train_batch_begin(self, batch, logs=None):
      if not LEGACY_KERAS:
        self._read(0)

    def on_train_batch_end(self, batch, logs=None):
      if LEGACY_KERAS:
        self._read(1)

  record = Record()
  model.fit(x, y, batch_size=32, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0,
            callbacks=[record])
  return record.seen


def test_fit_on_model_keras_continues_the_schedule_at_its_global_step(finished_run, tmp_path):
  """Exported at step 8 (from ckpt-8, in the cosine part): fit's updates use lr(8), lr(9)..."""
  workdir, _ = finished_run
  parts, _ = evaluate.restore(workdir, 8, cpu())
  assert export.write(parts, str(tmp_path))["step"] == 8
  model = keras.models.load_model(str(tmp_path / "export" / "model.keras"))
  assert int(model.optimizer.iterations.numpy()) == 8
  # pylint: disable-next=protected-access  (both Keras keep the schedule there)
  assert isinstance(unwrap_optimizer(model.optimizer)._learning_rate, schedules.WarmupDecay)
  images, labels = eval_split(workdir)
  before = [w.copy() for w in model.get_weights()]
  seen = applied_learning_rates(model, augment.to_float(images).numpy(), labels, 6)
  kwargs = parts.plan.schedule_kwargs()
  assert [s for s, _ in seen] == list(range(8, 14))
  np.testing.assert_allclose([lr for _, lr in seen],
                             [schedules.learning_rate(s, **kwargs) for s in range(8, 14)],
                             rtol=1e-6)
  assert len({lr for _, lr in seen}) == 6  # on the cosine: a different rate every step
  assert int(model.optimizer.iterations.numpy()) == 14
  assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_fit_after_the_finished_run_continues_at_its_last_step(finished_run):
  workdir, _ = finished_run
  model = keras.models.load_model(os.path.join(workdir, "export", "model.keras"))
  images, labels = eval_split(workdir)
  seen = applied_learning_rates(model, augment.to_float(images).numpy(), labels, 2)
  assert seen == [(24, pytest.approx(2e-4, rel=1e-6)), (25, pytest.approx(2e-4, rel=1e-6))]


@pytest.mark.slow
def test_the_export_in_a_fresh_process(finished_run, tmp_path):
  """Serving loads with TensorFlow alone; model.keras with keras.models.load_model after
  `import trainer.schedules` and nothing else of the trainer; both predict what the
  trainer's own model does, and fit continues at lr(iterations)."""
  workdir, _ = finished_run
  images, labels = eval_split(workdir)
  np.savez(tmp_path / "eval.npz", images=images, labels=labels)
  script = f"""
import json, os, sys
import numpy as np
import tensorflow as tf
d = np.load({str(tmp_path / "eval.npz")!r})
serve = tf.saved_model.load({os.path.join(workdir, "export", "serving")!r})
probabilities = serve.signatures["serving_default"](inputs=tf.constant(d["images"]))
probabilities = probabilities["probabilities"].numpy()
assert not [m for m in sys.modules if m.split(".")[0] == "trainer"]
if os.environ.get("TF_USE_LEGACY_KERAS") == "1":
  import tf_keras as keras
else:
  import keras
path = {os.path.join(workdir, "export", "model.keras")!r}
try:
  keras.models.load_model(path)
  without_import = "loaded"
except Exception as e:  # the schedule's class (WarmupDecay) is not registered yet
  without_import = "refused" if "'WarmupDecay'" in str(e) else repr(e)
import trainer.schedules
model = keras.models.load_model(path)
logits = model.predict(d["images"].astype(np.float32) * np.float32(1 / 255), verbose=0)
step = int(model.optimizer.iterations.numpy())
model.fit(d["images"].astype(np.float32) * np.float32(1 / 255), d["labels"], batch_size=32,
          steps_per_epoch=3, epochs=1, verbose=0)
np.savez({str(tmp_path / "out.npz")!r}, probabilities=probabilities, logits=logits)
print(json.dumps({{"step": step, "after": int(model.optimizer.iterations.numpy()),
                  "without_import": without_import,
                  "trainer_modules": sorted(m for m in sys.modules if m.startswith("trainer"))}}))
"""
  r = subprocess.run([sys.executable, "-c", script], env=main_env(), capture_output=True,
                     text=True, timeout=300, cwd=str(tmp_path))
  assert r.returncode == 0, r.stderr
  report = json.loads(r.stdout.strip().splitlines()[-1])
  assert report["step"] == 24 and report["after"] == 27
  assert report["without_import"] == "refused"  # loudly, not silently without its optimizer
  # What `import trainer.schedules` brings with it; nothing that builds or trains.
  assert {m.split(".")[1] for m in report["trainer_modules"] if m != "trainer"} <= {
      "schedules", "base"}
  out = np.load(tmp_path / "out.npz")
  expected = trainer_outputs(workdir)
  np.testing.assert_allclose(out["logits"], expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["probabilities"], tf.nn.softmax(expected).numpy(), rtol=1e-5,
                             atol=1e-6)


def test_regression_export_returns_the_predictions(regression_run):
  workdir, _ = regression_run
  manifest = record.read_export_manifest(workdir)
  assert manifest["serving"]["input_dtype"] == "float32"
  assert manifest["serving"]["input_shape"] == [None, 6]
  assert manifest["serving"]["output"] == "predictions"
  features, _ = eval_split(workdir)
  expected = trainer_outputs(workdir)
  assert expected.shape == (64, 1)
  serve = tf.saved_model.load(os.path.join(workdir, "export", "serving"))
  served = serve.signatures["serving_default"](inputs=tf.constant(features))["predictions"]
  np.testing.assert_allclose(served.numpy(), expected, rtol=1e-5, atol=1e-6)
  model = keras.models.load_model(os.path.join(workdir, "export", "model.keras"))
  np.testing.assert_allclose(model.predict(features, verbose=0), expected, rtol=1e-5, atol=1e-6)
  assert isinstance(model.loss, keras.losses.MeanSquaredError)


# Atomic publication: a failure or a kill during the write leaves no export/ or the previous
# complete one, and a reader polling the directory never sees a partial one.


class Killed(BaseException):
  """Stands in for SIGKILL: not an Exception, so nothing in the export catches it."""


def complete(directory):
  """Whether `directory` holds a whole export (every file a complete one has)."""
  names = listing(directory)
  return ("export.json" in names and "model.keras" in names
          and "serving/saved_model.pb" in names and any(
              n.startswith("serving/variables/variables.data") for n in names))


@pytest.fixture
def restored(finished_run):
  workdir, _ = finished_run
  parts, _ = evaluate.restore(workdir, 16, cpu())
  return parts


def test_a_kill_during_the_first_export_leaves_no_export_dir(restored, tmp_path, monkeypatch):
  workdir = str(tmp_path)
  real = serving.write

  def dies_halfway(model, task, info, path):
    real(model, task, info, path)  # serving/ written, export.json not yet
    raise Killed()

  monkeypatch.setattr(serving, "write", dies_halfway)
  with pytest.raises(Killed):
    export.write(restored, workdir)
  assert not os.path.exists(os.path.join(workdir, "export"))
  # A real kill leaves the temporary directory behind: the next export removes it.
  os.makedirs(os.path.join(workdir, "export.tmp-deadbeef", "serving"))
  monkeypatch.setattr(serving, "write", real)
  assert export.write(restored, workdir)["step"] == 16
  assert complete(os.path.join(workdir, "export"))
  assert not glob.glob(os.path.join(workdir, "export.*"))


def test_a_failed_export_keeps_the_previous_complete_one(restored, tmp_path, monkeypatch):
  workdir = str(tmp_path)
  export.write(restored, workdir)
  before = {n: open(os.path.join(workdir, "export", n), "rb").read()
            for n in ("export.json", "model.keras")}
  real_rename = os.rename

  def rename(src, dst):
    if os.path.basename(src).startswith("export.tmp-"):
      raise OSError(28, "No space left on device")
    return real_rename(src, dst)

  monkeypatch.setattr(os, "rename", rename)
  assert export.write(restored, workdir, keep_current=False) is None  # warned, not raised
  monkeypatch.setattr(os, "rename", real_rename)
  assert complete(os.path.join(workdir, "export"))
  assert {n: open(os.path.join(workdir, "export", n), "rb").read() for n in before} == before
  assert not glob.glob(os.path.join(workdir, "export.*"))


def test_between_any_two_file_operations_export_is_absent_or_complete(restored, tmp_path,
                                                                     monkeypatch):
  """Every rename, removal and write the export makes is followed by a look at export/:
  what a reader can find there is nothing or a complete export, at every point."""
  workdir = str(tmp_path)
  final = os.path.join(workdir, "export")
  states = []

  def look():
    states.append("complete" if complete(final) else "partial" if os.path.exists(final)
                  else "absent")

  def watched(fn):
    def call(*args, **kwargs):
      result = fn(*args, **kwargs)
      look()
      return result
    return call

  for module, name in ((os, "rename"), (shutil, "rmtree"), (tf.io.gfile, "rename"),
                       (tf.io.gfile, "remove"), (tf.io.gfile, "rmtree"),
                       (tf.io.gfile, "makedirs"), (export, "_write_keras"),
                       (serving, "write")):
    monkeypatch.setattr(module, name, watched(getattr(module, name)))
  export.write(restored, workdir)  # the first export
  first = len(states)
  export.write(restored, workdir, keep_current=False)  # replacing it
  assert "partial" not in states, states
  assert states[:first][0] == "absent" and states[first - 1] == "complete"
  assert "absent" in states[first:] and states[-1] == "complete"  # the swap's instant


def test_a_rerun_of_a_finished_run_keeps_its_export(finished_run, data_dir, tmp_path, caplog):
  workdir = str(tmp_path / "w")
  shutil.copytree(finished_run[0], workdir)
  path = os.path.join(workdir, "export", "model.keras")
  mtime = os.stat(path).st_mtime_ns
  with caplog.at_level("INFO", logger="absl"):
    result = train.train_and_evaluate(small_run(data_dir, **FINISHED), workdir, cpu())
  assert result["step"] == 24
  assert os.stat(path).st_mtime_ns == mtime
  assert "already the model at step 24; kept" in caplog.text


def test_a_rerun_of_a_finished_run_repairs_an_export_that_lost_a_file(finished_run, data_dir,
                                                                      tmp_path, caplog):
  """export.json lists model.keras and serving/: a rerun checks they are there (it kept an
  export without its model.keras)."""
  workdir = str(tmp_path / "w")
  shutil.copytree(finished_run[0], workdir)
  os.remove(os.path.join(workdir, "export", "model.keras"))
  with caplog.at_level("INFO", logger="absl"):
    train.train_and_evaluate(small_run(data_dir, **FINISHED), workdir, cpu(), progress=False)
  assert "lost model.keras since it was written; writing it again" in caplog.text
  manifest = record.read_export_manifest(workdir)
  assert manifest["step"] == 24 and sorted(manifest["written"]) == ["model.keras", "serving"]
  assert record.export_missing(workdir, manifest) == []
  keras.models.load_model(os.path.join(workdir, "export", "model.keras"))
  os.remove(os.path.join(workdir, "export", "serving", "saved_model.pb"))  # a gutted SavedModel
  assert record.export_missing(workdir, manifest) == ["serving"]


@pytest.mark.slow
def test_a_signal_during_the_export_stops_at_once_and_the_same_command_exports(data_dir,
                                                                               tmp_path):
  """The final checkpoint is written before the export, so a signal there stops at once
  (exit 4 / 130) with a line saying a rerun exports; a second Ctrl-C was swallowed by the
  export's `except Exception` (exit 0, model.keras missing, a false 'cannot be saved')."""
  from tests import killer  # pylint: disable=g-import-not-at-top
  run = ["--strategy=cpu", f"--config.data_dir={data_dir}", "--config.model=mlp",
         "--config.total_steps=8", "--config.steps_per_loop=4", "--config.eval_every=0",
         "--config.global_batch_size=32"]
  cases = {  # name: (signal, times, position, exit status, what the line starts with)
      "ctrl-c twice inside": ("SIGINT", 2, "during", 130, "interrupted (Ctrl-C)"),
      "ctrl-c": ("SIGINT", 1, "before", 130, "interrupted (Ctrl-C)"),
      "sigterm": ("SIGTERM", 1, "before", 4, "preempted (SIGTERM)")}
  workdirs = {name: str(tmp_path / name.replace(" ", "_")) for name in cases}
  results = killer.run_matrix([
      {"argv": [f"--workdir={workdirs[name]}", *run],
       # Both Ctrl-Cs within 0.05 s of the export's start: an MLP's export can take under
       # 0.4 s, and a second one after it was a plain Ctrl-C after the run (seen in CI).
       "hook": {"event": "export", "at": 1, "position": position, "delay": 0.02,
                "interval": 0.03, "signal": signal_, "signals": times}}
      for name, (signal_, times, position, _, _) in cases.items()], str(tmp_path), main_env())
  for (name, (_, _, position, code, what)), result in zip(cases.items(), results):
    err, workdir = result["stderr"], workdirs[name]
    assert result["exit"] == code, (name, err[-3000:])
    assert err.strip().splitlines()[-1] == (
        f"{what} after training: stopped at once; the final checkpoint is written: run the "
        f"same command again to evaluate and export it"), name
    assert "Traceback" not in err and "cannot be saved" not in err, name
    assert tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")).endswith("ckpt-8")
    assert not glob.glob(os.path.join(workdir, "export.*")), name  # no temporary left
    if position == "before":
      assert not os.path.exists(os.path.join(workdir, "export")), name
  rerun = subprocess.run([sys.executable, "-m", "trainer.main",
                          f"--workdir={workdirs['sigterm']}", *run], env=main_env(),
                         capture_output=True, text=True, timeout=600)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  manifest = record.read_export_manifest(workdirs["sigterm"])
  assert manifest["step"] == 8 and sorted(manifest["written"]) == ["model.keras", "serving"]


def test_export_goes_through_tf_filesystems(restored):
  workdir = "ram://trainer_test_export/w"
  export.write(restored, workdir)
  names = tf.io.gfile.listdir(workdir + "/export")
  assert {n.rstrip("/") for n in names} == {"export.json", "model.keras", "serving"}
  assert not [n for n in tf.io.gfile.listdir(workdir) if n.startswith("export.")]
  assert record.read_export_manifest(workdir)["step"] == 16
  restored.optimizer.iterations.assign(17)  # replacing an export, object by object
  export.write(restored, workdir)
  assert record.read_export_manifest(workdir)["step"] == 17
  assert not [n for n in tf.io.gfile.listdir(workdir) if n.startswith("export.")]
  served = tf.saved_model.load(workdir + "/export/serving").signatures["serving_default"]
  assert served(inputs=tf.zeros([2, 8, 8, 1], tf.uint8))["probabilities"].shape == (2, 10)
  assert not os.path.exists("ram:")


# A model that cannot be saved as .keras: serving/ is still written, the run still succeeds.


class Unregistered(keras.Model):
  """A subclassed model without get_config, not registered with Keras."""

  def __init__(self, num_outputs, squash):
    super().__init__()
    self.squash = squash  # a function: not a serializable constructor argument
    self.flat = keras.layers.Flatten()
    self.head = keras.layers.Dense(num_outputs)

  def call(self, x, training=False):
    return self.head(self.squash(self.flat(x)))


@models.register("test_export_unregistered")
def _unregistered(input_shape, num_outputs):
  del input_shape
  return Unregistered(num_outputs, squash=lambda t: t * 0.5)


def test_a_model_that_cannot_be_saved_costs_one_warning_not_the_run(data_dir, tmp_path, caplog):
  workdir = str(tmp_path / "w")
  with caplog.at_level("WARNING"):
    result = train.train_and_evaluate(
        small_run(data_dir, model="test_export_unregistered", total_steps=8, eval_every=0,
                  checkpoint_every=0, **{"schedule.warmup_steps": 2, "schedule.hold": 0}),
        workdir, cpu())
  assert result["step"] == 8
  ours = [r for r in caplog.records if r.getMessage().startswith("export:")]
  assert len(ours) == 1, [r.getMessage() for r in ours]
  message = ours[0].getMessage()
  assert "model.keras not written" in message and "register_keras_serializable" in message
  assert "\n" not in message
  manifest = record.read_export_manifest(workdir)
  assert manifest["written"] == ["serving"] and "model.keras" in manifest["not_written"]
  assert not os.path.exists(os.path.join(workdir, "export", "model.keras"))
  assert tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")).endswith("ckpt-8")
  images, _ = eval_split(workdir)
  serve = tf.saved_model.load(os.path.join(workdir, "export", "serving"))
  served = serve.signatures["serving_default"](inputs=tf.constant(images))["probabilities"]
  np.testing.assert_allclose(served.numpy(), tf.nn.softmax(trainer_outputs(workdir)).numpy(),
                             rtol=1e-5, atol=1e-6)


def test_mixed_float16_exports_the_unwrapped_optimizer(data_dir, tmp_path):
  """The run's LossScaleOptimizer is unwrapped; the export keeps the schedule and the step."""
  config = small_run(data_dir, model="mlp", mixed_precision="mixed_float16")
  with precision.global_policy("mixed_float16"):
    parts = build_parts(config, cpu())
  assert parts.policy == "mixed_float16"
  assert unwrap_optimizer(parts.optimizer) is not parts.optimizer
  parts.optimizer.iterations.assign(5)
  manifest = export.write(parts, str(tmp_path))
  assert manifest["written"] == ["model.keras", "serving"]
  model = keras.models.load_model(str(tmp_path / "export" / "model.keras"))
  assert int(model.optimizer.iterations.numpy()) == 5
  # pylint: disable-next=protected-access
  assert isinstance(unwrap_optimizer(model.optimizer)._learning_rate, schedules.WarmupDecay)


def test_every_replica_takes_part_and_the_copy_holds_plain_variables(data_dir, tmp_path):
  workdir = str(tmp_path / "w")
  train.train_and_evaluate(small_run(data_dir, model="mlp", total_steps=4, steps_per_loop=2,
                                     eval_every=0, checkpoint_every=0,
                                     **{"schedule.warmup_steps": 1, "schedule.hold": 0}),
                           workdir, mirrored(2))
  assert record.read_export_manifest(workdir)["written"] == ["model.keras", "serving"]
  model = keras.models.load_model(os.path.join(workdir, "export", "model.keras"))
  np.testing.assert_allclose(model.predict(augment.to_float(eval_split(workdir)[0]).numpy(),
                                           verbose=0),
                             trainer_outputs(workdir), rtol=1e-5, atol=1e-6)
