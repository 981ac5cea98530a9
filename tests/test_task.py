"""trainer.task: the loss is a mean over the *global* batch, so replicas change nothing.

One replica on the whole batch and four on quarter-batches make the same updates, and the
schedule is counted in global steps however many replicas run; eval padding has no weight.
"""

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import plan_of, cpu, iterations, mirrored, model_weights, small_run
from trainer import schedules
from trainer.run import train
from trainer.step import learner as learner_lib
from trainer import task as task_lib
from trainer.base.compat import keras
from trainer.base.errors import ConfigError
from trainer.run.summaries import read_scalars


@pytest.mark.slow  # ~70 s: four replicas against one (the fast tier's 1-vs-2 tests stay)
def test_global_steps_identical_on_one_and_four_replicas(data_dir, tmp_path):
  # Augmented: an example's augmentation is keyed by its stream position, not by the replica.
  # SGD, not AdamW: Adam divides by the gradient's root mean square, which turns the rounding
  # differences of oneDNN's kernels at batch 8 vs 32 in near-zero gradients into full-sized
  # steps (measured: 9e-4 after 24 steps).
  # The MLP: the CNN on four replicas took ~70 s; what is checked is the counting, not convs.
  config = small_run(data_dir, **{"optimizer.name": "sgd", "model": "mlp"})
  one, four = str(tmp_path / "one"), str(tmp_path / "four")
  train.train_and_evaluate(config, one, cpu())
  train.train_and_evaluate(config, four, mirrored(4))
  lr_one, lr_four = (read_scalars(one, "train", "learning_rate"),
                     read_scalars(four, "train", "learning_rate"))
  assert sorted(lr_one) == list(range(24))  # every step: the rate its update used
  assert lr_one == lr_four  # warmup counted in global steps, not 4x faster
  plan = plan_of(config, 1437, 1)
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
  return learner_lib.Learner(model, optimizer, task_lib.Classification(), global_batch_size,
                             num_outputs=4)


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


def test_regression_metrics_from_sums_match_scikit_learn_over_uneven_batches():
  from sklearn import metrics  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  y, p = rng.normal(size=(37, 2)).astype(np.float32), rng.normal(size=(37, 2)).astype(np.float32)
  task = task_lib.Regression()
  totals = {"loss": 0.0, "count": 0.0}
  for lo, hi in ((0, 10), (10, 11), (11, 37)):  # batches, as replicas and loops split them
    w = np.ones(hi - lo, np.float32)
    sums = task.metric_sums(tf.constant(y[lo:hi]), tf.constant(p[lo:hi]), tf.constant(w))
    for k, v in sums.items():
      totals[k] = totals.get(k, 0.0) + v.numpy()
    totals["loss"] += float(tf.reduce_sum(task.per_example_loss(y[lo:hi], p[lo:hi])))
    totals["count"] += hi - lo
  got = task.summarize(totals)
  assert got["mse"] == pytest.approx(metrics.mean_squared_error(y, p), rel=1e-5)
  assert got["mae"] == pytest.approx(metrics.mean_absolute_error(y, p), rel=1e-5)
  assert got["r2"] == pytest.approx(metrics.r2_score(y, p), rel=1e-4)
  assert got["loss"] == pytest.approx(got["mse"], rel=1e-5)
  assert task.serving_outputs(tf.constant(p)).numpy().tolist() == p.tolist()


def test_tasks_check_their_data():
  from trainer.data import DatasetInfo  # pylint: disable=g-import-not-at-top
  images = DatasetInfo("d", 10, (8, 8, 1), 10, 10)
  targets = DatasetInfo("t", 0, (10,), 10, 10, input_dtype="float32", label_dtype="float32")
  task_lib.Classification().check_data(images)
  task_lib.Regression().check_data(targets)
  assert task_lib.Classification().num_outputs(images) == 10
  assert task_lib.Regression().num_outputs(targets) == 1
  with pytest.raises(ConfigError, match=r"^task: 'classification' needs int32 class labels"):
    task_lib.Classification().check_data(targets)
  with pytest.raises(ConfigError, match=r"^task: 'regression' needs float32 targets"):
    task_lib.Regression().check_data(images)
  probabilities = task_lib.Classification().serving_outputs(tf.constant([[0.0, np.log(3.0)]]))
  np.testing.assert_allclose(probabilities.numpy(), [[0.25, 0.75]], rtol=1e-6)
