r"""The seed's recipe side by side: `Model.fit` the guide's ways against the trainer.

  python -m benchmarks.throughput --suite=seed [--quick] [--seed_models=...] [--seed_steps=N]

For each model (EfficientNetV2-B0, the model of configs/imagenet_efficientnetv2.py, and
ResNet-50, the model of the workstation config configs/cifar10_resnet.py), each config's own
optimizer (SGD, momentum 0.9, weight decay) and WarmupCosineDecay, on 64x64x3 uint8 images held
in memory (random pixels, 10 classes: `data_64`, given as `config.dataset`), global batch 32,
float32 on /cpu:0, the config's augmentation, the same number of global steps per repeat:

  fit_schedule   the guide's way: model.compile(jit_compile=True) + model.fit, the schedule
                 object as the optimizer's learning rate
  fit_callback   the guide's callback way: jit_compile=True, a float learning rate that
                 trainer.callbacks.WarmupCosineDecayCallback sets before every batch
  fit_spe        fit_schedule with steps_per_execution = the steps of a repeat
  fit_spe_nojit  (not the guide's) fit_spe with jit_compile=False: TF's kernels, as ours uses
  ours           the trainer: build.build + build.make_runner, Runner.train calls of
                 steps_per_loop = the steps of a repeat, compiled as execution.choose decides
                 (on the CPU a convolutional model is not XLA-compiled: XLA:CPU's convolutions
                 lose to oneDNN's, docs/benchmarks.md; only the batch draw is)

Model, optimizer and input of every variant come from the trainer's builder (`build.build`; the
fit variants read `data.train_dataset_fn`, the trainer's own batches), so the variants differ
only in how they run the steps. Each variant lives in a child process of its own, so its peak
RSS (VmHWM, `harness.peak_rss_mb`) is its own; the children are built and compiled one after the other (in
--quick all at once), then timed in interleaved rounds (every variant once per round, the
order reversed every other round) after one untimed warm-up round. Throughput is the median
over rounds (examples/s); compile is the first call (its steps at the steady rate taken out);
ours_vs_best_fit is the median over rounds of ours' speed over the fastest guide variant's.
"""

import json
import os
import statistics
import sys
import time

import numpy as np

from benchmarks import harness

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Model -> (config file, steps per repeat and per host call in the full run).
MODELS = {"efficientnetv2b0": ("imagenet_efficientnetv2.py", 10),
          "resnet50": ("cifar10_resnet.py", 4),
          "mlp": ("default.py", 2)}  # the --quick model
GUIDE = ("fit_schedule", "fit_callback", "fit_spe")
VARIANTS = (*GUIDE, "fit_spe_nojit", "ours")
NUM_CLASSES = 10
BATCH = 32


def _data(side, n=1024):
  rng = np.random.default_rng(0)
  return {"train": (rng.integers(0, 256, (n, side, side, 3), np.uint8),
                    rng.integers(0, NUM_CLASSES, n).astype(np.int32)),
          "eval": (rng.integers(0, 256, (BATCH, side, side, 3), np.uint8),
                   np.arange(BATCH, dtype=np.int32) % NUM_CLASSES),
          "num_classes": NUM_CLASSES}


def data_64():
  """`config.dataset = 'benchmarks.seed_recipe:data_64'`: 1024 random 64x64x3 images."""
  return _data(64)


def data_16():
  """The --quick data: 16x16x3."""
  return _data(16)


def config_for(model, side, steps):
  """The model's config file with the benchmark's data, batch, precision and loop length."""
  from trainer import config as config_lib  # pylint: disable=g-import-not-at-top
  base = config_lib.load(os.path.join(REPO, "configs", MODELS[model][0]))
  return config_lib.override(
      base, model=model, dataset=f"benchmarks.seed_recipe:data_{side}", data_dir="",
      image_size=0, global_batch_size=BATCH, total_steps=100_000, steps_per_loop=steps,
      eval_every=0, checkpoint_every=0, mixed_precision="float32")


# -- the child: one variant ---------------------------------------------------------------------

def _child(spec):
  """Builds and compiles one variant, then runs the parent's commands from stdin."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  from absl import logging  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from benchmarks.variants import _epoch_timer  # pylint: disable=g-import-not-at-top
  # pylint: disable=g-import-not-at-top
  from trainer import config as config_lib
  from trainer import data
  from trainer.distribute import precision
  from trainer.schedules import callbacks
  from trainer.step import build
  from trainer.base.compat import keras  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.ERROR)  # the callback's steps_per_execution warning etc.

  name, steps = spec["variant"], spec["steps"]
  config = config_for(spec["model"], spec["side"], steps)
  described = {}

  def parts_on(strategy, schedule=None):
    run = config_lib.resolve(config, strategy)
    with precision.global_policy(run.policy):
      parts = build.build(run, strategy,
                          schedule=run.plan.peak_lr if schedule == "float" else None)
    return run.info, run.plan, parts

  def make_fit():
    spe = steps if name.startswith("fit_spe") else 1
    jit = name != "fit_spe_nojit"
    with tf.device("/cpu:0"):  # Model.fit's own placement, outside any strategy's scope
      info, plan, parts = parts_on(tf.distribute.get_strategy(),
                                   "float" if name == "fit_callback" else None)
      model = parts.model
      model.compile(optimizer=parts.optimizer,
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    metrics=[keras.metrics.SparseCategoricalAccuracy()],
                    jit_compile=jit, steps_per_execution=spe)
    dataset = data.train_dataset_fn(info, config.global_batch_size, config.seed, config.augment,
                                    jit=config.jit_compile)(tf.distribute.InputContext())
    timer = _epoch_timer()  # first in the list: the LR callback's first call is timed too
    extra = ([callbacks.WarmupDecayCallback(**plan.schedule_kwargs())]
             if name == "fit_callback" else [])
    described["xla"] = ("each step one XLA program (jit_compile=True)" if jit
                        else "nothing (jit_compile=False)")

    def run(n):
      with tf.device("/cpu:0"):
        model.fit(dataset, epochs=1, steps_per_epoch=n, verbose=0, callbacks=[timer, *extra])
      return timer.seconds
    return run, spe

  def make_ours():
    _, _, parts = parts_on(tf.distribute.OneDeviceStrategy("/cpu:0"))
    described["xla"] = parts.execution.describe()
    runner = build.make_runner(parts)
    return harness.in_loops(runner.train, steps), 1  # train() ends with a host read

  variant = harness.Variant(name, make_ours if name == "ours" else make_fit, name,
                            spl=1 if name in ("fit_schedule", "fit_callback") else steps)
  start = time.perf_counter()
  variant.compile()
  harness.reply(ready=True, build_and_first_call_s=time.perf_counter() - start,
         first_call_s=variant.info["first_call_s"], granularity=variant.granularity,
         rss_mb_after_first_call=variant.info["rss_mb_after_first_call"],
         xla=described["xla"])
  for line in sys.stdin:
    command, *args = line.split()
    if command == "run":  # one repeat of n steps; "warm" ones are not kept
      variant.steps = int(args[0])
      variant.time_once()
      harness.reply(seconds=variant.times.pop())
    elif command == "exit":
      harness.reply(peak_rss_mb=harness.peak_rss_mb())
      harness.exit_without_teardown(0)






# -- the parent ---------------------------------------------------------------------------------

def bench_model(model, side, steps, repeats, log, parallel=False):
  """All variants of one model, each in its own process, timed in interleaved rounds."""
  log(f"seed: {model} {side}x{side}x3, batch {BATCH}, {steps} steps per repeat, "
      f"{len(VARIANTS)} variants in child processes")
  children, ready = [], {}
  for name in VARIANTS:
    children.append(harness.Child("benchmarks.seed_recipe", {
        "variant": name, "model": model, "side": side, "steps": steps}, name))
    if not parallel:  # one compile at a time: compile times not inflated by each other
      ready[name] = children[-1].read()
      log(f"  compiled {name}: first call {ready[name]['first_call_s']:.1f} s")
  for c in children:
    if c.name not in ready:
      ready[c.name] = c.read()
  for c in children:  # warm-up round, untimed
    c.ask(f"run {steps}")
  times = {c.name: [] for c in children}
  for r in range(repeats):
    for c in (children if r % 2 == 0 else children[::-1]):
      times[c.name].append(c.ask(f"run {steps}")["seconds"])
    log(f"  round {r + 1}/{repeats}")
  memory = {c.name: c.close() for c in children}
  variants = {}
  for name in VARIANTS:
    per_step = statistics.median(times[name]) / steps
    info = ready[name]
    variants[name] = {
        "examples_per_sec": statistics.median(BATCH * steps / t for t in times[name]),
        "us_per_step": 1e6 * per_step, "repeats_s": times[name],
        "compile_s": max(0.0, info["first_call_s"] - per_step * info["granularity"]),
        "first_call_s": info["first_call_s"],
        "build_and_first_call_s": info["build_and_first_call_s"],
        "peak_rss_mb": memory[name]["peak_rss_mb"],
        "xla": info["xla"]}
  best = max(GUIDE, key=lambda k: variants[k]["examples_per_sec"])
  best_any = max((k for k in VARIANTS if k != "ours"),
                 key=lambda k: variants[k]["examples_per_sec"])
  ratio = lambda a, b: statistics.median(tb / ta for ta, tb in zip(times[a], times[b]))  # noqa
  return {"model": model, "input_shape": [side, side, 3], "global_batch_size": BATCH,
          "steps_per_repeat": steps, "repeats": repeats, "best_guide_fit": best,
          "variants": variants,
          "ratios": {"ours_vs_best_guide_fit": ratio("ours", best),
                     "ours_vs_best_fit": ratio("ours", best_any),
                     "fit_spe_jit_vs_nojit": ratio("fit_spe", "fit_spe_nojit")},
          "load_average": os.getloadavg()}


def bench_seed(models, steps, repeats, log, quick=False):
  """The seed suite: {'models': {model: bench_model(...)}, load averages}."""
  load = os.getloadavg()
  out = {"models": {}, "load_average_at_start": load}
  for model in models:
    side = 16 if quick else 64
    n = steps or MODELS[model][1]
    out["models"][model] = bench_model(model, side, n, repeats, log, parallel=quick)
  out["load_average_at_end"] = os.getloadavg()
  return out


def format_markdown(seed):
  """The seed suite's tables for docs/benchmarks.md."""
  lines = []
  for m in seed["models"].values():
    side = m["input_shape"][0]
    lines += [f"**The seed's recipe, {m['model']}** ({side}x{side}x3, global batch "
              f"{m['global_batch_size']}, {m['steps_per_repeat']} steps per repeat, median of "
              f"{m['repeats']} interleaved rounds, each variant in its own process; load "
              f"average {m['load_average'][0]:.1f} at its end)", "",
              "| variant | XLA compiles | examples/s | s/step | compile s | peak RSS MB |",
              "| --- | --- | ---: | ---: | ---: | ---: |"]
    for k, v in m["variants"].items():
      lines.append(f"| `{k}` | {v['xla']} | {v['examples_per_sec']:,.1f} | "
                   f"{v['us_per_step'] / 1e6:.3f} | {v['compile_s']:.1f} | "
                   f"{v['peak_rss_mb']:,.0f} |")
    r = m["ratios"]
    lines += ["", f"ours / best guide fit (`{m['best_guide_fit']}`) "
                  f"**{r['ours_vs_best_guide_fit']:.2f}**; ours / best fit of all "
                  f"**{r['ours_vs_best_fit']:.2f}**; fit_spe XLA / no XLA "
                  f"**{r['fit_spe_jit_vs_nojit']:.2f}**", ""]
  return "\n".join(lines)


def format_table(seed):
  lines = []
  for m in seed["models"].values():
    lines.append(f"\nseed recipe, {m['model']} {m['input_shape']} batch "
                 f"{m['global_batch_size']}, {m['steps_per_repeat']} steps per repeat")
    for k, v in m["variants"].items():
      lines.append(f"  {k:14s} {v['examples_per_sec']:9.1f} ex/s  compile "
                   f"{v['compile_s']:6.1f} s  peak RSS {v['peak_rss_mb']:6.0f} MB  XLA: {v['xla']}")
    lines.append("  " + ", ".join(f"{k} {v:.3g}" for k, v in m["ratios"].items()))
  return "\n".join(lines)


if __name__ == "__main__":
  _child(json.loads(sys.argv[1]))
