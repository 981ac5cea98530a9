"""trainer.base.testpoints: named points where a test (the kill harness) acts before and after a block."""

import pytest

from trainer.base import testpoints


@pytest.fixture(autouse=True)
def _clean():
  testpoints.clear()
  yield
  testpoints.clear()


def test_callbacks_run_before_and_after_the_block_in_order():
  calls = []
  testpoints.install("save", lambda name, position: calls.append((name, position)))
  with testpoints.point("save"):
    calls.append("body")
  assert calls == [("save", "before"), "body", ("save", "after")]


def test_a_point_runs_only_its_own_callback():
  calls = []
  testpoints.install("eval", lambda name, position: calls.append((name, position)))
  with testpoints.point("loop"):
    pass
  assert calls == []
  with testpoints.point("eval"):
    pass
  assert calls == [("eval", "before"), ("eval", "after")]


def test_installing_again_replaces_the_callback():
  calls = []
  testpoints.install("write", lambda name, position: calls.append("first"))
  testpoints.install("write", lambda name, position: calls.append("second"))
  with testpoints.point("write"):
    pass
  assert calls == ["second", "second"]


def test_unknown_names_are_refused():
  with pytest.raises(ValueError, match=r"^unknown hook point 'checkpoint'; allowed: restore, "
                                       r"write, loop, eval, save, sweep, summary, export$"):
    testpoints.install("checkpoint", lambda name, position: None)
  with testpoints.point("save"):  # nothing was installed under any name
    pass


def test_clear_removes_every_callback():
  calls = []
  for name in testpoints.POINTS:
    testpoints.install(name, lambda name, position: calls.append(name))
  testpoints.clear()
  for name in testpoints.POINTS:
    with testpoints.point(name):
      pass
  assert calls == []


def test_the_trainer_has_the_points_the_kill_harness_names():
  from tests import killer  # pylint: disable=g-import-not-at-top
  assert set(testpoints.POINTS) <= set(killer.EVENTS)
  assert set(killer.EVENTS) - set(testpoints.POINTS) == {"commit"}  # inside TF's manager


def test_a_real_run_passes_every_point_the_kill_harness_aims_at(data_dir, tmp_path):
  """A point the run no longer reaches (the old-checkpoint sweep moved out of TF's manager)
  turned a planned kill into a run that went on to its end, without a word."""
  from tests.conftest import checkpointed_run, cpu  # pylint: disable=g-import-not-at-top
  from trainer.run import train  # pylint: disable=g-import-not-at-top
  seen = []
  for name in testpoints.POINTS:
    testpoints.install(name, lambda name, position: seen.append(name))
  config = checkpointed_run(data_dir, total_steps=12, max_checkpoints=1)
  train.train_and_evaluate(config, str(tmp_path / "w"), cpu())
  train.train_and_evaluate(config, str(tmp_path / "w"), cpu())  # restores, then finds it done
  assert set(seen) == set(testpoints.POINTS)
