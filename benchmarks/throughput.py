r"""Training throughput of the trainer's loop against its references, in one interleaved run.

  python -m benchmarks.throughput [--suite=all] [--out_dir=runs/benchmarks] [--data_dir=DIR]
      [--quick]

Suites (`--suite=variants,replicas,seed,seed_resnet50,pipeline`, default `all`). One full run
on 2 quiet cores took 27 min: variants+replicas 10, seed+seed_resnet50 14, pipeline 4 (on a
loaded machine seed_resnet50 alone took ~15: its XLA-compiled fit variants are slow on CPU):

  variants   every variant of `benchmarks.variants` on the mlp and the small CNN (below)
  replicas   replica scaling (`benchmarks.scaling`, below)
  seed       the seed's recipe side by side: EfficientNetV2-B0 trained by Model.fit the
             guide's ways and by the trainer (`benchmarks.seed_recipe`)
  seed_resnet50  the same for ResNet-50 (the workstation config's model)
  pipeline   the streamed input pipeline at ImageNet shape per host core, and the host cores
             that would feed EfficientNet-B0 on 8 accelerators (`benchmarks.imagenet_pipeline`)

For each model size (the overhead-bound `mlp` at global batch 64 and the default `small_cnn` at
128, both on the offline digits with the default config's augmentation, AdamW and
WarmupDecay), every variant of `benchmarks.variants` trains the same model on the same
data with the same schedule, on /cpu:0. "ours" is the trainer itself: `build.build` +
`build.make_runner`, timed as `Runner.train` calls. All variants are built and compiled
first, then timed in interleaved repeats (`benchmarks.harness`); a variant's throughput is the
median over its repeats.

"limit" is the fastest of the three limit_* variants (one fixed in-memory batch). The target
ratios ours_vs_limit and schedule_vs_constant_in_loop are medians of per-repeat speed ratios
over the interleaved repeats and --pair_repeats more of ours, its constant-LR twin and the
limit alone: single repeats scatter on a shared machine, two timings seconds apart much less.

The schedule's cost: the optimizer evaluates the schedule E times per step (AdamW: once for
the update and once per decayed variable; counted at trace time); `schedule_cost_us` times E
evaluations in a loop compiled like ours against constants, and schedule_vs_constant =
1 - that / ours' time per step. The in-loop A/B of ours_spl100 and ours_const_lr_spl100 is
reported as schedule_vs_constant_in_loop; it is noisier than the cost it measures.

Loops take their step count as a tensor, so a call may run fewer steps than steps_per_loop
with the same compiled program; repeats use whole loops whenever a repeat is longer than one
loop. Compile time is the first host call (one step; steps_per_execution steps for fit) minus
one step's steady-state time. Memory is cumulative (one process for all variants).

Replica scaling (`benchmarks.scaling`): the trainer on 1, 2 and 4 logical CPU devices with
MirroredStrategy, on its default device-resident input and on tf.data, next to the yardstick
OneDeviceStrategy on tf.data, each checked to train to the same update; the targets bound the
time per step against the yardstick (MLP) and against the tf.data path (small CNN).

Writes `<out_dir>/throughput.json` and `throughput.md` (the tables of docs/benchmarks.md,
`benchmarks.report`, for the suites run) and prints a table with PASS/FAIL per target.
"""

import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import harness, imagenet_pipeline, report, scaling, seed_recipe  # noqa: E402
from benchmarks.variants import LIMITS, LOOP, Bench, schedule_cost_us  # noqa: E402
from trainer.distribute import strategy as strategy_lib  # noqa: E402

NUM_CPU_DEVICES = 4
# seed and seed_resnet50 are one table in two suites: each stays under 10 minutes on 2 cores.
SUITES = ("variants", "replicas", "seed", "seed_resnet50", "pipeline")

FLAGS = flags.FLAGS
flags.DEFINE_string("out_dir", "runs/benchmarks", "Where throughput.json goes.")
flags.DEFINE_string("data_dir", "", "TFDS data_dir for digits (prepared offline on first use); "
                    "default: <tempdir>/trainer_benchmarks/tfds.")
flags.DEFINE_bool("quick", False, "Smoke run for tests: mlp only, 1 repeat of a few steps, "
                  "scaling on 1 and 2 replicas with the mlp; seed: the mlp on 16x16 images, "
                  "2 steps, 1 round; pipeline: 96 images, batch 16, 1 pass on 1 core.")
flags.DEFINE_integer("repeats", 5, "Timed repeats per variant (the median is reported).")
flags.DEFINE_integer("pair_repeats", 16, "Extra repeats of ours, its constant-LR twin and the "
                     "limit alone, alternating, after the interleaved ones: the ratios the "
                     "targets check are medians of per-repeat ratios, because single repeats "
                     "scatter on a shared machine.")
flags.DEFINE_float("seconds", 0.4, "Target seconds per timed repeat of each variant.")
flags.DEFINE_list("models", ["mlp", "small_cnn"], "Model sizes to measure.")
flags.DEFINE_list("replicas", ["1", "2", "4"], "Replica counts for the scaling section "
                  "('' to skip it).")
flags.DEFINE_list("scaling_models", ["mlp", "small_cnn"], "Model sizes of the scaling "
                  "section: the mlp shows the per-step overhead, the CNN the compute.")
flags.DEFINE_integer("check_steps", 20, "Global steps of the replica correctness check.")
flags.DEFINE_list("suite", ["all"], f"Suites to run: 'all' or some of {', '.join(SUITES)}.")
flags.DEFINE_list("seed_models", ["efficientnetv2b0"], "Models of the seed suite (the "
                  "seed_resnet50 suite adds resnet50).")
flags.DEFINE_integer("seed_steps", 0, "Steps per repeat (= steps_per_execution and "
                     "steps_per_loop) of the seed suite; 0: per model (seed_recipe.MODELS).")
flags.DEFINE_integer("seed_repeats", 3, "Interleaved timed rounds of the seed suite.")
flags.DEFINE_integer("pipeline_images", 2560, "JPEG files the pipeline suite generates.")
flags.DEFINE_integer("pipeline_batch", 128, "Batch size of the pipeline suite.")
flags.DEFINE_integer("pipeline_repeats", 3, "Interleaved timed passes of the pipeline suite.")
flags.DEFINE_string("profile", "", "A variant name (e.g. ours_spl100): after timing, "
                    "trace one repeat of it with the TF profiler into <out_dir>/profile/<model>.")


def bench_model(size, data_dir, repeats, seconds, log, profile="", pair_repeats=0):
  """Every variant of one model size: throughputs, the target ratios and a breakdown."""
  bench = Bench(size, data_dir)
  variants = bench.variants()
  log(f"{size}: global batch {bench.batch}, {len(variants)} variants")
  harness.measure(variants, repeats, seconds, log,
                  same_steps=[("ours_const_lr_spl100", "ours_spl100")])
  by = {v.name: v for v in variants}
  limit = min(LIMITS, key=lambda k: harness.seconds_per_step(by[k]))
  group = [by["ours_const_lr_spl100"], by["ours_spl100"], by[limit]]
  harness.alternate(group, pair_repeats)
  if pair_repeats:
    log(f"  {pair_repeats} more repeats of " + ", ".join(v.name for v in group))
  res = {v.name: harness.summarise(v, bench.batch) for v in variants}
  eps = {k: r["examples_per_sec"] for k, r in res.items()}
  us = {k: r["us_per_step"] for k, r in res.items()}

  ours = bench.ours_parts  # its schedule counted its evaluations when the loop was traced
  evaluations = type(ours.schedule).calls
  schedule = {"evaluations_per_step": evaluations,
              "us_per_step": schedule_cost_us(ours.schedule, evaluations,
                                              ours.execution.whole_loop)}
  log(f"  schedule: {evaluations} evaluations per step cost {schedule['us_per_step']:.2f} us")
  ratios = {
      "ours_vs_limit": harness.speed_ratio(by["ours_spl100"], by[limit]),
      "ours_vs_orbit": eps["ours_spl100"] / eps["orbit_spl100"],
      "ours_vs_fit_spe1": eps["ours_spl100"] / eps["fit_spe1"],
      "schedule_vs_constant": 1 - schedule["us_per_step"] / us["ours_spl100"],
      "schedule_vs_constant_in_loop": harness.speed_ratio(by["ours_spl100"],
                                                          by["ours_const_lr_spl100"]),
      "ours_vs_fit_spe100": eps["ours_spl100"] / eps["fit_spe100"],
      # Examples/s with 4 micro-batches per update over 1: what accumulation costs per example.
      "accum4_vs_ours": eps["ours_accum4_spl100"] / eps["ours_spl100"],
      # limit_no_xla is the Orbit-style loop on one in-memory batch: no input cost at all.
      "ours_vs_orbit_on_one_batch": eps["ours_spl100"] / eps["limit_no_xla"],
      "ours_tfdata_spl100_vs_limit": eps["ours_tfdata_spl100"] / eps[limit],
  }
  breakdown = {
      "ours_us_per_step": us["ours_spl100"],
      "step_alone_whole_loop_xla_us": us["limit_loop_xla"],
      "step_alone_per_step_xla_us": us["limit_step_xla"],
      "device_input_alone_us": us["input_device"],
      "tfdata_input_alone_us": us["input_tfdata"],
      "ours_minus_limit_us": us["ours_spl100"] - us[limit],
  }
  if profile:
    _profile(by[profile], os.path.join(FLAGS.out_dir, "profile", size), log)
  return {"model": bench.model, "global_batch_size": bench.batch, "limit": limit,
          "whole_loop_xla": ours.execution.whole_loop,
          "compile_plan": ours.execution.describe(), "schedule": schedule,
          "variants": res, "ratios": ratios, "breakdown_us": breakdown}


def _profile(variant, logdir, log):
  """Traces one repeat of `variant` with the TF profiler into `logdir`."""
  tf.io.gfile.makedirs(logdir)
  tf.profiler.experimental.start(logdir)
  try:
    variant.run(variant.steps)
  finally:
    tf.profiler.experimental.stop()
  log(f"  traced {variant.name} into {logdir}")


def resolve_suites(names):
  """The suites `--suite` names, in SUITES order ('all': every one)."""
  names = {n.strip() for n in names if n.strip()}
  unknown = names - {"all", *SUITES}
  if unknown or not names:
    raise app.UsageError(f"--suite: unknown {', '.join(sorted(unknown)) or 'empty list'}; "
                         f"give all or some of {', '.join(SUITES)}")
  return [s for s in SUITES if "all" in names or s in names]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  suites = resolve_suites(FLAGS.suite)
  strategy_lib.setup_cpu_devices(NUM_CPU_DEVICES)  # before any TF op
  data_dir = FLAGS.data_dir or os.path.join(tempfile.gettempdir(), "trainer_benchmarks", "tfds")
  quick = FLAGS.quick
  repeats = 1 if quick else FLAGS.repeats
  seconds = 0.0 if quick else FLAGS.seconds
  pair_repeats = 0 if quick else FLAGS.pair_repeats
  models = ["mlp"] if quick else FLAGS.models
  replicas = [1, 2] if quick else [int(n) for n in FLAGS.replicas if n]
  scaling_models = ["mlp"] if quick else FLAGS.scaling_models
  check_steps = 4 if quick else FLAGS.check_steps
  start = time.perf_counter()
  log = lambda s: print(f"[{time.perf_counter() - start:5.0f} s] {s}", flush=True)  # noqa
  results = {"machine": report.machine(),
             "settings": {"suites": suites, "repeats": repeats, "seconds_per_repeat": seconds,
                          "quick": quick,
                          "pair_repeats": pair_repeats, "steps_per_loop": LOOP,
                          "cpu_devices": NUM_CPU_DEVICES,
                          "command": " ".join(["python -m benchmarks.throughput",
                                               *sys.argv[1:]])},
             "models": {}}
  for size in models if "variants" in suites else ():
    results["models"][size] = bench_model(size, data_dir, repeats, seconds, log, FLAGS.profile,
                                          pair_repeats)
  if replicas and "replicas" in suites:
    results["scaling"] = {size: scaling.bench_scaling(size, data_dir, replicas, repeats,
                                                      seconds, check_steps, log)
                          for size in scaling_models}
  seed_models = ((FLAGS.seed_models if "seed" in suites else [])
                 + (["resnet50"] if "seed_resnet50" in suites else []))
  if seed_models:
    results["seed"] = seed_recipe.bench_seed(
        ["mlp"] if quick else seed_models, 2 if quick else FLAGS.seed_steps,
        1 if quick else FLAGS.seed_repeats, log, quick=quick)
  if "pipeline" in suites:
    results["pipeline"] = imagenet_pipeline.bench_pipeline(
        96 if quick else FLAGS.pipeline_images, 16 if quick else FLAGS.pipeline_batch,
        1 if quick else FLAGS.pipeline_repeats, log, core_counts=[1] if quick else None)
  results["targets"] = report.targets(results)
  results["seconds_total"] = time.perf_counter() - start
  results["machine"]["load_average_at_end"] = os.getloadavg()
  path = report.write(results, FLAGS.out_dir)
  print(report.format_table(results))
  print(f"\nwrote {path} in {results['seconds_total']:.0f} s")
  harness.exit_without_teardown(0)


if __name__ == "__main__":
  logging.set_verbosity(logging.WARNING)
  app.run(main)
