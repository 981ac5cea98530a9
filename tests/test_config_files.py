"""Config files as a new user writes them (issue 22, items 2-4): a variant of
configs/default.py that sets a warmup or a length, a run resumed from its own config.json
(given as --config, or picked up without it), and a mistyped field."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO, main_env, plan_of, run_main
from trainer import config as config_lib
from trainer.base.errors import ConfigError

VARIANT = textwrap.dedent("""
    from configs import default

    def get_config():
      c = default.get_config()
      {body}
      return c
    """)


def _variant(tmp_path, *lines):
  path = tmp_path / "variant.py"
  path.write_text(VARIANT.format(body="\n  ".join(lines)))
  return str(path)


@pytest.mark.parametrize("lines,total,warmup", [
    (["c.schedule.warmup_steps = 100"], 600, 100),  # the file never set warmup_fraction
    (["c.num_epochs = 2.0"], 22, 2),  # 11 steps an epoch; 10% of 22, rounded
    (["c.schedule.warmup_epochs = 1.0", "c.total_steps = 300"], 300, 11),
    (["c.schedule.cooldown_fraction = 0.25"], 600, 60),
])
def test_a_variant_file_sets_what_it_changes_from_the_default(tmp_path, lines, total, warmup):
  config = config_lib.load(_variant(tmp_path, *lines))
  plan = plan_of(config, 1437, 1)
  assert (plan.total_steps, plan.warmup_steps) == (total, warmup)


def test_a_variant_file_that_changes_two_members_of_a_group_is_refused(tmp_path):
  path = _variant(tmp_path, "c.total_steps = 700", "c.num_epochs = 2.0")
  with pytest.raises(ConfigError) as e:
    config_lib.load(path)
  assert str(e.value) == (f"num_epochs: set (to a value other than configs/default.py's) "
                          f"together with total_steps in {path}; they say the same thing "
                          f"(total_steps | num_epochs): set one")


def test_the_command_line_applies_on_top_of_a_variant_file(tmp_path):
  path = _variant(tmp_path, "c.schedule.warmup_steps = 100")
  config = config_lib.load(path, given={"schedule.warmup_fraction": 0.2})
  config = config_lib.override(config, **{"schedule.warmup_fraction": 0.2})
  assert plan_of(config, 1437, 1).warmup_steps == 120  # the command line's, last


def test_a_json_record_or_plain_fields_load_as_a_config(tmp_path):
  record = tmp_path / "config.json"
  record.write_text(json.dumps({"config": {"total_steps": 77, "schedule": {"hold": 3}},
                                "plan": {}}))
  config = config_lib.load(str(record))
  assert (config.total_steps, config.schedule.hold, config.model) == (77, 3, "small_cnn")
  fields = tmp_path / "fields.json"
  fields.write_text(json.dumps({"model": "mlp", "schedule": {"target_lr": 0.01}}))
  config = config_lib.load(str(fields))
  assert (config.model, config.schedule.target_lr) == ("mlp", 0.01)
  fields.write_text(json.dumps({"modle": "mlp"}))
  with pytest.raises(ConfigError, match=r"^config: .* has fields configs/default.py does not: "
                                        r"modle; did you mean 'model'\?"):
    config_lib.load(str(fields))


@pytest.mark.parametrize("flag,field,suggestion", [
    ("--config.total_step=100", "total_step", "total_steps"),
    ("--config.schedule.warmup_step=8", "schedule.warmup_step", "schedule.warmup_steps"),
    ("--config.optimiser.name=sgd", "optimiser.name", "optimizer.name"),
])
def test_a_mistyped_field_is_one_clean_line_with_the_nearest(tmp_path, flag, field, suggestion):
  r = subprocess.run([sys.executable, "-m", "trainer.main", flag,
                      f"--workdir={tmp_path / 'w'}"], cwd=str(tmp_path), env=main_env(),
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 2
  assert r.stderr.strip().splitlines()[-1] == (
      f"error: config: no such field {field!r}; did you mean {suggestion!r}? (see --help for "
      f"the fields)")
  assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_a_run_resumes_from_its_own_record(data_dir, tmp_path):
  workdir = str(tmp_path / "w")
  overrides = [f"--config.data_dir={data_dir}", "--strategy=cpu", "--config.model=mlp",
               "--config.total_steps=24", "--config.steps_per_loop=8",
               "--config.schedule.warmup_steps=4", "--config.eval_every=0"]
  r = run_main(f"--workdir={workdir}", *overrides, cwd=str(tmp_path))
  assert r.returncode == 0, r.stderr[-2000:]
  record = os.path.join(workdir, "config.json")
  # Longer, from its own record given as --config: the warmup stays the recorded 4 steps.
  r = run_main(f"--workdir={workdir}", f"--config={record}", "--config.total_steps=32",
               "--strategy=cpu", "--config.schedule.decay=constant",
               "--allow_config_change", cwd=str(tmp_path))
  assert r.returncode == 0, r.stderr[-2000:]
  with open(record) as f:
    saved = json.load(f)
  assert (saved["plan"]["total_steps"], saved["plan"]["warmup_steps"]) == (32, 4)
  assert saved["config"]["model"] == "mlp"
  # Without --config, the workdir's record: one log line says so, nothing retyped.
  r = run_main(f"--workdir={workdir}", "--strategy=cpu", cwd=str(tmp_path))
  assert r.returncode == 0, r.stderr[-2000:]
  assert f"no --config: resuming with the config {record} records" in r.stderr
  assert "Already at step 32 of 32" in r.stderr
  # An override on top is checked like any resume change.
  r = run_main(f"--workdir={workdir}", "--strategy=cpu", "--config.seed=3", cwd=str(tmp_path))
  assert r.returncode == 2
  assert r.stderr.strip().splitlines()[-1].startswith(
      f"error: seed: cannot resume {workdir} under a different config: seed 0 -> 3")


def test_the_shipped_configs_load_from_any_working_directory(tmp_path):
  for name in ("default.py", "cifar10_resnet.py", "imagenet_efficientnetv2.py"):
    config = config_lib.load(os.path.join(REPO, "configs", name))
    assert config.model
