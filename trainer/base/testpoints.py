"""Test points: named places in a run where a test may act (the kill harness SIGKILLs the
process there). Not a plug-in mechanism for users: what happens after a loop or an eval is
`trainer.run.actions`.

  with testpoints.point("save"):
    ...

runs the callbacks installed for "save" before and after the block. With nothing installed (a
real run) a point costs a dict lookup; points sit only at host-side boundaries, never inside a
compiled loop.
"""

import contextlib

# Where they are: restore (Checkpointer.restore_latest), write (rundir.files.write_atomically), loop
# (one host call of the compiled loop), eval (one pass over the eval split), save
# (Checkpointer.save), sweep (deleting one old checkpoint, run.retention.prune), summary
# (Summaries.write), export (the chief writing export/).
POINTS = ("restore", "write", "loop", "eval", "save", "sweep", "summary", "export")

_installed = {}


def install(name, callback):
  """Calls `callback(name, 'before' | 'after')` around every `point(name)` from now on."""
  if name not in POINTS:
    raise ValueError(f"unknown hook point {name!r}; allowed: {', '.join(POINTS)}")
  _installed[name] = callback


def clear():
  _installed.clear()


@contextlib.contextmanager
def point(name):
  callback = _installed.get(name)
  if callback:
    callback(name, "before")
  yield
  if callback:
    callback(name, "after")
