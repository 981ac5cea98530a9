"""trainer.controller: the cadence (where loops stop, when intervals are due), the outer loop
against fakes, and the same rules end to end (a finished run, the NaN guard)."""

import glob
import os

import hypothesis
import numpy as np
import pytest
from hypothesis import strategies as st

from tests.conftest import checkpointed_run, ckpt_dir, cpu, restore_only, small_run, tensors
from tests.killer import tree
from trainer import task
from trainer.run import train
from trainer.run import controller as controller_lib
from trainer.run import recovery
from trainer.run.controller import Cadence, Controller, crossed
from trainer.step.state import RunState
from trainer.base.errors import CheckpointError, NonFiniteLossError, Preempted

# Cadence.next_stop and crossed.


def _walk(cadence, start):
  """Every step a run resumed at `start` stops at, in order."""
  stops, step = [], start
  while step < cadence.total_steps:
    step = cadence.next_stop(step)
    stops.append(step)
  return stops


def test_aligned_loops_stop_every_steps_per_loop():
  assert _walk(Cadence(24, 4, 8, 8), 0) == [4, 8, 12, 16, 20, 24]
  assert _walk(Cadence(10, 4, 0, 0), 0) == [4, 8, 10]  # 0 = only at the end; capped at total


def test_loops_are_cut_short_to_land_on_intervals_steps_per_loop_does_not_divide():
  # steps_per_loop 6, evals every 10, checkpoints every 15.
  assert _walk(Cadence(60, 6, 10, 15), 0) == [6, 10, 15, 20, 26, 30, 36, 40, 45, 50, 56, 60]
  assert _walk(Cadence(7, 5, 0, 3), 0) == [3, 6, 7]


def test_a_resume_at_an_unaligned_step_lands_on_the_next_multiples():
  cadence = Cadence(24, 4, 8, 8)
  assert cadence.next_stop(5) == 8  # not 9: the eval and the checkpoint at 8 stay due
  assert _walk(cadence, 5) == [8, 12, 16, 20, 24]
  assert cadence.next_stop(22) == 24 and cadence.next_stop(23) == 24
  assert _walk(Cadence(60, 6, 10, 15), 13) == [15, 20, 26, 30, 36, 40, 45, 50, 56, 60]


def test_crossed_counts_multiples_reached_not_started_from():
  assert crossed(0, 8, 8) and crossed(7, 8, 8) and crossed(5, 17, 8) and crossed(15, 16, 8)
  assert not crossed(0, 7, 8)
  assert not crossed(8, 12, 8)  # starting on a multiple does not count it again
  assert not crossed(8, 15, 8)
  assert not crossed(0, 100, 0)  # 0 = never (only at the end)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(st.integers(1, 40), st.integers(1, 60), st.integers(0, 60), st.integers(1, 300),
                  st.data())
def test_walking_next_stop_from_any_start_lands_on_every_multiple(spl, eval_every,
                                                                  checkpoint_every, total, data):
  start = data.draw(st.integers(0, total), label="start")
  cadence = Cadence(total, spl, eval_every, checkpoint_every)
  stops = _walk(cadence, start)
  previous = start
  for stop in stops:
    assert 0 < stop - previous <= spl  # progress, never more than steps_per_loop a call
    previous = stop
  if start == total:
    assert stops == []
  else:
    assert stops[-1] == total  # and never past it
  for every in (eval_every, checkpoint_every):
    if every:
      due = set(range((start // every + 1) * every, total + 1, every))
      assert due <= set(stops), (due - set(stops))
      # Each stop crosses a multiple exactly when it lands on one.
      before = [start] + stops[:-1]
      assert {s for b, s in zip(before, stops) if crossed(b, s, every)} == due


# Controller.run against fakes: what it asks of the trainer, checkpointer and summaries.


class FakeTrainer:
  """Steps a counter; the loss of the loop ending at a step in `bad` is `bad[step]`."""

  def __init__(self, step=0, bad=None):
    self.step, self.bad, self.calls = step, bad or {}, []

  def global_step(self):
    return self.step

  def train(self, n):
    self.calls.append(("train", n))
    self.step += n
    return {"loss": self.bad.get(self.step, 0.5), "accuracy": 0.75}

  def evaluate(self):
    self.calls.append(("evaluate", self.step))
    return {"loss": 0.25, "accuracy": 0.9}


class FakeCheckpointer:

  def __init__(self):
    self.saves = []

  def save(self, step):
    self.saves.append(step)


class FakeSummaries:

  def __init__(self):
    self.written, self.shown, self.series = [], [], []

  def write(self, split, step, scalars, shown=None):
    self.written.append((split, step, dict(scalars)))
    self.shown.append((split, step, dict(shown or {})))
    return True

  def write_series(self, split, tag, steps, values):
    self.series.extend((split, tag, int(s), float(v)) for s, v in zip(steps, values))

  def steps(self, split):
    return [step for s, step, _ in self.written if s == split]


class FakeWatcher:
  """SIGTERM "arrives" once the trainer has reached `at`."""

  def __init__(self, trainer, at=None):
    self.trainer, self.at = trainer, at

  def requested(self):
    return self.at is not None and self.trainer.step >= self.at


def _controller(cadence, start=0, bad=None, preempt_at=None, guard=None):
  trainer = FakeTrainer(start, bad)
  ckpt, writer = FakeCheckpointer(), FakeSummaries()
  # The run's NaN guard (a train action), with no rollbacks: today's exit 3.
  divergence = recovery.Divergence(RunState(), max_trials=0)
  controller = Controller(cadence, trainer, ckpt, writer, FakeWatcher(trainer, preempt_at),
                          learning_rate=lambda step: 0.001 * step, global_batch_size=32,
                          train_actions=[divergence], guard=guard)
  return controller, trainer, ckpt, writer


def test_a_run_that_lost_its_workdir_writes_nothing_more():
  """The guard (the lock's check: a gs:// lease taken over) runs before every write."""
  lost = []

  def guard():
    if any(lost):
      raise CheckpointError("workdir: lost")

  controller, trainer, ckpt, writer = _controller(Cadence(24, 4, 8, 8), guard=guard)
  trainer.train = lambda n, f=trainer.train: (lost.append(trainer.step >= 8), f(n))[1]
  with pytest.raises(CheckpointError):
    controller.run()
  assert ckpt.saves == [8] and writer.steps("train") == [4, 8] and writer.steps("eval") == [8]


def test_run_saves_at_crossed_multiples_and_at_the_end():
  controller, trainer, ckpt, _ = _controller(Cadence(20, 6, 0, 8))
  assert controller.run()["step"] == 20
  assert [n for kind, n in trainer.calls if kind == "train"] == [6, 2, 6, 2, 4]
  assert ckpt.saves == [8, 16, 20]


def test_run_resumed_at_an_unaligned_step_keeps_the_cadence():
  controller, trainer, ckpt, writer = _controller(Cadence(20, 4, 10, 8), start=5)
  controller.run()
  assert controller.trained_steps == 15 and controller.examples_per_sec > 0  # this process's
  assert [n for kind, n in trainer.calls if kind == "train"] == [3, 2, 4, 2, 4]
  assert ckpt.saves == [8, 16, 20]
  assert writer.steps("train") == [8, 10, 14, 16, 20]
  assert writer.steps("eval") == [10, 20]


def test_the_steady_rate_leaves_out_the_first_loop_which_compiles(monkeypatch):
  """The end summary's rate: 6.4k mean while the loops after the first ran at 25.7k (issue
  22) means the first loop's compilation was in the mean."""
  clock = iter([0.0, 10.0] + [t for i in range(5) for t in (10.0 + i, 11.0 + i)])
  monkeypatch.setattr(controller_lib.time, "perf_counter", lambda: next(clock))
  controller, _, _, _ = _controller(Cadence(24, 4, 0, 0))
  controller.run()  # 6 loops of 4 steps of 32 examples: 10 s, then 1 s each
  assert controller.examples_per_sec == pytest.approx(24 * 32 / 15)
  assert controller.steady_examples_per_sec == pytest.approx(20 * 32 / 5)
  one, _, _, _ = _controller(Cadence(4, 4, 0, 0))
  clock = iter([0.0, 3.0])
  one.run()
  assert one.examples_per_sec == pytest.approx(4 * 32 / 3) and one.steady_examples_per_sec == 0


def test_run_evaluates_on_the_interval_and_once_at_the_end():
  controller, trainer, _, writer = _controller(Cadence(24, 4, 8, 0))
  result = controller.run()
  assert [s for kind, s in trainer.calls if kind == "evaluate"] == [8, 16, 24]  # 24 once
  assert writer.steps("eval") == [8, 16, 24]
  assert result == {"step": 24, "loss": 0.25, "accuracy": 0.9}  # the final eval's metrics


def test_run_logs_each_loop_and_the_learning_rate_of_every_step():
  controller, _, _, writer = _controller(Cadence(8, 4, 0, 0), start=1)
  controller.run()
  train_rows = [(step, scalars) for split, step, scalars in writer.written if split == "train"]
  assert [step for step, _ in train_rows] == [5, 8]  # loops of 4 from step 1, to the end
  for step, scalars in train_rows:
    assert scalars["loss"] == 0.5 and scalars["accuracy"] == 0.75
    assert "learning_rate" not in scalars and scalars["examples_per_sec"] > 0
  # Every step's rate (the rate its update used), from the step resumed at on.
  assert [(s, v) for _, _, s, v in writer.series] == [
      (s, pytest.approx(0.001 * s)) for s in range(1, 8)]
  assert {split for split, *_ in writer.series} == {"train"}
  assert [(step, shown["learning_rate"]) for split, step, shown in writer.shown
          if split == "train"] == [(5, pytest.approx(0.005)), (8, pytest.approx(0.008))]


def test_run_at_the_end_already_only_evaluates():
  controller, trainer, ckpt, writer = _controller(Cadence(24, 4, 8, 8), start=24)
  assert controller.run()["step"] == 24
  assert trainer.calls == [("evaluate", 24)]
  assert ckpt.saves == [] and writer.steps("eval") == [24] and writer.steps("train") == []
  assert controller.trained_steps == 0 and controller.examples_per_sec == 0.0


@pytest.mark.parametrize("loss", [float("nan"), float("inf")])
def test_nonfinite_loss_raises_without_a_save(loss):
  controller, trainer, ckpt, writer = _controller(Cadence(24, 4, 8, 4), bad={12: loss})
  with pytest.raises(NonFiniteLossError, match="global step 12") as info:
    controller.run()
  assert "\n" not in str(info.value)
  assert ckpt.saves == [4, 8]  # nothing after the bad loop
  assert 12 not in writer.steps("train") and writer.steps("eval") == [8]
  assert trainer.step == 12 and trainer.calls[-1] == ("train", 4)  # stopped at once


def test_preempted_after_a_save_of_the_step_reached():
  controller, trainer, ckpt, writer = _controller(Cadence(24, 4, 8, 0), preempt_at=6)
  with pytest.raises(Preempted) as info:
    controller.run()
  assert info.value.step == 8 and "global step 8" in str(info.value)
  assert ckpt.saves == [8]  # checkpoint_every=0, yet the preempted step is saved
  assert trainer.step == 8 and writer.steps("eval") == [8]  # the due eval ran first
  assert [kind for kind, _ in trainer.calls].count("train") == 2  # no loop after it


# The same rules end to end.


def test_finished_run_exits_without_training(data_dir, tmp_path):
  workdir = str(tmp_path / "w")
  config = small_run(data_dir, total_steps=8, **{"schedule.warmup_steps": 2})
  first = train.train_and_evaluate(config, workdir, cpu())
  before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  again = train.train_and_evaluate(config, workdir, cpu())
  assert again["step"] == first["step"] == 8
  assert again["accuracy"] == pytest.approx(first["accuracy"])
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before


def test_nonfinite_loss_stops_without_checkpointing(data_dir, tmp_path):
  config = small_run(data_dir, total_steps=16, checkpoint_every=4, eval_every=0,
                     **{"optimizer.name": "sgd", "schedule.target_lr": 1e12,
                        "schedule.start_lr": 1e12, "schedule.warmup_steps": 0})
  with pytest.raises(NonFiniteLossError, match="global step 4"):
    train.train_and_evaluate(config, str(tmp_path / "w"), cpu())
  assert not glob.glob(str(tmp_path / "w" / "checkpoints" / "ckpt-*"))


def test_nonfinite_loss_after_good_checkpoints_keeps_them(partial, data_dir, monkeypatch):
  before = tree(ckpt_dir(partial))
  real = task.Classification.per_example_loss
  monkeypatch.setattr(task.Classification, "per_example_loss",
                      lambda self, labels, logits: real(self, labels, logits) * np.nan)
  with pytest.raises(NonFiniteLossError, match="global step 20"):  # today's behaviour
    train.train_and_evaluate(checkpointed_run(data_dir, nonfinite="stop"), partial, cpu())
  assert tree(ckpt_dir(partial)) == before  # not a byte changed, nothing added
  assert restore_only(partial) == os.path.join(ckpt_dir(partial), "ckpt-16")
  (iterations,) = [v for k, v in tensors(ckpt_dir(partial)).items() if "iterations" in k]
  assert int(iterations) == 16
