"""Starting a run from another one (`config.init_from`, trainer/run/init.py, trainer/step/init.py).

Through `python -m trainer.main`, from the session's finished MLP run (`runs["full"]`, 24 steps,
10 classes): a fine-tune on 5 classes with the base frozen keeps the base bit for bit and
trains a new head from its fresh initialisation; a fork of step 12 under the source's own
config ends bit for bit where the source ended (so weights, optimizer slots and step carried
over), and a fork into a cooldown logs the new schedule's rates from step 12. The source is
never written; a workdir that has checkpoints resumes its own and says so. Under two mirrored
replicas both modes give what one device gives.
"""

import json
import os

import numpy as np
import pytest

from tests.conftest import (CHECKPOINTED_RUN, assert_same_weights, build_parts, checkpointed_run,
                            ckpt_dir, cpu, main_env, one_line_error, spec_of, tensors)
from tests.killer import run_matrix, tree
from trainer import schedules
from trainer.base.compat import LEGACY_KERAS, keras
from trainer.base.errors import ConfigError
from trainer.distribute import precision
from trainer.rundir import resume
from trainer.run import init, summaries

pytestmark = pytest.mark.skipif(LEGACY_KERAS, reason="Keras 3 only (refused under tf_keras)")


def _flags(data_dir, workdir, strategy="cpu", **changes):
  fields = {**CHECKPOINTED_RUN, "data_dir": data_dir, **changes}
  devices = ["--cpu_devices=2"] if strategy == "mirrored" else []
  return [f"--workdir={workdir}", f"--strategy={strategy}", *devices,
          *[f"--config.{k}={v}" for k, v in fields.items()]]


FINE_TUNE = {"dataset": "tests.init_plugins:digits_0_to_4", "augment": False,
             "total_steps": 16, "optimizer.lr_mults": "hidden/.*=0",
             "schedule.target_lr": 0.03}  # a head trained in 16 steps
COOLDOWN = {"schedule.decay": "constant", "schedule.cooldown_steps": 8, "total_steps": 20}


def _cases(runs, data_dir, base, strategy="cpu"):
  full = runs["full"]
  fork = os.path.join(ckpt_dir(full), "ckpt-12")
  return {
      "fine_tune": _flags(data_dir, f"{base}/fine_tune", strategy, init_from=full, **FINE_TUNE),
      "fork": _flags(data_dir, f"{base}/fork", strategy, init_from=fork,
                     init_mode="continue"),
      "cooldown": _flags(data_dir, f"{base}/cooldown", strategy, init_from=fork,
                         init_mode="continue", **COOLDOWN),
      "export": _flags(data_dir, f"{base}/export", strategy, total_steps=8,
                       init_from=os.path.join(full, "export", "model.keras")),
      "partial": _flags(data_dir, f"{base}/partial", strategy, total_steps=8,
                        model="tests.init_plugins:wide_mlp", init_from=full,
                        init_allow_partial=True),
  }


def _run(cases, directory):
  names = sorted(cases)
  results = run_matrix([{"argv": cases[n], "env": {}} for n in names], str(directory),
                       main_env())
  for name, result in zip(names, results):
    assert result["exit"] == 0, (name, result["stderr"][-3000:])
  return dict(zip(names, results))


@pytest.fixture(scope="module")
def started(runs, data_dir, tmp_path_factory):
  """The runs of `_cases` on one device, then each run's command again (a resume)."""
  base = tmp_path_factory.mktemp("init_from")
  before = tree(runs["full"])
  cases = _cases(runs, data_dir, base)
  first = _run(cases, base)
  again = _run({"fine_tune": cases["fine_tune"]}, base)
  return {"base": str(base), "first": first, "again": again, "source_before": before}


def _weights(workdir):
  """{path: array} of a finished run's final weights (its export's model.keras)."""
  model = keras.models.load_model(os.path.join(workdir, "export", "model.keras"), compile=False)
  return {v.path: np.array(v.numpy()) for v in model.weights}


@pytest.mark.slow  # the runs of `started` (~50 s)
def test_the_source_workdir_is_left_byte_for_byte(started, runs):
  assert tree(runs["full"]) == started["source_before"]
  assert not os.path.exists(os.path.join(runs["full"], ".lock.tmp"))


@pytest.mark.slow  # the runs of `started` (~50 s)
def test_a_fine_tune_keeps_the_frozen_base_and_trains_a_new_head(started, runs, data_dir):
  workdir = os.path.join(started["base"], "fine_tune")
  stderr = started["first"]["fine_tune"]["stderr"]
  assert "loaded 2 of 4 variables" in stderr, stderr[-3000:]
  assert ("kept their fresh initialisation: logits/kernel ((64, 5) here, (64, 10) in the "
          "source), logits/bias ((5,) here, (10,) in the source)") in stderr
  source, tuned = _weights(runs["full"]), _weights(workdir)
  for path in ("hidden/kernel", "hidden/bias"):  # frozen: the source's, bit for bit
    assert tuned[path].tobytes() == source[path].tobytes(), path
  config = checkpointed_run(data_dir, **{**FINE_TUNE, "init_from": ""})
  with precision.global_policy("float32"):
    fresh = build_parts(config, cpu()).model  # the head's fresh initialisation (seed 0)
  initial = {v.path: np.array(v.numpy()) for v in fresh.weights}
  assert tuned["logits/kernel"].shape == (64, 5)
  assert not np.allclose(tuned["logits/kernel"], initial["logits/kernel"])  # trained from it
  # Step 0, this run's schedule with its warmup, a fresh optimizer: the first rate is lr(0).
  rates = summaries.read_scalars(workdir, "train", "learning_rate")
  assert min(rates) == 0 and rates[0] == pytest.approx(CHECKPOINTED_RUN["schedule.start_lr"])
  assert summaries.read_scalars(workdir, "eval", "accuracy")[16] > 0.5  # chance: 0.2
  with open(os.path.join(workdir, "config.json")) as f:
    recorded = json.load(f)["config"]
  assert (recorded["init_from"], recorded["init_mode"]) == (runs["full"], "weights")
  with open(os.path.join(workdir, "export", "export.json")) as f:
    assert "model.keras" in json.load(f)["written"]  # a frozen run exports its model.keras


@pytest.mark.slow  # the runs of `started` (~50 s)
def test_a_fork_of_step_12_under_the_same_config_ends_where_the_source_ended(started, runs):
  workdir = os.path.join(started["base"], "fork")
  assert "forked" in started["first"]["fork"]["stderr"]
  assert_same_weights(ckpt_dir(runs["full"]), ckpt_dir(workdir))  # weights, slots, step
  source_rates = summaries.read_scalars(runs["full"], "train", "learning_rate")
  rates = summaries.read_scalars(workdir, "train", "learning_rate")
  assert min(rates) == 12 and rates == {s: r for s, r in source_rates.items() if s >= 12}


@pytest.mark.slow  # the runs of `started` (~50 s)
def test_a_fork_into_a_cooldown_logs_the_new_schedule_from_step_12(started):
  workdir = os.path.join(started["base"], "cooldown")
  rates = summaries.read_scalars(workdir, "train", "learning_rate")
  kwargs = dict(total_steps=20, warmup_steps=6, hold=2, start_lr=1e-4, target_lr=3e-3,
                decay="constant", cooldown_steps=8)
  assert sorted(rates) == list(range(12, 20))
  for step, rate in rates.items():
    assert rate == pytest.approx(schedules.learning_rate(step, **kwargs), rel=1e-6)
  assert rates[12] == pytest.approx(3e-3)  # the stable phase at S: not the source's cosine


@pytest.mark.slow  # the runs of `started` (~50 s)
def test_a_workdir_with_checkpoints_resumes_its_own_and_says_so(started):
  stderr = started["again"]["fine_tune"]["stderr"]
  assert "init_from" in stderr and "not read; this workdir has checkpoints" in stderr
  assert "fine-tuning from" not in stderr


@pytest.mark.slow  # the runs of `started` (~50 s)
def test_an_export_and_a_partial_source_start_a_run(started):
  first = started["first"]
  assert "loaded 4 of 4 variables" in first["export"]["stderr"]
  # Only logits/bias (10,) fits: a minority, started from with init_allow_partial.
  assert "loaded 1 of 4 variables (10 of " in first["partial"]["stderr"]


@pytest.mark.slow
def test_both_modes_and_the_multipliers_on_two_mirrored_replicas(started, runs, data_dir,
                                                                  tmp_path):
  cases = _cases(runs, data_dir, tmp_path, "mirrored")
  _run({k: cases[k] for k in ("fine_tune", "fork")}, tmp_path)
  for name in ("fine_tune", "fork"):
    one = _weights(os.path.join(started["base"], name))
    two = _weights(str(tmp_path / name))
    for path in one:
      np.testing.assert_allclose(two[path], one[path], rtol=2e-5, atol=1e-6, err_msg=path)
  one, two = _weights(os.path.join(started["base"], "fine_tune")), _weights(
      str(tmp_path / "fine_tune"))
  assert two["hidden/kernel"].tobytes() == one["hidden/kernel"].tobytes()  # frozen
  assert tree(runs["full"]) == started["source_before"]


# In-process: where the source is, the weight average, and what a resume may change.


def test_locate_names_what_it_found_or_what_is_there(runs, tmp_path):
  full = runs["full"]
  assert init.locate(full).path == os.path.join(ckpt_dir(full), "ckpt-24")
  assert init.locate(ckpt_dir(full)).path == os.path.join(ckpt_dir(full), "ckpt-24")
  assert init.locate(os.path.join(full, "export")).kind == "export"
  assert init.locate(os.path.join(ckpt_dir(full), "ckpt-8")).config.model == "mlp"
  for path, message in [
      (str(tmp_path / "nothing"), "init_from: no such workdir, checkpoint or model.keras"),
      (os.path.join(ckpt_dir(full), "ckpt-7"), "init_from: no checkpoint"),
      (str(tmp_path / "m.keras"), "init_from: no such file"),
      (str(tmp_path), f"init_from: {tmp_path} has no checkpoint")]:
    with pytest.raises(ConfigError) as e:
      init.locate(path)
    one_line_error(e, message)


@pytest.mark.parametrize("mode", ["weights", "continue"])
def test_the_weight_average_starts_at_the_weights_training_starts_from(runs, data_dir, mode):
  config = checkpointed_run(data_dir, ema_decay=0.9, init_from=runs["full"], init_mode=mode,
                            total_steps=30)
  with precision.global_policy("float32"):
    parts = build_parts(config, cpu())
    init.start(parts, None)
    averages = [np.array(v.numpy()) for v in parts.learner.ema.averages]
    weights = [np.array(v.numpy()) for v in parts.model.trainable_variables]
  source = _weights(runs["full"])
  assert weights[0].tobytes() == source["hidden/kernel"].tobytes()
  for a, w in zip(averages, weights):
    assert a.tobytes() == w.tobytes()
  if mode == "continue":
    assert int(parts.optimizer.iterations.numpy()) == 24


def _check(workdir, config, allow=False):
  return resume.check_resume(workdir, spec_of(config, cpu()), allow)


def test_a_resume_never_changes_where_the_run_started(runs, data_dir):
  for changes in ({"init_from": "/elsewhere"}, {"init_mode": "continue"}):
    field = next(iter(changes))
    for allow in (False, True):
      with pytest.raises(ConfigError) as e:
        _check(runs["full"], checkpointed_run(data_dir, **changes), allow)
      one_line_error(e, f"{field}: cannot resume {runs['full']} with {field} ",
                     "a resume continues its own checkpoints")


def test_a_resume_may_change_non_zero_multipliers_only_with_allow_config_change(runs, data_dir):
  with pytest.raises(ConfigError) as e:
    _check(runs["full"], checkpointed_run(data_dir, **{"optimizer.lr_mults": "hidden/.*=0.5"}))
  one_line_error(e, "optimizer.lr_mults: cannot resume", "--allow_config_change")
  _check(runs["full"], checkpointed_run(data_dir, **{"optimizer.lr_mults": "hidden/.*=0.5"}),
         allow=True)
  _check(runs["full"], checkpointed_run(data_dir, **{"optimizer.layer_decay": 0.8}), allow=True)
  with pytest.raises(ConfigError) as e:  # freezing: the checkpoint's slots would not fit
    _check(runs["full"], checkpointed_run(data_dir, **{"optimizer.lr_mults": "hidden/.*=0"}),
           allow=True)
  one_line_error(e, "optimizer.lr_mults: --allow_config_change cannot resume",
                 "init_mode=continue")


def test_a_fork_may_unfreeze_a_variable_whose_slots_start_at_zero(data_dir, tmp_path, caplog):
  """Slots are matched by variable path: the source froze `hidden` (it has no slots for it);
  the fork trains it from zero slots and carries `logits`' slots and the step over."""
  from trainer.run import train  # pylint: disable=g-import-not-at-top
  source = str(tmp_path / "frozen")
  train.train_and_evaluate(checkpointed_run(data_dir, total_steps=8, **{
      "optimizer.lr_mults": "hidden/.*=0"}), source, cpu())
  config = checkpointed_run(data_dir, init_from=source, init_mode="continue")
  with precision.global_policy("float32"), caplog.at_level("INFO", logger="absl"):
    parts = build_parts(config, cpu())
    init.start(parts, None)
  slots = {v.path.split("/", 1)[1]: np.array(v.numpy()) for v in parts.optimizer.variables}
  assert int(parts.optimizer.iterations.numpy()) == 8
  assert not slots["hidden_kernel_momentum"].any() and not slots["hidden_bias_velocity"].any()
  saved = {k: v for k, v in tensors(ckpt_dir(source)).items() if "optimizer/_variables" in k}
  assert any(np.array_equal(slots["logits_kernel_momentum"], v) for v in saved.values())
  assert "optimizer state started fresh for hidden_kernel_momentum" in caplog.text
