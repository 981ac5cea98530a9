"""Replica scaling: the trainer on 1, 2 and 4 replicas, and whether they train alike.

Each model runs on 1, 2 and 4 logical CPU devices (the host CPU is split before TensorFlow
starts) with MirroredStrategy(ReductionToOneDevice), next to the yardstick `one_device`
(OneDeviceStrategy on tf.data input), every one the trainer itself (`build.build` +
`build.make_runner`, XLA as `execution.choose` decides): `mirrored_N` is what the trainer
runs by default (input_mode=auto: each replica draws on its device, per-replica update),
`mirrored_N_tfdata` the tf.data path (the distributed iterator and Keras' merge_call update).
Each first trains the same `check_steps` global steps from the same initial weights, and its
weight update and loss are compared with the yardstick's (augmented as in the default config;
SGD: Adam would amplify the kernels' batch-size-dependent rounding in near-zero gradients into
full-sized steps).
"""

import numpy as np
import tensorflow as tf

from benchmarks import harness
from benchmarks.variants import LOOP, Bench
from trainer.step import build
from trainer import config as config_lib

# Replicas sum in another order than one device, and oneDNN's kernels round differently at
# other batch sizes: float32 rounding, which SGD keeps at that size.
WEIGHT_RTOL = 1e-3


def xla_label(plan):
  """What a Execution compiles of the step: 'step', 'gradients' or 'none'."""
  return "step" if plan.step else ("gradients" if plan.gradients else "none")


def bench_scaling(size, data_dir, replica_counts, repeats, seconds, check_steps, log):
  """Throughput on each replica count, and the update after check_steps against the first's."""
  bench = Bench(size, data_dir)
  # The default schedule's shape (warmup over 10% of 600 steps) at an SGD-sized peak LR, so
  # the checked steps really move the weights.
  config = config_lib.override(bench.config, total_steps=600,
                               **{"optimizer.name": "sgd", "schedule.target_lr": 0.1})
  checks = {}

  def make(name, strategy, input_mode):
    def make_run():
      parts = bench.parts(config_lib.override(config, input_mode=input_mode), strategy)
      runner = build.make_runner(parts)
      initial = [v.numpy() for v in parts.model.trainable_variables]
      loss = runner.train(check_steps)["loss"]  # first call: compilation, and the check
      checks[name] = {"loss": loss,
                      "updates": [v.numpy() - w for v, w in
                                  zip(parts.model.trainable_variables, initial)],
                      "replicas": strategy.num_replicas_in_sync,
                      "input": parts.execution.input_mode,
                      "xla": xla_label(parts.execution)}
      return harness.in_loops(runner.train, LOOP), 1
    return make_run

  variants = [harness.Variant("one_device", make("one_device", bench.one, "tf.data"),
                              "OneDeviceStrategy(/cpu:0), tf.data", LOOP)]
  for n in replica_counts:
    strategy = tf.distribute.MirroredStrategy(
        [f"/cpu:{i}" for i in range(n)], cross_device_ops=tf.distribute.ReductionToOneDevice())
    for suffix, mode in (("", "auto"), ("_tfdata", "tf.data")):
      name = f"mirrored_{n}{suffix}"
      variants.append(harness.Variant(name, make(name, strategy, mode),
                                      f"MirroredStrategy on {n} logical CPU device(s), {mode}",
                                      LOOP))
  log(f"scaling: {size} global batch {bench.batch}, replicas {replica_counts}")
  harness.measure(variants, repeats, seconds, log)
  by_name = {v.name: v for v in variants}
  ref = checks["one_device"]
  out = {}
  for v in variants:
    c = checks[v.name]
    rel = max(float(np.linalg.norm(a - b) / np.linalg.norm(b))
              for a, b in zip(c["updates"], ref["updates"]))
    out[v.name] = dict(harness.summarise(v, bench.batch), replicas=c["replicas"], xla=c["xla"],
                       input=c["input"], loss_after_check=c["loss"], max_rel_update_diff=rel,
                       weights_match=bool(rel <= WEIGHT_RTOL),
                       loss_rel_diff=abs(c["loss"] - ref["loss"]) / abs(ref["loss"]),
                       time_vs_one_device=harness.speed_ratio(by_name["one_device"], v))
  # Time per step of the default path over the tf.data path's, per repeat (medians).
  time_ratios = {f"mirrored_{n}_vs_tfdata": harness.speed_ratio(
      by_name[f"mirrored_{n}_tfdata"], by_name[f"mirrored_{n}"]) for n in replica_counts}
  return {"model": bench.model, "global_batch_size": bench.batch, "check_steps": check_steps,
          "augment": bool(config.augment), "reference": "one_device",
          "tolerance": f"|dw - dw_ref| / |dw_ref| <= {WEIGHT_RTOL} for every variable, "
                       f"dw = weights after check_steps - initial weights",
          "time_ratios": time_ratios, "variants": out}
