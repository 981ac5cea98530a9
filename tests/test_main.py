"""`python -m trainer.main` as a user types it: overrides that win, loops that land where
asked, and config.json recording what was used."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO, main_env, run_main
from trainer.run import summaries

pytestmark = pytest.mark.slow  # each test starts a trainer process (~10-30 s)


def _plan(workdir):
  blob = json.load(open(os.path.join(workdir, "config.json")))
  return blob["config"], blob["plan"]


def test_warmup_steps_on_the_command_line_replaces_the_files_warmup_fraction(data_dir,
                                                                             tmp_path):
  workdir = str(tmp_path / "w")
  r = run_main(f"--workdir={workdir}", f"--config.data_dir={data_dir}", "--strategy=cpu",
               "--config.schedule.warmup_steps=8", "--config.total_steps=40",
               "--config.steps_per_loop=20", cwd=tmp_path)
  assert r.returncode == 0, r.stderr
  config, plan = _plan(workdir)
  assert plan["warmup_steps"] == 8
  assert config["schedule"]["warmup_steps"] == 8
  assert config["schedule"]["warmup_fraction"] == 0.0  # the file's 0.1, cleared
  lrs = summaries.read_scalars(workdir, "train", "learning_rate")
  assert lrs[20] < 3e-3  # past the 8-step warmup, decaying from the peak


def test_num_epochs_on_the_command_line_replaces_the_files_total_steps(data_dir, tmp_path):
  workdir = str(tmp_path / "w")
  r = run_main(f"--workdir={workdir}", f"--config.data_dir={data_dir}", "--strategy=cpu",
               "--config.num_epochs=1", cwd=tmp_path)
  assert r.returncode == 0, r.stderr
  config, plan = _plan(workdir)
  assert (config["total_steps"], config["num_epochs"]) == (0, 1.0)
  assert plan["total_steps"] == plan["steps_per_epoch"] == 1437 // 128  # one epoch, not 600
  assert max(summaries.read_scalars(workdir, "train", "loss")) == 11


def test_steps_per_loop_need_not_divide_the_intervals(data_dir, tmp_path):
  workdir = str(tmp_path / "w")
  r = run_main(f"--workdir={workdir}", f"--config.data_dir={data_dir}", "--strategy=cpu",
               "--config.total_steps=300", "--config.eval_every=100",
               "--config.checkpoint_every=100", "--config.steps_per_loop=64",
               "--config.max_checkpoints=5", cwd=tmp_path)
  assert r.returncode == 0, r.stderr
  # steps_per_loop is the longest host call; loops are cut to land on every eval/checkpoint.
  assert list(summaries.read_scalars(workdir, "train", "loss")) == [64, 100, 164, 200, 264, 300]
  assert list(summaries.read_scalars(workdir, "eval", "accuracy")) == [100, 200, 300]
  names = sorted(f for f in os.listdir(os.path.join(workdir, "checkpoints"))
                 if f.endswith(".index"))
  assert names == ["ckpt-100.index", "ckpt-200.index", "ckpt-300.index"]


@pytest.mark.parametrize("flags,named", [
    (["--config.total_steps=100", "--config.num_epochs=2"], ("num_epochs", "total_steps")),
    (["--config.schedule.warmup_steps=5", "--config.schedule.warmup_epochs=1"],
     ("schedule.warmup_epochs", "schedule.warmup_steps")),
])
def test_two_members_of_one_group_on_the_command_line_are_refused(data_dir, tmp_path, flags,
                                                                  named):
  workdir = tmp_path / "w"
  r = run_main(f"--workdir={workdir}", f"--config.data_dir={data_dir}", "--strategy=cpu",
               *flags, cwd=tmp_path)
  assert r.returncode == 2
  line = r.stderr.strip().splitlines()[-1]
  assert line.startswith(f"error: {named[0]}: given on the command line together with "
                         f"{named[1]}"), line
  assert "Traceback" not in r.stderr and not workdir.exists()


def test_a_config_file_that_sets_two_members_of_a_group_is_named(data_dir, tmp_path):
  path = tmp_path / "both.py"
  path.write_text(textwrap.dedent(f"""
      import sys
      sys.path.insert(0, {REPO!r})
      from configs import default
      def get_config():
        c = default.get_config()
        c.total_steps = 500  # and a length in epochs: two lengths
        c.num_epochs = 3.0
        return c
      """))
  workdir = tmp_path / "w"
  r = run_main(f"--config={path}", f"--workdir={workdir}", f"--config.data_dir={data_dir}",
               "--strategy=cpu", cwd=tmp_path)
  assert r.returncode == 2
  # (total_steps left at configs/default.py's 600 would not count: num_epochs would win.)
  assert r.stderr.strip().splitlines()[-1] == (
      f"error: num_epochs: set (to a value other than configs/default.py's) together with "
      f"total_steps in {path}; they say the same thing (total_steps | num_epochs): set one")
  assert not workdir.exists()


def test_help_exits_0_and_lists_every_config_field(tmp_path):
  r = subprocess.run([sys.executable, "-m", "trainer.main", "--help"], cwd=tmp_path,
                     env=main_env(), capture_output=True, text=True, timeout=60)
  assert r.returncode == 0 and r.stderr == "", r.stderr
  for line in ("--workdir", "--strategy", "--config.total_steps=600",
               "--config.schedule.warmup_fraction=0.1", "--config.optimizer.name='adamw'"):
    assert line in r.stdout, line


def test_what_a_new_user_reads_off_a_terminal(tmp_path):
  """The first run in a fresh data_dir (digits is prepared), its output into pipes as into a
  log file or CI: no progress bars' cursor escapes, a set-up line short enough to read (the
  whole record is config.json), and the summary once, with the steady rate."""
  r = run_main(f"--workdir={tmp_path / 'w'}", f"--config.data_dir={tmp_path / 'tfds'}",
               "--strategy=cpu", "--config.total_steps=8", "--config.steps_per_loop=4",
               cwd=tmp_path)
  assert r.returncode == 0, r.stderr[-3000:]
  text = r.stdout + r.stderr
  assert "\x1b[" not in text and "%|" not in text, text[:3000]  # tqdm's bars and escapes
  (setup,) = [line for line in r.stderr.splitlines() if "] OneDeviceStrategy" in line]
  message = setup.split("] ", 1)[1]
  assert message == ("OneDeviceStrategy: 1 replica on CPU:0; digits: 1437 train / 360 eval, "
                     "uint8 8x8x1 images, 10 classes; precision float32; 8 steps of 128 "
                     "(11 per epoch), warmup 1, lr 0.003 cosine to 0"), message
  assert "DatasetInfo(" not in text and "Plan(" not in text
  assert r.stdout.count("done: step 8 in ") == 1 and "done: {" not in text
  assert "examples/s after the first loop" in r.stdout


def test_a_closed_stdout_neither_ends_the_run_nor_prints_a_traceback(data_dir, tmp_path):
  """`python -m trainer.main | true`: the reader is gone before the first line."""
  workdir = tmp_path / "w"
  proc = subprocess.Popen(
      [sys.executable, "-m", "trainer.main", f"--workdir={workdir}", "--strategy=cpu",
       f"--config.data_dir={data_dir}", "--config.model=mlp", "--config.total_steps=4",
       "--config.steps_per_loop=2", "--config.eval_every=0"],
      cwd=tmp_path, env=main_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  proc.stdout.close()
  _, stderr = proc.communicate(timeout=600)
  assert proc.returncode == 0, stderr[-3000:]
  assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr[-3000:]
  assert (workdir / "export" / "model.keras").exists()  # the run went on to its end
