"""Tests for trainer.data's pipelines: shapes, eval coverage and padding, streaming, synthetic.

No network: `digits` is built from scikit-learn into a tmp data_dir; `mnist`/`cifar10` run
under `tfds.testing.mock_data(policy=USE_FILES)` with metadata written into a tmp data_dir
(USE_CODE/AUTO know no split sizes in TFDS 4.9.10, and `batch_size=-1` then crashes).
"""

import numpy as np
import pytest
import tensorflow as tf

from tests import tfds_mock
from tests.conftest import plan_of, default_config, eval_arrays, take
from trainer import data
from trainer.data import in_memory
from trainer.data import info as info_lib
from trainer.data import streaming
from trainer.base.errors import ConfigError


def test_eval_covers_every_example_once_in_order_with_zero_padding(digits, two):
  # 360 examples, 64 per replica: 3 batches per replica
  images, labels = data.load_in_memory(digits, "eval")
  replicas = eval_arrays(data.make_eval_dataset(digits, two, 128), two)
  assert [len(w) for _, _, w in replicas] == [192, 192]
  # Batch k went to replica k % 2: interleave back into the split's order.
  x, y, w = (np.concatenate([replicas[k % 2][i][k // 2 * 64:(k // 2 + 1) * 64]
                             for k in range(6)]) for i in range(3))
  assert w.sum() == 360 and (w[:360] == 1).all() and (w[360:] == 0).all()
  np.testing.assert_array_equal(np.round(x[:360] * 255).astype(np.uint8), images)
  np.testing.assert_array_equal(y[:360], labels)
  assert (x[360:] == 0).all()


def test_eval_gives_every_pipeline_the_same_number_of_batches():
  images = np.arange(1, 12, dtype=np.uint8).reshape(11, 1, 1, 1)  # 11 = 6 + 5 per pipeline
  labels = np.arange(11, dtype=np.int32)
  counts, seen = [], []
  for pid in range(2):
    ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pid,
                                     num_replicas_in_sync=4)
    batches = list(in_memory.eval_fn(images, labels, 4)(ctx).as_numpy_iterator())
    counts.append(len(batches))
    for x, y, w in batches:
      assert x.shape == (1, 1, 1, 1)
      seen += [int(v) for v, wt in zip(y, w) if wt == 1]
  assert counts[0] == counts[1] and counts[0] % 2 == 0  # 2 local replicas each
  assert sorted(seen) == list(range(11))


@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_tfds_names_work_end_to_end(tmp_path, two, name, shape):
  with tfds_mock.prepared(name, tmp_path, num_examples=40):
    info = data.get_dataset_info(name, str(tmp_path))
    assert info == data.DatasetInfo(name, 10, shape, 40, 40)
    for step in take(data.make_train_dataset(info, two, 16, 0, True), two, 3):
      for x, y in step:
        assert x.shape == (8, *shape) and x.dtype == np.float32 and y.dtype == np.int32
        assert 0.0 <= x.min() and x.max() <= 1.0 and 0 <= y.min() and y.max() < 10
    replicas = eval_arrays(data.make_eval_dataset(info, two, 16), two)
    assert len(replicas[0][2]) == len(replicas[1][2])
    assert sum(w.sum() for _, _, w in replicas) == 40


def test_streaming_path_for_big_datasets(tmp_path, two, monkeypatch):
  monkeypatch.setattr(info_lib, "IN_MEMORY_MAX_BYTES", 0)
  monkeypatch.setattr(streaming, "SHUFFLE_BUFFER", 16)
  with tfds_mock.prepared("cifar10", tmp_path, num_examples=21):
    info = data.get_dataset_info("cifar10", str(tmp_path))
    a, b = (take(data.make_train_dataset(info, two, 8, 0, True), two, 4) for _ in range(2))
    for sa, sb in zip(a, b):
      for (xa, ya), (xb, yb) in zip(sa, sb):
        assert xa.shape == (4, 32, 32, 3) and xa.dtype == np.float32 and ya.dtype == np.int32
        assert 0.0 <= xa.min() and xa.max() <= 1.0
        np.testing.assert_array_equal(xa, xb)  # reproducible from step 0
    replicas = eval_arrays(data.make_eval_dataset(info, two, 8), two)
    assert [len(w) for _, _, w in replicas] == [12, 12]
    assert sum(w.sum() for _, _, w in replicas) == 21


def test_synthetic(one, two):
  info = data.get_dataset_info("synthetic")
  assert info == data.DatasetInfo("synthetic", 10, (32, 32, 3), 50_000, 1_000)
  [[(x, y)]] = take(data.make_train_dataset(info, one, 128, 0, True), one, 1)
  assert x.shape == (128, 32, 32, 3) and x.dtype == np.float32 and y.dtype == np.int32
  assert 0.0 <= x.min() and x.max() <= 1.0 and 0 <= y.min() and y.max() < 10
  replicas = eval_arrays(data.make_eval_dataset(info, two, 128), two)
  assert sum(w.sum() for _, _, w in replicas) == 1000


def test_batch_not_divisible_by_replicas_is_a_config_error(digits_dir, two):
  """The data functions trust their batch: config.resolve rejects it before they are called."""
  config = default_config(data_dir=str(digits_dir), global_batch_size=127)
  info = data.get_dataset_info(config.dataset, config.data_dir)
  with pytest.raises(ConfigError, match=r"^global_batch_size: 127 .* 2 replicas"):
    plan_of(config, info.num_train_examples, two.num_replicas_in_sync)


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_start_step_must_be_an_integer_at_least_zero(digits, bad):
  with pytest.raises(ValueError, match=r"^start_step must be an integer >= 0"):
    data.train_dataset_fn(digits, 128, 0, True, start_step=bad)


def test_train_starts_at_a_tensor_start_step_like_optimizer_iterations(digits):
  ds = data.train_dataset_fn(digits, 64, 0, True, start_step=tf.constant(3, tf.int64))(
      tf.distribute.InputContext())
  images, labels = data.load_in_memory(digits, "train")
  for step, (x, y) in enumerate(ds.take(2), start=3):
    want_x, want_y = data.batch_at(step, images, labels, 64, 0, augment=True)
    np.testing.assert_array_equal(x.numpy(), want_x.numpy())
    np.testing.assert_array_equal(y.numpy(), want_y.numpy())


def test_device_batches_are_the_train_batches(digits, one, two):
  batch, d = data.make_device_batch_fn(digits, one, 128, 0, True)
  [[(x, y)]] = take(data.make_train_dataset(digits, one, 128, 0, True, start_step=5), one, 1)
  want_x, want_y = batch(tf.constant(5, tf.int64), d)
  np.testing.assert_array_equal(x, want_x.numpy())
  np.testing.assert_array_equal(y, want_y.numpy())
  assert data.make_device_batch_fn(data.get_dataset_info("synthetic"), one, 128, 0, True) is None


def test_each_mirrored_replica_draws_its_tf_data_slice_on_its_own_device(digits, two):
  batch, d = data.make_device_batch_fn(digits, two, 128, 0, True)
  images = two.experimental_local_results(d[0])
  assert [tf.DeviceSpec.from_string(x.device).device_index for x in images] == [0, 1]
  [slices] = take(data.make_train_dataset(digits, two, 128, 0, True, start_step=5), two, 1)
  drawn = tf.function(lambda d: two.run(lambda d: batch(tf.constant(5, tf.int64), d),
                                        args=(d,)))(d)
  per_replica = [two.experimental_local_results(t) for t in drawn]
  for r, (x, y) in enumerate(slices):
    assert x.shape == (64, 8, 8, 1)
    np.testing.assert_array_equal(x, per_replica[0][r].numpy())
    np.testing.assert_array_equal(y, per_replica[1][r].numpy())
  assert not np.array_equal(slices[0][1], slices[1][1])  # two different slices


