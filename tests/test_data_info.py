"""Tests for trainer.data.info: the offline digits, metadata, its cache, name errors.

No network: `digits` is built from scikit-learn into a tmp data_dir.
"""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tests.conftest import take
from trainer import data
from trainer.data import info as info_lib
from trainer.base.errors import ConfigError


def test_digits_is_a_prepared_tfds_dataset(digits_dir, one):
  info = data.get_dataset_info("digits", str(digits_dir))
  assert info == data.DatasetInfo("digits", 10, (8, 8, 1), 1437, 360)
  builder = tfds.builder("digits", data_dir=str(digits_dir))
  assert builder.is_prepared()
  assert builder.info.splits["train"].num_examples == 1437
  assert builder.info.splits["test"].num_examples == 360
  images, labels = data.load_in_memory(info, "train")
  assert images.shape == (1437, 8, 8, 1) and images.dtype == np.uint8 and images.max() == 255
  assert labels.dtype == np.int32 and set(labels) == set(range(10))
  [[(x, y)]] = take(data.make_train_dataset(info, one, 128, 0, True), one, 1)
  assert x.shape == (128, 8, 8, 1) and x.dtype == np.float32 and y.dtype == np.int32
  assert x.min() == 0.0 and x.max() == 1.0 and y.min() >= 0 and y.max() <= 9


def test_info_is_cached_and_carries_its_builder(digits_dir, monkeypatch):
  info = data.get_dataset_info("digits", str(digits_dir))
  assert data.get_dataset_info("digits", str(digits_dir)) is info
  assert info.builder is not None and info.builder.is_prepared()
  assert "builder" not in repr(info)
  monkeypatch.setattr(tfds, "builder", lambda *a, **k: pytest.fail("builder made again"))
  assert data.get_dataset_info("digits", str(digits_dir)) is info


def test_fits_in_memory_reads_the_limit_when_asked(digits, monkeypatch):
  assert digits.fits_in_memory
  monkeypatch.setattr(info_lib, "IN_MEMORY_MAX_BYTES", 1437 * 64 - 1)
  assert not digits.fits_in_memory
  monkeypatch.setattr(info_lib, "IN_MEMORY_MAX_BYTES", 1437 * 64)
  assert digits.fits_in_memory


def test_flip_allowed_unless_the_base_name_is_in_no_flip():
  def info(name):
    return data.DatasetInfo(name, 10, (8, 8, 1), 1, 1)
  assert not info("digits").flip_allowed and not info("mnist/x:3.0.1").flip_allowed
  assert info("cifar10").flip_allowed and info("synthetic").flip_allowed


def test_unknown_dataset_is_a_config_error(tmp_path):
  with pytest.raises(ConfigError, match=r"^dataset: 'no_such_set' is not a TFDS dataset"):
    data.get_dataset_info("no_such_set", str(tmp_path))


def test_non_image_classification_dataset_is_a_config_error(tmp_path):
  with pytest.raises(ConfigError, match=r"^dataset: 'glue/cola' is not an image-classification"):
    data.get_dataset_info("glue/cola", str(tmp_path))


def test_unprepared_dataset_is_a_config_error_without_download(tmp_path):
  with pytest.raises(ConfigError, match=r"^dataset: 'mnist' is not prepared in .*tfds build mnist"):
    data.get_dataset_info("mnist", str(tmp_path))
  assert not (tmp_path / "mnist").exists() and not (tmp_path / "downloads").exists()


@pytest.mark.parametrize("name", ["", None, ["digits"]])
def test_a_name_that_is_no_name_is_a_config_error(name):
  with pytest.raises(ConfigError, match=r"^dataset: .* is not a dataset name"):
    data.get_dataset_info(name)
