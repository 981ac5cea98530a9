"""Tests for trainer.data.augment: translation by a few pixels, flips only where allowed.

No network: `digits` is built from scikit-learn into a tmp data_dir; `cifar10` runs under
`tfds.testing.mock_data(policy=USE_FILES)` (see tests/tfds_mock.py).
"""

import numpy as np

from tests import tfds_mock
from tests.conftest import take
from trainer import data


def _is_shift_of(augmented, original, pad, flips):
  """Whether `augmented` is `original` translated by <= pad pixels (zero fill), maybe mirrored."""
  h, w = original.shape[:2]
  padded = np.pad(original, [[pad, pad], [pad, pad], [0, 0]])
  for dy in range(2 * pad + 1):
    for dx in range(2 * pad + 1):
      crop = padded[dy:dy + h, dx:dx + w]
      if np.array_equal(augmented, crop) or (flips and np.array_equal(augmented, crop[:, ::-1])):
        return True
  return False


def test_augmentation_translates_and_never_flips_digits(digits, one):
  plain = take(data.make_train_dataset(digits, one, 128, 0, False), one, 1)
  aug = take(data.make_train_dataset(digits, one, 128, 0, True), one, 1)
  (xp, yp), (xa, ya) = plain[0][0], aug[0][0]
  np.testing.assert_array_equal(yp, ya)
  assert not np.array_equal(xp, xa)
  assert all(_is_shift_of(a, p, pad=1, flips=False) for a, p in zip(xa, xp))


def test_cifar10_augmentation_flips_some_images(tmp_path, one):
  with tfds_mock.prepared("cifar10", tmp_path, num_examples=64):
    info = data.get_dataset_info("cifar10", str(tmp_path))
    plain = take(data.make_train_dataset(info, one, 32, 0, False), one, 1)
    aug = take(data.make_train_dataset(info, one, 32, 0, True), one, 1)
  (xp, _), (xa, _) = plain[0][0], aug[0][0]
  assert all(_is_shift_of(a, p, pad=4, flips=True) for a, p in zip(xa, xp))
  assert not all(_is_shift_of(a, p, pad=4, flips=False) for a, p in zip(xa, xp))
