"""One replica's update, applied or (with `nonfinite='skip'`) skipped when the gradients of the
global batch are not all finite.

A skipped update changes no weight, optimizer slot or weight average, but the step is
consumed: `iterations` still advances, so the schedule goes on and the next step draws the
next batch (as optax's `apply_if_finite` skips and counts). The decision is made on every
replica from the same all-reduced flag, so the copies stay identical, inside the compiled step
(no host sync). Counted in `RunState.skipped_updates` and `consecutive_skips`.

Where it branches:
- one replica, or a strategy whose update needs no `merge_call` (TPU; the mirrored
  device-resident path under `local_update`): a `tf.cond` in the replica context;
- MirroredStrategy / MultiWorkerMirroredStrategy on tf.data: Keras' `apply_gradients`
  all-reduces through `merge_call`, which TF refuses inside a `tf.cond` in a replica context,
  so the cond runs in the cross-replica context and calls the update on every replica, as
  Keras' own LossScaleOptimizer does (keras/src/optimizers/loss_scale_optimizer.py
  `_tf_apply`);
- a LossScaleOptimizer (mixed_float16) skips a non-finite update itself and lowers its loss
  scale (its `iterations` does not advance then): it is left to do that, and the step is
  consumed and counted after it.
"""

import tensorflow as tf


def local_finite(grads):
  """Whether every gradient (None: none) of this replica is finite."""
  flags = [tf.reduce_all(tf.math.is_finite(tf.convert_to_tensor(g))) for g in grads
           if g is not None]
  return tf.reduce_all(tf.stack(flags)) if flags else tf.constant(True)


def finite_everywhere(local):
  """Whether every replica's gradients are finite (then so are the all-reduced ones): the
  same answer on every replica."""
  ctx = tf.distribute.get_replica_context()
  if ctx is None or ctx.num_replicas_in_sync == 1:
    return local
  bad = ctx.all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(local, tf.float32))
  return tf.equal(bad, 0.0)


def is_loss_scaled(optimizer):
  return getattr(optimizer, "inner_optimizer", None) is not None


def apply_or_skip(optimizer, grads, variables, ema, finite):
  """Applies `grads` to `variables` (and updates the EMA) if `finite`, else only advances
  `iterations`. In a replica context."""

  def apply(grads):
    optimizer.apply_gradients(zip(grads, variables))
    if ema is not None:
      ema.update(optimizer.iterations)
    return tf.constant(True)

  def skip():
    optimizer.iterations.assign_add(1)
    return tf.constant(False)

  if is_loss_scaled(optimizer):
    optimizer.apply_gradients(zip(grads, variables))  # skips a non-finite one itself
    if ema is not None:
      ema.update(optimizer.iterations, applied=finite)
    optimizer.iterations.assign_add(1 - tf.cast(finite, optimizer.iterations.dtype))
    return
  if tf.__internal__.distribute.strategy_supports_no_merge_call():
    tf.cond(finite, lambda: apply(grads), skip)
    return

  def cross_replica(strategy, finite, grads):
    finite = strategy.experimental_local_results(finite)[0]  # the same on every replica

    def apply_everywhere():
      strategy.extended.call_for_each_replica(apply, args=(grads,))
      return tf.constant(True)

    tf.cond(finite, apply_everywhere, skip)

  tf.distribute.get_replica_context().merge_call(cross_replica, args=(finite, grads))


def count(state, finite):
  """Counts a skipped update in the run state (this replica's copy)."""
  skipped = 1 - tf.cast(finite, tf.int64)
  state.skipped_updates.assign_add(skipped)
  state.consecutive_skips.assign((state.consecutive_skips + 1) * skipped)
