r"""Fine-tuning against training from scratch, for the same number of steps, seeds 0-2.

  cd examples && python -m finetune.compare [--seeds=0,1,2] [--steps=20,60] [--root=runs/finetune]

Pretrains once (finetune/pretrain.py, seed 0; kept in ROOT/pretrain and reused), then for
each budget of steps and each seed trains finetune/config.py three ways: from scratch (no
init_from), fine-tuned with the body frozen, and fine-tuned with the body at 0.1 of the rate,
and prints each run's final eval accuracy as Markdown tables (finetune/README.md shows them).
"""

import argparse
import os
import statistics

HERE = os.path.dirname(os.path.abspath(__file__))
VARIANTS = {  # name: (workdir name, fields)
    "from scratch": ("scratch", {"init_from": "", "optimizer.lr_mults": ""}),
    "fine-tuned, body frozen": ("frozen", {"optimizer.lr_mults": "head/.*=1,.*=0"}),
    "fine-tuned, body at 0.1": ("tenth", {"optimizer.lr_mults": "head/.*=1,.*=0.1"}),
}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--steps", default="20,60", help="budgets of global steps")
  parser.add_argument("--root", default=os.path.join("runs", "finetune"))
  args = parser.parse_args()
  seeds = [int(s) for s in args.seeds.split(",")]
  budgets = [int(s) for s in args.steps.split(",")]
  # pylint: disable=g-import-not-at-top  (TensorFlow loads after the arguments are read)
  from trainer import config as config_lib
  from trainer import train_and_evaluate
  from trainer.distribute import strategy as strategy_lib

  pretrain = os.path.join(args.root, "pretrain")
  train_and_evaluate(config_lib.load(os.path.join(HERE, "pretrain.py")), pretrain,
                     strategy_lib.get_strategy("cpu"))
  accuracy = {}
  for steps in budgets:
    for seed in seeds:
      for name, (short, fields) in VARIANTS.items():
        fields = {"init_from": pretrain, **fields, "seed": seed, "total_steps": steps,
                  "eval_every": steps, "checkpoint_every": steps}
        config = config_lib.override(config_lib.load(os.path.join(HERE, "config.py")),
                                     **fields)
        workdir = os.path.join(args.root, f"{short}-{steps}steps-seed{seed}")
        result = train_and_evaluate(config, workdir, strategy_lib.get_strategy("cpu"))
        accuracy.setdefault((steps, name), []).append(result["accuracy"])
  for steps in budgets:
    print(f"\neval accuracy on the held-out digits 5-9 after {steps} steps\n")
    print("| run | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |")
    print("|---|" + "---|" * (len(seeds) + 1))
    for name in VARIANTS:
      values = accuracy[(steps, name)]
      print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in values)
            + f" | {statistics.mean(values):.3f} |")


if __name__ == "__main__":
  main()
