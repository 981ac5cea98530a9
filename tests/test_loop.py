"""trainer.loop: the compiled inner loops, run through the trainer.

The learning rate still moves inside a host call of many steps, and the device-resident input
(whole-loop XLA) trains exactly like the tf.data iterator.
"""

import numpy as np
import pytest

from tests.conftest import spec_of, cpu, model_weights, small_run
from trainer.distribute import precision
from trainer.run import train


def test_steps_per_loop_does_not_freeze_the_learning_rate(data_dir, tmp_path):
  """1 and 8 steps per host call: same weights, so the LR moves inside a loop."""
  runs = {}
  for n in (1, 8):
    workdir = str(tmp_path / f"spl{n}")
    train.train_and_evaluate(
        small_run(data_dir, steps_per_loop=n, total_steps=16, eval_every=0, checkpoint_every=0),
        workdir, cpu())
    runs[n] = model_weights(workdir)
  for a, b in zip(runs[1], runs[8]):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # A loop-constant LR would have been a different run: make sure the test can tell.
  frozen_dir = str(tmp_path / "frozen")
  train.train_and_evaluate(
      small_run(data_dir, steps_per_loop=8, total_steps=16, eval_every=0, checkpoint_every=0,
                **{"schedule.warmup_steps": 0, "schedule.hold": 16}), frozen_dir, cpu())
  assert not np.allclose(model_weights(frozen_dir)[0], runs[8][0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model", ["mlp", "small_cnn"])  # whole-loop XLA; XLA draws only
def test_device_resident_input_trains_exactly_like_tf_data(data_dir, tmp_path, model):
  """Device-resident input draws the same batches (augmented) as the tf.data pipeline."""
  runs = {}
  for mode in ("device", "tf.data"):
    workdir = str(tmp_path / mode)
    train.train_and_evaluate(small_run(data_dir, input_mode=mode, eval_every=0,
                                       checkpoint_every=0, model=model), workdir, cpu())
    runs[mode] = model_weights(workdir)
  for a, b in zip(runs["device"], runs["tf.data"]):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model,mode", [("mlp", "device"), ("mlp", "tf.data"),
                                        ("small_cnn", "device")])
def test_loops_cut_short_reuse_one_trace_and_train_like_whole_ones(data_dir, model, mode):
  """Loops of any length (cut to land on an eval) run the one traced program, and 3+5+1+7+8
  steps train like 16+8 (whole-loop XLA, tf.data, and the XLA draw alone)."""
  from trainer.step import build  # pylint: disable=g-import-not-at-top
  config = small_run(data_dir, model=model, input_mode=mode)
  spec = spec_of(config, cpu())
  weights = {}
  for lengths in ((16, 8), (3, 5, 1, 7, 8)):
    with precision.global_policy("float32"):
      parts = build.build(spec, cpu())
      trainer = build.make_runner(parts)
      for n in lengths:
        trainer.train(n)
      assert trainer.tracing_count() == 1, lengths
      assert trainer.global_step() == 24
      weights[lengths] = [v.numpy() for v in parts.model.trainable_variables]
  for a, b in zip(*weights.values()):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
