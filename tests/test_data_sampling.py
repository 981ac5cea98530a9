"""Tests for trainer.data.sampling: exact determinism and resume, coverage, sharding.

No network: `digits` is built from scikit-learn into a tmp data_dir.
"""

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import take
from trainer import data
from trainer.data import in_memory, sampling


def test_same_seed_same_stream_other_seed_other_stream(digits, one):
  a, b = (take(data.make_train_dataset(digits, one, 128, 0, True), one, 3) for _ in range(2))
  c = take(data.make_train_dataset(digits, one, 128, 1, True), one, 3)
  for sa, sb, sc in zip(a, b, c):
    np.testing.assert_array_equal(sa[0][0], sb[0][0])
    np.testing.assert_array_equal(sa[0][1], sb[0][1])
    assert not np.array_equal(sa[0][1], sc[0][1])


@pytest.mark.parametrize("strategy_name", ["one", "two"])
def test_resume_is_exact_across_an_epoch_boundary(digits, strategy_name, request):
  strategy = request.getfixturevalue(strategy_name)
  # global batch 100: an epoch is 14.37 steps
  fresh = take(data.make_train_dataset(digits, strategy, 100, 0, True), strategy, 18)
  resumed = take(data.make_train_dataset(digits, strategy, 100, 0, True, start_step=12),
                 strategy, 6)
  for step_fresh, step_resumed in zip(fresh[12:], resumed):
    for (xf, yf), (xr, yr) in zip(step_fresh, step_resumed):
      np.testing.assert_array_equal(xf, xr)
      np.testing.assert_array_equal(yf, yr)


def test_one_epoch_of_batches_holds_every_train_example_once(digits, one):
  images, labels = data.load_in_memory(digits, "train")
  batches = take(data.make_train_dataset(digits, one, 479, 0, False), one, 3)  # 3 x 479 = 1437
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


def test_pipelines_partition_the_examples():
  """Two input pipelines (two hosts): disjoint shards that together cover an epoch."""
  images = np.arange(7, dtype=np.uint8).reshape(7, 1, 1, 1)
  labels = np.arange(7, dtype=np.int32)
  seen = []
  for pid in range(2):
    ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pid,
                                     num_replicas_in_sync=2)
    ds = in_memory.train_fn("digits", images, labels, 2, 0, False, False, 0)(ctx)
    shard = [int(v) for _, y in ds.take(4) for v in y.numpy()]  # 4 examples = 1+ epoch
    assert sorted(shard[:len(range(pid, 7, 2))]) == list(range(pid, 7, 2))
    seen += shard[:len(range(pid, 7, 2))]
  assert sorted(seen) == list(range(7))


def test_mirrored_replicas_get_half_batches_of_different_examples(digits, two):
  steps = take(data.make_train_dataset(digits, two, 128, 0, False), two, 2)
  images, labels = data.load_in_memory(digits, "train")
  for s, step in enumerate(steps):
    for r, (x, y) in enumerate(step):
      assert x.shape == (64, 8, 8, 1) and y.shape == (64,)
      want_x, want_y = data.batch_at(2 * s + r, images, labels, 64, 0)
      np.testing.assert_array_equal(x, want_x.numpy())
      np.testing.assert_array_equal(y, want_y.numpy())
    seed = sampling.pipeline_seeds(0, 0)[0]
    ids = [set(data.example_indices(2 * s + r, 1437, 64, seed).numpy()) for r in range(2)]
    assert len(ids[0]) == len(ids[1]) == 64 and not ids[0] & ids[1]


def test_replicas_share_one_augmented_global_batch(digits, one, two):
  """Same examples, same augmentation at every step, on one replica or split over two."""
  whole = take(data.make_train_dataset(digits, one, 128, 0, True, start_step=3), one, 2)
  halves = take(data.make_train_dataset(digits, two, 128, 0, True, start_step=3), two, 2)
  for (w,), (h0, h1) in zip(whole, halves):
    for i in range(2):  # images, labels
      np.testing.assert_array_equal(w[i], np.concatenate([h0[i], h1[i]]))
  plain = take(data.make_train_dataset(digits, one, 128, 0, False, start_step=3), one, 1)
  assert not np.array_equal(plain[0][0][0], whole[0][0][0])  # augmentation did something


def test_batch_at_is_identical_under_xla(digits):
  images, labels = data.load_in_memory(digits, "train")
  images, labels = tf.constant(images), tf.constant(labels)

  def fn(e):
    return data.batch_at(e, images, labels, 64, seed=5, pipeline_id=1, augment=True, flip=True)

  e = tf.constant(30, tf.int64)  # straddles the 2nd epoch boundary of 1437 examples
  for want, got in zip(fn(e), tf.function(fn, jit_compile=True)(e)):
    np.testing.assert_array_equal(want.numpy(), got.numpy())
