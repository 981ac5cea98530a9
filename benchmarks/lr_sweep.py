r"""Does the LR range test propose a good peak? A sweep of `schedule.target_lr` against it.

  python -m benchmarks.lr_sweep [--out_dir=runs/benchmarks] [--data_dir=DIR] [--quick]

For each job (`default`: configs/default.py, the small CNN with AdamW for 600 steps; `mlp`:
the same data and schedule with the MLP and SGD, momentum 0.9), trains every peak in --grid
(x3 apart) for every seed in --seeds through `trainer.run.train.train_and_evaluate`, and runs
the range test (`trainer.lr_find.find`, the run's own builder and loop) once per seed.
Reports, side by side, the final eval accuracy of every (peak, seed), the best peak of the
sweep (by the mean over seeds) and the proposals, with the eval accuracy of the job trained at
each proposal.

Writes <out_dir>/lr_sweep.md (the table), lr_sweep.json and lr_sweep.png (final accuracy
against the peak, one line per seed, the proposals marked); runs under <out_dir>/lr_sweep_runs.
"""

import json
import os
import shutil
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOBS = {"default": {}, "mlp": {"model": "mlp", "optimizer.name": "sgd"}}

FLAGS = flags.FLAGS
flags.DEFINE_string("out_dir", "runs/benchmarks", "Where the table, JSON, PNG and runs go.")
flags.DEFINE_string("data_dir", "", "TFDS data_dir for digits (prepared offline on first use); "
                    "default: <tempdir>/trainer_benchmarks/tfds.")
flags.DEFINE_list("grid", ["1e-4", "3e-4", "1e-3", "3e-3", "1e-2", "3e-2", "1e-1", "3e-1", "1"],
                  "Peak learning rates (target_lr) to train.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds: every peak trains with each.")
flags.DEFINE_list("jobs", list(JOBS), f"Which jobs: {', '.join(JOBS)}.")
flags.DEFINE_integer("lr_find_steps", 200, "Steps of each range test.")
flags.DEFINE_bool("quick", False, "Smoke run for tests: two peaks, one seed, a few steps.")


def job_config(job, data_dir, seed, quick, **fields):
  from trainer import config as config_lib  # pylint: disable=g-import-not-at-top
  base = config_lib.load(os.path.join(REPO, "configs", "default.py"))
  changes = {"data_dir": data_dir, "seed": seed, **JOBS[job], **fields}
  if quick:
    changes.update({"total_steps": 20, "steps_per_loop": 10, "eval_every": 0,
                    "checkpoint_every": 0})
  return config_lib.override(base, **changes)


def train_at(job, lr, seed, data_dir, runs_dir, quick):
  """The final eval accuracy of `job` trained at peak `lr` (a fresh workdir)."""
  # pylint: disable=g-import-not-at-top
  from trainer.base.errors import NonFiniteLossError
  from trainer.distribute.strategy import get_strategy
  from trainer.run import train
  workdir = os.path.join(runs_dir, f"{job}-lr{lr:g}-seed{seed}")
  shutil.rmtree(workdir, ignore_errors=True)
  config = job_config(job, data_dir, seed, quick, **{"schedule.target_lr": lr})
  try:
    result = train.train_and_evaluate(config, workdir, get_strategy("cpu"), progress=False)
  except NonFiniteLossError:
    return 0.0  # diverged: no model
  return float(result["accuracy"])


def proposal(job, seed, data_dir, steps, quick):
  """The range test's proposed peak for `job` (seed `seed`)."""
  # pylint: disable=g-import-not-at-top
  from trainer import config as config_lib
  from trainer import lr_find
  from trainer.distribute.precision import global_policy
  from trainer.distribute.strategy import get_strategy
  strategy = get_strategy("cpu")
  config = job_config(job, data_dir, seed, quick)
  spec = config_lib.resolve(config, strategy)
  with global_policy(spec.policy):
    record = lr_find.find(spec, strategy, 1e-7, 10.0, steps)
  return record["proposal"]


def table_markdown(results, grid, seeds):
  lines = []
  for job, r in results.items():
    lines += [f"**{job}** ({r['describe']})", "",
              "| peak LR | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
              "|---" * (len(seeds) + 2) + "|"]
    for lr in grid:
      accs = r["accuracy"][f"{lr:g}"]
      mark = " **(best)**" if lr == r["best_lr"] else ""
      lines.append(f"| {lr:g}{mark} | " + " | ".join(f"{a:.3f}" for a in accs)
                   + f" | {statistics.mean(accs):.3f} |")
    props = ", ".join(f"{p:.3g}" if p else "none" for p in r["proposals"])
    at = ", ".join(f"{a:.3f}" for a in r["at_proposal"])
    lines += ["", f"Range test proposals (seeds {', '.join(map(str, seeds))}): {props}; "
                  f"eval accuracy trained at each: {at}.", ""]
  return "\n".join(lines)


def plot(results, grid, seeds, path):
  # pylint: disable=g-import-not-at-top
  from trainer.schedules import picture
  fig = picture.figure(5 * len(results), 3.8)
  axes = fig.subplots(1, len(results), squeeze=False)[0]
  for ax, (job, r) in zip(axes, results.items()):
    for i, seed in enumerate(seeds):
      ax.plot(grid, [r["accuracy"][f"{lr:g}"][i] for lr in grid], marker="o",
              color=f"C{i}", label=f"seed {seed}")
    for i, p in enumerate(r["proposals"]):
      if p:
        ax.axvline(p, color=f"C{i}", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_title(f"{job}: final eval accuracy (dashed: range test)")
    ax.set_xlabel("peak learning rate (target_lr)")
    ax.set_ylabel("eval accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
  fig.tight_layout()
  picture.write_png(path, fig)


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)
  data_dir = FLAGS.data_dir or os.path.join(tempfile.gettempdir(), "trainer_benchmarks", "tfds")
  grid = [float(x) for x in FLAGS.grid]
  seeds = [int(s) for s in FLAGS.seeds]
  if FLAGS.quick:
    grid, seeds = grid[2:4], seeds[:1]
  steps = 20 if FLAGS.quick else FLAGS.lr_find_steps
  runs_dir = os.path.join(FLAGS.out_dir, "lr_sweep_runs")
  os.makedirs(runs_dir, exist_ok=True)
  start, results = time.time(), {}
  for job in FLAGS.jobs:
    describe = ("small_cnn, AdamW" if job == "default" else "mlp, SGD momentum 0.9") + (
        ", 600 steps of 128" if not FLAGS.quick else ", 20 steps (quick)")
    accuracy = {f"{lr:g}": [train_at(job, lr, s, data_dir, runs_dir, FLAGS.quick)
                            for s in seeds] for lr in grid}
    best_lr = max(grid, key=lambda lr: statistics.mean(accuracy[f"{lr:g}"]))
    proposals = [proposal(job, s, data_dir, steps, FLAGS.quick) for s in seeds]
    at = [train_at(job, p, s, data_dir, runs_dir, FLAGS.quick) if p else 0.0
          for p, s in zip(proposals, seeds)]
    results[job] = {"describe": describe, "accuracy": accuracy, "best_lr": best_lr,
                    "proposals": proposals, "at_proposal": at}
    print(f"{job}: best peak {best_lr:g}; proposals {proposals}; accuracy there {at}",
          flush=True)
  with open(os.path.join(FLAGS.out_dir, "lr_sweep.json"), "w") as f:
    json.dump({"grid": grid, "seeds": seeds, "results": results,
               "seconds": time.time() - start}, f, indent=2)
  with open(os.path.join(FLAGS.out_dir, "lr_sweep.md"), "w") as f:
    f.write(table_markdown(results, grid, seeds))
  plot(results, grid, seeds, os.path.join(FLAGS.out_dir, "lr_sweep.png"))
  print(f"wrote {FLAGS.out_dir}/lr_sweep.md, .json, .png in {time.time() - start:.0f} s")


if __name__ == "__main__":
  app.run(main)
