"""Deterministic sampling: which example each input pipeline reads where, and its random draws.

Owns the division of the eval split among input pipelines (`shard`, the eval batch count), a
pipeline's share of the replicas (`layout`), the endless shuffled train stream that every
pipeline reads its slices of (`example_indices`: a Feistel permutation per epoch, evaluated
pointwise), the per-example random draws keyed by stream position (`example_draws`) and the
seeds of a stream (`pipeline_seeds`). Everything is a pure function of its arguments, and the
TF parts are XLA-compilable.
"""

import math

import numpy as np
import tensorflow as tf

_FEISTEL_ROUNDS = 6


def example_indices(element, num_examples: int, batch_size: int, seed):
  """Indices (int32 [batch_size]) of per-replica batch `element` in an endless shuffled stream.

  Stream position k = element * batch_size + j lies in epoch k // num_examples; each epoch is
  a permutation of range(num_examples) keyed by (seed, epoch), evaluated pointwise (a Feistel
  network whose round functions hash the half-block with per-epoch random keys, cycle-walked
  into range), so the cost is O(batch_size), independent of num_examples. Batches run on
  across epoch boundaries.

  Args:
    element: int64 scalar, the per-replica batch number within the stream.
    num_examples: examples in the stream (the whole split).
    batch_size: per-replica batch size.
    seed: int64 [2] stateless seed of the stream (batch_at uses one per (seed, pipeline)).
  """
  n, b = int(num_examples), int(batch_size)
  start = tf.cast(element, tf.int64) * b
  first = start // n  # the epoch of the batch's first position
  spans = (b - 1) // n + 2  # epochs a batch can touch
  # Positions relative to the start of epoch `first`: one scalar division, the rest in int32.
  if n + b < 2**31:
    local = tf.cast(start - first * n, tf.int32) + tf.range(b)
  else:
    local = start - first * n + tf.range(b, dtype=tf.int64)
  if spans == 2:  # most batches stay in one epoch: the next epoch's keys (philox) only if needed
    keys0 = _round_keys(seed, first)
    keys1 = tf.cond(local[-1] >= n, lambda: _round_keys(seed, first + 1), lambda: keys0)
    later = local >= n
    pos = tf.where(later, local - n, local)
    keys = tf.where(later[None], keys1[:, None], keys0[:, None])
  else:
    epoch = local // n  # epoch - first, per position
    pos = local - epoch * n
    keys = tf.stack([_round_keys(seed, first + i) for i in range(spans)])
    keys = tf.transpose(tf.gather(keys, epoch))
  return _permute(tf.cast(pos, tf.uint32), keys, n)


def shard(array: np.ndarray, num_pipelines: int, pipeline_id: int) -> np.ndarray:
  """The eval examples of input pipeline `pipeline_id`: every num_pipelines-th, from its id."""
  return array[pipeline_id::num_pipelines]


def layout(global_batch_size, ctx):
  """(per-replica batch, replicas per pipeline, num pipelines, pipeline id) of an InputContext."""
  return (ctx.get_per_replica_batch_size(int(global_batch_size)),
          ctx.num_replicas_in_sync // ctx.num_input_pipelines, ctx.num_input_pipelines,
          ctx.input_pipeline_id)


def eval_batches_per_pipeline(num_examples, b, local_replicas, num_pipelines):
  """Same count for every pipeline (and so every replica), enough for the largest shard."""
  per_replica = math.ceil(math.ceil(num_examples / num_pipelines) / (b * local_replicas))
  return max(1, per_replica) * local_replicas


def pipeline_seeds(seed, pipeline_id):
  """(permutation seed, augmentation seed), int64 [2] each, of one input pipeline."""
  base = tf.constant([int(seed), int(pipeline_id)], tf.int64)
  return (tf.random.experimental.stateless_fold_in(base, 0, alg="philox"),
          tf.random.experimental.stateless_fold_in(base, 1, alg="philox"))


def example_draws(seed, positions, rows, maxval):
  """int32 [rows, b] in [0, maxval): random draws keyed by (seed, stream position)."""
  keys = tf.bitcast(tf.random.stateless_uniform([2], seed, minval=None, maxval=None,
                                                dtype=tf.int32, alg="philox"), tf.uint32)
  low = tf.cast(tf.bitwise.bitwise_and(positions, 0xFFFFFFFF), tf.uint32)
  high = tf.cast(tf.bitwise.right_shift(positions, 32), tf.uint32)
  h = _mix(tf.bitwise.bitwise_xor(_mix(tf.bitwise.bitwise_xor(low, keys[0])) + high, keys[1]))
  draws = [_mix(h + tf.constant((0x9E3779B9 * (i + 1)) % 2**32, tf.uint32)) % maxval
           for i in range(rows)]
  return tf.cast(tf.stack(draws), tf.int32)


def _half_bits(n):
  return (max(2, (n - 1).bit_length()) + 1) // 2


def _mix(x):
  """A 32-bit integer hash (murmur3's finaliser) of uint32 x: cheap, elementwise, no lookups."""
  x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16)) * tf.constant(0x85EBCA6B,
                                                                              tf.uint32)
  x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 13)) * tf.constant(0xC2B2AE35,
                                                                              tf.uint32)
  return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))


def _round_keys(seed, epoch):
  """uint32 [_FEISTEL_ROUNDS]: the round keys of one epoch's permutation."""
  epoch_seed = tf.random.experimental.stateless_fold_in(seed, epoch, alg="philox")
  keys = tf.random.stateless_uniform([_FEISTEL_ROUNDS], epoch_seed, minval=None, maxval=None,
                                     dtype=tf.int32, alg="philox")
  return tf.bitcast(keys, tf.uint32)


def _permute(pos, keys, n):
  """Applies to each position (uint32 [b]) the permutation of range(n) its keys ([R, b]) pick.

  Cycle-walking re-encrypts values that land outside range(n), which keeps it a bijection
  there. The walk is serial per position (six rounds of multiplies per step) and takes as many
  steps as the batch's worst position, about 11 for 64 digits; XLA:CPU runs the batch one
  vector after another, so the walk is latency-bound. When a block fits in 16 bits, the two
  halves of the batch walk packed two to a uint32: every element carries two independent
  chains, which makes the walk ~1.8x faster (measured alone). Keys are round-major, each
  round's keys contiguous.
  """
  half = _half_bits(n)
  b = pos.shape[0]
  limit = tf.constant(n, tf.uint32)

  def encrypt(x, k):  # a bijection of range(2**(2 * half)): a balanced Feistel network
    return _encrypt(x, [k[r] for r in range(_FEISTEL_ROUNDS)], half)

  if 2 * half > 16 or b < 2:
    out = tf.while_loop(lambda x: tf.reduce_any(x >= limit),
                        lambda x: (tf.where(x >= limit, encrypt(x, keys), x),),
                        (encrypt(pos, keys),))[0]
    return tf.cast(out, tf.int32)
  m = (b + 1) // 2
  if b % 2:  # an even count: the last half gets a dummy position, dropped at the end
    pos, keys = tf.concat([pos, pos[:1]], 0), tf.concat([keys, keys[:, :1]], 1)
  low = tf.constant(0xFFFF, tf.uint32)

  def walk(x, k):
    return tf.where(x >= limit, encrypt(x, k), x)

  def body(p):  # slices inside the body keep the keys one loop input
    a, c = tf.bitwise.bitwise_and(p, low), tf.bitwise.right_shift(p, 16)
    return (_pack(walk(a, keys[:, :m]), walk(c, keys[:, m:])),)

  def pending(p):
    return tf.reduce_any((tf.bitwise.bitwise_and(p, low) >= limit)
                         | (tf.bitwise.right_shift(p, 16) >= limit))

  p = _pack(encrypt(pos[:m], keys[:, :m]), encrypt(pos[m:], keys[:, m:]))
  p = tf.while_loop(pending, body, (p,))[0]
  out = tf.concat([tf.bitwise.bitwise_and(p, low), tf.bitwise.right_shift(p, 16)], 0)
  return tf.cast(out[:b], tf.int32)


def _encrypt(x, keys, half):
  """The balanced Feistel network on uint32 x < 2**(2 * half), round keys `keys` (R values)."""
  mask = tf.constant((1 << half) - 1, tf.uint32)
  left, right = tf.bitwise.right_shift(x, half), tf.bitwise.bitwise_and(x, mask)
  for key in keys:
    f = tf.bitwise.bitwise_and(_mix(tf.bitwise.bitwise_xor(right, key)), mask)
    left, right = right, tf.bitwise.bitwise_xor(left, f)
  return tf.bitwise.bitwise_or(tf.bitwise.left_shift(left, half), right)


def _pack(a, c):
  return tf.bitwise.bitwise_or(a, tf.bitwise.left_shift(c, 16))
