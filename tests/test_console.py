"""The console: the live line and ETA, plain lines off a terminal, TF's chatter hidden."""

import io
import logging as std_logging
import os
import pty
import re
import select
import sys
import time

import pytest
from absl import logging

from tests.conftest import main_env
from trainer.run import console


class _Clock:
  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


def _train(c, clock, step, dt, **extra):
  clock.now += dt
  c.train(step, {"loss": 0.5, "learning_rate": 1e-3, "examples_per_sec": 2500.0, **extra})


def test_live_line_redraws_in_place_with_an_eta(capsys):
  clock = _Clock()
  c = console.Console(100, tty=True, clock=clock)
  _train(c, clock, 10, 5.0)  # the first loop includes compilation: no ETA yet
  _train(c, clock, 30, 2.0)  # 20 steps in 2 s: 70 steps left -> 7 s
  c.eval(30, {"loss": 0.25, "accuracy": 0.9})
  _train(c, clock, 50, 2.0)
  c.close()
  out = capsys.readouterr().out
  assert out.startswith("\rstep 10/100  loss 0.5  lr 0.001  2.5k ex/s  ETA --\x1b[K")
  assert "\rstep 30/100  loss 0.5  lr 0.001  2.5k ex/s  ETA 0:00:07\x1b[K\n" in out
  assert "eval step 30/100: loss 0.25, accuracy 0.9\n" in out  # a line of its own
  assert out.endswith("ETA 0:00:05\x1b[K\n")  # 40 steps in 4 s, 50 left
  assert c.eta(50) == pytest.approx(5.0)


def test_off_a_terminal_train_lines_are_absl_lines_at_a_sensible_rate(capsys):
  clock = _Clock()
  records = []
  handler = std_logging.Handler()
  handler.emit = records.append
  std_logging.getLogger("absl").addHandler(handler)
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.INFO)  # as after absl's flag parsing in trainer.main
  try:
    c = console.Console(1000, tty=False, log_every=30.0, clock=clock)
    for step in range(10, 1001, 10):  # one loop a second
      _train(c, clock, step, 1.0)
    c.eval(1000, {"accuracy": 0.5})
  finally:
    logging.set_verbosity(verbosity)
    std_logging.getLogger("absl").removeHandler(handler)
  lines = [r.getMessage() for r in records]
  train = [line for line in lines if line.startswith("train ")]
  assert train[0].startswith("train step 10/1000, loss 0.5")
  assert 3 <= len(train) <= 5  # ~100 s of loops: one line per 30 s, and the last step
  assert train[-1].startswith("train step 1000/1000")
  assert lines[-1] == "eval step 1000/1000: accuracy 0.5"
  assert capsys.readouterr().out == ""  # nothing drawn off a terminal


def test_for_python_callers_lines_are_printed_and_a_notebook_redraws_in_place(monkeypatch,
                                                                               capsys):
  """`train_and_evaluate` from a script or a notebook: absl shows no INFO there, so the lines
  are printed; Jupyter redraws after a carriage return but shows escapes as they are."""
  clock = _Clock()
  c = console.Console(100, tty=False, log_every=30.0, clock=clock, lines="print")
  _train(c, clock, 10, 5.0)
  _train(c, clock, 50, 4.0)  # within 30 s of the last line: not printed
  c.eval(50, {"accuracy": 0.9})
  c.note("OneDeviceStrategy: 1 replica on CPU:0")
  c.close()
  assert capsys.readouterr().out == (
      "train step 10/100, loss 0.5, lr 0.001, 2.5k ex/s, ETA --\n"
      "eval step 50/100: accuracy 0.9\nOneDeviceStrategy: 1 replica on CPU:0\n")

  notebook = type("OutStream", (io.StringIO,), {"__module__": "ipykernel.iostream"})()
  monkeypatch.setattr(sys, "stdout", notebook)
  assert console.in_notebook()
  c = console.Console(100, tty=False, clock=clock, lines="print")
  _train(c, clock, 10, 5.0, loss=0.123456, learning_rate=0.00123456, examples_per_sec=25e3)
  _train(c, clock, 20, 1.0)  # a shorter line: blanks cover the longer one's end
  c.eval(20, {"accuracy": 0.9})
  _train(c, clock, 30, 1.0)
  c.close()
  first = "step 10/100  loss 0.1235  lr 0.00123  25.0k ex/s  ETA --"
  second = "step 20/100  loss 0.5  lr 0.001  2.5k ex/s  ETA 0:00:08"
  assert len(second) < len(first)
  assert notebook.getvalue() == (
      f"\r{first}\r{second.ljust(len(first))}\neval step 20/100: accuracy 0.9\n"
      f"\rstep 30/100  loss 0.5  lr 0.001  2.5k ex/s  ETA 0:00:07\n")
  assert "\x1b" not in notebook.getvalue()
  log = console.Console(100, tty=False, clock=clock)  # the command line's: absl lines
  log.train(10, {"loss": 0.5})
  assert notebook.getvalue().endswith("ETA 0:00:07\n")


def test_non_chief_consoles_are_silent(capsys):
  c = console.Console(10, enabled=False, tty=True)
  c.train(5, {"loss": 1.0})
  c.eval(5, {"loss": 1.0})
  c.close()
  assert capsys.readouterr().out == ""


def test_rates_read_as_people_write_them():
  assert [console.rate(v) for v in (950.0, 25_700.0, 2_651_000.0, 12_300_000.0)] == [
      "950", "25.7k", "2.65M", "12.3M"]  # not 2651.0k


def test_the_end_summary_gives_the_steady_rate_beside_the_mean(capsys):
  result = {"step": 600, "loss": 0.08, "accuracy": 0.97, "examples_per_sec": 6400.0,
            "steady_examples_per_sec": 25_700.0, "best": ("accuracy", 500, 0.975),
            "stopped": ""}
  console.end_summary(result, "runs/a", 62.0)
  lines = capsys.readouterr().out.splitlines()
  assert lines[0] == ("done: step 600 in 0:01:02, 25.7k examples/s after the first loop "
                      "(6.4k mean, compilation included)")
  assert lines[1] == "eval: loss 0.08, accuracy 0.97 (final); best accuracy 0.975 at step 500"
  assert lines[2].startswith("results in runs/a: ") and len(lines) == 3
  console.end_summary({**result, "steady_examples_per_sec": 0.0}, "runs/a", 5.0)
  assert "6.4k examples/s (one loop, compilation included)" in capsys.readouterr().out
  console.end_summary({**result, "examples_per_sec": 0.0, "steady_examples_per_sec": 0.0},
                      "runs/a", 1.0)
  assert capsys.readouterr().out.startswith("done: step 600 in 0:00:01, nothing left to train")


def test_startup_lines_hidden_keeps_everything_but_the_known_harmless_lines(capfd):
  with console.startup_lines_hidden():
    os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are "
                b"written to STDERR\n")
    os.write(2, b"I0000 00:00:1 1 port.cc:153] oneDNN custom operations are on. You may\n")
    os.write(2, b"E0000 00:00:1 1 cuda_platform.cc:52] failed call to cuInit: INTERNAL\n")
    os.write(2, b"something TF wants you to read\n")
    os.write(2, b"To enable the following instructions: AVX2 FMA, in other operations, "
                b"rebuild TensorFlow with the appropriate compiler flags.\n")
    os.write(2, b"and a last line\n")
  assert capfd.readouterr().err == "something TF wants you to read\nand a last line\n"
  with console.startup_lines_hidden(verbose=True):
    os.write(2, b"I0000 00:00:1 1 port.cc:153] oneDNN custom operations are on.\n")
  assert "oneDNN" in capfd.readouterr().err


def test_quiet_tf_passes_only_the_trainers_info_lines():
  console.quiet_tf()
  (f,) = [f for f in logging.get_absl_handler().filters if isinstance(f, console._OnlyOurInfo)]  # pylint: disable=protected-access
  record = lambda path, level: std_logging.LogRecord("absl", level, path, 1, "m", (), None)  # noqa: E731
  ours = os.path.join(os.path.dirname(console.__file__), "controller.py")
  assert f.filter(record(ours, std_logging.INFO))
  assert not f.filter(record("/site-packages/tensorflow/functional_saver.py", std_logging.INFO))
  assert f.filter(record("/site-packages/tensorflow/x.py", std_logging.WARNING))
  console.quiet_tf()
  assert sum(isinstance(f, console._OnlyOurInfo) for f in logging.get_absl_handler().filters) == 1  # pylint: disable=protected-access


@pytest.mark.slow
def test_a_run_on_a_terminal_shows_the_live_line_and_no_tf_chatter(data_dir, tmp_path):
  """trainer.main on a pseudo-terminal, as a person runs it."""
  env = main_env()
  env.pop("TF_CPP_MIN_LOG_LEVEL")  # as a user's shell has it: unset
  pid, fd = pty.fork()
  if pid == 0:  # the child: stdin, stdout and stderr are the terminal
    os.chdir(tmp_path)
    os.execvpe(sys.executable, [sys.executable, "-m", "trainer.main", f"--workdir={tmp_path / 'w'}",
                                f"--config.data_dir={data_dir}", "--strategy=cpu",
                                "--config.total_steps=120", "--config.steps_per_loop=10",
                                "--config.eval_every=60"], env)
  chunks, deadline = [], time.monotonic() + 300
  while time.monotonic() < deadline:
    if select.select([fd], [], [], 1)[0]:
      try:
        data = os.read(fd, 65536)
      except OSError:  # EIO: the child closed the terminal
        break
      if not data:
        break
      chunks.append(data)
  _, status = os.waitpid(pid, 0)
  text = b"".join(chunks).decode(errors="replace")
  assert os.waitstatus_to_exitcode(status) == 0, text[-3000:]
  assert re.search(r"\rstep 20/120  loss [0-9.]+  lr [0-9.e-]+  [0-9.k]+ ex/s  ETA 0:\d\d:\d\d",
                   text), text[-3000:]
  assert re.search(r"eval step 60/120: loss [0-9.]+, accuracy [0-9.]+\r?\n", text)
  assert "done: step 120" in text and "results in" in text
  assert "examples/s after the first loop" in text  # the steady rate, beside the mean
  assert "done: {" not in text  # once, as the summary: no dict of the result beside it
  for chatter in ("functional_saver", "Sharding callback", "GeneratorDatasetOp", "UserWarning",
                  "oneDNN custom operations", "cudart_stub", "cpu_feature_guard",
                  "InitializeLog", "Compiled cluster using XLA", "tf_record_dataset_op"):
    assert chatter not in text, chatter


def test_a_reader_that_went_away_silences_stdout_instead_of_raising(monkeypatch):
  """`python -m trainer.main | head -1`: once the pipe's reader is gone, every later write
  goes to /dev/null; no BrokenPipeError reaches the run (it was a traceback after the run)."""
  read, write = os.pipe()
  os.close(read)
  stream = os.fdopen(write, "w")
  monkeypatch.setattr(sys, "stdout", stream)
  try:
    for _ in range(3):  # the first write fails and redirects; the next ones go to /dev/null
      console._out("x" * 100_000 + "\n")
    stream.flush()  # what the interpreter does at exit: no second error
    assert os.path.samestat(os.fstat(write), os.stat(os.devnull))
  finally:
    monkeypatch.undo()
    stream.close()
