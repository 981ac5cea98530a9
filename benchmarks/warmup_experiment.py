r"""Large-batch training with and without learning-rate warmup (Goyal et al. 2017, at CPU scale).

  python -m benchmarks.warmup_experiment [--out_dir=runs/benchmarks] [--data_dir=DIR] [--quick]

The default model (small_cnn) and optimizer (AdamW) on the offline digits at a large global
batch (512, 16x the base), its peak LR scaled linearly from a small-batch base
(`schedule.base_batch_size`: peak = base_lr * global_batch / base_batch). Two arms that differ
only in the schedule's first steps:

  warmup      linear warmup over --warmup_steps from the base LR up to the scaled peak (the
              paper's "gradual warmup"), then cosine decay to 0
  no_warmup   the scaled peak from step 0, then the same cosine decay

Each arm runs for every seed in --seeds through `trainer.train.train_and_evaluate` with config
overrides (fresh workdirs), and the curves are read back from the workdirs' TensorBoard
events (train loss/accuracy per loop of --steps_per_loop steps, eval at the end). A run
diverges when it raises NonFiniteLossError or a logged train loss exceeds --divergence_loss.
The worst loss spike of a run is the largest rise of the logged train loss above its lowest
value so far. A run is stuck at chance when it ends, without diverging, at a train loss above
0.95 ln 10 (a network whose ReLUs all died outputs constant logits: loss exactly ln 10).

Writes to <out_dir>: warmup_experiment.png (loss, accuracy and LR curves of both arms and all
seeds), warmup_experiment.md (the table) and warmup_experiment.json; workdirs under
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
ARMS = ("warmup", "no_warmup")
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
flags.DEFINE_float("divergence_loss", 2 * math.log(10), "A logged train loss above this is a "
                   "divergence (2 x the loss of a uniform guess over 10 classes).")


def arm_config(arm, seed, data_dir, s):
  """The default config with the overrides of one arm (`s`: the experiment's settings)."""
  from trainer import config as config_lib
  base = config_lib.load(os.path.join(REPO, "configs", "default.py"))
  warmup = arm == "warmup"
  return config_lib.override(
      base, data_dir=data_dir, seed=seed, global_batch_size=s["global_batch_size"],
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
  from trainer import train
  from trainer.errors import NonFiniteLossError
  from trainer.summaries import read_scalars
  workdir = os.path.join(runs_dir, f"{arm}_seed{seed}")
  shutil.rmtree(workdir, ignore_errors=True)  # a fresh run, never a resume
  config = arm_config(arm, seed, data_dir, settings)
  start = time.perf_counter()
  nonfinite, result = False, {}
  try:
    result = train.train_and_evaluate(config, workdir, tf.distribute.OneDeviceStrategy("/cpu:0"))
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
  log(f"  {arm:9s} seed {seed}: eval accuracy {run['eval_accuracy']:.4f}, worst spike "
      f"{run['worst_spike']:.3f}, max loss {run['max_loss']:.3f}, diverged {run['diverged']}, "
      f"stuck {run['stuck_at_chance']} ({run['seconds']:.0f} s)")
  return run


def summarise(runs):
  table = {}
  for arm in ARMS:
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
    }
  return table


def table_markdown(table, settings):
  lines = ["| arm | runs | final eval accuracy, mean (min-max) | per seed | worst loss spike | "
           "max train loss | divergences | stuck at chance |", "|---|---|---|---|---|---|---|---|"]
  for arm, t in table.items():
    per_seed = ", ".join(f"{v:.3f}" for v in t["final_eval_accuracy_per_seed"].values())
    lines.append(
        f"| {arm} | {t['runs']} | {t['final_eval_accuracy_mean']:.3f} "
        f"({t['final_eval_accuracy_min']:.3f}-{t['final_eval_accuracy_max']:.3f}) | {per_seed} "
        f"| {t['worst_loss_spike']:.3f} | {t['max_train_loss']:.3f} | {t['divergences']} "
        f"| {t['stuck_at_chance']} |")
  s = settings
  lines.append("")
  lines.append(f"small_cnn on digits, global batch {s['global_batch_size']}, "
               f"{_optimizer_name(s)}, weight decay {s['weight_decay']}, peak LR {s['peak_lr']:g} "
               f"(= {s['base_lr']:g} x {s['global_batch_size']} / {s['base_batch_size']}), "
               f"{s['total_steps']} steps, cosine decay to 0; warmup arm: {s['warmup_steps']} "
               f"steps from {s['base_lr']:g}; seeds {s['seeds']}. Divergence: non-finite loss "
               f"or a logged train loss > {s['divergence_loss']:.2f}; stuck at chance: final "
               f"train loss > {STUCK} ln 10 without diverging.")
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
    kw = dict(color=COLORS[r["arm"]], alpha=0.75, lw=1.2,
              label=r["arm"] if r["seed"] == runs[0]["seed"] else None)
    for ax, key in zip(axes, ("train_loss", "train_accuracy", "learning_rate")):
      curve = r[key]
      ax.plot(list(curve), list(curve.values()), **kw)
    if math.isfinite(r["eval_accuracy"]):
      axes[1].plot([settings["total_steps"]], [r["eval_accuracy"]], "o", ms=4,
                   color=COLORS[r["arm"]])
  axes[0].set_yscale("log")
  axes[0].set_title("train loss (mean over each loop)")
  axes[1].set_title("train accuracy; dots: final eval accuracy")
  axes[2].set_title("learning rate (logged at loop ends)")
  for ax in axes:
    ax.set_xlabel("global step")
    ax.grid(alpha=0.3)
  axes[0].legend()
  fig.suptitle(f"small_cnn / digits, batch {settings['global_batch_size']}, peak LR "
               f"{settings['peak_lr']:g}, {_optimizer_name(settings)}, seeds "
               f"{settings['seeds']}", fontsize=10)
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
  settings["peak_lr"] = (settings["base_lr"] * settings["global_batch_size"]
                         / settings["base_batch_size"])
  log = lambda s: print(s, flush=True)  # noqa: E731
  runs_dir = os.path.join(FLAGS.out_dir, "warmup_runs")
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  start = time.perf_counter()
  runs = []
  for seed in settings["seeds"]:
    for arm in ARMS:
      runs.append(run_one(arm, seed, data_dir, settings, runs_dir, log))
  table = summarise(runs)
  markdown = table_markdown(table, settings)
  png = os.path.join(FLAGS.out_dir, "warmup_experiment.png")
  plot(runs, png, settings)
  with open(os.path.join(FLAGS.out_dir, "warmup_experiment.md"), "w") as f:
    f.write(markdown + "\n")
  with open(os.path.join(FLAGS.out_dir, "warmup_experiment.json"), "w") as f:
    json.dump({"settings": settings, "table": table, "runs": runs,
               "seconds_total": time.perf_counter() - start,
               "command": " ".join(["python -m benchmarks.warmup_experiment", *sys.argv[1:]])},
              f, indent=1)
  print(markdown)
  print(f"\nwrote {png} and the table/JSON beside it in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
  logging.set_verbosity(logging.WARNING)
  app.run(main)
