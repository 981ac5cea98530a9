"""Replica scaling: the trainer on 1, 2 and 4 replicas, and whether they train alike.

Each model runs on 1, 2 and 4 logical CPU devices (the host CPU is split before TensorFlow
starts) with MirroredStrategy(ReductionToOneDevice), next to OneDeviceStrategy, every one the
trainer itself (`build.build` + `build.make_trainer`, tf.data input, XLA as
`compile_plan.choose` decides). Each first trains the same `check_steps` global steps from the
same initial weights, and its weight update and loss are compared with the reference's
(augmented as in the default config; SGD: Adam would amplify the kernels'
batch-size-dependent rounding in near-zero gradients into full-sized steps).
"""

import numpy as np
import tensorflow as tf

from benchmarks import harness
from benchmarks.variants import LOOP, Bench
from trainer import build
from trainer import config as config_lib

# Replicas sum in another order than one device, and oneDNN's kernels round differently at
# other batch sizes: float32 rounding, which SGD keeps at that size.
WEIGHT_RTOL = 1e-3


def xla_label(plan):
  """What a CompilePlan compiles of the step: 'step', 'gradients' or 'none'."""
  return "step" if plan.step else ("gradients" if plan.gradients else "none")


def bench_scaling(size, data_dir, replica_counts, repeats, seconds, check_steps, log):
  """Throughput on each replica count, and the update after check_steps against the first's."""
  bench = Bench(size, data_dir)
  # The default schedule's shape (warmup over 10% of 600 steps) at an SGD-sized peak LR, so
  # the checked steps really move the weights.
  config = config_lib.override(bench.config, total_steps=600, input_mode="tf.data",
                               **{"optimizer.name": "sgd", "schedule.target_lr": 0.1})
  checks = {}

  def make(name, strategy):
    def make_run():
      parts = bench.parts(config, strategy)
      trainer = build.make_trainer(parts)
      initial = [v.numpy() for v in parts.model.trainable_variables]
      loss = trainer.train(check_steps)["loss"]  # first call: compilation, and the check
      checks[name] = {"loss": loss,
                      "updates": [v.numpy() - w for v, w in
                                  zip(parts.model.trainable_variables, initial)],
                      "replicas": strategy.num_replicas_in_sync,
                      "xla": xla_label(parts.compile_plan)}
      return harness.in_loops(trainer.train, LOOP), 1
    return make_run

  variants = [harness.Variant("one_device", make("one_device", bench.one),
                              "OneDeviceStrategy(/cpu:0), tf.data", LOOP)]
  for n in replica_counts:
    strategy = tf.distribute.MirroredStrategy(
        [f"/cpu:{i}" for i in range(n)], cross_device_ops=tf.distribute.ReductionToOneDevice())
    variants.append(harness.Variant(f"mirrored_{n}", make(f"mirrored_{n}", strategy),
                                    f"MirroredStrategy on {n} logical CPU device(s), tf.data",
                                    LOOP))
  log(f"scaling: {size} global batch {bench.batch}, replicas {replica_counts}")
  harness.measure(variants, repeats, seconds, log)
  ref_name = f"mirrored_{replica_counts[0]}"
  ref = checks[ref_name]
  out = {}
  for v in variants:
    c = checks[v.name]
    rel = max(float(np.linalg.norm(a - b) / np.linalg.norm(b))
              for a, b in zip(c["updates"], ref["updates"]))
    out[v.name] = dict(harness.summarise(v, bench.batch), replicas=c["replicas"], xla=c["xla"],
                       loss_after_check=c["loss"], max_rel_update_diff=rel,
                       weights_match=bool(rel <= WEIGHT_RTOL),
                       loss_rel_diff=abs(c["loss"] - ref["loss"]) / abs(ref["loss"]))
  return {"model": bench.model, "global_batch_size": bench.batch, "check_steps": check_steps,
          "augment": bool(config.augment), "reference": ref_name,
          "tolerance": f"|dw - dw_ref| / |dw_ref| <= {WEIGHT_RTOL} for every variable, "
                       f"dw = weights after check_steps - initial weights",
          "variants": out}
