"""Config checks and the resolution of durations to global steps."""

from tests.conftest import plan_of
import json
import os

import pytest

from trainer import config as config_lib
from trainer.base.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(f for f in os.listdir(os.path.join(REPO, "configs"))
                 if f.endswith(".py") and not f.startswith("_"))


def _default(**fields):
  return config_lib.override(config_lib.load(os.path.join(REPO, "configs", "default.py")),
                             **fields)


@pytest.mark.parametrize("name", CONFIGS)
def test_every_shipped_config_passes_its_own_checks(name):
  config = config_lib.load(os.path.join(REPO, "configs", name))
  config_lib.check_fields(config)
  plan = plan_of(config, num_train_examples=50_000, num_replicas=8)
  assert plan.total_steps >= 1 and 0 <= plan.warmup_steps <= plan.total_steps
  # Each config's docstring is its manual: it must say how to launch it.
  doc = open(os.path.join(REPO, "configs", name)).read()
  assert "python -m trainer.main" in doc and "Expected" in doc


def test_default_plan():
  plan = plan_of(_default(), num_train_examples=1437, num_replicas=2)
  assert (plan.total_steps, plan.warmup_steps, plan.steps_per_epoch) == (600, 60, 11)
  assert plan.per_replica_batch_size == 64 and plan.peak_lr == pytest.approx(3e-3)


def test_epochs_warmup_epochs_and_batch_scaling_resolve_once():
  config = _default(**{"total_steps": 0, "num_epochs": 10.0, "schedule.warmup_fraction": 0.0,
                       "schedule.warmup_epochs": 2.0, "schedule.base_batch_size": 64,
                       "schedule.target_lr": 0.1, "global_batch_size": 256})
  plan = plan_of(config, num_train_examples=2560, num_replicas=4)
  assert plan.steps_per_epoch == 10
  assert plan.total_steps == 100 and plan.warmup_steps == 20
  assert plan.peak_lr == pytest.approx(0.4)  # 0.1 * 256 / 64
  assert plan.schedule_kwargs()["target_lr"] == pytest.approx(0.4)


def test_json_holds_config_and_plan():
  config = _default()
  plan = plan_of(config, 1437, 1)
  blob = json.loads(config_lib.to_json(config, plan))
  assert blob["config"]["model"] == "small_cnn"
  assert blob["plan"]["total_steps"] == 600 and blob["plan"]["warmup_steps"] == 60


BAD = [
    ({"model": ""}, "model: must be a model name"),  # unknown names: test_models.py
    ({"dataset": ""}, "dataset: "),
    ({"global_batch_size": 0}, "global_batch_size: must be an integer >= 1"),
    ({"total_steps": -5}, "total_steps: must be an integer >= 0"),
    ({"total_steps": 0, "num_epochs": 0.0}, "total_steps: is 0, so num_epochs must be > 0"),
    ({"steps_per_loop": 0}, "steps_per_loop: must be an integer >= 1"),
    ({"eval_every": -1}, "eval_every: must be an integer >= 0"),
    ({"checkpoint_every": -3}, "checkpoint_every: must be an integer >= 0"),
    ({"mixed_precision": "fp8"}, "mixed_precision: unknown 'fp8'; allowed: auto, float32"),
    ({"optimizer.name": "lamb"}, "optimizer.name: unknown 'lamb'; allowed: adamw, adam, sgd"),
    ({"optimizer.weight_decay": -1.0}, "optimizer.weight_decay: must be a finite number"),
    ({"optimizer.beta_2": 1.0}, "optimizer.beta_2: must be in [0, 1)"),
    ({"schedule.target_lr": 0.0}, "schedule.target_lr: must be a finite number > 0"),
    ({"schedule.target_lr": float("nan")}, "schedule.target_lr: must be a finite number > 0"),
    ({"schedule.start_lr": -1.0}, "schedule.start_lr: must be a finite number >= 0"),
    ({"schedule.hold": -1}, "schedule.hold: must be an integer >= 0"),
    ({"schedule.warmup_steps": 700, "schedule.warmup_fraction": 0.0},
     "total_steps: must be >= warmup_steps + hold"),
    ({"schedule.warmup_steps": 10, "schedule.warmup_epochs": 1.0},
     "schedule.warmup_epochs: given to override() together with schedule.warmup_steps"),
    ({"schedule.warmup_fraction": 1.5}, "schedule.warmup_fraction: must be in [0, 1]"),
    ({"schedule.hold": 590}, "total_steps: must be >= warmup_steps + hold"),
    ({"global_batch_size": 130}, "global_batch_size: 130 does not divide evenly among 4"),
    ({"optimizer.lr_mults": "conv1/.*=-0.5"},
     "optimizer.lr_mults: the multiplier of 'conv1/.*' must be a finite number >= 0"),
    ({"optimizer.lr_mults": "conv1/.*"}, "optimizer.lr_mults: 'conv1/.*' has no '=MULT'"),
    ({"optimizer.layer_decay": 2.0}, "optimizer.layer_decay: must be in [0, 1]"),
    ({"optimizer.layer_decay": -0.5}, "optimizer.layer_decay: must be a finite number >= 0"),
    ({"init_mode": "fork"}, "init_mode: unknown 'fork'; allowed: weights, continue"),
]


@pytest.mark.parametrize("fields,message", BAD)
def test_bad_values_fail_with_one_line_naming_the_field(fields, message):
  with pytest.raises(ConfigError) as info:
    plan_of(_default(**fields), num_train_examples=1437, num_replicas=4)
  assert str(info.value).startswith(message)
  assert "\n" not in str(info.value)


def test_override_rejects_unknown_fields():
  with pytest.raises(ConfigError, match="^schedule.warmup: no such config field"):
    _default(**{"schedule.warmup": 3})


def test_missing_config_file():
  with pytest.raises(ConfigError, match="^config: no such file"):
    config_lib.load("/nonexistent/x.py")


# --- what the user gave last wins (config.settle) ------------------------------------------


def test_override_of_one_group_member_clears_the_others():
  config = _default(**{"schedule.warmup_steps": 8})
  assert (config.schedule.warmup_steps, config.schedule.warmup_fraction) == (8, 0.0)
  config = _default(num_epochs=2.0)
  assert (config.total_steps, config.num_epochs) == (0, 2.0)
  plan = plan_of(config, num_train_examples=1437, num_replicas=1)
  assert plan.total_steps == 2 * 11
  # Given as 0 it agrees with the other member given with it; alone it clears the group.
  assert _default(total_steps=0, num_epochs=3.0).num_epochs == 3.0
  assert _default(**{"schedule.warmup_steps": 0}).schedule.warmup_fraction == 0.0


def test_a_config_built_in_python_settles_by_what_differs_from_the_default():
  config = config_lib.load(os.path.join(REPO, "configs", "default.py"))
  config.num_epochs = 2.0  # total_steps is still the default's 600
  config.schedule.warmup_epochs = 0.5  # warmup_fraction is still the default's 0.1
  settled = config_lib.settle(config)
  assert (settled.total_steps, settled.num_epochs) == (0, 2.0)
  assert (settled.schedule.warmup_fraction, settled.schedule.warmup_epochs) == (0.0, 0.5)
  assert config.total_steps == 600  # a copy: the caller's config is not changed
  assert config_lib.settle(settled).to_dict() == settled.to_dict()  # idempotent
  config.total_steps = 700  # now both differ from the default: which one was meant?
  with pytest.raises(ConfigError, match=r"^num_epochs: set \(to a value other than "
                     r"configs/default.py's\) together with total_steps"):
    config_lib.settle(config)


def test_a_source_that_sets_two_members_is_named():
  config = config_lib.load(os.path.join(REPO, "configs", "default.py"))
  config.num_epochs = 3.0  # total_steps is still the default's: num_epochs is the choice
  assert config_lib.settle(config, source="configs/mine.py").total_steps == 0
  config.total_steps = 700  # both changed: which one was meant?
  with pytest.raises(ConfigError) as info:
    config_lib.settle(config, given=(), source="configs/mine.py")
  assert str(info.value) == (
      "num_epochs: set (to a value other than configs/default.py's) together with total_steps "
      "in configs/mine.py; they say the same thing (total_steps | num_epochs): set one")


@pytest.mark.parametrize("name", CONFIGS)
def test_every_shipped_config_sets_one_member_of_each_group(name):
  config = config_lib.load(os.path.join(REPO, "configs", name))  # load() settles: no error
  for group in config_lib.GROUPS:
    count = sum(1 for f in group if config_lib.get(config, f))
    assert count == 1 or (count == 0 and "cooldown" in group[0]), (name, group)
