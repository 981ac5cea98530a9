"""Tests for trainer.data: shapes, exact determinism and resume, coverage, eval padding, errors.

No network: `digits` is built from scikit-learn into a tmp data_dir; `mnist`/`cifar10` run
under `tfds.testing.mock_data(policy=USE_FILES)` with metadata written into a tmp data_dir
(USE_CODE/AUTO know no split sizes in TFDS 4.9.10, and `batch_size=-1` then crashes).
"""

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tests import tfds_mock
from trainer import data
from trainer.errors import ConfigError


def _config(data_dir, **overrides):
  c = ml_collections.ConfigDict(dict(dataset="digits", data_dir=str(data_dir),
                                     global_batch_size=128, seed=0, augment=True))
  c.update(overrides)
  return c


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("tfds")
  data.get_dataset_info(_config(path))  # builds digits once for the module
  return path


@pytest.fixture(scope="module")
def one():
  return tf.distribute.OneDeviceStrategy("/cpu:0")


@pytest.fixture(scope="module")
def two():
  return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def _take(dist_ds, strategy, steps):
  """[step][replica] -> tuple of numpy arrays."""
  it = iter(dist_ds)
  out = []
  for _ in range(steps):
    parts = [strategy.experimental_local_results(t) for t in next(it)]
    out.append([tuple(p[r].numpy() for p in parts) for r in range(strategy.num_replicas_in_sync)])
  return out


def _eval_arrays(dist_ds, strategy):
  """Per replica: concatenated (images, labels, weights) over the whole eval pass."""
  per_replica = [[] for _ in range(strategy.num_replicas_in_sync)]
  for batch in dist_ds:
    parts = [strategy.experimental_local_results(t) for t in batch]
    for r in range(strategy.num_replicas_in_sync):
      per_replica[r].append(tuple(p[r].numpy() for p in parts))
  return [tuple(np.concatenate(a) for a in zip(*batches)) for batches in per_replica]


def _is_shift_of(augmented, original, pad, flips):
  """Whether `augmented` is `original` translated by <= pad pixels (zero fill), maybe mirrored."""
  h, w = original.shape[:2]
  padded = np.pad(original, [[pad, pad], [pad, pad], [0, 0]])
  for dy in range(2 * pad + 1):
    for dx in range(2 * pad + 1):
      crop = padded[dy:dy + h, dx:dx + w]
      if np.array_equal(augmented, crop) or (flips and np.array_equal(augmented, crop[:, ::-1])):
        return True
  return False


def test_digits_is_a_prepared_tfds_dataset(digits_dir, one):
  info = data.get_dataset_info(_config(digits_dir))
  assert info == data.DatasetInfo("digits", 10, (8, 8, 1), 1437, 360)
  builder = tfds.builder("digits", data_dir=str(digits_dir))
  assert builder.is_prepared()
  assert builder.info.splits["train"].num_examples == 1437
  assert builder.info.splits["test"].num_examples == 360
  images, labels = data.load_in_memory(_config(digits_dir), "train")
  assert images.shape == (1437, 8, 8, 1) and images.dtype == np.uint8 and images.max() == 255
  assert labels.dtype == np.int32 and set(labels) == set(range(10))
  [[(x, y)]] = _take(data.make_train_dataset(_config(digits_dir), one), one, 1)
  assert x.shape == (128, 8, 8, 1) and x.dtype == np.float32 and y.dtype == np.int32
  assert x.min() == 0.0 and x.max() == 1.0 and y.min() >= 0 and y.max() <= 9


def test_same_seed_same_stream_other_seed_other_stream(digits_dir, one):
  a, b = (_take(data.make_train_dataset(_config(digits_dir), one), one, 3) for _ in range(2))
  c = _take(data.make_train_dataset(_config(digits_dir, seed=1), one), one, 3)
  for sa, sb, sc in zip(a, b, c):
    np.testing.assert_array_equal(sa[0][0], sb[0][0])
    np.testing.assert_array_equal(sa[0][1], sb[0][1])
    assert not np.array_equal(sa[0][1], sc[0][1])


@pytest.mark.parametrize("strategy_name", ["one", "two"])
def test_resume_is_exact_across_an_epoch_boundary(digits_dir, strategy_name, request):
  strategy = request.getfixturevalue(strategy_name)
  config = _config(digits_dir, global_batch_size=100)  # an epoch is 14.37 steps
  fresh = _take(data.make_train_dataset(config, strategy), strategy, 18)
  resumed = _take(data.make_train_dataset(config, strategy, start_step=12), strategy, 6)
  for step_fresh, step_resumed in zip(fresh[12:], resumed):
    for (xf, yf), (xr, yr) in zip(step_fresh, step_resumed):
      np.testing.assert_array_equal(xf, xr)
      np.testing.assert_array_equal(yf, yr)


def test_one_epoch_of_batches_holds_every_train_example_once(digits_dir, one):
  config = _config(digits_dir, global_batch_size=479, augment=False)  # 3 batches = 1437
  images, labels = data.load_in_memory(config, "train")
  batches = _take(data.make_train_dataset(config, one), one, 3)
  got = np.concatenate([np.round(x * 255).astype(np.uint8) for [(x, _)] in batches])
  got_labels = np.concatenate([y for [(_, y)] in batches])

  def rows(x, y):  # each example as bytes (pixels + label), as a sorted multiset
    return sorted(map(bytes, np.concatenate([x.reshape(len(x), -1), y[:, None]], 1)
                      .astype(np.uint8)))

  assert rows(got, got_labels) == rows(images, labels)


def test_example_indices_are_a_fresh_permutation_each_epoch_and_continuous():
  n, b = 10, 4
  seed = tf.constant([3, 0], tf.int64)
  stream = np.concatenate([data.example_indices(e, n, b, seed).numpy() for e in range(10)])
  epochs = stream.reshape(4, n)
  for epoch in epochs:
    np.testing.assert_array_equal(np.sort(epoch), np.arange(n))
  assert len({tuple(e) for e in epochs}) == 4
  # A batch bigger than the dataset spans several epochs and still covers each one exactly.
  np.testing.assert_array_equal(data.example_indices(0, n, 40, seed).numpy(), stream)


def test_pipelines_partition_the_examples(digits_dir):
  """Two input pipelines (two hosts): disjoint shards that together cover an epoch."""
  config = _config(digits_dir, global_batch_size=2, augment=False)
  images = np.arange(7, dtype=np.uint8).reshape(7, 1, 1, 1)
  labels = np.arange(7, dtype=np.int32)
  seen = []
  for pid in range(2):
    ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pid,
                                     num_replicas_in_sync=2)
    ds = data._in_memory_train_fn(config, images, labels, 0, False)(ctx)
    shard = [int(v) for _, y in ds.take(4) for v in y.numpy()]  # 4 examples = 1+ epoch
    assert sorted(shard[:len(range(pid, 7, 2))]) == list(range(pid, 7, 2))
    seen += shard[:len(range(pid, 7, 2))]
  assert sorted(seen) == list(range(7))


def test_mirrored_replicas_get_half_batches_of_different_examples(digits_dir, two):
  config = _config(digits_dir, augment=False)
  steps = _take(data.make_train_dataset(config, two), two, 2)
  images, labels = data.load_in_memory(config, "train")
  for s, step in enumerate(steps):
    for r, (x, y) in enumerate(step):
      assert x.shape == (64, 8, 8, 1) and y.shape == (64,)
      want_x, want_y = data.batch_at(2 * s + r, images, labels, 64, config.seed)
      np.testing.assert_array_equal(x, want_x.numpy())
      np.testing.assert_array_equal(y, want_y.numpy())
    seed = data._pipeline_seeds(config.seed, 0)[0]
    ids = [set(data.example_indices(2 * s + r, 1437, 64, seed).numpy()) for r in range(2)]
    assert len(ids[0]) == len(ids[1]) == 64 and not ids[0] & ids[1]


def test_replicas_share_one_augmented_global_batch(digits_dir, one, two):
  """Same examples, same augmentation at every step, on one replica or split over two."""
  config = _config(digits_dir)
  whole = _take(data.make_train_dataset(config, one, start_step=3), one, 2)
  halves = _take(data.make_train_dataset(config, two, start_step=3), two, 2)
  for (w,), (h0, h1) in zip(whole, halves):
    for i in range(2):  # images, labels
      np.testing.assert_array_equal(w[i], np.concatenate([h0[i], h1[i]]))
  plain = _take(data.make_train_dataset(_config(digits_dir, augment=False), one, 3), one, 1)
  assert not np.array_equal(plain[0][0][0], whole[0][0][0])  # augmentation did something


def test_augmentation_translates_and_never_flips_digits(digits_dir, one):
  plain = _take(data.make_train_dataset(_config(digits_dir, augment=False), one), one, 1)
  aug = _take(data.make_train_dataset(_config(digits_dir), one), one, 1)
  (xp, yp), (xa, ya) = plain[0][0], aug[0][0]
  np.testing.assert_array_equal(yp, ya)
  assert not np.array_equal(xp, xa)
  assert all(_is_shift_of(a, p, pad=1, flips=False) for a, p in zip(xa, xp))


def test_batch_at_is_identical_under_xla(digits_dir):
  images, labels = data.load_in_memory(_config(digits_dir), "train")
  images, labels = tf.constant(images), tf.constant(labels)

  def fn(e):
    return data.batch_at(e, images, labels, 64, seed=5, pipeline_id=1, augment=True, flip=True)

  e = tf.constant(30, tf.int64)  # straddles the 2nd epoch boundary of 1437 examples
  for want, got in zip(fn(e), tf.function(fn, jit_compile=True)(e)):
    np.testing.assert_array_equal(want.numpy(), got.numpy())


def test_eval_covers_every_example_once_in_order_with_zero_padding(digits_dir, two):
  config = _config(digits_dir)  # 360 examples, 64 per replica: 3 batches per replica
  images, labels = data.load_in_memory(config, "eval")
  replicas = _eval_arrays(data.make_eval_dataset(config, two), two)
  assert [len(w) for _, _, w in replicas] == [192, 192]
  # Batch k went to replica k % 2: interleave back into the split's order.
  x, y, w = (np.concatenate([replicas[k % 2][i][k // 2 * 64:(k // 2 + 1) * 64]
                             for k in range(6)]) for i in range(3))
  assert w.sum() == 360 and (w[:360] == 1).all() and (w[360:] == 0).all()
  np.testing.assert_array_equal(np.round(x[:360] * 255).astype(np.uint8), images)
  np.testing.assert_array_equal(y[:360], labels)
  assert (x[360:] == 0).all()


def test_eval_gives_every_pipeline_the_same_number_of_batches():
  config = _config("", global_batch_size=4)
  images = np.arange(1, 12, dtype=np.uint8).reshape(11, 1, 1, 1)  # 11 = 6 + 5 per pipeline
  labels = np.arange(11, dtype=np.int32)
  counts, seen = [], []
  for pid in range(2):
    ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pid,
                                     num_replicas_in_sync=4)
    batches = list(data._in_memory_eval_fn(config, images, labels)(ctx).as_numpy_iterator())
    counts.append(len(batches))
    for x, y, w in batches:
      assert x.shape == (1, 1, 1, 1)
      seen += [int(v) for v, wt in zip(y, w) if wt == 1]
  assert counts[0] == counts[1] and counts[0] % 2 == 0  # 2 local replicas each
  assert sorted(seen) == list(range(11))


@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_tfds_names_work_end_to_end(tmp_path, two, name, shape):
  config = _config(tmp_path, dataset=name, global_batch_size=16)
  with tfds_mock.prepared(name, tmp_path, num_examples=40):
    assert data.get_dataset_info(config) == data.DatasetInfo(name, 10, shape, 40, 40)
    for step in _take(data.make_train_dataset(config, two), two, 3):
      for x, y in step:
        assert x.shape == (8, *shape) and x.dtype == np.float32 and y.dtype == np.int32
        assert 0.0 <= x.min() and x.max() <= 1.0 and 0 <= y.min() and y.max() < 10
    replicas = _eval_arrays(data.make_eval_dataset(config, two), two)
    assert len(replicas[0][2]) == len(replicas[1][2])
    assert sum(w.sum() for _, _, w in replicas) == 40


def test_streaming_path_for_big_datasets(tmp_path, two, monkeypatch):
  monkeypatch.setattr(data, "IN_MEMORY_MAX_BYTES", 0)
  monkeypatch.setattr(data, "SHUFFLE_BUFFER", 16)
  config = _config(tmp_path, dataset="cifar10", global_batch_size=8)
  with tfds_mock.prepared("cifar10", tmp_path, num_examples=21):
    a, b = (_take(data.make_train_dataset(config, two), two, 4) for _ in range(2))
    for sa, sb in zip(a, b):
      for (xa, ya), (xb, yb) in zip(sa, sb):
        assert xa.shape == (4, 32, 32, 3) and xa.dtype == np.float32 and ya.dtype == np.int32
        assert 0.0 <= xa.min() and xa.max() <= 1.0
        np.testing.assert_array_equal(xa, xb)  # reproducible from step 0
    replicas = _eval_arrays(data.make_eval_dataset(config, two), two)
    assert [len(w) for _, _, w in replicas] == [12, 12]
    assert sum(w.sum() for _, _, w in replicas) == 21


def test_cifar10_augmentation_flips_some_images(tmp_path, one):
  with tfds_mock.prepared("cifar10", tmp_path, num_examples=64):
    plain = _take(data.make_train_dataset(
        _config(tmp_path, dataset="cifar10", global_batch_size=32, augment=False), one), one, 1)
    aug = _take(data.make_train_dataset(
        _config(tmp_path, dataset="cifar10", global_batch_size=32), one), one, 1)
  (xp, _), (xa, _) = plain[0][0], aug[0][0]
  assert all(_is_shift_of(a, p, pad=4, flips=True) for a, p in zip(xa, xp))
  assert not all(_is_shift_of(a, p, pad=4, flips=False) for a, p in zip(xa, xp))


def test_synthetic(one, two):
  config = _config("", dataset="synthetic")
  assert data.get_dataset_info(config) == data.DatasetInfo("synthetic", 10, (32, 32, 3),
                                                           50_000, 1_000)
  [[(x, y)]] = _take(data.make_train_dataset(config, one), one, 1)
  assert x.shape == (128, 32, 32, 3) and x.dtype == np.float32 and y.dtype == np.int32
  assert 0.0 <= x.min() and x.max() <= 1.0 and 0 <= y.min() and y.max() < 10
  replicas = _eval_arrays(data.make_eval_dataset(config, two), two)
  assert sum(w.sum() for _, _, w in replicas) == 1000


def test_unknown_dataset_is_a_config_error(tmp_path):
  with pytest.raises(ConfigError, match=r"^dataset: 'no_such_set' is not a TFDS dataset"):
    data.get_dataset_info(_config(tmp_path, dataset="no_such_set"))


def test_non_image_classification_dataset_is_a_config_error(tmp_path):
  with pytest.raises(ConfigError, match=r"^dataset: 'glue/cola' is not an image-classification"):
    data.get_dataset_info(_config(tmp_path, dataset="glue/cola"))


def test_unprepared_dataset_is_a_config_error_without_download(tmp_path):
  with pytest.raises(ConfigError, match=r"^dataset: 'mnist' is not prepared in .*tfds build mnist"):
    data.get_dataset_info(_config(tmp_path, dataset="mnist"))
  assert not (tmp_path / "mnist").exists() and not (tmp_path / "downloads").exists()


def test_batch_not_divisible_by_replicas_is_a_config_error(digits_dir, two):
  config = _config(digits_dir, global_batch_size=127)
  for make in (data.make_train_dataset, data.make_eval_dataset):
    with pytest.raises(ConfigError, match=r"^global_batch_size: 127 .* 2 replicas"):
      make(config, two)
