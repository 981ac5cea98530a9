"""trainer.run.actions: what happens after a train loop or an eval, as a list of objects the
controller calls; one may stop the run, which then ends as a finished run does."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO, ckpt_dir, cpu, iterations, main_env, small_run
from trainer.rundir.history import read_scalars
from trainer.run import actions, train


class _Recorder:
  def __init__(self):
    self.events = []

  def __call__(self, event):
    self.events.append((event.split, event.step, dict(event.metrics), event.written,
                        event.final, event.chief, event.checkpointer.workdir))


class _StopAfter:
  """Stops the run at the first eval at or after `step`."""

  def __init__(self, step):
    self.step = step

  def __call__(self, event):
    if event.step >= self.step:
      event.stop(f"eval at step {event.step}")


def test_event_keeps_the_first_stop_reason():
  event = actions.Event("eval", 8, {"loss": 1.0}, checkpointer=None, chief=True)
  assert actions.run_all([lambda e: None], event) == ""
  assert actions.run_all([lambda e: e.stop("first"), lambda e: e.stop("second")], event) == (
      "first")


def test_actions_see_every_loop_and_eval_with_its_step_and_metrics(data_dir, tmp_path):
  workdir = str(tmp_path / "w")
  on_train, on_eval = _Recorder(), _Recorder()
  result = train.train_and_evaluate(small_run(data_dir, model="mlp"), workdir, cpu(),
                                    train_actions=[on_train], eval_actions=[on_eval])
  assert [e[1] for e in on_train.events] == [4, 8, 12, 16, 20, 24]  # every loop of 4
  assert all(e[0] == "train" and "loss" in e[2] and e[5] and e[6] == workdir
             for e in on_train.events)
  assert [(e[1], e[4]) for e in on_eval.events] == [(8, False), (16, False), (24, True)]
  assert on_eval.events[-1][2] == {k: v for k, v in result.items()
                                   if k in ("loss", "accuracy")}
  assert read_scalars(workdir, "eval", "accuracy") == {
      e[1]: pytest.approx(e[2]["accuracy"]) for e in on_eval.events}
  assert result["stopped"] == "" and os.path.exists(os.path.join(workdir, "curves.png"))
  # A finished run started again: its final eval is not written again (nor drawn).
  again = _Recorder()
  train.train_and_evaluate(small_run(data_dir, model="mlp"), workdir, cpu(),
                           eval_actions=[again])
  assert [(e[1], e[3], e[4]) for e in again.events] == [(24, False, True)]


def test_an_eval_action_that_stops_the_run_ends_it_like_a_finished_one(data_dir, tmp_path):
  workdir = str(tmp_path / "w")
  result = train.train_and_evaluate(small_run(data_dir, model="mlp"), workdir, cpu(),
                                    eval_actions=[_StopAfter(8)])
  assert result["step"] == 8 and result["stopped"] == "eval at step 8"
  assert iterations(workdir) == 8  # checkpointed where it stopped
  with open(os.path.join(workdir, "export", "export.json")) as f:
    assert json.load(f)["step"] == 8  # and exported, as a finished run is
  assert sorted(read_scalars(workdir, "eval", "loss")) == [8]  # no second eval of step 8
  assert sorted(read_scalars(workdir, "train", "loss")) == [4, 8]


_STOPPING_SCRIPT = textwrap.dedent("""
    import sys
    from trainer import config, train_and_evaluate
    from trainer.distribute.strategy import get_strategy

    def stop_at_16(event):
      if event.step >= 16:
        event.stop("enough")

    c = config.override(config.load({default!r}), **{fields!r})
    result = train_and_evaluate(c, sys.argv[1], get_strategy("cpu"), eval_actions=[stop_at_16])
    print("stopped", result["step"], result["stopped"])
    """)


def test_a_stopped_run_exits_0_and_its_checkpoint_is_the_stop_step(data_dir, tmp_path):
  fields = {"total_steps": 24, "steps_per_loop": 4, "eval_every": 8, "checkpoint_every": 8,
            "data_dir": data_dir, "model": "mlp", "global_batch_size": 32}
  script = _STOPPING_SCRIPT.format(default=os.path.join(REPO, "configs", "default.py"),
                                   fields=fields)
  workdir = str(tmp_path / "w")
  r = subprocess.run([sys.executable, "-c", script, workdir], cwd=str(tmp_path), env=main_env(),
                     capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "stopped 16 enough" in r.stdout
  assert sorted(int(n[len("ckpt-"):-len(".index")]) for n in os.listdir(ckpt_dir(workdir))
                if n.endswith(".index")) == [8, 16]
  assert os.path.exists(os.path.join(workdir, "export", "model.keras"))
