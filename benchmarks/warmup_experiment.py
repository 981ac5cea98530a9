r"""Large-batch training with and without learning-rate warmup (Goyal et al. 2017, at CPU scale).

  python -m benchmarks.warmup_experiment [--out_dir=runs/benchmarks] [--data_dir=DIR] [--quick]

The default model (small_cnn) and optimizer (AdamW) on the offline digits at a large global
batch (512, 16x the base), its peak LR scaled linearly from a small-batch base
(`schedule.base_batch_size`: peak = base_lr * global_batch / base_batch). Two arms that differ
only in the schedule's first steps:

  warmup      linear warmup over --warmup_steps from the base LR up to the scaled peak (the
              paper's "gradual warmup"), then cosine decay to 0
  no_warmup   the scaled peak from step 0, then the same cosine decay

and, unless --accum_micro_batch=0, their twins warmup_accum and no_warmup_accum: the same
global batch reached by gradient accumulation (`grad_accum_steps` = global batch /
--accum_micro_batch micro-batches per update, e.g. 16 x 32 = 512), everything else equal. The
summed micro-batch gradients are the full-batch gradient up to float rounding (small_cnn has
no BatchNorm or dropout), so a twin should track its arm; the table gives each twin's
|final eval accuracy difference| per seed and the wall time per run (accumulation runs k
small steps one after another, more host time per example on CPU). --quick leaves the twins
out unless --accum_micro_batch is given.

Each arm runs for every seed in --seeds through `trainer.run.train.train_and_evaluate` with config
overrides (fresh workdirs), and the curves are read back from the workdirs' TensorBoard
events (train loss/accuracy per loop of --steps_per_loop steps, eval at the end). A run
diverges when it raises NonFiniteLossError or a logged train loss exceeds --divergence_loss.
The worst loss spike of a run is the largest rise of the logged train loss above its lowest
value so far. A run is stuck at chance when it ends, without diverging, at a train loss above
0.95 ln 10 (a network whose ReLUs all died outputs constant logits: loss exactly ln 10).

Writes to <out_dir>: warmup_experiment.png (loss, accuracy and LR curves of every arm and
seed; twins dashed), warmup_experiment.md (the table) and warmup_experiment.json; workdirs under
<out_dir>/warmup_runs/.
"""

import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402
import tensorflow as tf  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARMS = ("warmup", "no_warmup")  # each with an accumulating twin "<arm>_accum" (optional)
ACCUM = "_accum"
STUCK = 0.95  # a final train loss above STUCK * ln(10) is chance level (10 classes)
COLORS = {"warmup": "tab:blue", "no_warmup": "tab:red"}

FLAGS = flags.FLAGS
flags.DEFINE_string("out_dir", "runs/benchmarks", "Where the PNG, table, JSON and runs go.")
flags.DEFINE_string("data_dir", "", "TFDS data_dir for digits (prepared offline on first use); "
                    "default: <tempdir>/trainer_benchmarks/tfds.")
flags.DEFINE_bool("quick", False, "Smoke run for tests: one seed, a few steps, small batch.")
flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "Seeds; each runs both arms.")
flags.DEFINE_integer("global_batch_size", 512, "The large global batch.")
flags.DEFINE_integer("base_batch_size", 32, "The small batch the base LR is tuned for.")
flags.DEFINE_float("base_lr", 0.002, "Peak LR at base_batch_size (the default config trains at "
                   "3e-3 at batch 128); scaled linearly to the large batch.")
flags.DEFINE_integer("total_steps", 300, "Global steps per run (~107 epochs at batch 512).")
flags.DEFINE_integer("warmup_steps", 30, "Warmup length of the warmup arm, in global steps "
                     "(10% of the run, ~11 epochs at batch 512).")
flags.DEFINE_integer("steps_per_loop", 10, "Global steps per host call = curve resolution.")
flags.DEFINE_enum("optimizer", "adamw", ["sgd", "adamw"], "adamw (the default config's) or "
                  "sgd with momentum (the paper's; see docs/benchmarks.md for what it shows).")
flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
flags.DEFINE_float("weight_decay", 1e-4, "Decoupled weight decay.")
flags.DEFINE_integer("accum_micro_batch", 32, "Micro-batch of the accumulating twins (the "
                     "global batch must be a multiple); 0 = no twins. --quick: 0 unless given.")
flags.DEFINE_float("divergence_loss", 2 * math.log(10), "A logged train loss above this is a "
                   "divergence (2 x the loss of a uniform guess over 10 classes).")


def arm_config(arm, seed, data_dir, s):
  """The default config with the overrides of one arm (`s`: the experiment's settings)."""
  from trainer import config as config_lib
  base = config_lib.load(os.path.join(REPO, "configs", "default.py"))
  warmup = arm.removesuffix(ACCUM) == "warmup"
  return config_lib.override(
      base, data_dir=data_dir, seed=seed, global_batch_size=s["global_batch_size"],
      grad_accum_steps=s["grad_accum_steps"] if arm.endswith(ACCUM) else 1,
      total_steps=s["total_steps"], steps_per_loop=s["steps_per_loop"], eval_every=0,
      checkpoint_every=0,
      **{"optimizer.name": s["optimizer"], "optimizer.momentum": s["momentum"],
         "optimizer.weight_decay": s["weight_decay"],
         "schedule.base_batch_size": s["base_batch_size"], "schedule.target_lr": s["base_lr"],
         "schedule.warmup_fraction": 0.0,
         "schedule.warmup_steps": s["warmup_steps"] if warmup else 0,
         # Goyal et al.: warm up from the small-batch LR to the scaled one.
         "schedule.start_lr": s["base_lr"] if warmup else 0.0,
         "schedule.hold": 0, "schedule.final_lr": 0.0})


def worst_spike(losses):
  """Largest rise of a loss curve above its lowest value so far (0 for a monotone curve)."""
  best, worst = math.inf, 0.0
  for loss in losses:
    if math.isfinite(best):
      worst = max(worst, loss - best)
    best = min(best, loss)
  return worst


def run_one(arm, seed, data_dir, settings, runs_dir, log):
  from trainer.run import train
  from trainer.base.errors import NonFiniteLossError
  from trainer.run.summaries import read_scalars
  workdir = os.path.join(runs_dir, f"{arm}_seed{seed}")
  shutil.rmtree(workdir, ignore_errors=True)  # a fresh run, never a resume
  config = arm_config(arm, seed, data_dir, settings)
  start = time.perf_counter()
  nonfinite, result = False, {}
  try:
    result = train.train_and_evaluate(config, workdir, tf.distribute.OneDeviceStrategy("/cpu:0"),
                                      progress=False)  # one line per arm, below
  except NonFiniteLossError as e:
    nonfinite = True
    log(f"  {arm} seed {seed}: {e}")
  loss = read_scalars(workdir, "train", "loss")
  run = {
      "arm": arm, "seed": seed, "seconds": time.perf_counter() - start,
      "nonfinite": nonfinite,
      "train_loss": loss,
      "train_accuracy": read_scalars(workdir, "train", "accuracy"),
      "learning_rate": read_scalars(workdir, "train", "learning_rate"),
      "eval_loss": result.get("loss", math.nan),
      "eval_accuracy": result.get("accuracy", math.nan),
      "worst_spike": worst_spike(list(loss.values())),
      "max_loss": max(loss.values(), default=math.nan),
  }
  run["diverged"] = nonfinite or run["max_loss"] > settings["divergence_loss"]
  # Finite but never learned, or learned and then died (all-dead ReLUs give exactly ln 10).
  run["stuck_at_chance"] = (not run["diverged"] and bool(loss)
                            and list(loss.values())[-1] > STUCK * math.log(10))
  log(f"  {arm:15s} seed {seed}: eval accuracy {run['eval_accuracy']:.4f}, worst spike "
      f"{run['worst_spike']:.3f}, max loss {run['max_loss']:.3f}, diverged {run['diverged']}, "
      f"stuck {run['stuck_at_chance']} ({run['seconds']:.0f} s)")
  return run


def summarise(runs, arms, settings):
  table = {}
  for arm in arms:
    rs = [r for r in runs if r["arm"] == arm]
    acc = [r["eval_accuracy"] for r in rs if not r["nonfinite"]]
    table[arm] = {
        "runs": len(rs),
        "final_eval_accuracy_mean": statistics.mean(acc) if acc else math.nan,
        "final_eval_accuracy_min": min(acc) if acc else math.nan,
        "final_eval_accuracy_max": max(acc) if acc else math.nan,
        "final_eval_accuracy_per_seed": {r["seed"]: r["eval_accuracy"] for r in rs},
        "worst_loss_spike": max(r["worst_spike"] for r in rs),
        "max_train_loss": max(r["max_loss"] for r in rs),
        "divergences": sum(r["diverged"] for r in rs),
        "stuck_at_chance": sum(r["stuck_at_chance"] for r in rs),
        "grad_accum_steps": settings["grad_accum_steps"] if arm.endswith(ACCUM) else 1,
        "seconds_per_run_mean": statistics.mean(r["seconds"] for r in rs),
    }
  return table


def _max(values):
  """max, but NaN if any value is NaN (a non-finite run on one side of a pair)."""
  values = list(values)
  return math.nan if any(math.isnan(v) for v in values) else max(values, default=math.nan)


def _last_loss(run):
  return list(run["train_loss"].values())[-1] if run["train_loss"] else math.nan


def compare_twins(runs, table):
  """Each arm against its accumulating twin, seed by seed: {arm: differences}."""
  by = {(r["arm"], r["seed"]): r for r in runs}
  twins = {}
  for arm in ARMS:
    twin = arm + ACCUM
    if twin not in table:
      continue
    seeds = [seed for (a, seed) in by if a == arm and (twin, seed) in by]
    acc = {sd: abs(by[arm, sd]["eval_accuracy"] - by[twin, sd]["eval_accuracy"]) for sd in seeds}
    loss = {sd: abs(_last_loss(by[arm, sd]) - _last_loss(by[twin, sd])) for sd in seeds}
    curve = {sd: _max(abs(v - by[twin, sd]["train_loss"].get(step, math.nan))
                      for step, v in by[arm, sd]["train_loss"].items()) for sd in seeds}
    twins[arm] = {
        "twin": twin, "grad_accum_steps": table[twin]["grad_accum_steps"],
        "abs_eval_accuracy_diff_per_seed": acc, "max_abs_eval_accuracy_diff": _max(acc.values()),
        "abs_final_train_loss_diff_per_seed": loss,
        "max_abs_final_train_loss_diff": _max(loss.values()),
        # Anywhere along the logged curves: rounding differences grow in mid-training.
        "max_abs_train_loss_curve_diff_per_seed": curve,
        "max_abs_train_loss_curve_diff": _max(curve.values()),
        "same_outcome_per_seed": {  # diverged / stuck / trained alike
            sd: all(by[arm, sd][k] == by[twin, sd][k] for k in ("diverged", "stuck_at_chance"))
            for sd in seeds},
        "wall_time_ratio": (table[twin]["seconds_per_run_mean"]
                            / table[arm]["seconds_per_run_mean"]),
    }
  return twins


def warmup_gain(table, suffix=""):
  """Mean final eval accuracy of warmup minus no_warmup (with `suffix`: the twins')."""
  w, n = table.get("warmup" + suffix), table.get("no_warmup" + suffix)
  return (w["final_eval_accuracy_mean"] - n["final_eval_accuracy_mean"]) if w and n else None


def table_markdown(table, twins, settings):
  lines = ["| arm | accum. steps | runs | final eval accuracy, mean (min-max) | per seed | "
           "worst loss spike | max train loss | divergences | stuck at chance | s per run |",
           "|---|---:|---|---|---|---|---|---|---|---:|"]
  for arm, t in table.items():
    per_seed = ", ".join(f"{v:.3f}" for v in t["final_eval_accuracy_per_seed"].values())
    lines.append(
        f"| {arm} | {t['grad_accum_steps']} | {t['runs']} | {t['final_eval_accuracy_mean']:.3f} "
        f"({t['final_eval_accuracy_min']:.3f}-{t['final_eval_accuracy_max']:.3f}) | {per_seed} "
        f"| {t['worst_loss_spike']:.3f} | {t['max_train_loss']:.3f} | {t['divergences']} "
        f"| {t['stuck_at_chance']} | {t['seconds_per_run_mean']:.0f} |")
  s = settings
  if twins:
    lines += ["", "| arm vs accumulating twin | \\|final eval accuracy difference\\| per seed "
              "| max | max \\|final train loss difference\\| | max \\|train loss difference\\| "
              "along the curve | same outcome (seeds) | wall time, twin / arm |",
              "|---|---|---:|---:|---:|---|---:|"]
    for arm, d in twins.items():
      per_seed = ", ".join(f"{v:.3f}" for v in d["abs_eval_accuracy_diff_per_seed"].values())
      same = d["same_outcome_per_seed"]
      lines.append(
          f"| {arm} vs {d['twin']} (k={d['grad_accum_steps']}) | {per_seed} "
          f"| {d['max_abs_eval_accuracy_diff']:.3f} | {d['max_abs_final_train_loss_diff']:.2g} "
          f"| {d['max_abs_train_loss_curve_diff']:.2g} | {sum(same.values())}/{len(same)} "
          f"| {d['wall_time_ratio']:.2f}x |")
    gains = [g for g in (warmup_gain(table), warmup_gain(table, ACCUM)) if g is not None]
    if len(gains) == 2:
      lines += ["", f"Warmup minus no warmup, mean final eval accuracy: {gains[0]:+.3f} at "
                f"batch {s['global_batch_size']} in one step, {gains[1]:+.3f} with "
                f"{s['grad_accum_steps']} micro-batches of {s['accum_micro_batch']}."]
  lines.append("")
  lines.append(f"small_cnn on digits, global batch {s['global_batch_size']}, "
               f"{_optimizer_name(s)}, weight decay {s['weight_decay']}, peak LR {s['peak_lr']:g} "
               f"(= {s['base_lr']:g} x {s['global_batch_size']} / {s['base_batch_size']}), "
               f"{s['total_steps']} steps, cosine decay to 0; warmup arm: {s['warmup_steps']} "
               f"steps from {s['base_lr']:g}; seeds {s['seeds']}. Divergence: non-finite loss "
               f"or a logged train loss > {s['divergence_loss']:.2f}; stuck at chance: final "
               f"train loss > {STUCK} ln 10 without diverging."
               + (f" *_accum arms: the same global batch as {s['grad_accum_steps']} accumulated "
                  f"micro-batches of {s['accum_micro_batch']}; same outcome: both or neither "
                  f"diverged, and both or neither stuck at chance; s per run: wall time of "
                  f"train_and_evaluate, compilation and eval included." if twins else ""))
  return "\n".join(lines)


def _optimizer_name(settings):
  if settings["optimizer"] == "sgd":
    return f"SGD momentum {settings['momentum']}"
  return "AdamW"


def plot(runs, path, settings):
  # matplotlib's object API: no global backend switch (as trainer.plot).
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(13, 3.8))
  FigureCanvasAgg(fig)
  axes = fig.subplots(1, 3)
  for r in runs:
    twin = r["arm"].endswith(ACCUM)
    kw = dict(color=COLORS[r["arm"].removesuffix(ACCUM)], alpha=0.75, lw=1.2,
              ls="--" if twin else "-", label=r["arm"] if r["seed"] == runs[0]["seed"] else None)
    for ax, key in zip(axes, ("train_loss", "train_accuracy", "learning_rate")):
      curve = r[key]
      ax.plot(list(curve), list(curve.values()), **kw)
    if math.isfinite(r["eval_accuracy"]):
      axes[1].plot([settings["total_steps"]], [r["eval_accuracy"]], "x" if twin else "o",
                   ms=5 if twin else 4, color=kw["color"])
  axes[0].set_yscale("log")
  axes[0].set_title("train loss (mean over each loop)")
  axes[1].set_title("train accuracy; dots (x: twins): final eval accuracy")
  axes[2].set_title("learning rate (logged at loop ends)")
  for ax in axes:
    ax.set_xlabel("global step")
    ax.grid(alpha=0.3)
  axes[0].legend()
  accum = (f"; dashed: {settings['grad_accum_steps']} x {settings['accum_micro_batch']} "
           "accumulated" if settings["grad_accum_steps"] > 1 else "")
  fig.suptitle(f"small_cnn / digits, batch {settings['global_batch_size']}, peak LR "
               f"{settings['peak_lr']:g}, {_optimizer_name(settings)}, seeds "
               f"{settings['seeds']}{accum}", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=80)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  data_dir = FLAGS.data_dir or os.path.join(tempfile.gettempdir(), "trainer_benchmarks", "tfds")
  settings = {
      "global_batch_size": FLAGS.global_batch_size, "base_batch_size": FLAGS.base_batch_size,
      "base_lr": FLAGS.base_lr, "total_steps": FLAGS.total_steps,
      "warmup_steps": FLAGS.warmup_steps, "steps_per_loop": FLAGS.steps_per_loop,
      "optimizer": FLAGS.optimizer, "momentum": FLAGS.momentum,
      "weight_decay": FLAGS.weight_decay,
      "divergence_loss": FLAGS.divergence_loss, "seeds": [int(s) for s in FLAGS.seeds],
      "quick": FLAGS.quick}
  if FLAGS.quick:
    settings.update(global_batch_size=64, total_steps=10, warmup_steps=5, steps_per_loop=5,
                    seeds=[0])
  micro = FLAGS.accum_micro_batch if (FLAGS["accum_micro_batch"].present or not FLAGS.quick) else 0
  if micro < 0 or (micro and settings["global_batch_size"] % micro):
    raise app.UsageError(f"--accum_micro_batch={micro} must be 0 or divide the global batch "
                         f"{settings['global_batch_size']}")
  settings["accum_micro_batch"] = micro
  settings["grad_accum_steps"] = settings["global_batch_size"] // micro if micro else 1
  arms = ARMS + tuple(arm + ACCUM for arm in ARMS) if micro else ARMS
  settings["peak_lr"] = (settings["base_lr"] * settings["global_batch_size"]
                         / settings["base_batch_size"])
  log = lambda s: print(s, flush=True)  # noqa: E731
  runs_dir = os.path.join(FLAGS.out_dir, "warmup_runs")
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  start = time.perf_counter()
  runs = []
  for seed in settings["seeds"]:
    for arm in arms:
      runs.append(run_one(arm, seed, data_dir, settings, runs_dir, log))
  table = summarise(runs, arms, settings)
  twins = compare_twins(runs, table)
  markdown = table_markdown(table, twins, settings)
  png = os.path.join(FLAGS.out_dir, "warmup_experiment.png")
  plot(runs, png, settings)
  with open(os.path.join(FLAGS.out_dir, "warmup_experiment.md"), "w") as f:
    f.write(markdown + "\n")
  with open(os.path.join(FLAGS.out_dir, "warmup_experiment.json"), "w") as f:
    json.dump({"settings": settings, "table": table, "twins": twins, "runs": runs,
               "seconds_total": time.perf_counter() - start,
               "command": " ".join(["python -m benchmarks.warmup_experiment", *sys.argv[1:]])},
              f, indent=1)
  print(markdown)
  print(f"\nwrote {png} and the table/JSON beside it in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
  logging.set_verbosity(logging.WARNING)
  app.run(main)
