"""trainer.data.custom: a function of yours as the dataset, arrays or tf.data; its mistakes
as one line naming `dataset`, and an eval stream bounded by num_eval_examples."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import cpu, default_config, mirrored, run_main, take
from trainer import config as config_lib
from trainer import data
from trainer.data import custom
from trainer.base.errors import ConfigError
from trainer.run import train


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


# A tf.data stream of yours (`streams()`): its eval is bounded by num_eval_examples.

STREAMS = '''
import numpy as np
import tensorflow as tf

x = np.random.default_rng(0).normal(size=(256, 4)).astype(np.float32)
y = (x[:, 0] > 0).astype(np.int32)

def _batches(n, ctx, repeat):
  ds = tf.data.Dataset.from_tensor_slices((x[:n], y[:n]))
  return (ds.repeat() if repeat else ds).batch(ctx.get_per_replica_batch_size(32),
                                               drop_remainder=True)

def _streams(eval_fn, num_eval_examples=64):
  return {"train": lambda ctx: _batches(256, ctx, True), "eval": eval_fn,
          "num_train_examples": 256, "num_eval_examples": num_eval_examples,
          "num_classes": 2}

def repeating_eval():  # a .repeat() left in the eval function: it never ended
  return _streams(lambda ctx: _batches(64, ctx, True))

def short_eval():  # 32 examples where it says 64
  return _streams(lambda ctx: _batches(32, ctx, False))

def ending_train():  # 8 batches and no .repeat(): an IteratorGetNext traceback at step 8
  return {**_streams(lambda ctx: _batches(64, ctx, False)),
          "train": lambda ctx: _batches(256, ctx, False)}
'''


@pytest.fixture
def streams_module(tmp_path, monkeypatch):
  monkeypatch.syspath_prepend(str(tmp_path))
  (tmp_path / "plug_streams.py").write_text(STREAMS)
  yield "plug_streams"


@pytest.mark.parametrize("replicas", [1, 2])
def test_an_endless_eval_stream_is_cut_to_the_batches_of_num_eval_examples(streams_module,
                                                                            replicas):
  info = custom.function_info(f"{streams_module}:repeating_eval")
  strategy = (tf.distribute.OneDeviceStrategy("/cpu:0") if replicas == 1
              else mirrored(replicas))
  batches = list(itertools.islice(data.make_eval_dataset(info, strategy, 32), 100))
  assert len(batches) == 2  # 64 examples in batches of 32 (it never ended: islice's 100)


def test_an_eval_stream_with_fewer_examples_says_so_once(streams_module, tmp_path, caplog):
  config = default_config(dataset=f"{streams_module}:short_eval", model="mlp", augment=False,
                          global_batch_size=32, total_steps=8, steps_per_loop=4, eval_every=4)
  with caplog.at_level("WARNING", logger="absl"):
    result = train.train_and_evaluate(config, str(tmp_path / "w"), cpu(), progress=False)
  said = [r.getMessage() for r in caplog.records if "fewer than" in r.getMessage()]
  assert said == ["eval: the eval input gave 32 examples, fewer than its num_eval_examples 64; "
                  "the eval metrics are of those 32"]
  assert result["step"] == 8


def test_a_train_stream_that_ends_is_one_line_naming_dataset(streams_module, tmp_path):
  config = default_config(dataset=f"{streams_module}:ending_train", model="mlp", augment=False,
                          global_batch_size=32, total_steps=20, steps_per_loop=10)
  workdir = tmp_path / "w"
  with pytest.raises(ConfigError) as info:
    train.train_and_evaluate(config, str(workdir), cpu(), progress=False)
  assert str(info.value) == ("dataset: the train input ended at global step 8; a train "
                             "function of yours must return an endless tf.data.Dataset (end it "
                             "with .repeat())")
  assert not workdir.exists()  # a mistake in its first loop: the new workdir is removed


@pytest.mark.slow
def test_a_run_whose_eval_function_repeats_finishes(tmp_path):
  """It hung in its first eval at 100% CPU; run in a child with a bound so a regression
  fails in minutes instead of hanging CI."""
  (tmp_path / "plug_streams.py").write_text(STREAMS)
  workdir = tmp_path / "w"
  r = run_main(f"--workdir={workdir}", "--strategy=cpu", "--config.dataset=plug_streams:"
               "repeating_eval", "--config.model=mlp", "--config.augment=False",
               "--config.global_batch_size=32", "--config.total_steps=20",
               "--config.steps_per_loop=10", "--config.eval_every=10", cwd=tmp_path,
               timeout=240)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "eval: loss" in r.stdout and "fewer than" not in r.stderr


# Mistakes in a function of yours: one line naming `dataset`, from a module with or without
# dots in its name (an undotted one was reported as 'TFDS cannot build', a dotted one was a
# traceback).

BAD = '''
import numpy as np

def raises():
  raise RuntimeError("boom")

def ragged():
  x = [np.zeros(3), np.zeros(4)]
  return {"train": (x, [0, 1]), "eval": (x, [0, 1])}

def huge_label():  # a label that is no class id: it ran out of memory
  x, y = np.zeros((8, 4), np.float32), np.arange(8) % 2
  y[3] = 2_000_000_000
  return {"train": (x, y), "eval": (x, y % 2)}

def huge_num_classes():
  import tensorflow as tf
  x, y = np.zeros((8, 4), np.float32), np.arange(8) % 2
  ds = lambda ctx: tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(4)
  return {"train": ds, "eval": ds, "num_train_examples": 8, "num_eval_examples": 8,
          "num_classes": 10**7}
'''


@pytest.mark.parametrize("module", ["plug_bad", "plug_pkg.bad"])
@pytest.mark.parametrize("function,message", [
    ("raises", "raised RuntimeError: boom when called; fix the function"),
    ("ragged", "split 'train' is not two arrays (setting an array element with a sequence"),
    ("huge_label", "has 2,000,000,001 classes (its largest label is 2000000000); labels must "
                   "be class ids 0..K-1 with K at most 1,000,000"),
    ("huge_num_classes", "has 10,000,000 classes (its num_classes); labels must be class ids"),
])
def test_a_function_s_mistake_is_one_line_naming_dataset(tmp_path, monkeypatch, module,
                                                         function, message):
  monkeypatch.syspath_prepend(str(tmp_path))
  (tmp_path / "plug_bad.py").write_text(BAD)
  (tmp_path / "plug_pkg").mkdir()
  (tmp_path / "plug_pkg" / "__init__.py").write_text("")
  (tmp_path / "plug_pkg" / "bad.py").write_text(BAD)
  name = f"{module}:{function}"
  config = default_config(dataset=name, model="mlp", augment=False)
  with pytest.raises(ConfigError) as info:
    config_lib.resolve(config, cpu())  # as a run resolves it: TFDS's errors are reported there
  assert str(info.value).startswith(f"dataset: {name!r} {message}"), str(info.value)
  assert "\n" not in str(info.value)
