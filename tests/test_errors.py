"""trainer.errors: each error's exit status, and the one place that turns them into a line."""

import pytest

from trainer import errors
from trainer.errors import (CheckpointError, ConfigError, NonFiniteLossError, Preempted,
                            TrainerError)


def test_each_error_carries_its_exit_status():
  assert (ConfigError.exit_code, NonFiniteLossError.exit_code, Preempted.exit_code,
          CheckpointError.exit_code) == (2, 3, 4, 5)
  assert (errors.EXIT_CONFIG, errors.EXIT_NONFINITE, errors.EXIT_PREEMPTED,
          errors.EXIT_CHECKPOINT) == (2, 3, 4, 5)
  for cls in (ConfigError, NonFiniteLossError, Preempted, CheckpointError):
    assert issubclass(cls, TrainerError)
  assert issubclass(ConfigError, ValueError)  # callers that catch ValueError still do
  assert issubclass(NonFiniteLossError, RuntimeError)
  assert issubclass(CheckpointError, RuntimeError)


def _fails_with(error):
  def main(argv):
    del argv
    raise error
  return main


@pytest.mark.parametrize("error,code", [
    (ConfigError("model: unknown 'vgg'; allowed: small_cnn, mlp"), 2),
    (NonFiniteLossError("training loss is nan in the 4 steps up to global step 8"), 3),
    (CheckpointError("workdir: cannot write checkpoint /w/ckpt-8 (OSError: disk full)"), 5),
])
def test_exit_on_error_writes_one_stderr_line_and_exits_with_the_code(capsys, error, code):
  with pytest.raises(SystemExit) as info:
    errors.exit_on_error(_fails_with(error))(["trainer.main"])
  assert info.value.code == code
  out, err = capsys.readouterr()
  assert out == "" and err == f"error: {error}\n"


def test_preempted_is_not_reported_as_an_error(capsys):
  with pytest.raises(SystemExit) as info:
    errors.exit_on_error(_fails_with(Preempted(120)))(["trainer.main"])
  assert info.value.code == 4
  err = capsys.readouterr().err
  assert err == ("preempted (SIGTERM): checkpoint written at global step 120; run the same "
                 "command again to resume\n")
  assert Preempted(120).step == 120


def test_exit_with_is_the_same_line_and_status(capsys):
  with pytest.raises(SystemExit) as info:
    errors.exit_with(ConfigError("strategy: unknown 'gpu'"))
  assert info.value.code == 2 and capsys.readouterr().err == "error: strategy: unknown 'gpu'\n"


def test_exit_on_error_passes_results_and_bugs_through(capsys):
  assert errors.exit_on_error(lambda argv: len(argv))(["a", "b"]) == 2
  with pytest.raises(KeyError):  # anything else is a bug and keeps its traceback
    errors.exit_on_error(_fails_with(KeyError("x")))([])
  assert capsys.readouterr().err == ""
