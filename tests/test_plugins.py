"""Your model, your data, your task, through `python -m trainer.main` (examples/ and
generated plug-ins): the seams of trainer.plugins, trainer.models, trainer.data.custom and
trainer.task end to end, and bad plug-ins as one line."""

import json
import os
import shutil
import sys
import textwrap

import numpy as np
import pytest

from tests.conftest import REPO, cpu, default_config, run_main
from tests.test_export import regression_run  # noqa: F401  (a session fixture)
from trainer.base import plugins
from trainer.run import summaries
from trainer.run import train
from trainer.base.errors import ConfigError

EXAMPLES = os.path.join(REPO, "examples")


def test_import_paths_are_told_apart_from_tfds_names():
  assert plugins.is_import_path("my.data:load") and plugins.is_import_path("mod:fn")
  for name in ("mnist", "mnist:3.0.1", "glue/cola", "folder:/x", "a:b:c", "mod:", ":fn"):
    assert not plugins.is_import_path(name), name


def test_the_fields_that_name_code_and_the_check_of_a_record():
  assert plugins.named_code({"model": "a.b:net", "dataset": "folder:imgs",
                             "task": "classification"}) == {"model": "a.b:net"}
  assert plugins.named_code({"model": "folder:x", "dataset": "mnist:3.0.1", "task": "t:T"}
                            ) == {"model": "folder:x", "task": "t:T"}  # a folder: model is code
  record = {"model": "mlp", "dataset": "my.data:load", "task": "classification"}
  for accepted in (["my.data:load"], True):
    plugins.check_named(record, "w/config.json", accepted)
  with pytest.raises(ConfigError) as info:
    plugins.check_named(record, "w/config.json", ["other:load"], how="give --{field}={value}")
  assert str(info.value) == ("dataset: 'my.data:load' is code (a plug-in) that only "
                             "w/config.json names, so it is not imported: if you trust it, "
                             "give --dataset=my.data:load")


@pytest.mark.slow
def test_resuming_with_the_recorded_config_imports_only_the_plugins_named(
    regression_run, tmp_path):  # noqa: F811
  """Issue 21, item 5: without --config, trainer.main resumes with the workdir's config.json,
  whose plug-ins are code nobody named on the command line."""
  from tests.killer import tree  # pylint: disable=g-import-not-at-top
  import inspect  # pylint: disable=g-import-not-at-top
  from tests import test_export  # pylint: disable=g-import-not-at-top
  # The run's data as a module of the working directory (tests.test_export sets up devices).
  (tmp_path / "plug_regression.py").write_text(
      "import numpy as np\n\n" + inspect.getsource(test_export.regression_data))
  workdir, plugin = str(tmp_path / "w"), "plug_regression:regression_data"
  shutil.copytree(regression_run[0], workdir)
  with open(os.path.join(workdir, "config.json")) as f:
    blob = json.load(f)
  blob["config"]["dataset"] = plugin
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(blob, f)
  before = tree(workdir)
  r = run_main(f"--workdir={workdir}", "--strategy=cpu", cwd=tmp_path)
  assert r.returncode == 2, r.stderr[-3000:]
  assert r.stderr.strip().splitlines()[-1] == (
      f"error: dataset: {plugin!r} is code (a plug-in) that only {workdir}/config.json names, "
      f"so it is not imported: if you trust it, give --config.dataset={plugin} (or "
      f"--trust_plugins)")
  assert tree(workdir) == before
  for flag in (f"--config.dataset={plugin}", "--trust_plugins"):  # a finished run: its eval
    r = run_main(f"--workdir={workdir}", "--strategy=cpu", flag, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]  # the plug-in was imported: the data loaded


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
  """A directory on sys.path for generated plug-in modules (cleaned from sys.modules)."""
  monkeypatch.syspath_prepend(str(tmp_path))
  before = set(sys.modules)
  yield tmp_path
  for name in set(sys.modules) - before:
    if name.startswith("plug_"):
      del sys.modules[name]


def _module(directory, name, source):
  (directory / f"{name}.py").write_text(textwrap.dedent(source))


@pytest.mark.parametrize("field,value,message", [
    ("model", "plug_none:net", "model: cannot import 'plug_none' for 'plug_none:net' "
                               "(ModuleNotFoundError"),
    ("model", "plug_m:missing", "model: 'plug_m' has no function 'missing'"),
    ("model", "plug_m:not_a_model", "model: 'plug_m:not_a_model' returned int, not a keras.Model"),
    ("model", "plug_m:three_outputs", "model: 'plug_m:three_outputs' outputs shape (None, 3); "
                                      "the task needs (None, 10)"),
    ("model", "plug_m:raises", "model: cannot import"),
    ("dataset", "plug_d:not_a_dict", "dataset: 'plug_d:not_a_dict' returned list; it must"),
    ("dataset", "plug_d:no_eval", "dataset: 'plug_d:no_eval' returned no 'eval'"),
    ("dataset", "plug_d:lengths", "dataset: 'plug_d:lengths' split 'train' has 8 inputs but 7"),
    ("dataset", "plug_d:labels", "dataset: 'plug_d:labels' split 'eval' has labels outside 0..2"),
    ("dataset", "plug_d:empty", "dataset: 'plug_d:empty' split 'eval' is empty"),
    ("dataset", "plug_d:shapes", "dataset: 'plug_d:shapes' train inputs are float32 (4,) but"),
    ("task", "plug_t:NotATask", "task: 'plug_t:NotATask' must subclass trainer.task.Task"),
    ("task", "nope", "task: unknown 'nope'; allowed: classification, regression"),
])
def test_bad_plug_ins_are_one_line_naming_the_field(plugin_dir, tmp_path, field, value,
                                                    message):
  _module(plugin_dir, "plug_m", """
      import keras
      def not_a_model(input_shape, num_outputs):
        return 3
      def three_outputs(input_shape, num_outputs):
        return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                                 keras.layers.Dense(3)])
      """)
  _module(plugin_dir, "plug_d", """
      import numpy as np
      x, y = np.zeros((8, 4), np.float32), np.arange(8) % 3
      def not_a_dict(): return [x, y]
      def no_eval(): return {"train": (x, y)}
      def lengths(): return {"train": (x, y[:7]), "eval": (x, y)}
      def labels(): return {"train": (x, y), "eval": (x, y + 1), "num_classes": 3}
      def empty(): return {"train": (x, y), "eval": (x[:0], y[:0])}
      def shapes(): return {"train": (x, y), "eval": (x[:, :2], y)}
      """)
  _module(plugin_dir, "plug_t", "class NotATask:\n  pass\n")
  (plugin_dir / "plug_raises.py").write_text("raise RuntimeError('boom')\n")
  value = "plug_raises:net" if value == "plug_m:raises" else value
  workdir = tmp_path / "w"
  with pytest.raises(ConfigError) as info:
    train.train_and_evaluate(default_config(**{field: value}), str(workdir), cpu())
  assert str(info.value).startswith(message), str(info.value)
  assert "\n" not in str(info.value) and not workdir.exists()


@pytest.mark.slow
def test_diabetes_example_regression_is_within_0_05_r2_of_linear_regression(tmp_path):
  """examples/diabetes: your arrays (data.py), your model (model.py), task=regression."""
  sys.path.insert(0, EXAMPLES)
  try:
    from diabetes import data  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.remove(EXAMPLES)
  from sklearn.linear_model import LinearRegression  # pylint: disable=g-import-not-at-top
  from sklearn.metrics import r2_score  # pylint: disable=g-import-not-at-top
  x_train, y_train, x_eval, y_eval = data.split()
  baseline = r2_score(y_eval, LinearRegression().fit(x_train, y_train).predict(x_eval))
  workdir = str(tmp_path / "diabetes")
  r = run_main("--config=diabetes/config.py", f"--workdir={workdir}", "--strategy=cpu",
               cwd=EXAMPLES)
  assert r.returncode == 0, r.stderr[-3000:]
  final = {tag: summaries.read_scalars(workdir, "eval", tag)[300]
           for tag in ("mse", "mae", "r2", "loss")}
  assert abs(final["r2"] - baseline) <= 0.05, (final, baseline)
  assert final["mse"] == pytest.approx(final["loss"])
  assert final["mae"] > 0
  blob = json.load(open(os.path.join(workdir, "config.json")))
  assert blob["config"]["task"] == "regression"
  assert "eval: loss" in r.stdout and "r2" in r.stdout


@pytest.mark.slow
def test_a_subclassed_model_with_batchnorm_trains_under_mirrored(tmp_path):
  workdir = str(tmp_path / "w")
  r = run_main("--config=diabetes/config.py", f"--workdir={workdir}", "--strategy=mirrored",
               "--cpu_devices=2", "--config.model=diabetes.model:residual_mlp",
               "--config.total_steps=100", cwd=EXAMPLES)
  assert r.returncode == 0, r.stderr[-3000:]
  assert summaries.read_scalars(workdir, "eval", "r2")[100] > 0.1


@pytest.mark.slow
def test_a_registered_model_and_a_tf_data_function_train(tmp_path):
  """A config file that imports your module (which registers a model); data as tf.data."""
  (tmp_path / "plug_project.py").write_text(textwrap.dedent("""
      import numpy as np
      import keras
      import tensorflow as tf
      from trainer import models

      @models.register("plug_net")
      def plug_net(input_shape, num_outputs):
        return keras.Sequential([keras.Input(input_shape), keras.layers.Dense(num_outputs)])

      def _examples(n, seed):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(n, 4)).astype(np.float32)
        return x, (x[:, 0] > 0).astype(np.int32) + 2 * (x[:, 1] > 0).astype(np.int32)

      def streams():
        def train(ctx):
          x, y = _examples(512, 0)
          ds = tf.data.Dataset.from_tensor_slices((x, y)).shard(ctx.num_input_pipelines,
                                                                 ctx.input_pipeline_id)
          return ds.repeat().batch(ctx.get_per_replica_batch_size(32), drop_remainder=True)
        def eval(ctx):
          x, y = _examples(128, 1)
          return tf.data.Dataset.from_tensor_slices((x, y)).batch(
              ctx.get_per_replica_batch_size(32), drop_remainder=True)
        return {"train": train, "eval": eval, "num_train_examples": 512,
                "num_eval_examples": 128, "num_classes": 4}
      """))
  (tmp_path / "plug_config.py").write_text(textwrap.dedent(f"""
      import sys
      sys.path.insert(0, {REPO!r})
      import plug_project  # registers plug_net
      from configs import default
      def get_config():
        c = default.get_config()
        c.dataset, c.model, c.augment = "plug_project:streams", "plug_net", False
        c.global_batch_size, c.total_steps, c.steps_per_loop = 32, 200, 50
        c.eval_every = c.checkpoint_every = 100
        c.schedule.target_lr = 3e-2
        return c
      """))
  workdir = str(tmp_path / "w")
  r = run_main("--config=plug_config.py", f"--workdir={workdir}", "--strategy=cpu",
               cwd=tmp_path)
  assert r.returncode == 0, r.stderr[-3000:]
  assert summaries.read_scalars(workdir, "eval", "accuracy")[200] > 0.8  # chance: 0.25
  assert np.isfinite(summaries.read_scalars(workdir, "train", "loss")[200])


@pytest.mark.slow
def test_shapes_example_trains_on_a_folder_of_images_made_on_the_fly(tmp_path):
  """examples/shapes: folder:DIR of PNGs of any size, generated by the config on first use."""
  r = run_main(f"--config={EXAMPLES}/shapes/config.py", f"--workdir={tmp_path / 'w'}",
               "--strategy=cpu", "--config.total_steps=200", cwd=tmp_path)
  assert r.returncode == 0, r.stderr[-3000:]
  assert os.path.isdir(tmp_path / "runs" / "shapes_images" / "train" / "circle")
  blob = json.load(open(tmp_path / "w" / "config.json"))
  assert blob["config"]["dataset"] == f"folder:{tmp_path / 'runs' / 'shapes_images'}"
  assert summaries.read_scalars(str(tmp_path / "w"), "eval", "accuracy")[200] >= 0.9


@pytest.mark.slow
def test_finetune_example_beats_training_from_scratch_after_20_steps(tmp_path):
  """examples/finetune: pretrain on the digits 0-4, fine-tune a new head on 5-9 (init_from,
  lr_mults), its one command; the README's 20-step table for seed 0."""
  import subprocess  # pylint: disable=g-import-not-at-top
  from tests.conftest import main_env  # pylint: disable=g-import-not-at-top
  r = subprocess.run([sys.executable, "-m", "finetune.compare", "--seeds=0", "--steps=20",
                      f"--root={tmp_path / 'runs'}"], cwd=EXAMPLES, env=main_env(),
                     capture_output=True, text=True, timeout=900)
  assert r.returncode == 0, r.stderr[-3000:]
  rows = {line.split("|")[1].strip(): float(line.split("|")[2])
          for line in r.stdout.splitlines() if line.startswith("| ") and "seed" not in line}
  assert set(rows) == {"from scratch", "fine-tuned, body frozen", "fine-tuned, body at 0.1"}
  assert rows["fine-tuned, body frozen"] > rows["from scratch"] + 0.1, rows
  assert rows["fine-tuned, body at 0.1"] > rows["from scratch"] + 0.1, rows
  tuned = os.path.join(tmp_path, "runs", "tenth-20steps-seed0")
  with open(os.path.join(tuned, "config.json")) as f:
    assert json.load(f)["config"]["init_from"] == os.path.join(tmp_path, "runs", "pretrain")
  frozen = os.path.join(tmp_path, "runs", "frozen-20steps-seed0")
  assert summaries.read_scalars(frozen, "eval", "accuracy")[20] == pytest.approx(
      rows["fine-tuned, body frozen"], abs=5e-4)
