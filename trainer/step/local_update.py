"""A Keras 3 optimizer update that touches only this replica's copies: no `merge_call`.

Under `MirroredStrategy`, Keras 3's `optimizer.apply` all-reduces the gradients and updates the
variables through `merge_call` (keras/src/backend/tensorflow/optimizer.py:
`_distributed_tf_update_step` and `_all_reduce_sum_gradients`; keras-team/keras#17187). TF
refuses a `merge_call` inside a nested `tf.function(jit_compile=True)`, so the update cannot be
XLA-compiled, and it runs as uncompiled ops per variable per device, on every step.

The replica step of the mirrored device-resident path (`loop.make_replica_train_loop`)
all-reduces the gradients itself, outside XLA (XLA:CPU has no collectives: "Collectives are not
yet implemented for CPU devices when compiling with XLA"), and then updates each replica's
copies with an XLA-compiled `optimizer.apply` traced inside `local_update(...)`. Three private
hooks make that update local, each applied only while it is traced and restored afterwards:

1. `strategy.extended._use_merge_call` returns False: TF's own switch, used by its tests
   (tensorflow/python/distribute/strategy_combinations.py,
   `_mirrored_strategy_with_no_merge_call`). Keras' `maybe_merge_call` then calls the update
   directly, and `extended.update` in a replica context updates the local copy only.
2. The optimizer's `_all_reduce_sum_gradients` is the identity: the gradients are reduced.
3. `optimizer.iterations` (aggregation ONLY_FIRST_REPLICA, which always `merge_call`s in a
   replica context: values.apply_aggregation_replica_context) is aggregated as NONE, so each
   replica increments its own copy, to the same value.

Every replica applies the same all-reduced gradients with the same program, so the copies stay
identical (tested bit for bit against one replica in tests/test_mirrored_device.py). Pinned to
the TF 2.21 / Keras 3 internals named above; the test fails loudly if they move.
"""

import contextlib

import tensorflow as tf

from trainer.base.compat import optimizer_chain


@contextlib.contextmanager
def local_update(strategy, optimizer):
  """Inside: `optimizer.apply(reduced_grads, variables)`, traced in a replica context, updates
  only this replica's copies, with no merge_call and no collective (so XLA can compile it)."""
  ext = strategy.extended
  had_switch, old_switch = "_use_merge_call" in vars(ext), vars(ext).get("_use_merge_call")
  iterations = optimizer.iterations.value  # the tf MirroredVariable behind the Keras variable
  old_aggregation = iterations._aggregation  # pylint: disable=protected-access
  ext._use_merge_call = lambda: False  # pylint: disable=protected-access
  for o in optimizer_chain(optimizer):
    o._all_reduce_sum_gradients = list  # pylint: disable=protected-access
  iterations._aggregation = tf.VariableAggregation.NONE  # pylint: disable=protected-access
  try:
    yield
  finally:
    iterations._aggregation = old_aggregation  # pylint: disable=protected-access
    for o in optimizer_chain(optimizer):
      del o._all_reduce_sum_gradients  # pylint: disable=protected-access
    if had_switch:
      ext._use_merge_call = old_switch  # pylint: disable=protected-access
    else:
      del ext._use_merge_call  # pylint: disable=protected-access
