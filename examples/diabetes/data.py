"""Your data: scikit-learn's diabetes dataset (442 patients, 10 features, offline), as arrays.

`dataset = "diabetes.data:load"` makes the trainer call `load()` once and hold the arrays in
memory, drawing batches by global step (deterministic, exactly resumable).
"""

import numpy as np
from sklearn import datasets

NUM_EVAL = 88  # a fixed held-out split: the same patients for every run and every seed


def split():
  """(x_train, y_train, x_eval, y_eval), standardised with the train split's statistics."""
  x, y = datasets.load_diabetes(return_X_y=True)
  order = np.random.RandomState(0).permutation(len(x))
  x, y = x[order], y[order]
  x_train, y_train, x_eval, y_eval = x[NUM_EVAL:], y[NUM_EVAL:], x[:NUM_EVAL], y[:NUM_EVAL]
  mean, std = x_train.mean(0), x_train.std(0)
  y_mean, y_std = y_train.mean(), y_train.std()
  return ((x_train - mean) / std, (y_train - y_mean) / y_std,
          (x_eval - mean) / std, (y_eval - y_mean) / y_std)


def load():
  x_train, y_train, x_eval, y_eval = split()
  return {"train": (x_train.astype(np.float32), y_train.astype(np.float32)),
          "eval": (x_eval.astype(np.float32), y_eval.astype(np.float32))}
