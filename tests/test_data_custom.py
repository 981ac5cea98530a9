"""trainer.data.custom: a function of yours as the dataset, arrays or tf.data."""

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import take
from trainer import data
from trainer.data import custom
from trainer.base.errors import ConfigError


@pytest.fixture
def module(tmp_path, monkeypatch):
  monkeypatch.syspath_prepend(str(tmp_path))
  (tmp_path / "plug_arrays.py").write_text(
      "import numpy as np\n"
      "rng = np.random.default_rng(0)\n"
      "x = rng.normal(size=(20, 3))\n"
      "def regression():\n"
      "  return {'train': (x, x.sum(1)), 'test': (x[:5], x[:5].sum(1))}\n"
      "def images():\n"
      "  im = rng.integers(0, 256, (12, 4, 4, 3), dtype=np.uint8)\n"
      "  return {'train': (im, np.arange(12) % 3), 'eval': (im[:6], np.arange(6) % 3)}\n")
  yield "plug_arrays"


def test_float_arrays_are_regression_data_drawn_by_global_step(module):
  info = custom.function_info(f"{module}:regression")
  assert (info.input_dtype, info.label_dtype, info.input_shape, info.num_classes) == (
      "float32", "float32", (3,), 0)
  assert (info.num_train_examples, info.num_eval_examples) == (20, 5)  # 'test' is the eval
  assert info.fits_in_memory and not info.is_image
  one = tf.distribute.OneDeviceStrategy("/cpu:0")
  a = take(data.make_train_dataset(info, one, 8, seed=0, augment=False), one, 3)
  b = take(data.make_train_dataset(info, one, 8, seed=0, augment=False, start_step=2), one, 1)
  np.testing.assert_array_equal(a[2][0][0], b[0][0][0])  # exactly resumable
  x, y = a[0][0]
  assert x.dtype == np.float32 and y.dtype == np.float32
  np.testing.assert_allclose(x.sum(1), y, rtol=1e-5)  # inputs unscaled, labels with them


def test_uint8_arrays_are_images_with_classes(module):
  info = custom.function_info(f"{module}:images")
  assert info.is_image and info.num_classes == 3 and info.label_dtype == "int32"
  one = tf.distribute.OneDeviceStrategy("/cpu:0")
  [[(x, y)]] = take(data.make_train_dataset(info, one, 4, seed=0, augment=True), one, 1)
  assert x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1  # scaled like TFDS images
  with pytest.raises(ConfigError, match=r"^image_size: only folder: and TFDS"):
    custom.function_info(f"{module}:images", image_size=8)
