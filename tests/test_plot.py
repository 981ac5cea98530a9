"""The schedule plot and a run's curves: as functions and as `python -m trainer.plot`."""

import os
import subprocess
import sys

import numpy as np
import pytest

from trainer import plot
from trainer import schedules
from trainer.run import console, curves, summaries

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(*args, cwd, quiet_tf=True):
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
  if not quiet_tf:  # as a user's shell has it
    del env["TF_CPP_MIN_LOG_LEVEL"]
  return subprocess.run([sys.executable, "-m", "trainer.plot", *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=120)


def test_figure_shows_the_schedule_and_its_phases(tmp_path):
  path = tmp_path / "s.png"
  fig = plot.plot_schedule(1000, warmup_steps=100, hold=200, start_lr=1e-4, target_lr=3e-3,
                           final_lr=1e-5, path=str(path))
  assert path.read_bytes()[:8] == PNG_MAGIC
  ax = fig.axes[0]
  (line,) = ax.get_lines()
  steps, lrs = line.get_xdata(), line.get_ydata()
  np.testing.assert_allclose(
      lrs, schedules.lr_warmup_cosine_decay(steps, 100, 200, 1000, 1e-4, 3e-3, 1e-5))
  assert {0, 100, 300, 1000} <= set(steps)  # phase boundaries are drawn exactly
  labels = ax.get_legend_handles_labels()[1]
  assert labels[:3] == ["warmup (100 steps)", "hold (200 steps)", "cosine decay (700 steps)"]
  assert "global step" in ax.get_xlabel()


def test_phases_that_are_empty_are_not_drawn():
  fig = plot.plot_schedule(50, warmup_steps=0, target_lr=0.1)
  assert fig.axes[0].get_legend_handles_labels()[1] == ["cosine decay (50 steps)", "learning rate"]


def test_invalid_schedule_is_rejected_before_drawing(tmp_path):
  with pytest.raises(ValueError, match="^total_steps: "):
    plot.plot_schedule(10, warmup_steps=20, path=str(tmp_path / "x.png"))
  assert not (tmp_path / "x.png").exists()


def test_command_line_writes_png(tmp_path):
  out = tmp_path / "sched.png"
  r = _run("--total_steps=500", "--warmup_steps=50", "--hold=25", "--target_lr=0.01",
           f"--out={out}", cwd=tmp_path)
  assert r.returncode == 0, r.stderr
  assert out.read_bytes()[:8] == PNG_MAGIC and out.stat().st_size > 10_000


def test_command_line_bad_value_exits_2_with_one_line(tmp_path):
  r = _run("--total_steps=10", "--warmup_steps=100", f"--out={tmp_path / 'no.png'}",
           cwd=tmp_path)
  assert r.returncode == 2
  assert r.stderr.strip().splitlines()[-1].startswith("error: total_steps: ")
  assert "Traceback" not in r.stderr
  assert not (tmp_path / "no.png").exists()


def test_command_line_mistakes_about_where_to_write_are_one_line(tmp_path):
  (tmp_path / "adir").mkdir()
  run = tmp_path / "run"
  run.mkdir()
  for args, words in [
      ([f"--out={tmp_path / 'missing' / 'x.png'}"],
       f"error: out: the directory '{tmp_path / 'missing'}' does not exist"),
      ([f"--out={tmp_path / 'adir'}"], f"error: out: '{tmp_path / 'adir'}' is a directory"),
      ([f"--workdir={run}", f"--config={REPO}/configs/default.py",
        f"--out={tmp_path / 'x.png'}"],
       "error: workdir: --workdir draws a run's curves; --config would be ignored"),
  ]:
    r = _run(*args, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, (args, r.stderr[-2000:])
    assert r.stderr.strip().splitlines()[-1].startswith(words), (args, r.stderr[-2000:])
  assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "run"]  # nothing written
  assert not any((tmp_path / "adir").iterdir())


def test_command_line_plots_a_configs_resolved_schedule(tmp_path):
  out = tmp_path / "default.png"
  r = _run(f"--config={REPO}/configs/default.py", f"--out={out}", cwd=tmp_path)
  assert r.returncode == 0, r.stderr
  assert out.read_bytes()[:8] == PNG_MAGIC
  # The same curve trainer.main trains with: 600 steps, 10 % (60 steps) of warmup to 3e-3.
  fig = plot.plot_schedule(**plot._config_schedule(f"{REPO}/configs/default.py").kwargs())  # pylint: disable=protected-access
  labels = fig.axes[0].get_legend_handles_labels()[1]
  assert labels[:2] == ["warmup (60 steps)", "cosine decay (540 steps)"]


# A run's curves (curves.png, `trainer.plot --workdir`).


def _fake_run(workdir, scale):
  """A run's TensorBoard history: train every 4 steps, evals every 8, as the trainer writes."""
  writer = summaries.Summaries(str(workdir), chief=True)
  for step in range(4, 25, 4):
    writer.write("train", step, {"loss": scale / step, "accuracy": 1 - scale / step,
                                 "learning_rate": 1e-3 * step})
    if step % 8 == 0:
      writer.write("eval", step, {"loss": scale / step, "accuracy": 1 - scale / step})
  writer.close()
  return str(workdir)


def test_overlaid_runs_keep_one_colour_in_every_panel(tmp_path):
  runs = [_fake_run(tmp_path / "20250131-100000-1234", 1.0),
          _fake_run(tmp_path / "20250131-100500-5678", 2.0)]
  fig = curves.plot_runs(runs)
  assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy", "learning rate"]
  colours = {}
  for ax in fig.axes:
    for line in ax.get_lines():
      run = line.get_label().split(" ")[0]
      colours.setdefault(run, set()).add(line.get_color())
  assert sorted(colours) == sorted(os.path.basename(r) for r in runs)
  assert all(len(c) == 1 for c in colours.values()), colours  # one colour per run, everywhere
  assert len(set.union(*colours.values())) == 2  # and a colour of its own


def test_a_single_runs_curves_name_it_once_and_label_every_axis(tmp_path):
  run = _fake_run(tmp_path / "20250131-100000-1234", 1.0)
  path = tmp_path / "curves.png"
  fig = curves.plot_runs([run], path=str(path))
  assert path.read_bytes()[:8] == PNG_MAGIC
  assert fig._suptitle.get_text() == "20250131-100000-1234"  # pylint: disable=protected-access
  loss, accuracy, lr = fig.axes
  assert loss.get_legend_handles_labels()[1] == ["train", "eval"]  # not the run id again
  assert accuracy.get_legend_handles_labels()[1] == ["train", "eval"]
  assert lr.get_legend() is None
  assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "accuracy", "learning rate"]
  assert all(ax.get_xlabel() == "global step" for ax in fig.axes)


@pytest.mark.slow  # end to end (10-30 s): the slow tier keeps the fast one under 10 minutes
def test_the_command_line_prints_no_tf_start_up_lines(tmp_path):
  """TF's C++ start-up lines (oneDNN, CUDA stubs, `cuInit`) are hidden as trainer.main hides
  them, with TF_CPP_MIN_LOG_LEVEL unset as in a user's shell."""
  run = _fake_run(tmp_path / "run", 1.0)
  for args in (["--total_steps=100", "--warmup_steps=10"], [f"--workdir={run}"]):
    r = _run(*args, f"--out={tmp_path / 'x.png'}", cwd=tmp_path, quiet_tf=False)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr
    assert r.stdout == f"wrote {tmp_path / 'x.png'}\n"
  assert console.HARMLESS.search("E0000 cuda_platform.cc:52] failed call to cuInit: INTERNAL")
