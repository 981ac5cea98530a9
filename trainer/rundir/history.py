"""A run's TensorBoard history: reading it back, and rewriting it to end at a resume step.

`read_scalars` is the one reader of a run's history: tests, the warmup experiment,
`trainer.plot --workdir` and curves.png use it. The rule, for every reader: a step's value is
its last write, and a write of step `s` replaces everything logged at steps >= `s` before it
(per tag, event files oldest first). TensorBoard's data server (`tensorboard-data-server`, the
default) applies exactly this ("preemption" in its reservoir); `read_scalars` applies it too;
TensorBoard's legacy Python loader (`--load_fast=false`) needs the rewrite
(`truncate_history`), which gives it a history without repeats (see `trainer.run.summaries`).
"""

import collections
import os
import uuid

from absl import logging
import tensorflow as tf

from trainer.base import preemption


def _event_files(workdir, split):
  """The event files of `workdir/split`, oldest first."""
  paths = tf.io.gfile.glob(os.path.join(workdir, split, "events.*"))
  # events.out.tfevents.<unix time>.<host>.<pid>...: oldest first by the time in the name.
  return sorted(paths, key=lambda p: (_file_time(p), p))


def _file_time(path):
  try:
    return int(os.path.basename(path).split(".")[3])
  except (IndexError, ValueError):
    return 0


def _records(path):
  """The serialized events of one file; a record cut short by a killed process ends it."""
  out = []
  try:
    for record in tf.data.TFRecordDataset(path):
      out.append(record.numpy())
  except tf.errors.DataLossError:  # the record being written when the process died
    pass
  return out


def truncate_history(workdir, split, step):
  """Rewrites `workdir/split`'s events to end at global `step` (see the module docstring).

  Returns the set of (tag, step) recorded there, up to `step`. Leaves the files as they are
  (and logs why) if they cannot be read or written: readers of the last-write rule still read
  them right.
  """
  try:
    paths = _event_files(workdir, split)
    if not paths:
      return set()
    events = [tf.compat.v1.Event.FromString(r) for p in paths for r in _records(p)]
    kept = _last_writes([e for e in events if e.HasField("summary")])
    recorded = {(v.tag, e.step) for e in kept if e.step <= step for v in e.summary.value}
    replayed = any(e.step > step for e in kept)
    if not replayed and len(kept) == sum(e.HasField("summary") for e in events):
      return recorded  # nothing after `step`, no repeats: leave the files alone
    header = next((e for e in events if e.HasField("file_version")), None)
    if header is None:
      header = tf.compat.v1.Event(wall_time=kept[0].wall_time if kept else 0.0,
                                  file_version="brain.Event:2")
    tmp = os.path.join(workdir, split, f".history-{uuid.uuid4().hex}.tmp")
    with tf.io.TFRecordWriter(tmp) as writer:
      writer.write(header.SerializeToString())
      for event in kept:
        if event.step <= step:
          writer.write(event.SerializeToString())
    with preemption.critical():  # a stop at once waits for the old files to be gone
      tf.io.gfile.rename(tmp, paths[0], overwrite=True)  # the history keeps the oldest's place
      for path in paths[1:]:
        tf.io.gfile.remove(path)
    logging.info("%s: history rewritten to end at step %d (%d events after it dropped; "
                 "they are trained and logged again).", os.path.join(workdir, split), step,
                 sum(e.step > step for e in kept))
    return recorded
  except (tf.errors.OpError, OSError) as e:
    logging.warning("Could not rewrite the TensorBoard history in %s (%s); readers that keep "
                    "the last write of a step (TensorBoard's data server, read_scalars) still "
                    "show it right.", os.path.join(workdir, split), e)
    return {(tag, s) for tag, s, _ in read_events(workdir, split) if s <= step}


def _last_writes(events):
  """Summary events under the last-write rule, in the order written: per tag, a write of
  step `s` drops the earlier writes of steps >= `s`."""
  by_tag = collections.defaultdict(list)  # tag -> [(step, index)]
  for i, event in enumerate(events):
    for value in event.summary.value:
      series = by_tag[value.tag]
      while series and series[-1][0] >= event.step:
        series.pop()
      series.append((event.step, i))
  keep = sorted({i for series in by_tag.values() for _, i in series})
  return [events[i] for i in keep]


def read_events(workdir, split):
  """[(tag, global step, value)] of every scalar in `workdir/split`, in the order written.

  Event files are read oldest first; a record cut short by a killed process ends its file.
  """
  out = []
  for path in _event_files(workdir, split):
    for record in _records(path):
      event = tf.compat.v1.Event.FromString(record)
      out.extend((value.tag, event.step, float(tf.make_ndarray(value.tensor)))
                 for value in event.summary.value)
  return out


def read_scalars(workdir, split, tag):
  """{global step: value} of one scalar, steps ascending, under the last-write rule (what
  TensorBoard shows): a step written twice keeps its last write, and a write of step `s`
  replaces the writes of steps >= `s` before it (a resumed run's replayed steps)."""
  series = []
  for name, step, value in read_events(workdir, split):
    if name == tag:
      while series and series[-1][0] >= step:
        series.pop()
      series.append((step, value))
  return dict(series)
