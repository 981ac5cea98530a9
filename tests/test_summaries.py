"""trainer.summaries: what Summaries writes, and read_events/read_scalars reading it back across
several event files (a resumed run) and past a record a killed process cut short."""

import os

import pytest
import tensorflow as tf

from trainer import summaries
from trainer.summaries import read_events, read_scalars


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
  evals = []
  writer = summaries.Summaries(workdir, chief=True, after_eval=lambda: evals.append(
      read_scalars(workdir, "eval", "accuracy")))
  writer.write("train", 4, {"loss": 0.5, "learning_rate": 0.001})
  writer.write("train", 8, {"loss": 0.25, "learning_rate": 0.002})
  writer.write("eval", 8, {"accuracy": 0.75})
  writer.close()
  assert read_scalars(workdir, "train", "loss") == {4: 0.5, 8: 0.25}
  assert read_scalars(workdir, "train", "learning_rate") == {
      4: pytest.approx(0.001), 8: pytest.approx(0.002)}
  assert read_scalars(workdir, "eval", "accuracy") == {8: 0.75}
  assert evals == [{8: 0.75}]  # once, after the eval write (not after train writes)


def test_a_worker_that_is_not_the_chief_writes_nothing(tmp_path):
  workdir = tmp_path / "run"
  evals = []
  writer = summaries.Summaries(str(workdir), chief=False, after_eval=lambda: evals.append(1))
  writer.write("train", 4, {"loss": 0.5})
  writer.write("eval", 4, {"accuracy": 0.5})
  writer.close()
  assert not workdir.exists() or list(workdir.rglob("events.*")) == []
  assert evals == []  # the chief alone redraws the run's curves
