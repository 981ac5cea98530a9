"""The data: scikit-learn's 8x8 digits split by class, as the trainer's `digits` stores them.

  dataset = "finetune.data:digits_0_to_4"    # pretraining: 5 classes
  dataset = "finetune.data:digits_5_to_9"    # fine-tuning: 5 other classes, labels 0-4,
                                             # 20 training examples of each

The held-out examples are the 360 of the trainer's own `digits` test split (the same fixed
permutation), so neither task evaluates on an image the other trained on.
"""

import numpy as np
from sklearn import datasets

NUM_TEST = 360  # trainer/data/digits.py: the same fixed split
_SPLIT_SEED = 0
PER_CLASS = 20  # fine-tuning examples of each of the digits 5-9: a few labelled ones


def _digits(first, per_class=None):
  digits = datasets.load_digits()
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  order = np.random.RandomState(_SPLIT_SEED).permutation(len(images))
  test, train = np.sort(order[:NUM_TEST]), np.sort(order[NUM_TEST:])
  out = {}
  for split, indices in (("train", train), ("eval", test)):
    keep = indices[(digits.target[indices] >= first) & (digits.target[indices] < first + 5)]
    if split == "train" and per_class:  # the first `per_class` of each class, in a fixed order
      keep = np.sort(np.concatenate([keep[digits.target[keep] == c][:per_class]
                                     for c in range(first, first + 5)]))
    out[split] = (images[keep], (digits.target[keep] - first).astype(np.int32))
  return out


def digits_0_to_4():
  return _digits(0)


def digits_5_to_9():
  return _digits(5, per_class=PER_CLASS)
