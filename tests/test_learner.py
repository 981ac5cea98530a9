"""trainer.learner: gradient accumulation keeps every count in global steps.

k micro-batches per replica per global step train to the weights of k = 1 at the same global
batch (float rounding apart), with the same learning rate at every step, on one and on two
replicas; a global batch the micro-batches do not divide is one line.
"""

import numpy as np
import pytest

from tests.conftest import plan_of, cpu, iterations, mirrored, model_weights, one_line_error, small_run
from trainer.run import summaries
from trainer.run import train
from trainer import config as config_lib
from trainer.base.errors import ConfigError

RUN = {"model": "mlp", "total_steps": 8, "steps_per_loop": 1, "eval_every": 0,
       "checkpoint_every": 0, "global_batch_size": 32}


def _run(data_dir, workdir, strategy, **changes):
  train.train_and_evaluate(small_run(data_dir, **{**RUN, **changes}), workdir, strategy)
  return (model_weights(workdir), summaries.read_scalars(workdir, "train", "learning_rate"),
          iterations(workdir))


_MIRRORED2 = pytest.param(lambda: mirrored(2), marks=pytest.mark.slow)  # ~20 s


@pytest.mark.parametrize("strategy", [cpu, _MIRRORED2], ids=["cpu", "mirrored2"])
def test_four_micro_batches_train_like_one_batch_with_the_same_schedule(data_dir, tmp_path,
                                                                          strategy):
  w1, lr1, steps1 = _run(data_dir, str(tmp_path / "k1"), strategy())
  w4, lr4, steps4 = _run(data_dir, str(tmp_path / "k4"), strategy(), grad_accum_steps=4)
  assert steps1 == steps4 == 8  # iterations counts updates, not micro-batches
  assert sorted(lr4) == list(range(8)) and lr4 == lr1  # the LR of every global step
  for a, b in zip(w1, w4):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  if strategy is cpu:  # the test can tell: the micro-batch alone as the global batch differs
    small, _, _ = _run(data_dir, str(tmp_path / "small"), strategy(), global_batch_size=8)
    assert not np.allclose(small[0], w4[0], rtol=1e-4, atol=1e-6)


def test_the_plan_counts_micro_batches_per_replica():
  config = small_run("", grad_accum_steps=4, global_batch_size=64)
  plan = plan_of(config, 1000, 2)
  assert (plan.per_replica_batch_size, plan.grad_accum_steps, plan.micro_batch_size) == (32, 4, 8)
  assert plan.steps_per_epoch == 1000 // 64  # an epoch is still counted in updates


@pytest.mark.parametrize("k,replicas", [(3, 1), (3, 2), (64, 2)])
def test_micro_batches_that_do_not_divide_the_replica_batch_are_one_line(k, replicas):
  with pytest.raises(ConfigError) as e:
    plan_of(small_run("", grad_accum_steps=k, global_batch_size=32), 1000, replicas)
  one_line_error(e, "grad_accum_steps", f"{32 // replicas} examples per replica")


def test_grad_accum_steps_must_be_a_positive_integer():
  with pytest.raises(ConfigError) as e:
    config_lib.check_fields(small_run("", grad_accum_steps=0))
  one_line_error(e, "grad_accum_steps")
