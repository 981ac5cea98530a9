"""trainer.summaries: what Summaries writes, and read_events/read_scalars reading it back across
several event files (a resumed run) and past a record a killed process cut short."""

import os

import pytest
import tensorflow as tf

from trainer.run import summaries
from trainer.run.summaries import read_events, read_scalars


def _event_file(workdir, split, unix_time, rows, scratch):
  """An event file of `rows` [(tag, step, value)] named as if created at `unix_time`."""
  logdir = os.path.join(scratch, f"w{unix_time}")
  writer = tf.summary.create_file_writer(logdir)
  with writer.as_default():
    for tag, step, value in rows:
      tf.summary.scalar(tag, value, step=step)
  writer.close()
  (name,) = os.listdir(logdir)
  os.makedirs(os.path.join(workdir, split), exist_ok=True)
  path = os.path.join(workdir, split, f"events.out.tfevents.{unix_time}.testhost.1.0.v2")
  os.rename(os.path.join(logdir, name), path)
  return path


def test_the_last_write_of_a_step_wins_across_event_files(tmp_path):
  workdir, scratch = str(tmp_path / "run"), str(tmp_path / "scratch")
  # A resumed run: the second process (newer file) logged steps 8 and 12 again. By name,
  # "...1000..." sorts before "...900...": the reader must go by the time, not the name.
  _event_file(workdir, "train", 900, [("loss", 4, 1.0), ("loss", 8, 2.0), ("loss", 12, 3.0)],
              scratch)
  _event_file(workdir, "train", 1000, [("loss", 8, 20.0), ("loss", 12, 30.0),
                                       ("loss", 16, 40.0)], scratch)
  assert read_scalars(workdir, "train", "loss") == {4: 1.0, 8: 20.0, 12: 30.0, 16: 40.0}
  assert list(read_scalars(workdir, "train", "loss")) == [4, 8, 12, 16]  # steps ascending
  assert [(tag, step) for tag, step, _ in read_events(workdir, "train")] == [
      ("loss", 4), ("loss", 8), ("loss", 12), ("loss", 8), ("loss", 12), ("loss", 16)]


def test_a_truncated_trailing_record_is_tolerated(tmp_path):
  workdir, scratch = str(tmp_path / "run"), str(tmp_path / "scratch")
  killed = _event_file(workdir, "eval", 900, [("accuracy", 8, 0.5), ("accuracy", 16, 0.75)],
                       scratch)
  with open(killed, "r+b") as f:  # the process died while writing the step-16 record
    f.truncate(os.path.getsize(killed) - 5)
  _event_file(workdir, "eval", 1000, [("accuracy", 16, 0.8), ("accuracy", 24, 0.9)], scratch)
  assert read_scalars(workdir, "eval", "accuracy") == {
      8: 0.5, 16: pytest.approx(0.8), 24: pytest.approx(0.9)}
  assert read_scalars(workdir, "eval", "loss") == {}  # another tag: nothing


def test_a_missing_split_reads_as_nothing(tmp_path):
  assert read_events(str(tmp_path), "train") == []
  assert read_scalars(str(tmp_path), "train", "loss") == {}


def test_summaries_write_scalars_the_readers_read_back(tmp_path):
  workdir = str(tmp_path / "run")
  writer = summaries.Summaries(workdir, chief=True)
  assert writer.write("train", 4, {"loss": 0.5, "learning_rate": 0.001})
  writer.write("train", 8, {"loss": 0.25, "learning_rate": 0.002})
  assert writer.write("eval", 8, {"accuracy": 0.75})  # written now: the eval actions may draw
  assert read_scalars(workdir, "eval", "accuracy") == {8: 0.75}  # flushed for them
  writer.close()
  assert read_scalars(workdir, "train", "loss") == {4: 0.5, 8: 0.25}
  assert read_scalars(workdir, "train", "learning_rate") == {
      4: pytest.approx(0.001), 8: pytest.approx(0.002)}
  assert read_scalars(workdir, "eval", "accuracy") == {8: 0.75}


def test_a_worker_that_is_not_the_chief_writes_nothing(tmp_path):
  workdir = tmp_path / "run"
  writer = summaries.Summaries(str(workdir), chief=False)
  writer.write("train", 4, {"loss": 0.5})
  writer.write("eval", 4, {"accuracy": 0.5})
  writer.close()
  assert not workdir.exists() or list(workdir.rglob("events.*")) == []


# After a resume: no repeats or zig-zags for any reader; a finished run's rerun adds nothing.


def test_a_write_of_a_step_replaces_the_later_steps_written_before_it(tmp_path):
  """What TensorBoard's data server does ("preemption"): the killed process logged 20-28
  after its checkpoint at 16; the resumed one logs 20 and 24 (a shorter run, say)."""
  workdir, scratch = str(tmp_path / "run"), str(tmp_path / "scratch")
  _event_file(workdir, "train", 900, [("loss", s, float(s)) for s in (4, 8, 12, 16, 20, 24, 28)],
              scratch)
  _event_file(workdir, "train", 1000, [("loss", 20, 200.0), ("loss", 24, 240.0)], scratch)
  assert read_scalars(workdir, "train", "loss") == {4: 4.0, 8: 8.0, 12: 12.0, 16: 16.0,
                                                    20: 200.0, 24: 240.0}  # no stale 28


def test_resuming_rewrites_the_history_to_end_at_the_resume_step(tmp_path):
  workdir, scratch = str(tmp_path / "run"), str(tmp_path / "scratch")
  oldest = _event_file(workdir, "train", 900, [("loss", s, float(s)) for s in (4, 8, 12)],
                       scratch)
  _event_file(workdir, "train", 950, [("loss", s, float(s)) for s in (12, 16, 20, 24)], scratch)
  writer = summaries.Summaries(workdir, chief=True, resume_step=16)
  assert os.listdir(os.path.join(workdir, "train")) == [os.path.basename(oldest)]  # one file
  assert read_events(workdir, "train") == [("loss", s, float(s)) for s in (4, 8, 12, 16)]
  writer.write("train", 20, {"loss": 2.0})
  writer.close()
  assert [step for _, step, _ in read_events(workdir, "train")] == [4, 8, 12, 16, 20]


def test_a_history_without_replayed_steps_is_left_alone(tmp_path):
  workdir, scratch = str(tmp_path / "run"), str(tmp_path / "scratch")
  paths = [_event_file(workdir, "eval", 900, [("accuracy", 8, 0.5)], scratch),
           _event_file(workdir, "eval", 950, [("accuracy", 16, 0.6)], scratch)]
  before = {p: open(p, "rb").read() for p in paths}
  summaries.Summaries(workdir, chief=True, resume_step=16).close()
  assert {p: open(p, "rb").read() for p in paths} == before


def test_a_finished_runs_rerun_adds_no_points_and_no_files(tmp_path):
  workdir, scratch = str(tmp_path / "run"), str(tmp_path / "scratch")
  _event_file(workdir, "eval", 900, [("accuracy", 8, 0.5), ("accuracy", 24, 0.9)], scratch)
  before = sorted(os.listdir(os.path.join(workdir, "eval")))
  writer = summaries.Summaries(workdir, chief=True, resume_step=24)
  # The final eval, evaluated again: not written, so the eval actions do not redraw.
  assert not writer.write("eval", 24, {"accuracy": 0.9})
  writer.close()
  assert sorted(os.listdir(os.path.join(workdir, "eval"))) == before
  assert [step for _, step, _ in read_events(workdir, "eval")] == [8, 24]
  assert not os.path.exists(os.path.join(workdir, "train"))


def test_a_final_eval_that_a_kill_lost_is_written(tmp_path):
  workdir, scratch = str(tmp_path / "run"), str(tmp_path / "scratch")
  _event_file(workdir, "eval", 900, [("accuracy", 8, 0.5)], scratch)
  writer = summaries.Summaries(workdir, chief=True, resume_step=24)  # killed before its eval
  writer.write("eval", 24, {"accuracy": 0.9})
  writer.close()
  assert read_scalars(workdir, "eval", "accuracy") == {8: 0.5, 24: pytest.approx(0.9)}


def _tensorboard_steps(logdir, tag):
  """The steps TensorBoard's own Python loader (`--load_fast=false`) shows for `tag`."""
  # pylint: disable-next=g-import-not-at-top
  from tensorboard.backend.event_processing import event_accumulator
  acc = event_accumulator.EventAccumulator(logdir, size_guidance={"tensors": 0})
  acc.Reload()
  return [e.step for e in acc.Tensors(tag)]


def test_a_killed_and_resumed_run_shows_each_step_once_to_every_reader(partial, runs,
                                                                       data_dir):
  """`partial` is the run killed after its step-16 checkpoint with its events up to step 24
  logged (and its eval at 24): the resumed run trains and logs 20 and 24 again."""
  from tests.conftest import checkpointed_run, cpu  # pylint: disable=g-import-not-at-top
  from trainer.run import train  # pylint: disable=g-import-not-at-top
  before = read_events(partial, "train")
  assert [s for t, s, _ in before if t == "loss"] == [4, 8, 12, 16, 20, 24]  # 20, 24 replayed
  train.train_and_evaluate(checkpointed_run(data_dir), partial, cpu())
  for split in ("train", "eval"):
    events = [(tag, step) for tag, step, _ in read_events(partial, split)]
    assert len(events) == len(set(events)), split  # nothing twice, even for a raw reader
    for tag in {tag for tag, _ in events}:
      steps = _tensorboard_steps(os.path.join(partial, split), tag)
      assert steps == sorted(set(steps)), (split, tag, steps)  # no zig-zag, no repeat
      assert read_scalars(partial, split, tag).keys() == read_scalars(
          runs["full"], split, tag).keys()
  for tag in ("loss", "learning_rate"):  # and the values of an uninterrupted run
    assert read_scalars(partial, "train", tag) == read_scalars(runs["full"], "train", tag)
