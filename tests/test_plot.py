"""The schedule plot: as a function and as `python -m trainer.plot`."""

import os
import subprocess
import sys

import numpy as np
import pytest

from trainer import plot
from trainer import schedules

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(*args, cwd):
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
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


def test_command_line_plots_a_configs_resolved_schedule(tmp_path):
  out = tmp_path / "default.png"
  r = _run(f"--config={REPO}/configs/default.py", f"--out={out}", cwd=tmp_path)
  assert r.returncode == 0, r.stderr
  assert out.read_bytes()[:8] == PNG_MAGIC
  # The same curve trainer.main trains with: 600 steps, 10 % (60 steps) of warmup to 3e-3.
  fig = plot.plot_schedule(**plot._config_schedule(f"{REPO}/configs/default.py").kwargs())  # pylint: disable=protected-access
  labels = fig.axes[0].get_legend_handles_labels()[1]
  assert labels[:2] == ["warmup (60 steps)", "cosine decay (540 steps)"]
