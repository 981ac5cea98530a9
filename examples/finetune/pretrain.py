r"""Pretraining: the default CNN (`small_cnn`) on the digits 0-4.

Launch from examples/ (about 30 s on 2 CPU cores):

  cd examples && python -m trainer.main --config=finetune/pretrain.py \
      --workdir=runs/finetune/pretrain

Expected: eval accuracy ~0.98 on the 157 held-out digits 0-4 (measured: 0.981).
finetune/config.py starts from this run (`init_from`).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from configs import default  # noqa: E402  pylint: disable=g-import-not-at-top


def get_config():
  c = default.get_config()
  c.dataset = "finetune.data:digits_0_to_4"
  c.model = "small_cnn"
  c.augment = False  # the trainer flips images of your own data; mirrored digits mislead
  c.total_steps = 300
  c.steps_per_loop = 50
  c.eval_every = 100
  c.checkpoint_every = 100
  return c
