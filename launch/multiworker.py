#!/usr/bin/env python3
r"""Runs N local `trainer.main --strategy=multi_worker` processes, one TF_CONFIG each.

  python launch/multiworker.py --num_workers=2 -- --workdir=/tmp/mw \
      --config.total_steps=100 --config.global_batch_size=128

Everything after `--` is passed to every worker. Each worker gets
TF_CONFIG={"cluster": {"worker": ["127.0.0.1:P0", ...]}, "task": {"type": "worker",
"index": i}} on free local ports; worker 0 is the chief (the only one writing to the
workdir). Their output is streamed line by line as `[worker i] ...`.

On CPU, TF's MultiWorkerMirroredStrategy uses one device per worker (/cpu:0) whatever
--cpu_devices says, so N workers train N replicas; the global batch must divide by N.

Exit status: 0 when every worker exits 0; else the first failing worker's status (the
others are killed at once, since their collectives cannot finish without it; a worker
killed by signal S counts as 128+S); 124 when --timeout expires (everything is killed);
2 for bad launcher options. SIGINT/SIGTERM to the launcher are forwarded to the workers as
SIGTERM: trainer.main checkpoints and exits 4 (rerun the same command to resume), which is
returned; workers still running after --grace seconds are killed.
"""

import argparse
import datetime
import json
import os
import queue
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXIT_TIMEOUT = 124


class _Formatter(argparse.RawDescriptionHelpFormatter,
                 argparse.ArgumentDefaultsHelpFormatter):
  """The module docstring as is, and each option's default."""


class _Parser(argparse.ArgumentParser):
  """argparse, but a usage error is one line (no usage dump) and exit status 2."""

  def error(self, message):
    self.exit(2, f"{self.prog}: error: {message}\n")


def parse_args(argv):
  """Splits `argv` at `--`; returns (launcher options, pass-through worker args)."""
  if "--" in argv:
    cut = argv.index("--")
    argv, rest = argv[:cut], argv[cut + 1:]
  else:
    rest = []
  p = _Parser(
      prog="launch/multiworker.py",
      usage="%(prog)s [options] [-- trainer.main flags]",
      description=__doc__, formatter_class=_Formatter)
  p.add_argument("--num_workers", type=int, default=2, help="worker processes to start (>= 1)")
  p.add_argument("--cpu_devices_per_worker", type=int, default=0,
                 help="pass --cpu_devices=N to every worker (0: do not pass it)")
  p.add_argument("--timeout", type=float, default=1800.0,
                 help="seconds; then every worker is killed and the exit status is 124")
  p.add_argument("--grace", type=float, default=30.0,
                 help="seconds the workers get after a forwarded SIGTERM before SIGKILL")
  p.add_argument("--module", default="trainer.main",
                 help="Python module each worker runs (python -m MODULE)")
  p.add_argument("--dry_run", action="store_true",
                 help="print each worker's TF_CONFIG and command, run nothing")
  args = p.parse_args(argv)
  if args.num_workers < 1:
    p.error(f"--num_workers must be >= 1, got {args.num_workers}")
  if args.cpu_devices_per_worker < 0:
    p.error(f"--cpu_devices_per_worker must be >= 0, got {args.cpu_devices_per_worker}")
  if args.timeout <= 0 or args.grace < 0:
    p.error("--timeout must be > 0 and --grace >= 0")
  if any(a.split("=")[0] in ("--strategy", "--cpu_devices") for a in rest):
    p.error("do not pass --strategy or --cpu_devices after --: the launcher sets "
            "--strategy=multi_worker and --cpu_devices from --cpu_devices_per_worker")
  return args, rest


def free_ports(n, host="127.0.0.1"):
  """`n` distinct ports on `host` that were free a moment ago (bound to port 0 together)."""
  sockets = []
  try:
    for _ in range(n):
      s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
      s.bind((host, 0))
      sockets.append(s)
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def worker_specs(args, rest, ports):
  """[(TF_CONFIG json, argv)] for every worker, in task-index order."""
  cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
  argv = [sys.executable, "-m", args.module, "--strategy=multi_worker"]
  if args.cpu_devices_per_worker:
    argv.append(f"--cpu_devices={args.cpu_devices_per_worker}")
  if args.module == "trainer.main" and not any(a.startswith("--workdir") for a in rest):
    # trainer.main's default workdir is time-stamped per process: workers could disagree.
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    argv.append(f"--workdir={os.path.join('runs', 'multiworker-' + stamp)}")
  argv += rest
  return [(json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}), argv)
          for i in range(len(ports))]


def _say(message):
  print(f"[multiworker] {message}", file=sys.stderr, flush=True)


def _signal_all(procs, sig):
  """Signals every worker's process group (each leads its own session): children too."""
  for proc in procs:
    try:
      os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
      pass


def _stop(procs, grace, lines):
  """SIGTERM, up to `grace` s to exit (still printing their output), SIGKILL, wait."""
  if grace > 0:
    _signal_all(procs, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(p.poll() is None for p in procs):
      _drain(lines, 0.1)  # a worker blocked on a full pipe could not exit
  _signal_all(procs, signal.SIGKILL)
  for proc in procs:
    proc.wait()


def _status(returncode):
  return 128 - returncode if returncode < 0 else returncode


def _drain(lines, wait):
  """Prints queued `(worker, line)` pairs, waiting up to `wait` s for the first one.

  Takes at most 1000 lines, so failure checks never starve behind chatty workers.
  """
  batch = []
  try:
    batch.append(lines.get(timeout=wait) if wait else lines.get_nowait())
    while len(batch) < 1000:
      batch.append(lines.get_nowait())
  except queue.Empty:
    pass
  for i, line in batch:
    sys.stdout.write(f"[worker {i}] {line}")
  sys.stdout.flush()


def run(specs, timeout, grace):
  """Starts the workers, streams their output; returns the launcher's exit status."""
  lines, procs, pumps, stop = queue.Queue(), [], [], []
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)

  def pump(i, stream):
    for line in stream:
      lines.put((i, line))

  def finish(status):
    """Waits briefly for the pipes to close, prints what is left, returns `status`."""
    for t in pumps:
      t.join(timeout=2)
    while not lines.empty():
      _drain(lines, 0)
    return status

  previous = {s: signal.signal(s, lambda sig, _: stop.append(sig))
              for s in (signal.SIGINT, signal.SIGTERM)}
  try:
    for i, (tf_config, argv) in enumerate(specs):
      procs.append(subprocess.Popen(
          argv, env=dict(env, TF_CONFIG=tf_config), stdin=subprocess.DEVNULL,
          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
          start_new_session=True))  # its own process group: killpg gets its children too
      pumps.append(threading.Thread(target=pump, args=(i, procs[-1].stdout), daemon=True))
      pumps[-1].start()
    _say(f"started {len(procs)} workers, pids {' '.join(str(p.pid) for p in procs)}")
    deadline = time.monotonic() + timeout
    while True:
      _drain(lines, 0.2)
      failed = [i for i, p in enumerate(procs) if p.poll() not in (None, 0)]
      if failed:
        status = _status(procs[failed[0]].returncode)
        _say(f"worker {failed[0]} exited with status {status}; killing the others")
        _stop(procs, 0, lines)
        return finish(status)
      if all(p.returncode == 0 for p in procs):
        _say("all workers exited with status 0")
        return finish(0)
      if stop:
        _say(f"got signal {stop[0]}; SIGTERM to the workers, SIGKILL in {grace:g} s")
        _stop(procs, grace, lines)
        codes = [_status(p.returncode) for p in procs if p.returncode]
        return finish(codes[0] if codes else 0)
      if time.monotonic() > deadline:
        _say(f"timeout after {timeout:g} s; killing every worker")
        _stop(procs, 0, lines)
        return finish(EXIT_TIMEOUT)
  finally:
    _stop(procs, 0, lines)  # whatever happened above (even an exception), leave nothing running
    for s, handler in previous.items():
      signal.signal(s, handler)


def main(argv):
  args, rest = parse_args(argv)
  specs = worker_specs(args, rest, free_ports(args.num_workers))
  if args.dry_run:
    for tf_config, cmd in specs:
      print(f"TF_CONFIG={shlex.quote(tf_config)} {shlex.join(cmd)}")
    return 0
  return run(specs, args.timeout, args.grace)


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
