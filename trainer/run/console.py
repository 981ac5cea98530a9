"""What a person reads while a run trains, and keeping TensorFlow's chatter out of it.

On a terminal the chief shows one live line (step/total, loss, learning rate, examples/s, ETA)
redrawn in place, with eval results as lines of their own; elsewhere (CI, log files, a TPU
VM's ssh output) it writes plain absl lines, a train line at most every `log_every` seconds.
For Python callers (`train_and_evaluate`) the same lines are printed, as absl shows them no
INFO by default; in a Jupyter notebook the train line is redrawn in place.

TF's own INFO lines from Python (checkpoint sharding, TFDS dataset construction, ...) and the
known harmless warnings are hidden unless `--verbosity=1` (or `-v`): `quiet_tf` filters the
absl handler and Python warnings; `startup_lines_hidden` catches the C++ lines TF prints while
it starts, before absl's C++ logging is initialised (TF_CPP_MIN_LOG_LEVEL does not reach
those). What TF's C++ side prints later cannot be filtered from Python (README: Console).
"""

import contextlib
import io
import logging as std_logging
import os
import re
import shutil
import sys
import tempfile
import time
import warnings

from absl import logging

# Lines TF prints on every start on a machine without GPUs, and once per process when the
# first distributed iterator is made: harmless, and noise before every one-line error.
HARMLESS = re.compile("|".join((
    r"All log messages before absl::InitializeLog\(\) is called",
    r"port\.cc:\d+\] oneDNN custom operations are on",
    r"cudart_stub\.cc:\d+\] Could not find cuda drivers",
    r"cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized",
    r"^To enable the following instructions: .* rebuild TensorFlow",
    r"cuda_(platform|executor|driver)\.cc:\d+\] failed call to cuInit",
    r"dataset\.cc:\d+\] Input of GeneratorDatasetOp::Dataset will not be optimized",
)))
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # trainer/


class _OnlyOurInfo(std_logging.Filter):
  """Passes warnings and errors from anyone, INFO only from the trainer itself."""

  def filter(self, record):
    return (record.levelno >= std_logging.WARNING
            or os.path.abspath(record.pathname).startswith(_PACKAGE))


# TF's distributed iterators read tf.data options in graph mode; harmless (dataset_ops.py).
HARMLESS_WARNING = r"To make it possible to preserve tf\.data options"


def quiet_tf(verbose=False):
  """Hides TF's Python INFO lines and known harmless Python warnings (not when verbose)."""
  if verbose:
    return
  warnings.filterwarnings("ignore", message=HARMLESS_WARNING)
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _OnlyOurInfo) for f in handler.filters):
    handler.addFilter(_OnlyOurInfo())


@contextlib.contextmanager
def harmless_warnings_hidden():
  """Within the block, the harmless Python warnings `quiet_tf` hides for good are hidden; the
  warning filters are put back after it (a Python caller's, e.g. a notebook's, are theirs)."""
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=HARMLESS_WARNING)
    yield


@contextlib.contextmanager
def startup_lines_hidden(verbose=False):
  """Within the block, stderr (the file descriptor, C++ included) goes to a temporary file;
  afterwards every line of it is replayed except the `HARMLESS` ones. Keep the block short
  (TF's import and strategy set-up): nothing written inside it shows until it ends."""
  if verbose:
    yield
    return
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as tmp:
    os.dup2(tmp.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      tmp.seek(0)
      for line in tmp.read().decode(errors="replace").splitlines(keepends=True):
        if not HARMLESS.search(line):
          sys.stderr.write(line)
      sys.stderr.flush()


def duration(seconds):
  seconds = int(round(seconds))
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def rate(value):
  """A rate for people: 950, 25.7k, 2.65M."""
  if value >= 1e6:
    return f"{value / 1e6:.3g}M"
  return f"{value / 1000:.1f}k" if value >= 1000 else f"{value:.0f}"


def in_notebook():
  """Whether stdout is a Jupyter kernel's (Jupyter, Colab, VS Code): it redraws a line after
  a carriage return but shows terminal escapes as they are."""
  return type(sys.stdout).__module__.split(".")[0] == "ipykernel"


class Console:
  """The run's human-readable output (chief only).

  Args:
    total_steps: the run's length in global steps.
    enabled: False on non-chief workers: nothing is shown.
    tty: whether to draw the live line; default: stdout is a terminal.
    log_every: off a terminal, seconds between train lines (evals are always shown).
    clock: seconds, monotonic (tests pass a fake).
    lines: where lines go off a terminal: 'log', absl lines (the command line, whose absl
      shows INFO), or 'print', stdout (a Python caller: absl shows no INFO there unless
      asked); with 'print' a Jupyter notebook gets the train line redrawn in place.
  """

  def __init__(self, total_steps, enabled=True, tty=None, log_every=30.0, clock=time.monotonic,
               lines="log"):
    if lines not in ("log", "print"):
      raise ValueError(f"lines must be 'log' or 'print', got {lines!r}")
    self.total = total_steps
    self._lines = lines
    if not enabled:
      self._mode = "off"
    elif sys.stdout.isatty() if tty is None else tty:
      self._mode = "terminal"
    else:
      self._mode = "notebook" if lines == "print" and in_notebook() else lines
    self._log_every = log_every
    self._clock = clock
    self._origin = None  # (time, step) of the first train line: ETA excludes compilation
    self._last_log = None
    self._live = False
    self._drawn = 0  # in a notebook: the length of the line drawn, blanked when redrawn

  def eta(self, step):
    """Seconds left at `step` from the rate since the first loop, or None before it."""
    if self._origin is None or step <= self._origin[1]:
      return None
    t0, s0 = self._origin
    return (self.total - step) * (self._clock() - t0) / (step - s0)

  def train(self, step, scalars):
    if self._mode == "off":
      return
    now = self._clock()
    if self._origin is None:
      self._origin = (now, step)
    eta = self.eta(step)
    parts = [f"step {step}/{self.total}"]
    for name, label, fmt in (("loss", "loss", "{:.4g}"), ("learning_rate", "lr", "{:.3g}")):
      if name in scalars:
        parts.append(f"{label} {fmt.format(scalars[name])}")
    if "examples_per_sec" in scalars:
      parts.append(f"{rate(scalars['examples_per_sec'])} ex/s")
    if scalars.get("skipped_updates"):
      parts.append(f"skipped {scalars['skipped_updates']:.0f}")
    parts.append(f"ETA {duration(eta) if eta is not None else '--'}")
    text = "  ".join(parts)
    if self._mode == "terminal":
      width = shutil.get_terminal_size((100, 20)).columns - 1
      self._draw("\r" + text[:width] + "\033[K")
    elif self._mode == "notebook":  # no escapes: blanks cover a longer line drawn before
      self._draw("\r" + text.ljust(self._drawn))
      self._drawn = len(text)
    elif (self._last_log is None or now - self._last_log >= self._log_every
          or step >= self.total):
      self._last_log = now
      self._plain("train " + ", ".join(parts))

  def eval(self, step, scalars):
    if self._mode == "off":
      return
    text = ", ".join(f"{k} {v:.4g}" for k, v in scalars.items())
    self.line(f"eval step {step}/{self.total}: {text}")

  def line(self, text):
    """A line of its own (below the live line on a terminal or in a notebook; elsewhere an
    absl line or a printed one, as `lines` says)."""
    if self._mode in ("terminal", "notebook"):
      self._end_live()
      _out(text + "\n")
    elif self._mode != "off":
      self._plain(text)

  def note(self, text):
    """A fact about the run's set-up (the strategy, the data, what XLA compiles): an absl line
    on the command line, on every worker, as before a console exists; a line otherwise."""
    if self._lines == "log":
      logging.info("%s", text)
    else:
      self.line(text)

  def _plain(self, text):
    if self._mode == "log":
      logging.info("%s", text)
    else:
      _out(text + "\n")

  def _draw(self, text):
    _out(text)
    self._live = True

  def _end_live(self):
    if self._live:  # the live line stays above, as the train state the line below belongs to
      _out("\n", flush=False)
      self._live = False
      self._drawn = 0

  def close(self):
    if self._mode in ("terminal", "notebook"):
      self._end_live()
      _out("")


@contextlib.contextmanager
def quiet_saving():
  """What Keras prints while saving ('Saved artifact at ...', tf_keras's endpoint listing)
  and warns about (tf_keras: "Model's `__init__()` arguments contain non-serializable
  objects", three times per save) goes nowhere: the export's own warning says what failed."""
  tf_logger = std_logging.getLogger("tensorflow")
  level = tf_logger.level
  tf_logger.setLevel(std_logging.ERROR)
  try:
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
      warnings.simplefilter("ignore")
      yield
  finally:
    tf_logger.setLevel(level)


def end_summary(result, workdir, seconds):
  """The lines a run ends with on the chief: the step, time and rates, the final and best
  eval, and where the files are (`result` from `train_and_evaluate`)."""
  final = ", ".join(f"{k} {v:.4g}" for k, v in result.items()
                    if isinstance(v, float) and not k.endswith("examples_per_sec"))
  lines = [f"done: step {result['step']} in {duration(seconds)}, {_rates(result)}"]
  if result.get("stopped"):
    lines.append(f"stopped early at step {result['step']}: {result['stopped']}")
  if result.get("skipped_updates"):
    lines.append(f"skipped {result['skipped_updates']} updates whose gradients were not "
                 f"finite (nonfinite='skip')")
  best = result["best"]
  lines.append(f"eval: {final} (final)" + (f"; best {best[0]} {best[2]:.4g} at step {best[1]}"
                                           if best else ""))
  lines.append(f"results in {workdir}: config.json, curves.png, schedule.png, checkpoints/, "
               f"train/, eval/, export/; watch with: tensorboard --logdir {workdir}")
  _out("".join(line + "\n" for line in lines))


def _out(text, flush=True):
  """Writes `text` to stdout. A reader that went away (`python -m trainer.main | head -1`,
  a closed pipe) silences stdout instead of ending a run, or a run that has finished, with a
  BrokenPipeError traceback."""
  try:
    sys.stdout.write(text)
    if flush:
      sys.stdout.flush()
  except BrokenPipeError:
    # As Python's docs advise (library/signal.html, "Note on SIGPIPE"): stdout to devnull, so
    # the flush at exit does not raise again. The run goes on; its exit status stands.
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
      os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
      pass  # a stream without a file descriptor: nothing more will reach it anyway
    finally:
      os.close(devnull)


def _rates(result):
  """The steady rate first: the mean includes the first loop, which compiles the step."""
  mean, steady = result["examples_per_sec"], result.get("steady_examples_per_sec", 0.0)
  if not mean:
    return "nothing left to train"
  if not steady:
    return f"{rate(mean)} examples/s (one loop, compilation included)"
  return (f"{rate(steady)} examples/s after the first loop ({rate(mean)} mean, compilation "
          f"included)")
