"""Tests for trainer.data.sampling: exact determinism and resume, coverage, pipelines.

No network: `digits` is built from scikit-learn into a tmp data_dir.
"""

import hashlib

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


def test_pipelines_draw_their_slices_of_the_one_process_batch(digits):
  """P input pipelines (P workers) draw, at every step, the global batch of one pipeline (one
  process), augmentation included: pipeline p's local replicas get its slices in order."""
  images, labels = data.load_in_memory(digits, "train")
  args = (images, labels, 48, 7, True, True, 29)  # start_step 29: a resume, across an epoch
  whole = list(in_memory.train_fn(*args)(tf.distribute.InputContext()).take(3))
  parts = []
  for pid in range(2):  # 2 pipelines of 2 local replicas: 12 examples a replica
    ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pid,
                                     num_replicas_in_sync=4)
    parts.append(list(in_memory.train_fn(*args)(ctx).take(6)))  # 2 slices a step
  for s, (x, y) in enumerate(whole):
    slices = [parts[p][2 * s + r] for p in range(2) for r in range(2)]
    assert [len(t[1]) for t in slices] == [12] * 4
    np.testing.assert_array_equal(x.numpy(), np.concatenate([t[0] for t in slices]))
    np.testing.assert_array_equal(y.numpy(), np.concatenate([t[1] for t in slices]))


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


# -- exact values: pinned, and against a NumPy reference ------------------------------------

def _pixels(n, h, w, c):
  """A fixed split of n examples (no dataset download, no RNG): pixels and labels."""
  px = np.arange(n * h * w * c, dtype=np.uint64) * 2654435761 % 251
  return px.astype(np.uint8).reshape(n, h, w, c), (np.arange(n, dtype=np.int32) * 7) % 10


# sha256 (first 16 hex digits) of the bytes of batch_at(e, ...) for each e in `elements`,
# recorded before the draw was rewritten for speed (issue 15): a batch must stay a pure
# function of (seed, step) and keep these exact values. The cases cover batches within an
# epoch and across its boundary, a batch bigger than the split (n = 50 and 1), an odd batch,
# both cycle-walks (n = 70000 needs 18 bits, more than the packed walk's 16), positions past
# 2**32, and translation with and without flips.
PINNED = [  # (n, h, w, c, batch, seed, pipeline, augment, flip, elements, digest)
    (1437, 8, 8, 1, 64, 0, 0, True, False, (0, 1, 22, 23, 10**6, 2**33 + 5), "c57cf20dd8d99e2f"),
    (1437, 8, 8, 1, 64, 5, 1, True, True, (0, 30, 977), "a8ca7aab495da618"),
    (1437, 8, 8, 1, 64, 0, 0, False, False, (0, 22, 12345), "d77b689829eec536"),
    (50, 16, 24, 3, 128, 3, 2, True, True, (0, 1, 7), "2b42e79db42fce56"),
    (1, 4, 4, 2, 3, 1, 0, True, True, (0, 5), "fef78763ed863953"),
    (1437, 8, 8, 1, 63, 7, 3, True, False, (0, 22, 23, 5000), "09f414f1644b3791"),
    (64, 2, 2, 1, 64, 4, 0, True, True, (0, 1, 5), "1fc23e884e015a08"),
    (70000, 1, 1, 1, 64, 2, 0, False, False, (0, 1093, 1094, 10**7), "5550843b27cf6a0d"),
]


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "xla"])
@pytest.mark.parametrize("case", PINNED, ids=lambda c: f"n{c[0]}_b{c[4]}_aug{c[7]:d}{c[8]:d}")
def test_batch_at_values_are_pinned(case, jit):
  n, h, w, c, b, seed, pid, augment, flip, elements, digest = case
  images, labels = (tf.constant(a) for a in _pixels(n, h, w, c))
  draw = lambda e: data.batch_at(e, images, labels, b, seed, pid, augment, flip)  # noqa: E731
  if jit:
    draw = tf.function(draw, jit_compile=True)
  hasher = hashlib.sha256()
  for e in elements:
    x, y = draw(tf.constant(e, tf.int64))
    hasher.update(x.numpy().tobytes())
    hasher.update(y.numpy().tobytes())
  assert hasher.hexdigest()[:16] == digest


def test_example_indices_values_are_pinned():
  seed = tf.constant([3, 0], tf.int64)
  assert [data.example_indices(e, 10, 4, seed).numpy().tolist() for e in range(5)] == [
      [3, 5, 7, 4], [1, 9, 2, 8], [6, 0, 3, 0], [4, 9, 1, 7], [8, 6, 5, 2]]
  got = data.example_indices(7, 1437, 8, sampling.pipeline_seeds(0, 0)[0])
  assert got.numpy().tolist() == [241, 541, 373, 225, 647, 1112, 577, 183]
  got = data.example_indices(2**35, 70000, 6, sampling.pipeline_seeds(1, 2)[0])
  assert got.numpy().tolist() == [20554, 13020, 47224, 26323, 33147, 32067]


def _reference_indices(element, n, b, seed):
  """example_indices in NumPy, one position at a time: the Feistel network, cycle-walked."""
  half = sampling._half_bits(n)  # pylint: disable=protected-access
  mask = np.uint32((1 << half) - 1)

  def mix(x):  # uint32 arithmetic wraps, as in TF
    with np.errstate(over="ignore"):
      x = (x ^ (x >> np.uint32(16))) * np.uint32(0x85EBCA6B)
      x = (x ^ (x >> np.uint32(13))) * np.uint32(0xC2B2AE35)
    return x ^ (x >> np.uint32(16))

  def encrypt(x, keys):
    left, right = x >> np.uint32(half), x & mask
    for key in keys:
      left, right = right, left ^ (mix(right ^ key) & mask)
    return (left << np.uint32(half)) | right

  out = []
  for k in range(element * b, element * b + b):
    epoch = tf.constant(k // n, tf.int64)  # int64, as in the stream (fold_in keys on dtype)
    keys = sampling._round_keys(seed, epoch).numpy()  # pylint: disable=protected-access
    x = encrypt(np.uint32(k % n), keys)
    while x >= n:
      x = encrypt(x, keys)
    out.append(int(x))
  return out


@pytest.mark.parametrize("n,b,element", [
    (1437, 64, 22),  # the packed walk, across an epoch boundary
    (1437, 7, 205),  # odd batch: a dummy position pads the packed halves
    (65536, 5, 13107),  # the largest split the packed walk takes (16 bits), across a boundary
    (70000, 5, 13999),  # 18 bits: the plain walk, across a boundary
    (3, 8, 4),  # a batch spanning several epochs
])
def test_example_indices_match_a_numpy_reference(n, b, element):
  seed = sampling.pipeline_seeds(11, 0)[0]
  want = _reference_indices(element, n, b, seed)
  assert data.example_indices(element, n, b, seed).numpy().tolist() == want
  xla = tf.function(lambda e: data.example_indices(e, n, b, seed), jit_compile=True)
  assert xla(tf.constant(element, tf.int64)).numpy().tolist() == want
