"""`digits`: scikit-learn's bundled 8x8 handwritten digits as a TFDS dataset (no download).

Importing this module registers the builder, so `tfds.builder('digits', data_dir=...)` works
and the offline default travels the same TFDS code path as every other dataset.
"""

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

NUM_TEST = 360
# How the stored images relate to scikit-learn's (export.json says it to whoever serves them).
STORED = ("scikit-learn's load_digits() images, gray levels 0..16, times 255/16 rounded to "
          "uint8 (for serving_float: those images / 16)")
_SPLIT_SEED = 0  # fixed forever: changing it would change the held-out set


class Digits(tfds.core.GeneratorBasedBuilder):
  """1797 grayscale 8x8 digits (UCI/scikit-learn), split 1437 train / 360 test."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  # TFDS 4.9's default `code_path` needs the `importlib_resources` backport for builders
  # defined inside a package; shadowing it keeps preparation working without that package.
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=("scikit-learn's copy of the UCI optical handwritten digits: 8x8 images "
                     "with 17 gray levels (0..16, stored scaled to 0..255), labels 0-9."),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(8, 8, 1)),
            "label": tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=("image", "label"),
        homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # the data ships with scikit-learn
    order = np.random.RandomState(_SPLIT_SEED).permutation(1797)
    return {
        "train": self._generate_examples(np.sort(order[NUM_TEST:])),
        "test": self._generate_examples(np.sort(order[:NUM_TEST])),
    }

  def _generate_examples(self, indices):
    from sklearn import datasets  # pylint: disable=g-import-not-at-top  (slow import)

    digits = datasets.load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    for i in indices:
      yield int(i), {"image": images[i], "label": int(digits.target[i])}
