r"""Regression on your own arrays with your own model: scikit-learn's diabetes data, an MLP.

Launch from examples/ (so `diabetes` is importable; about 15 s on 2 CPU cores):

  cd examples && python -m trainer.main --config=diabetes/config.py --workdir=runs/diabetes

Expected: eval R^2 ~0.30-0.35 and MSE ~0.55-0.58 on the 88 held-out patients (standardised
targets): within 0.05 of scikit-learn's LinearRegression on the same split (0.33; tested in
tests/test_plugins.py, the baseline computed there).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import default  # noqa: E402  pylint: disable=g-import-not-at-top


def get_config():
  c = default.get_config()
  c.dataset = "diabetes.data:load"
  c.model = "diabetes.model:mlp"
  c.task = "regression"
  c.augment = False  # tabular features, not images
  c.global_batch_size = 32
  c.total_steps = 300
  c.steps_per_loop = 50
  c.eval_every = 100
  c.checkpoint_every = 100
  c.schedule.warmup_fraction = 0.1
  c.schedule.target_lr = 3e-3
  return c
