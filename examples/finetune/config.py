r"""Fine-tuning: the pretrained CNN's body under a new head, on the digits 5-9.

Launch from examples/, after finetune/pretrain.py (about 15 s on 2 CPU cores):

  cd examples && python -m trainer.main --config=finetune/config.py \
      --workdir=runs/finetune/tuned
  # the base frozen instead of at a tenth of the rate:
  python -m trainer.main --config=finetune/config.py --workdir=runs/finetune/frozen \
      --config.optimizer.lr_mults="head/.*=1,.*=0"

`init_from` loads the body (conv1-conv3) from the pretraining run's latest checkpoint by
variable path; `head` is not in it and keeps its fresh initialisation (the log lists both).
The head learns at the schedule's rate, the body at a tenth of it, after a warmup of 12
steps, on 20 examples of each digit 5-9. Expected: eval accuracy ~0.88 on the 203 held-out
digits 5-9 after 60 steps; against training from scratch: finetune/README.md
(`python -m finetune.compare`).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from configs import default  # noqa: E402  pylint: disable=g-import-not-at-top


def get_config():
  c = default.get_config()
  c.dataset = "finetune.data:digits_5_to_9"
  c.model = "finetune.model:new_head"
  c.augment = False
  c.init_from = "runs/finetune/pretrain"
  c.init_mode = "weights"
  c.optimizer.lr_mults = "head/.*=1,.*=0.1"
  c.global_batch_size = 32
  c.total_steps = 60
  c.steps_per_loop = 20
  c.eval_every = 20
  c.checkpoint_every = 60
  c.schedule.warmup_fraction = 0.2
  c.schedule.target_lr = 0.03  # the head's peak: a fresh head on 60 steps wants a high rate
  return c
