"""trainer.evaluate: a run's checkpoint or its export, evaluated from the config it trained.

The final checkpoint reproduces the final eval of the run, an older checkpoint the eval
logged at its step, and the export (raw inputs through serving/, metrics from the task on
the probabilities) the same numbers; it reads only. User mistakes are one line, exit 2.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, cpu, main_env
from tests.killer import tree
from tests.test_export import REGRESSION, finished_run, regression_run  # noqa: F401
from trainer.run import console
from trainer import evaluate
from trainer.run import export as export_lib
from trainer.base.errors import CheckpointError, ConfigError
from trainer.run.summaries import read_scalars


def snapshot(directory):
  """{relative path: (size, mtime)} of everything under `directory`."""
  out = {}
  for root, dirs, files in os.walk(directory):
    for name in dirs + files:
      path = os.path.join(root, name)
      st = os.stat(path)
      out[os.path.relpath(path, directory)] = (st.st_size, st.st_mtime_ns)
  return out


def test_the_final_checkpoint_reproduces_the_runs_final_eval(finished_run):  # noqa: F811
  workdir, result = finished_run
  before = snapshot(workdir)
  got = evaluate.evaluate_checkpoint(workdir, strategy=cpu())
  assert got["source"] == "checkpoint" and got["step"] == 24 and got["examples"] == 360
  assert got["path"] == os.path.join(workdir, "checkpoints", "ckpt-24")
  assert got["loss"] == pytest.approx(result["loss"], rel=1e-6)
  assert got["accuracy"] == result["accuracy"]
  assert snapshot(workdir) == before  # reads only


def test_it_leaves_even_what_a_resume_would_tidy_as_it_was(finished_run, tmp_path):  # noqa: F811
  """Leftovers of interrupted writes (or of a run writing right now) and a lost state file:
  a resume deletes the first and writes the second; a reader touches neither."""
  workdir = str(tmp_path / "w")
  shutil.copytree(finished_run[0], workdir)
  checkpoints = os.path.join(workdir, "checkpoints")
  os.remove(os.path.join(checkpoints, "checkpoint"))
  for name in ("checkpoints/checkpoint.tmp0a1b2c3d", "checkpoints/ckpt-32_temp/part-0.index",
               "config.json.tmp", "curves.png.tmp", "export.tmp-1/model.keras"):
    os.makedirs(os.path.dirname(os.path.join(workdir, name)), exist_ok=True)
    with open(os.path.join(workdir, name), "w") as f:
      f.write("half")
  before, stamps = tree(workdir), snapshot(workdir)
  got = evaluate.evaluate_checkpoint(workdir, strategy=cpu())
  assert got["path"] == os.path.join(checkpoints, "ckpt-24")
  assert evaluate.evaluate_checkpoint(workdir, 16, strategy=cpu())["step"] == 16
  assert tree(workdir) == before and snapshot(workdir) == stamps


def test_an_older_checkpoint_gives_the_eval_logged_at_its_step(finished_run):  # noqa: F811
  workdir, _ = finished_run
  got = evaluate.evaluate_checkpoint(workdir, 8, strategy=cpu())
  assert got["step"] == 8 and got["path"].endswith("ckpt-8")
  # TensorBoard keeps float32.
  assert got["loss"] == pytest.approx(read_scalars(workdir, "eval", "loss")[8], rel=1e-6)
  assert got["accuracy"] == pytest.approx(read_scalars(workdir, "eval", "accuracy")[8],
                                          rel=1e-6)


def test_the_export_reproduces_the_runs_final_eval(finished_run):  # noqa: F811
  workdir, result = finished_run
  before = snapshot(workdir)
  got = evaluate.evaluate_export(workdir)
  assert got["source"] == "export" and got["step"] == 24 and got["examples"] == 360
  assert got["path"] == os.path.join(workdir, "export", "serving")
  assert got["accuracy"] == result["accuracy"]
  assert got["loss"] == pytest.approx(result["loss"], rel=1e-5)  # -log p, not from logits
  assert snapshot(workdir) == before


def test_regression_checkpoint_and_export_give_mse_mae_r2(regression_run):  # noqa: F811
  workdir, result = regression_run
  named = [REGRESSION["dataset"]]  # the plug-in its config.json names
  from_checkpoint = evaluate.evaluate_checkpoint(workdir, strategy=cpu(), plugins_named=named)
  from_export = evaluate.evaluate_export(workdir, plugins_named=named)
  for metric in ("loss", "mse", "mae", "r2"):
    assert from_checkpoint[metric] == pytest.approx(result[metric], rel=1e-6), metric
    assert from_export[metric] == pytest.approx(result[metric], rel=1e-5), metric
  assert from_export["examples"] == 64


def test_an_unreadable_checkpoint_is_a_checkpoint_error(finished_run, tmp_path):  # noqa: F811
  workdir = str(tmp_path / "w")
  shutil.copytree(finished_run[0], workdir)
  (data_file,) = [n for n in os.listdir(os.path.join(workdir, "checkpoints"))
                  if n.startswith("ckpt-16.data")]
  with open(os.path.join(workdir, "checkpoints", data_file), "r+b") as f:
    f.truncate(10)
  with pytest.raises(CheckpointError, match=r"ckpt-16 is unreadable"):
    evaluate.evaluate_checkpoint(workdir, 16, strategy=cpu())


CALLED = []


def must_not_run(*args):
  """A plug-in that records being imported and called."""
  CALLED.append(args)
  return {}


def _run_naming(finished, workdir, **fields):
  """A copy of the run's config.json (nothing else is read first) with `fields` changed."""
  workdir.mkdir()
  with open(os.path.join(finished, "config.json")) as f:
    blob = json.load(f)
  blob["config"].update(fields)
  (workdir / "config.json").write_text(json.dumps(blob))
  return str(workdir)


@pytest.mark.parametrize("field", ["model", "dataset", "task"])
def test_a_plugin_only_config_json_names_is_never_imported(finished_run, tmp_path,  # noqa: F811
                                                           field):
  """Issue 21, item 5: evaluate imported and called whatever config.json named."""
  plugin = "tests.test_evaluate:must_not_run"
  workdir = _run_naming(finished_run[0], tmp_path / "w", **{field: plugin})
  with pytest.raises(ConfigError) as info:
    evaluate.evaluate_checkpoint(workdir, strategy=cpu())
  message = str(info.value)
  assert message.startswith(f"{field}: {plugin!r} is code (a plug-in) that only "
                            f"{workdir}/config.json names, so it is not imported"), message
  assert "\n" not in message and CALLED == []
  with pytest.raises(ConfigError, match=f"^{field}: "):
    evaluate.evaluate_export(workdir)
  for accepted in ([plugin], True):  # named, or all trusted: loaded as the run's config
    assert evaluate.load_config(workdir, plugins_named=accepted)[field] == plugin
  assert CALLED == []  # loading a config imports nothing


def test_folders_tfds_versions_and_registered_names_are_no_code(finished_run,  # noqa: F811
                                                                 tmp_path):
  for i, dataset in enumerate(["folder:images", "mnist:3.0.1"]):
    workdir = _run_naming(finished_run[0], tmp_path / str(i), dataset=dataset, model="mlp",
                          task="classification")
    assert evaluate.load_config(workdir).dataset == dataset


def test_export_names_are_the_run_directorys_own():
  from trainer.rundir import layout  # pylint: disable=g-import-not-at-top
  assert (export_lib.EXPORT_DIR, export_lib.MANIFEST) == (layout.EXPORT, layout.MANIFEST)
  assert export_lib.export_dir("w") == os.path.join("w", layout.EXPORT)


def test_a_task_that_cannot_undo_its_serving_outputs_is_refused(finished_run,  # noqa: F811
                                                                 monkeypatch):
  from trainer import task as task_lib  # pylint: disable=g-import-not-at-top

  class Odd(task_lib.Classification):
    def serving_outputs(self, outputs):
      return outputs * 2.0

  Odd.outputs_from_serving = task_lib.Task.outputs_from_serving
  monkeypatch.setattr(task_lib, "get_task", lambda name: Odd())
  with pytest.raises(ConfigError, match="outputs_from_serving"):
    evaluate.evaluate_export(finished_run[0])


# The command line.


def run_evaluate(*args, cwd, timeout=600):
  return subprocess.run([sys.executable, "-m", "trainer.evaluate", *args], cwd=cwd,
                        env=main_env(), capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["latest", "checkpoint", "export"])
def test_the_command_prints_a_summary_and_a_json_line(finished_run, tmp_path, how):  # noqa: F811
  workdir, result = finished_run
  flag = {"latest": [], "checkpoint": ["--checkpoint=8"], "export": ["--export"]}[how]
  r = run_evaluate(f"--workdir={workdir}", "--strategy=cpu", *flag, cwd=REPO)
  assert r.returncode == 0, r.stderr
  summary, line = r.stdout.strip().splitlines()
  got = json.loads(line)
  assert summary.startswith("eval: loss ") and f"step {got['step']}" in summary
  expected = ({"loss": read_scalars(workdir, "eval", "loss")[8],
               "accuracy": read_scalars(workdir, "eval", "accuracy")[8]}
              if how == "checkpoint" else result)
  assert got["step"] == (8 if how == "checkpoint" else 24)
  assert got["accuracy"] == pytest.approx(expected["accuracy"], rel=1e-6)
  assert got["loss"] == pytest.approx(expected["loss"], rel=1e-5)
  assert got["source"] == ("export" if how == "export" else "checkpoint")
  # Quiet: none of TF's start-up lines, no traceback.
  assert "Traceback" not in r.stderr
  assert not [line for line in r.stderr.splitlines() if console.HARMLESS.search(line)]


@pytest.mark.slow
def test_evaluations_beside_a_live_run_neither_disturb_it_nor_crash(data_dir, tmp_path):
  """Issue 21, item 2: evaluate once deleted a live run's in-progress checkpoint (killing
  the run) and crashed when the checkpoint it checked rotated away before its restore. Here
  the run saves every 10 steps keeping one checkpoint, and five evaluations run while it
  trains: the run ends with exit 0, every evaluation with 0 or one line (exit 2 or 5)."""
  total, workdir = 3000, tmp_path / "w"
  train = subprocess.Popen(
      [sys.executable, "-m", "trainer.main", f"--workdir={workdir}", "--strategy=cpu",
       f"--config.data_dir={data_dir}", "--config.model=mlp", f"--config.total_steps={total}",
       "--config.checkpoint_every=10", "--config.max_checkpoints=1",
       "--config.keep_best=0"],  # nothing kept beside the latest: every save rotates
      cwd=REPO, env=main_env(), stdout=open(tmp_path / "train.log", "w"),  # noqa: SIM115
      stderr=subprocess.STDOUT)
  evals = []  # (the run still training when it began, its process)
  try:
    deadline = time.monotonic() + 300
    while not (workdir / "checkpoints" / "checkpoint").exists():  # the first commit
      assert train.poll() is None and time.monotonic() < deadline, (tmp_path / "train.log"
                                                                     ).read_text()[-3000:]
      time.sleep(0.2)
    # Side by side, started 2 s apart: all of them while the run trains, whatever the load.
    for i in range(5):
      evals.append((train.poll() is None, subprocess.Popen(
          [sys.executable, "-m", "trainer.evaluate", f"--workdir={workdir}", "--strategy=cpu"],
          cwd=REPO, env=main_env(), stdout=open(tmp_path / f"eval{i}.out", "w"),  # noqa: SIM115
          stderr=open(tmp_path / f"eval{i}.err", "w"))))  # noqa: SIM115
      time.sleep(2)
    for _, proc in evals:
      proc.wait(timeout=600)
    # The run trained on through all of them; a SIGTERM ends it now (exit 4, checkpointed)
    # instead of waiting out its remaining steps (~30 s of the slow tier).
    if train.poll() is None:
      train.send_signal(signal.SIGTERM)
    train.wait(timeout=600)
  finally:
    for proc in [train] + [p for _, p in evals]:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  log = (tmp_path / "train.log").read_text()
  last = max(int(n[len("ckpt-"):-len(".index")]) for n in os.listdir(workdir / "checkpoints")
             if n.endswith(".index"))
  assert train.returncode in (0, 4), log[-3000:]
  if train.returncode == 4:
    assert log.strip().splitlines()[-1].startswith(
        f"preempted (SIGTERM): checkpoint written at global step {last};"), log[-3000:]
  steps = []
  for i, (running, proc) in enumerate(evals):
    out, err = (tmp_path / f"eval{i}.out").read_text(), (tmp_path / f"eval{i}.err").read_text()
    assert running, "the run ended before the evaluations began: raise total"
    assert "Traceback" not in err, err[-3000:]
    if proc.returncode == 0:
      got = json.loads(out.strip().splitlines()[-1])
      assert got["source"] == "checkpoint" and 10 <= got["step"] <= last, out
      steps.append(got["step"])
    else:
      last = err.strip().splitlines()[-1]
      assert proc.returncode in (2, 5) and last.startswith("error: "), (proc.returncode,
                                                                         err[-3000:])
  # The premise: they read checkpoints the run was rotating, not only its last one.
  assert [s for s in steps if s < last], steps
  assert sorted(os.listdir(workdir / "checkpoints")) == [
      "checkpoint", f"ckpt-{last}.data-00000-of-00001", f"ckpt-{last}.index"]


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["--dataset=plug_regression:regression_data",
                                  "--trust_plugins"])
def test_a_plugin_the_user_names_is_imported(regression_run, tmp_path, flag):  # noqa: F811
  import inspect  # pylint: disable=g-import-not-at-top
  from tests import test_export  # pylint: disable=g-import-not-at-top
  # The run's data as a module of the working directory (tests.test_export sets up devices).
  (tmp_path / "plug_regression.py").write_text(
      "import numpy as np\n\n" + inspect.getsource(test_export.regression_data))
  workdir, result = str(tmp_path / "w"), regression_run[1]
  shutil.copytree(regression_run[0], workdir)
  with open(os.path.join(workdir, "config.json")) as f:
    blob = json.load(f)
  blob["config"]["dataset"] = "plug_regression:regression_data"
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(blob, f)
  r = run_evaluate(f"--workdir={workdir}", "--strategy=cpu", flag, cwd=str(tmp_path))
  assert r.returncode == 0, r.stderr[-3000:]
  assert json.loads(r.stdout.strip().splitlines()[-1])["mse"] == pytest.approx(result["mse"],
                                                                              rel=1e-5)


def bad_cases(run_dir, tmp_path):
  """(flags, words the one error line must contain) for each user mistake."""
  empty = tmp_path / "empty"
  empty.mkdir()
  not_trained = tmp_path / "not_trained"
  not_trained.mkdir()
  shutil.copy(os.path.join(run_dir, "config.json"), not_trained / "config.json")
  a_file = tmp_path / "a_file"
  a_file.write_text("x")
  garbage = tmp_path / "garbage"
  garbage.mkdir()
  (garbage / "config.json").write_text("{not json")
  plugged = {}
  for name, field, value in (("aborts", "dataset", "os:abort"), ("zen", "model", "this:s"),
                             ("schedule", "schedule", 5)):  # a TypeError once
    plugged[name] = tmp_path / name  # issue 21, item 5: os.abort() ran; `this` was imported
    shutil.copytree(run_dir, plugged[name])
    with open(plugged[name] / "config.json") as f:
      blob = json.load(f)
    blob["config"][field] = value
    (plugged[name] / "config.json").write_text(json.dumps(blob))
  return [
      ([f"--workdir={plugged['aborts']}"],
       f"dataset: 'os:abort' is code (a plug-in) that only {plugged['aborts']}/config.json "
       f"names, so it is not imported: if you trust it, give --dataset=os:abort (or "
       f"--trust_plugins)"),
      ([f"--workdir={plugged['zen']}", "--export"], "model: 'this:s' is code (a plug-in)"),
      ([f"--workdir={plugged['zen']}", "--model=that:s"],
       f"model: --model=that:s but {plugged['zen']}/config.json records 'this:s'"),
      ([f"--workdir={run_dir}", "--dataset=os:abort"], "dataset: --dataset=os:abort but "),
      ([], "workdir: give --workdir"),
      ([f"--workdir={tmp_path / 'nope'}"], "no such directory"),
      ([f"--workdir={a_file}"], "is a file"),
      ([f"--workdir={empty}"], "has no config.json"),
      ([f"--workdir={garbage}"], "config.json is unreadable"),
      ([f"--workdir={plugged['schedule']}"],
       f"schedule: {plugged['schedule']}/config.json has 5 where an object of fields belongs"),
      ([f"--workdir={not_trained}"], "no checkpoint in"),
      ([f"--workdir={run_dir}", "--checkpoint=9"], "no checkpoint of step 9"),
      ([f"--workdir={not_trained}", "--export"], "no export in"),
      ([f"--workdir={run_dir}", "--checkpoint=8", "--export"], "not both"),
      ([f"--workdir={run_dir}", "--checkpoint=eight"], "checkpoint: must be a global step"),
      ([f"--workdir={run_dir}", "extra"], "unexpected arguments"),
  ]


def test_user_mistakes_are_one_line_and_exit_2(finished_run, tmp_path):  # noqa: F811
  """Checked before TensorFlow loads: each takes a fraction of a second."""
  run_dir = str(tmp_path / "run")
  shutil.copytree(finished_run[0], run_dir, ignore=shutil.ignore_patterns("export"))
  cases = bad_cases(run_dir, tmp_path)
  no_serving = tmp_path / "no_serving"  # an OSError traceback once
  shutil.copytree(finished_run[0], no_serving)
  shutil.rmtree(no_serving / "export" / "serving")
  cases.append(([f"--workdir={no_serving}", "--export"],
                f"export: {no_serving}/export has no serving/ (it is missing)"))
  before = snapshot(str(tmp_path))
  for args, words in cases:
    r = run_evaluate(*args, cwd=str(tmp_path), timeout=60)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, (args, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], (args,
                                                                                     r.stderr)
    assert "Zen of Python" not in r.stdout
    assert r.stdout == "", (args, r.stdout)
  assert snapshot(str(tmp_path)) == before  # nothing written, nothing created


def test_remote_workdirs_go_through_tf_filesystems(finished_run):  # noqa: F811
  """A ram:// copy of the run stands in for gs://."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  local, result = finished_run
  remote = "ram://trainer_test_evaluate/w"
  for root, _, files in os.walk(local):
    rel = os.path.relpath(root, local)
    target = remote if rel == "." else f"{remote}/{rel}"
    tf.io.gfile.makedirs(target)
    for name in files:
      tf.io.gfile.copy(os.path.join(root, name), f"{target}/{name}", overwrite=True)
  # TF's checkpoint reader does not open the ram:// copies made here: the export only.
  assert evaluate.evaluate_export(remote)["accuracy"] == result["accuracy"]
  with pytest.raises(ConfigError, match="no checkpoint of step 9"):
    evaluate.record.require_checkpoint(remote, 9)
  with pytest.raises(ConfigError, match="no such directory"):
    evaluate.record.read_run("ram://trainer_test_evaluate/nope")
  assert not os.path.exists("ram:")
