"""trainer.task: the loss is a mean over the *global* batch, so replicas change nothing.

One replica on the whole batch and four on quarter-batches make the same updates, and the
schedule is counted in global steps however many replicas run; eval padding has no weight.
"""

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import cpu, iterations, mirrored, model_weights, small_run
from trainer import config as config_lib
from trainer import schedules, train
from trainer import task as task_lib
from trainer.compat import keras
from trainer.summaries import read_scalars


def test_global_steps_identical_on_one_and_four_replicas(data_dir, tmp_path):
  # Augmented: an example's augmentation is keyed by its stream position, not by the replica.
  # SGD, not AdamW: Adam divides by the gradient's root mean square, which turns the rounding
  # differences of oneDNN's kernels at batch 8 vs 32 in near-zero gradients into full-sized
  # steps (measured: 9e-4 after 24 steps).
  config = small_run(data_dir, **{"optimizer.name": "sgd"})
  one, four = str(tmp_path / "one"), str(tmp_path / "four")
  train.train_and_evaluate(config, one, cpu())
  train.train_and_evaluate(config, four, mirrored(4))
  lr_one, lr_four = (read_scalars(one, "train", "learning_rate"),
                     read_scalars(four, "train", "learning_rate"))
  assert sorted(lr_one) == [4, 8, 12, 16, 20, 24]
  assert lr_one == lr_four  # warmup counted in global steps, not 4x faster
  plan = config_lib.resolve(config, 1437, 1)
  for step, lr in lr_one.items():
    assert lr == pytest.approx(schedules.lr_warmup_cosine_decay(step, 6, 2, 24, 1e-4, 3e-3),
                               rel=1e-6)
  assert plan.total_steps == iterations(one) == iterations(four) == 24  # not x4, not /4
  # Four replicas on four quarter-batches make the same update as one on the whole batch.
  for a, b in zip(model_weights(one), model_weights(four)):
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-5)


def _task(global_batch_size, lr=1.0):
  keras.utils.set_random_seed(0)
  model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
  optimizer = keras.optimizers.SGD(lr)
  optimizer.build(model.trainable_variables)
  return task_lib.ClassificationTask(model, optimizer, global_batch_size)


_IMAGES = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
_LABELS = np.array([0, 1, 2, 3], np.int32)


def test_a_replica_loss_is_its_sum_over_the_global_batch():
  """Half the global batch on this replica: half the update of the whole batch here."""
  changes = []
  for global_batch_size in (4, 8):
    t = _task(global_batch_size)
    before = [v.numpy() for v in t.model.trainable_variables]
    t.train_step((tf.constant(_IMAGES), tf.constant(_LABELS)))
    changes.append([v.numpy() - b for v, b in zip(t.model.trainable_variables, before)])
    assert int(t.optimizer.iterations.numpy()) == 1
  for whole, half in zip(*changes):
    assert np.abs(whole).max() > 0
    np.testing.assert_allclose(half, whole / 2, rtol=1e-5, atol=1e-7)


def test_eval_padding_has_no_weight():
  t = _task(4, lr=0.0)
  logits = t.model(_IMAGES).numpy()
  per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(_LABELS, logits).numpy()
  t.eval_sums.reset()
  t.eval_step((tf.constant(_IMAGES), tf.constant(_LABELS), tf.constant([1.0, 1.0, 0.0, 0.0])))
  result = {k: float(v) for k, v in t.eval_sums.result().items()}
  assert result["examples"] == 2
  assert result["loss"] == pytest.approx(per_example[:2].mean(), rel=1e-5)
  hits = (logits.argmax(-1) == _LABELS)[:2]
  assert result["accuracy"] == pytest.approx(hits.mean())
  t.train_step((tf.constant(_IMAGES), tf.constant(_LABELS)))
  train = {k: float(v) for k, v in t.train_sums.result().items()}
  assert train["examples"] == 4  # every training example counts
  assert train["loss"] == pytest.approx(per_example.mean(), rel=1e-5)
