"""trainer.errors: each error's exit status, and the one place that turns them into a line."""

import pytest

from trainer.base import errors
from trainer.base.errors import (CheckpointError, ConfigError, Interrupted, NonFiniteLossError,
                            Preempted, TrainerError)


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


def test_ctrl_c_is_exit_130_with_one_line_saying_how_to_resume(capsys):
  assert Interrupted.exit_code == errors.EXIT_INTERRUPTED == 130
  with pytest.raises(SystemExit) as info:
    errors.exit_on_error(_fails_with(Interrupted(40)))(["trainer.main"])
  assert info.value.code == 130
  assert capsys.readouterr().err == ("interrupted (Ctrl-C): checkpoint written at global step "
                                     "40; run the same command again to resume\n")
  assert "stopped at once" in str(Interrupted()) and Interrupted().step is None


def test_a_keyboard_interrupt_before_the_handler_is_installed_is_one_line_too(capsys):
  with pytest.raises(SystemExit) as info:
    errors.exit_on_error(_fails_with(KeyboardInterrupt()))(["trainer.main"])
  assert info.value.code == 130
  err = capsys.readouterr().err
  assert err.startswith("interrupted (Ctrl-C): stopped at once") and err.count("\n") == 1


def test_preempted_during_start_up_says_nothing_was_lost():
  message = str(Preempted())
  assert message.startswith("preempted (SIGTERM) during start-up: stopped at once")
  assert "run the same command again" in message and Preempted().step is None


class ResourceExhaustedError(Exception):
  """Stands in for tf.errors.ResourceExhaustedError (errors.py does not import TF)."""


@pytest.mark.parametrize("error", [
    MemoryError("Unable to allocate 7.28 TiB for an array with shape (999999999640,)"),
    ResourceExhaustedError("OOM when allocating tensor with shape[1000000,64]\nmore"),
])
def test_running_out_of_memory_is_a_user_mistake_naming_the_batch(capsys, error):
  with pytest.raises(SystemExit) as info:
    errors.exit_on_error(_fails_with(error))(["trainer.main"])
  assert info.value.code == 2
  err = capsys.readouterr().err
  assert err.startswith("error: global_batch_size: out of memory (") and err.count("\n") == 1


def test_other_resource_errors_stay_bugs():
  assert errors.user_error(ResourceExhaustedError("No space left on device")) is None
  assert errors.user_error(RuntimeError("x")) is None
  assert errors.user_error(SystemExit(0)) is None


def test_a_stop_at_once_a_library_wrapped_is_still_the_stop(capsys):
  """TF's tracing re-raises an error from user code as a StagingError (the original in
  __context__): a SIGTERM during the first loop's tracing must still be exit 4, one line."""

  class StagingError(Exception):
    pass

  def main(argv):
    del argv
    try:
      raise Preempted()
    except Preempted as e:
      raise StagingError("in user code: ...") from e

  with pytest.raises(SystemExit) as info:
    errors.exit_on_error(main)(["trainer.main"])
  assert info.value.code == 4
  assert capsys.readouterr().err.startswith("preempted (SIGTERM) during start-up")


@pytest.mark.parametrize("error", [Interrupted(), Preempted(step=8), ConfigError("x: bad")])
def test_a_keras_layer_passes_our_errors_through_unchanged(error):
  """A Keras layer's call re-creates an exception as `type(e)(message + its arguments)`: a
  Ctrl-C during the export's model call ended with '  • training=False; run the same command
  again to resume' as the run's last line (seen in CI). Ours must come out as raised."""
  import keras  # pylint: disable=g-import-not-at-top

  class Raises(keras.layers.Layer):
    def call(self, inputs, training=False):
      del inputs, training
      raise error

  with pytest.raises(type(error)) as info:
    Raises()(keras.ops.zeros((1, 2)), training=False)
  assert info.value is error and "training=" not in str(info.value)
