"""The timing harness: variants compiled first, calibrated, then timed in interleaved repeats.

A `Variant` is one way to train, made by a zero-argument `build()` that returns
`(run, granularity)`: `run(n)` trains n global steps (a multiple of `granularity`), waits for
them and returns the seconds they took. `measure` compiles every variant, calibrates each one's
steps per repeat, and times the repeats interleaved (order reversed on every other repeat, so
the drift of a shared machine hits all variants alike). Memory: all variants share one
process, so each records the process RSS right after its first call, its RSS growth over its
build and first call, and the process peak RSS by then: cumulative, not isolated figures.
"""

import gc
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import psutil


# Every measured variant, kept until the process ends: deleting a variant deletes its tf.data
# iterators, and TensorFlow then waits for their background threads to stop, which can take
# far longer than measuring the variant did. `exit_without_teardown` ends the process so.
_KEPT = []


def exit_without_teardown(status=0):
  """Ends the process at once (outputs flushed), without deleting the kept variants."""
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(status)  # pylint: disable=protected-access


def peak_rss_mb():
  """This process's peak RSS: VmHWM, which exec resets. Not `ru_maxrss`: Linux carries it over
  from the parent across fork and exec, so a child of a 3 GB parent reports >= 3 GB."""
  try:
    with open("/proc/self/status") as f:
      return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
  except (OSError, StopIteration):  # not Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb():
  return psutil.Process().memory_info().rss / 2**20


class Variant:
  """One way to train: a name, a `build()` (see the module docstring) and a description.

  `spl` is its steps per host call, the unit whole-loop repeats are counted in.
  """

  def __init__(self, name, build, what, spl=1):
    self.name, self._build, self.what, self.spl = name, build, what, spl
    self.run, self.granularity = None, 1
    self.steps = 0  # per timed repeat, set by calibrate
    self.times = []  # seconds of each timed repeat
    self.info = {}

  def compile(self):
    rss0 = rss_mb()
    start = time.perf_counter()
    self.run, self.granularity = self._build()
    first = self.run(self.granularity)
    self.info.update(first_call_s=first, build_and_first_call_s=time.perf_counter() - start,
                     rss_mb_after_first_call=rss_mb(), rss_growth_mb=rss_mb() - rss0,
                     process_peak_rss_mb=peak_rss_mb())

  def _up(self, n, unit):
    return max(unit, int(math.ceil(n / unit)) * unit)

  def calibrate(self, seconds):
    """Picks the steps per repeat (about `seconds` long; 0: one call) and warms them up.

    The first call of a function after other programs were compiled is slow, and a
    jit_compile'd `tf.range(num_steps)` loop compiles once per distinct step count (XLA takes
    the range's length as a constant), so every call shape a repeat uses runs here first,
    untimed.
    Repeats of at least one loop use whole loops. When one loop takes longer than a repeat,
    a repeat is one call of fewer steps of the same program, whose per-call overhead is then
    small against its steps.
    """
    g = self.granularity
    self.run(g)
    if seconds <= 0:
      self.steps = g
      return
    t1 = self.run(g) if g > 1 else min(self.run(g) for _ in range(2))
    if seconds / t1 * g >= self.spl:
      n = self.spl
      self.run(n)
      dt = self.run(n)
      while dt < 0.05:  # too short to extrapolate from
        n *= 4
        dt = self.run(n)
      self.steps = self._up(seconds * n / dt, self.spl)
    else:
      self.steps = self._up(seconds / t1 * g, g)
    if self.steps != g:
      self.run(self.steps)

  def time_once(self):
    gc.collect()
    gc.disable()  # as timeit does: no collector pauses inside a timed repeat
    try:
      self.times.append(self.run(self.steps))
    finally:
      gc.enable()


def in_loops(call, steps_per_loop, sync=None):
  """`run(n)` from `call(k)`, which runs k steps: n split into host calls of `steps_per_loop`
  and one shorter call for the rest, as the trainer's Controller calls its loop; `sync()`
  waits for them (None: `call` already returns after a host read)."""
  def run(n):
    start = time.perf_counter()
    full, rest = divmod(n, steps_per_loop)
    for _ in range(full):
      call(steps_per_loop)
    if rest:
      call(rest)
    if sync is not None:
      sync()
    return time.perf_counter() - start
  return run


def alternate(variants, repeats, after=lambda r: None):
  """Times `repeats` repeats of every variant, the order reversed on every other repeat;
  `after(r)` runs after repeat r."""
  for r in range(repeats):
    for v in (variants if r % 2 == 0 else variants[::-1]):
      v.time_once()
    after(r)


def measure(variants, repeats, seconds, log, same_steps=()):
  """Compiles, calibrates and times `variants`; `same_steps`: (follower, leader) name pairs
  whose repeats run equal step counts (paired comparisons)."""
  _KEPT.extend(variants)
  for v in variants:
    v.compile()
    log(f"  compiled {v.name}: first call {v.info['first_call_s']:.2f} s, "
        f"RSS {v.info['rss_mb_after_first_call']:.0f} MB")
  by = {v.name: v for v in variants}
  for v in variants:
    v.calibrate(seconds)
  for follower, leader in same_steps:
    by[follower].steps = by[leader].steps
  alternate(variants, repeats, lambda r: log(f"  repeat {r + 1}/{repeats}"))


def seconds_per_step(v):
  return statistics.median(v.times) / v.steps


def speed_ratio(a, b):
  """Median over repeats of the per-repeat speed ratio of variant a to b: a repeat's two
  timings are seconds apart, so the machine's slower drifts cancel."""
  return statistics.median((tb / b.steps) / (ta / a.steps) for ta, tb in zip(a.times, b.times))


def summarise(v, batch):
  """A variant's results: throughput (median over repeats), time per step, compile time (its
  first call minus that call's steps at the steady-state time per step) and memory."""
  rates = [v.steps * batch / t for t in v.times]
  per_step = seconds_per_step(v)
  return dict(v.info, what=v.what, steps_per_loop=v.spl, steps_per_repeat=v.steps,
              examples_per_sec=statistics.median(rates), us_per_step=1e6 * per_step,
              repeats=rates,
              compile_s=max(0.0, v.info["first_call_s"] - per_step * v.granularity))


# -- child processes: one variant each, so its peak RSS is its own ---------------------------

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def reply(**fields):
  """In a child: one JSON line to the parent."""
  print("@@ " + json.dumps(fields), flush=True)


class Child:
  """`python -m MODULE SPEC` (SPEC as JSON), spoken to one JSON line per command.

  Args:
    module: the benchmark module whose `__main__` serves the commands.
    spec: a JSON-able dict, passed as the child's one argument.
    name: what the parent calls it.
  """

  def __init__(self, module, spec, name):
    self.name, self._module = name, module
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    self._stderr = tempfile.TemporaryFile(mode="w+")
    self.proc = subprocess.Popen(
        [sys.executable, "-m", module, json.dumps(spec)], cwd=REPO, env=env,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True,
        bufsize=1)

  def read(self):
    for line in self.proc.stdout:
      if line.startswith("@@ "):
        return json.loads(line[3:])
    self._stderr.seek(0)
    raise RuntimeError(f"{self._module} {self.name} died:\n{self._stderr.read()[-4000:]}")

  def ask(self, command):
    self.proc.stdin.write(command + "\n")
    self.proc.stdin.flush()
    return self.read()

  def close(self):
    """Ends the child; returns its last reply (its peak memory)."""
    out = self.ask("exit")
    self.proc.wait(timeout=60)
    return out
