"""trainer.step.build: the public builder (parts of a run from a RunSpec and a strategy, and
the Runner made from them), its precision policy and optimizer, and what it refuses."""

import math

import numpy as np
import pytest

from tests.conftest import cpu, mirrored, small_run
from trainer.distribute import precision
from trainer.step import build
from trainer.run import train
from trainer import config as config_lib
from trainer import task as task_lib
from trainer.base.compat import LEGACY_KERAS, keras
from trainer.base.errors import ConfigError


def _parts(config, strategy):
  spec = config_lib.resolve(config, strategy)
  with precision.global_policy(spec.policy):
    return build.build(spec, strategy)


def test_device_input_mode_refuses_a_split_that_cannot_live_on_the_device(data_dir, tmp_path):
  with pytest.raises(ConfigError, match="^input_mode: 'device' needs one replica"):
    train.train_and_evaluate(small_run(data_dir, input_mode="device", dataset="synthetic"),
                             str(tmp_path / "w"), mirrored(2))
  assert not (tmp_path / "w").exists()


def test_every_strategy_starts_from_the_same_weights_and_a_trainer_trains(data_dir):
  config = small_run(data_dir, model="mlp")
  one, two = _parts(config, cpu()), _parts(config, mirrored(2))
  assert one.model is one.learner.model and one.optimizer is one.learner.optimizer
  assert isinstance(one.task, task_lib.Classification) and one.learner.task is one.task
  assert one.execution.device_input and not one.execution.replica_update
  # Mirrored: device-resident with per-replica updates under Keras 3, tf.data under tf_keras.
  assert two.execution.device_input == two.execution.replica_update == (not LEGACY_KERAS)
  for a, b in zip(one.model.get_weights(), two.model.get_weights()):
    np.testing.assert_array_equal(a, b)  # seeded with config.seed before building
  for parts in (one, two):
    trainer = build.make_runner(parts, start_step=0)
    metrics = trainer.train(4)
    assert trainer.global_step() == 4 and math.isfinite(metrics["loss"])
    assert set(trainer.evaluate()) == {"loss", "accuracy"}


@pytest.mark.parametrize("name,policy", [("float32", "float32"), ("bfloat16", "mixed_bfloat16"),
                                         ("mixed_float16", "mixed_float16"), ("auto", "float32")])
def test_precision_policy(name, policy):
  assert precision.precision_policy(name, cpu()) == policy  # auto: float32 on a CPU-only host


def test_global_policy_is_set_for_the_block_only():
  before = keras.mixed_precision.global_policy().name
  with pytest.raises(RuntimeError):
    with precision.global_policy("mixed_bfloat16"):
      assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
      raise RuntimeError()
  assert keras.mixed_precision.global_policy().name == before


def test_build_optimizer_by_name():
  config = small_run("", **{"optimizer.name": "sgd", "optimizer.momentum": 0.9,
                            "optimizer.clipnorm": 1.0})
  sgd = build.build_optimizer(config.optimizer, 0.1)
  assert isinstance(sgd, keras.optimizers.SGD) and sgd.momentum == 0.9 and sgd.clipnorm == 1.0
  adamw = build.build_optimizer(small_run("").optimizer, 0.1)
  assert isinstance(adamw, keras.optimizers.AdamW)
  adam = build.build_optimizer(small_run("", **{"optimizer.name": "adam"}).optimizer, 0.1)
  assert isinstance(adam, keras.optimizers.Adam) and not isinstance(adam,
                                                                    keras.optimizers.AdamW)
