r"""Runs `python -m trainer.main` in forked processes and SIGKILLs them at chosen points.

The parent imports TensorFlow and the trainer but never starts TF's runtime, then forks one
child per run: each child is a real training process (its own TF runtime, devices, files)
that skips the ~6 s import, and is killed by a real SIGKILL. Used by
tests/test_kill.py (kill anywhere, resume exactly) and tests/test_bad_input.py (many
invalid command lines, quickly).

  python -m tests.killer chain --workdir=W --reference=R --kills=10 --seed=0 --logs=L -- ARGS
      Runs ARGS uninterrupted in R and, at the same time, in W: killed `--kills` times at
      seeded random points (during a loop, an eval, a checkpoint write, its commit or
      cleanup, a TensorBoard write, the config.json/schedule.png writes, the restore, or
      at a random time), restarted after each kill, then run to the end. Prints a JSON
      report of the kills.
  python -m tests.killer matrix CASES.json RESULTS.json
      Runs each case ({"argv": [...], "env": {...}, "hook": {...}}) and records its exit
      code, stdout and stderr, two at a time.

A hook {"event", "at", "position", "delay"} SIGKILLs the child at that point; with
"signal": "SIGTERM" (or "SIGINT", ...) it sends itself that signal instead, and with
"signals": N it sends it N times ("interval" s apart, 0.2 unless given), e.g. Ctrl-C twice.
"""

import argparse
import functools
import hashlib
import json
import math
import os
import random
import re
import signal
import sys
import threading
import time
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Events a child can be killed at: how long one usually takes (for kills "during" it).
EVENTS = {"restore": 0.05, "write": 0.05, "loop": 0.3, "eval": 0.2, "save": 0.05,
          "commit": 0.01, "sweep": 0.01, "summary": 0.02, "export": 0.5}
POSITIONS = ("before", "during", "after")


def _import_trainer():
  import tensorflow  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  import trainer.main  # noqa: F401  pylint: disable=g-import-not-at-top


def fork_main(argv, out_path, err_path, env=None, hook=None):
  """Forks a child running `python -m trainer.main ARGV`; returns its pid.

  Args:
    argv: trainer flags.
    out_path, err_path: files for the child's stdout and stderr.
    env: environment variables to set (None values are removed) in the child.
    hook: optional kill point {"event", "at", "position", "delay"} (see `_install`).
  """
  sys.stdout.flush()
  sys.stderr.flush()
  pid = os.fork()
  if pid:
    return pid
  code = 1
  try:
    for fd, path in ((1, out_path), (2, err_path)):
      os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    for key, value in (env or {}).items():
      if value is None:
        os.environ.pop(key, None)
      else:
        os.environ[key] = value
    if hook:
      _install(hook)
    sys.argv = ["trainer.main", *argv]
    import trainer.main  # pylint: disable=g-import-not-at-top
    try:
      trainer.main.run()
      code = 0
    except SystemExit as e:  # what the interpreter would turn into the exit status
      code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # pylint: disable=broad-except
      traceback.print_exc()
  finally:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # pylint: disable=protected-access


def wait(pid, timeout):
  """Exit status of child `pid` (negative: killed by that signal); SIGKILLs it at timeout."""
  deadline = time.monotonic() + timeout
  while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
      return os.waitstatus_to_exitcode(status)
    if time.monotonic() > deadline:
      os.kill(pid, signal.SIGKILL)
      os.waitpid(pid, 0)
      raise TimeoutError(f"child {pid} still running after {timeout} s")
    time.sleep(0.02)


def _kill_self():
  os.kill(os.getpid(), signal.SIGKILL)


def _signal_self(name, times=1, interval=0.2):
  for i in range(times):
    if i:
      time.sleep(interval)
    os.kill(os.getpid(), getattr(signal, name))


def _install(hook):
  """In the child: SIGKILL itself at the `at`-th occurrence of `event`.

  `position` is `before` (just before the event's code runs), `during` (a timer fires
  after `delay` seconds while it runs, so the kill lands inside TF's C++ work), or `after`
  (right after it returned).
  """
  # pylint: disable=g-import-not-at-top
  import tensorflow as tf
  from trainer.base import testpoints
  # pylint: enable=g-import-not-at-top

  count = [0]
  if hook.get("signal"):
    times = int(hook.get("signals", 1))
    strike = lambda: _signal_self(hook["signal"], times, hook.get("interval", 0.2))  # noqa: E731
  else:
    strike = _kill_self

  def act(position):
    if position == "before":
      count[0] += 1
    if count[0] != hook["at"] or position != (
        "after" if hook["position"] == "after" else "before"):
      return
    if hook["position"] == "during":
      threading.Timer(hook["delay"], strike).start()
    else:
      strike()

  event = hook["event"]
  if event in testpoints.POINTS:  # the trainer's own named points
    testpoints.install(event, lambda name, position: act(position))
    return

  # Inside TF's CheckpointManager.save: the state-file commit.
  owner, name = {"commit": (tf.train.CheckpointManager, "_record_state")}[event]
  original = getattr(owner, name)

  @functools.wraps(original)
  def wrapped(*args, **kwargs):
    act("before")
    result = original(*args, **kwargs)
    act("after")
    return result

  setattr(owner, name, wrapped)


def _flag(args, name):
  for arg in args:
    if arg.startswith(f"--config.{name}="):
      return int(arg.split("=", 1)[1])
  raise ValueError(f"chain needs --config.{name}=N among the trainer flags")


def _state(workdir):
  """(committed global step, number of checkpoints listed) from the state file, no TF."""
  try:
    text = open(os.path.join(workdir, "checkpoints", "checkpoint")).read()
  except OSError:
    return 0, 0
  latest = re.search(r'^model_checkpoint_path: ".*?ckpt-(\d+)"', text, re.M)
  return (int(latest.group(1)) if latest else 0,
          len(re.findall(r"^all_model_checkpoint_paths:", text, re.M)))


def _remaining_events(args, step, listed):
  """How many of each event a run resumed at `step` will see (kill points that exist)."""
  total, spl = _flag(args, "total_steps"), _flag(args, "steps_per_loop")
  every_eval, every_ckpt = _flag(args, "eval_every"), _flag(args, "checkpoint_every")
  keep = _flag(args, "max_checkpoints")
  ends = [min(s, total) for s in range(step + spl, total + spl, spl)] if step < total else []
  evals = sum(1 for s in ends if s % every_eval == 0 and s < total) + 1
  saves = sum(1 for s in ends if s % every_ckpt == 0 or s == total)
  # One checkpoint deleted per save beyond the `keep` latest and the best one (keep_best=1):
  # a lower bound, so a planned kill is reached.
  sweeping = max(0, min(saves, listed + saves - keep - 1))
  return {"restore": 1, "write": 2, "loop": len(ends), "eval": evals, "save": saves,
          "commit": 2 * saves, "sweep": sweeping, "summary": len(ends) + evals,
          "time": 1}


def plan_kill(rng, args, workdir, kills_left, run_seconds):
  """A random kill point among those the next run will reach, spread over what remains.

  `run_seconds` bounds kills at a random time: about how long a whole run takes here.
  """
  step, listed = _state(workdir)
  counts = {k: v for k, v in _remaining_events(args, step, listed).items() if v}
  event = rng.choice(sorted(counts))
  if event == "time":
    left = max(0.2, 1 - step / _flag(args, "total_steps"))
    return {"event": "time", "seconds": round(rng.uniform(0.3, run_seconds * left), 3),
            "step": step}
  cap = max(1, math.ceil(2 * counts[event] / max(kills_left, 1)))
  return {"event": event, "at": rng.randint(1, min(cap, counts[event])),
          "position": rng.choice(POSITIONS),
          "delay": round(rng.uniform(0, EVENTS[event]), 4), "step": step}


class _Child:
  """A forked run and its exit status, polled without blocking."""

  def __init__(self, pid):
    self.pid, self.start, self.exit, self.seconds = pid, time.monotonic(), None, None

  def poll(self):
    if self.exit is None:
      done, status = os.waitpid(self.pid, os.WNOHANG)
      if done:
        self.exit, self.seconds = (os.waitstatus_to_exitcode(status),
                                   time.monotonic() - self.start)
    return self.exit


def chain(args, workdir, reference, kills, seed, logs, timeout=600):
  """Runs the reference and the killed-and-restarted run; returns the report."""
  os.makedirs(logs, exist_ok=True)
  rng = random.Random(seed)
  ref = _Child(fork_main([f"--workdir={reference}", *args], os.path.join(logs, "ref.out"),
                         os.path.join(logs, "ref.err")))
  report = {"kills": [], "missed": []}
  run = 0
  while True:
    hook = None
    if len(report["kills"]) < kills:
      hook = plan_kill(rng, args, workdir, kills - len(report["kills"]),
                       ref.seconds or 6.0)
    out, err = (os.path.join(logs, f"run{run}.{s}") for s in ("out", "err"))
    child = _Child(fork_main([f"--workdir={workdir}", *args], out, err,
                             hook=hook if hook and hook["event"] != "time" else None))
    kill_at = child.start + hook["seconds"] if hook and hook["event"] == "time" else None
    timed_out = False
    while child.poll() is None:
      ref.poll()
      now = time.monotonic()
      timed_out = timed_out or now > child.start + timeout
      if timed_out or (kill_at and now > kill_at):
        os.kill(child.pid, signal.SIGKILL)
        kill_at = None
      time.sleep(0.01)
    run += 1
    entry = {**(hook or {}), "run": run, "exit": child.exit, "ran_for": round(child.seconds, 2),
             "step_after": _state(workdir)[0]}
    if timed_out or child.exit not in (0, -signal.SIGKILL):
      entry["timed_out"] = timed_out
      report["failure"] = {**entry, "stderr": open(err).read()[-4000:]}
      break
    if hook:
      report["kills" if child.exit == -signal.SIGKILL else "missed"].append(entry)
    elif child.exit == 0:
      break
  report["runs"] = run
  report["reference_exit"] = wait(ref.pid, timeout) if ref.poll() is None else ref.exit
  return report


def matrix(cases, workers=2, timeout=300):
  """Runs every case, `workers` at a time; returns [{exit, stdout, stderr}] in order."""
  results, running, todo = [None] * len(cases), {}, list(enumerate(cases))
  directory = os.environ.get("TMPDIR", "/tmp")
  while todo or running:
    while todo and len(running) < workers:
      i, case = todo.pop(0)
      out, err = (os.path.join(directory, f"trainer-case-{os.getpid()}-{i}.{s}")
                  for s in ("out", "err"))
      pid = fork_main(case["argv"], out, err, env=case.get("env"), hook=case.get("hook"))
      running[pid] = (i, out, err, time.monotonic())
    for pid, (i, out, err, start) in list(running.items()):
      done, status = os.waitpid(pid, os.WNOHANG)
      if not done and time.monotonic() - start > timeout:
        os.kill(pid, signal.SIGKILL)
        done, status = os.waitpid(pid, 0)
      if done:
        results[i] = {"exit": os.waitstatus_to_exitcode(status), "stdout": open(out).read(),
                      "stderr": open(err).read(), "seconds": time.monotonic() - start}
        os.remove(out)
        os.remove(err)
        del running[pid]
    time.sleep(0.02)
  return results


def run_matrix(cases, directory, env, timeout=600):
  """Runs `matrix(cases)` in a fresh `python -m tests.killer` (a parent that has not started
  TF's runtime, so it may fork); returns its results. `directory` holds the JSON files."""
  import subprocess  # pylint: disable=g-import-not-at-top
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  cases_path = os.path.join(directory, f"cases-{os.getpid()}-{time.monotonic_ns()}.json")
  results_path = cases_path.replace("cases-", "results-")
  with open(cases_path, "w") as f:
    json.dump(cases, f)
  r = subprocess.run([sys.executable, "-m", "tests.killer", "matrix", cases_path, results_path],
                     cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
  if r.returncode != 0:
    raise RuntimeError(f"tests.killer matrix failed: {r.stderr[-3000:]}")
  with open(results_path) as f:
    return json.load(f)


def tree(path):
  """{relative path: sha256 or "dir"} of everything under `path`: the bytes a run left."""
  out = {}
  for root, dirs, files in os.walk(path):
    for name in dirs:
      out[os.path.relpath(os.path.join(root, name), path) + "/"] = "dir"
    for name in files:
      full = os.path.join(root, name)
      with open(full, "rb") as f:
        out[os.path.relpath(full, path)] = hashlib.sha256(f.read()).hexdigest()
  return out


def _main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  sub = parser.add_subparsers(dest="command", required=True)
  c = sub.add_parser("chain")
  c.add_argument("--workdir", required=True)
  c.add_argument("--reference", required=True)
  c.add_argument("--kills", type=int, default=10)
  c.add_argument("--seed", type=int, default=0)
  c.add_argument("--logs", required=True)
  c.add_argument("args", nargs="*")
  m = sub.add_parser("matrix")
  m.add_argument("cases")
  m.add_argument("results")
  opts = parser.parse_args()
  _import_trainer()
  if opts.command == "chain":
    report = chain(opts.args, opts.workdir, opts.reference, opts.kills, opts.seed, opts.logs)
    print(json.dumps(report))
  else:
    with open(opts.cases) as f:
      results = matrix(json.load(f))
    with open(opts.results, "w") as f:
      json.dump(results, f)


if __name__ == "__main__":
  _main()
