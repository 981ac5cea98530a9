"""Invalid command lines: exit status 2, one `error: FIELD: ...` line, the workdir untouched.

Every case is a real `python -m trainer.main` process, forked by tests/killer.py from a
parent that imported TensorFlow once (a fresh interpreter per case would spend ~6 s each on
the import); two cases run against real interpreters to show the two agree.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import plan_of, REPO, cpu, default_config, main_env
from tests.killer import tree
from trainer import config as config_lib
from trainer import data
from trainer.run import train
from trainer.rundir import lock as lock_lib

_TF_CONFIG_OK_SHAPE = {"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker",
                                                                         "index": 3}}

# (id, flags after --workdir/--config.data_dir/--strategy=cpu, start of the message after
#  "error: ", options: workdir = new (missing), existing (a run's files before its first
#  checkpoint), file, proc, locked, train_file / eval_file / checkpoints_file (that entry a
#  file), state_dir (checkpoints/checkpoint a directory), held (the test process holds its
#  lock), held_unlinked (held, and its lock file removed), lock_link (.lock a symlink to
#  {afile}), stranger (someone's curves.png and export/, no run), plugin_model /
#  plugin_dataset (config.json naming this:s / os:abort), no_config (a run's real checkpoints
#  without its config.json), finished (a 2-step run that reached its end), schedule_5 (its
#  config.json's schedule hand-edited to 5); env = environment
#  changes). Messages may name {workdir}, {pid} (the test process) and the config files
#  {raises}, {partial}, {notcfg}, {noget}, {exits}, {getexits}, and flags {afile}.
CASES = [
    ("negative total", ["--config.total_steps=-5"], "total_steps: must be an integer >= 0", {}),
    ("zero steps per loop", ["--config.steps_per_loop=0"], "steps_per_loop: must be", {}),
    ("negative steps per loop", ["--config.steps_per_loop=-3"], "steps_per_loop: ", {}),
    ("negative eval_every", ["--config.eval_every=-7"], "eval_every: must be an integer >= 0",
     {}),
    ("negative checkpoint_every", ["--config.checkpoint_every=-50"], "checkpoint_every: ", {}),
    ("no length at all", ["--config.total_steps=0", "--config.num_epochs=0"],
     "total_steps: is 0, so num_epochs must be > 0", {}),
    ("negative epochs", ["--config.total_steps=0", "--config.num_epochs=-1"], "num_epochs: ", {}),
    ("warmup longer than training",
     ["--config.schedule.warmup_fraction=0", "--config.schedule.warmup_steps=700"],
     "total_steps: must be >= warmup_steps + hold", {}),
    # The flag replaces the file's warmup_fraction (the last given wins): 5000 is too long.
    ("warmup steps over the file's fraction", ["--config.schedule.warmup_steps=5000"],
     "total_steps: must be >= warmup_steps", {}),
    ("a stray argument", ["stray"], "unexpected arguments", {}),
    ("hold longer than training", ["--config.schedule.hold=600"], "total_steps: must be >=", {}),
    ("warmup fraction > 1", ["--config.schedule.warmup_fraction=1.5"],
     "schedule.warmup_fraction: must be in [0, 1]", {}),
    ("two warmups", ["--config.schedule.warmup_steps=10", "--config.schedule.warmup_fraction=0.2"],
     "schedule.warmup_fraction: given on the command line together with schedule.warmup_steps",
     {}),
    ("two lengths", ["--config.total_steps=100", "--config.num_epochs=2"],
     "num_epochs: given on the command line together with total_steps", {}),
    ("negative warmup epochs",
     ["--config.schedule.warmup_fraction=0", "--config.schedule.warmup_epochs=-2"],
     "schedule.warmup_epochs: ", {}),
    ("zero LR", ["--config.schedule.target_lr=0"], "schedule.target_lr: must be a finite", {}),
    ("NaN LR", ["--config.schedule.target_lr=nan"], "schedule.target_lr: must be a finite", {}),
    ("negative start LR", ["--config.schedule.start_lr=-0.001"], "schedule.start_lr: ", {}),
    ("infinite final LR", ["--config.schedule.final_lr=inf"], "schedule.final_lr: ", {}),
    ("negative base batch", ["--config.schedule.base_batch_size=-1"],
     "schedule.base_batch_size: ", {}),
    ("unknown strategy", ["--strategy=gpu"], "strategy: unknown 'gpu'; allowed: auto", {}),
    ("unknown model", ["--config.model=vgg"], "model: unknown 'vgg'; allowed: small_cnn", {}),
    ("unknown dataset", ["--config.dataset=no_such_dataset_xyz"],
     "dataset: 'no_such_dataset_xyz' is not a TFDS dataset", {}),
    ("empty dataset name", ["--config.dataset="], "dataset: must be a TFDS name", {}),
    ("TFDS name without its data", ["--config.dataset=mnist", "--config.data_dir={empty}"],
     "dataset: 'mnist' is not prepared in", {}),
    ("batch not divisible by replicas", ["--strategy=mirrored", "--cpu_devices=3"],
     "global_batch_size: 128 does not divide evenly among 3 replicas", {}),
    ("zero batch", ["--config.global_batch_size=0"], "global_batch_size: must be", {}),
    ("unknown optimizer", ["--config.optimizer.name=lamb"], "optimizer.name: unknown 'lamb'", {}),
    ("beta_2 of 1", ["--config.optimizer.beta_2=1.0"], "optimizer.beta_2: must be in [0, 1)",
     {}),
    ("NaN weight decay", ["--config.optimizer.weight_decay=nan"],
     "optimizer.weight_decay: must be a finite number", {}),
    ("unknown precision", ["--config.mixed_precision=fp8"], "mixed_precision: unknown 'fp8'", {}),
    ("zero checkpoints kept", ["--config.max_checkpoints=0"], "max_checkpoints: must be", {}),
    ("unknown input mode", ["--config.input_mode=gpu"], "input_mode: unknown 'gpu'", {}),
    ("device input of a generated split",
     ["--config.input_mode=device", "--config.dataset=synthetic"],
     "input_mode: 'device' needs one replica", {"workdir": "new"}),
    ("unknown config field", ["--config.no_such_field=1"], "config: no such field", {}),
    ("missing config file", ["--config=/no/such/config.py"], "config: no such file", {}),
    # Wrong types: absl's parser names the flag, and what it could not parse.
    ("total not an int", ["--config.total_steps=abc"],
     "flag --config.total_steps=abc: invalid literal for int()", {}),
    ("seed not an int", ["--config.seed=1.5"], "flag --config.seed=1.5: invalid literal", {}),
    ("augment not a bool", ["--config.augment=maybe"],
     "flag --config.augment=maybe: ('Non-boolean argument", {}),
    ("cpu_devices not an int", ["--cpu_devices=abc"], "flag --cpu_devices=abc: ", {}),
    ("negative cpu_devices", ["--cpu_devices=-1"], "cpu_devices: must be an integer >= 1", {}),
    ("no TPU", ["--strategy=tpu", "--tpu=local"], "tpu: --tpu=local but no TPU devices", {}),
    ("multi_worker without TF_CONFIG", ["--strategy=multi_worker"],
     "TF_CONFIG: --strategy=multi_worker needs", {"env": {"TF_CONFIG": None}}),
    ("TF_CONFIG not JSON", ["--strategy=multi_worker"], "TF_CONFIG: ",
     {"env": {"TF_CONFIG": '{"cluster": '}}),
    ("TF_CONFIG not an object", ["--strategy=multi_worker"], "TF_CONFIG: ",
     {"env": {"TF_CONFIG": "[1, 2]"}}),
    ("TF_CONFIG task outside the cluster", ["--strategy=multi_worker"], "TF_CONFIG: ",
     {"env": {"TF_CONFIG": json.dumps(_TF_CONFIG_OK_SHAPE)}}),
    ("workdir is a file", [], "workdir: ", {"workdir": "file"}),
    ("workdir under a read-only place", [], "workdir: ", {"workdir": "proc"}),
    ("workdir under a locked directory", [], "workdir: ", {"workdir": "locked"}),
    ("resume with another seed", ["--config.seed=7"],
     "seed: cannot resume {workdir} under a different config: seed 0 -> 7",
     {"workdir": "existing"}),
    # A warmup given as a fraction of the run moves with total_steps: the past changes.
    ("resume with a longer run", ["--config.total_steps=900"],
     "total_steps: cannot resume {workdir} at step 2 with this schedule (total_steps 2 -> 900",
     {"workdir": "finished"}),
    ("resume with another model", ["--config.model=mlp"], "model: cannot resume",
     {"workdir": "existing"}),
    # Issue 13, case 7: user mistakes that were tracebacks.
    ("dataset is a path", ["--config.dataset=/data/mnist"],
     "dataset: '/data/mnist' looks like a path", {}),
    ("dataset not ASCII", ["--config.dataset=mnist/données"],
     "dataset: 'mnist/données' is not a TFDS name", {}),
    ("dataset TFDS cannot parse", ["--config.dataset=mnist:1.0"],
     "dataset: TFDS cannot build 'mnist:1.0'", {}),
    ("data_dir is a file", ["--config.data_dir={afile}"], "data_dir: '{afile}' is a file", {}),
    ("seed beyond Keras's range", ["--config.seed=4294967296"],
     "seed: must be an integer in [0, 4294967295]", {}),
    ("global batch too large to allocate", ["--config.global_batch_size=1000000000000"],
     "global_batch_size: 1000000000000 examples of 8x8x1 are ", {}),
    ("config file whose get_config raises", ["--config={raises}"],
     "config: loading {raises} raised RuntimeError: boom", {}),
    ("config file without the fields", ["--config={partial}"],
     "config: {partial}'s get_config() returns a config without ", {}),
    ("config file returning no ConfigDict", ["--config={notcfg}"],
     "config: {notcfg}'s get_config() returned a int, not an ml_collections.ConfigDict", {}),
    ("config file without get_config", ["--config={noget}"],
     "config: {noget} has no get_config() function", {}),
    ("train/ is a file", [], "workdir: {workdir}/train is a file", {"workdir": "train_file"}),
    ("eval/ is a file", [], "workdir: {workdir}/eval is a file", {"workdir": "eval_file"}),
    # Case 8: noticed before a loop, not after one with advice to free space.
    ("checkpoints is a file", [], "workdir: {workdir}/checkpoints is a file",
     {"workdir": "checkpoints_file"}),
    ("state file is a directory", [], "workdir: {workdir}/checkpoints/checkpoint is a directory",
     {"workdir": "state_dir"}),
    # Case 2: a second run on a workdir in use.
    ("workdir in use", [], "workdir: {workdir} is in use by another run: pid {pid} on ",
     {"workdir": "held"}),
    # Case 3: checkpoints without their config.json.
    ("checkpoints without config.json", [],
     "workdir: {workdir} has checkpoints but no config.json", {"workdir": "no_config"}),
    # Case 4: what --allow_config_change cannot honour.
    ("allow_config_change with another model", ["--allow_config_change", "--config.model=mlp"],
     "model: --allow_config_change cannot resume {workdir} with model 'small_cnn' -> 'mlp'",
     {"workdir": "existing"}),
    ("allow_config_change with another optimizer",
     ["--allow_config_change", "--config.optimizer.name=sgd"],
     "optimizer.name: --allow_config_change cannot resume", {"workdir": "existing"}),
    ("checkpoint of another model without config.json",
     ["--allow_config_change", "--config.model=mlp"], "model: the checkpoint ",
     {"workdir": "no_config"}),
    # Case 5: a bound on logical devices.
    ("too many cpu_devices", ["--strategy=mirrored", "--cpu_devices=10000"],
     "cpu_devices: must be at most 256, got 10000", {}),
    # Issue 21, item 3: the lock walked around, or written through a link.
    ("workdir in use, its lock file removed", [],
     "workdir: {workdir} is in use by another run: another process (its lock file "
     "{workdir}/.lock, which names it, is missing", {"workdir": "held_unlinked"}),
    ("lock file a symlink", [], "workdir: {workdir}/.lock is a symbolic link (to '{afile}')",
     {"workdir": "lock_link"}),
    # Item 4: someone's own directory.
    ("workdir that holds no run", [],
     "workdir: '{workdir}' is not empty and holds no run (no config.json, no checkpoints/): "
     "curves.png, export; ", {"workdir": "stranger"}),
    # Item 5: code that only the workdir's config.json names (no --config: its record is used).
    ("recorded model plug-in not named", [],
     "model: 'this:s' is code (a plug-in) that only {workdir}/config.json names, so it is not "
     "imported: if you trust it, give --config.model=this:s (or --trust_plugins)",
     {"workdir": "plugin_model"}),
    ("recorded dataset plug-in not named", [],
     "dataset: 'os:abort' is code (a plug-in) that only {workdir}/config.json names",
     {"workdir": "plugin_dataset"}),
    # Issue 24: starting from another run ({finished}: a 2-step small_cnn run, its export
    # {fexport}), and per-variable learning rates.
    ("init_from a missing path", ["--config.init_from=/no/such/run"],
     "init_from: no such workdir, checkpoint or model.keras '/no/such/run'", {"workdir": "new"}),
    ("init_from a checkpoint that is not there",
     ["--config.init_from={finished}/checkpoints/ckpt-7"],
     "init_from: no checkpoint '{finished}/checkpoints/ckpt-7' (there are: ckpt-2)",
     {"workdir": "new"}),
    ("init_from an export of another input shape",
     ["--config.dataset=synthetic", "--config.init_from={fexport}"],
     "init_from: {fexport} takes inputs of shape (8, 8, 1), this run's dataset gives "
     "(32, 32, 3)", {"workdir": "new"}),
    ("init_from holding a minority of the weights",
     ["--config.model=mlp", "--config.init_from={finished}"],
     "init_from: {finished}/checkpoints/ckpt-2 holds only 1 of 4 variables", {"workdir": "new"}),
    ("init_mode unknown", ["--config.init_mode=resume"],
     "init_mode: unknown 'resume'; allowed: weights, continue", {}),
    ("fork of an export", ["--config.init_mode=continue", "--config.init_from={fexport}"],
     "init_mode: continue forks a checkpoint", {"workdir": "new"}),
    ("fork of another model",
     ["--config.model=mlp", "--config.init_mode=continue", "--config.init_from={finished}"],
     "init_mode: continue forks a run of model 'small_cnn' and this config has 'mlp'",
     {"workdir": "new"}),
    ("fork with nothing left to train",
     ["--config.init_mode=continue", "--config.init_from={finished}", "--config.total_steps=2"],
     "init_from: {finished}/checkpoints/ckpt-2 is at global step 2 and this run's "
     "total_steps is 2", {"workdir": "new"}),
    ("resume with another init_from", ["--config.init_from={finished}"],
     "init_from: cannot resume {workdir} with init_from '' -> ", {"workdir": "existing"}),
    ("lr_mults pattern matching nothing", ["--config.optimizer.lr_mults=head/.*=0"],
     "optimizer.lr_mults: 'head/.*' matches no trainable variable path of this model",
     {"workdir": "new"}),
    ("lr_mults multiplier below 0", ["--config.optimizer.lr_mults=conv1/.*=-1"],
     "optimizer.lr_mults: the multiplier of 'conv1/.*' must be a finite number >= 0", {}),
    ("lr_mults pattern not a regular expression", ["--config.optimizer.lr_mults=conv[=1"],
     "optimizer.lr_mults: 'conv[' is not a regular expression", {}),
    ("layer_decay above 1", ["--config.optimizer.layer_decay=1.5"],
     "optimizer.layer_decay: must be in [0, 1]", {}),
    # Issue 21: values that would have been ignored without a word, and mistakes that were
    # tracebacks.
    ("momentum with adam", ["--config.optimizer.name=adam", "--config.optimizer.momentum=0.5"],
     "optimizer.momentum: only sgd uses it, and optimizer.name is 'adam'", {}),
    ("beta_1 with sgd", ["--config.optimizer.name=sgd", "--config.optimizer.beta_1=0.8"],
     "optimizer.beta_1: only adam and adamw use it, and optimizer.name is 'sgd'", {}),
    ("eval_fraction on a dataset with an eval split", ["--config.eval_fraction=0.3"],
     "eval_fraction: 'digits' has its own eval split", {}),
    ("cpu_devices with one device", ["--cpu_devices=2"],
     "cpu_devices: --strategy=cpu runs on one device", {}),
    ("a model with nothing to train", ["--config.model=tests.init_plugins:frozen_mlp"],
     "model: 'tests.init_plugins:frozen_mlp' has no trainable weights", {"workdir": "new"}),
    ("a checkpoint past total_steps", ["--config.total_steps=1"],
     "total_steps: {workdir} is already at global step 2, past total_steps 1",
     {"workdir": "finished"}),
    ("a config file that exits", ["--config={exits}"],
     "config: loading {exits} called sys.exit(0)", {}),
    ("a get_config that exits", ["--config={getexits}"],
     "config: {getexits}'s get_config() called sys.exit(0)", {}),
    ("a hand-edited schedule of 5", [],
     "schedule: {workdir}/config.json has 5 where an object of fields belongs",
     {"workdir": "schedule_5"}),
]
# The config files of the config-file cases.
CONFIG_FILES = {
    "raises": "def get_config():\n  raise RuntimeError('boom')\n",
    "partial": ("import ml_collections\ndef get_config():\n  return ml_collections.ConfigDict("
                "{'dataset': 'digits', 'model': 'mlp'})\n"),
    "notcfg": "def get_config():\n  return 42\n",
    "noget": "x = 1\n",
    "exits": "import sys\nsys.exit(0)\n",
    "getexits": "import sys\ndef get_config():\n  sys.exit(0)\n",
}
# Run through a fresh interpreter too, to show the forked runs behave the same.
REAL_INTERPRETER = ("unknown model", "resume with another seed")


def _workdir(kind, base, name):
  if kind == "file":
    path = base / f"{name}.file"
    path.write_text("not a directory")
    return str(path)
  if kind == "proc":  # refuses new entries even to root
    return f"/proc/trainer-no-such-dir/{name}"
  if kind == "locked":
    locked = base / f"{name}.locked"
    locked.mkdir(mode=0o555)
    return str(locked / "w")
  if kind in ("existing", "held", "held_unlinked", "lock_link", "plugin_model",
              "plugin_dataset", "schedule_5"):
    path = base / name
    shutil.copytree(base / "template", path)
    if kind == "lock_link":
      (path / ".lock").symlink_to(base / "a-file")
    if kind.startswith("plugin_"):
      blob = json.loads((path / "config.json").read_text())
      blob["config"].update(model="this:s" if kind == "plugin_model" else "mlp",
                            dataset="os:abort" if kind == "plugin_dataset" else "digits")
      (path / "config.json").write_text(json.dumps(blob))
    if kind == "schedule_5":
      blob = json.loads((path / "config.json").read_text())
      blob["config"]["schedule"] = 5
      (path / "config.json").write_text(json.dumps(blob))
    return str(path)
  if kind == "stranger":
    path = base / name
    (path / "export").mkdir(parents=True)
    (path / "curves.png").write_text("mine")
    (path / "export" / "model.keras").write_text("mine")
    return str(path)
  if kind in ("no_config", "finished"):
    path = base / name
    shutil.copytree(base / ("checkpointed" if kind == "no_config" else "finished"), path)
    return str(path)
  if kind in ("train_file", "eval_file", "checkpoints_file", "state_dir"):
    path = base / name
    shutil.copytree(base / "template", path)
    entry = {"train_file": "train", "eval_file": "eval", "checkpoints_file": "checkpoints",
             "state_dir": "checkpoints/checkpoint"}[kind]
    shutil.rmtree(path / entry, ignore_errors=True)
    if kind == "state_dir":
      (path / entry).mkdir()
    else:
      (path / entry).write_text("not a directory")
    return str(path)
  return str(base / name)


def _finished(path, data_dir):
  """A real run's workdir (the default model, 2 steps, the default warmup_fraction)."""
  config = default_config(data_dir=data_dir, total_steps=2, steps_per_loop=2, eval_every=0)
  train.train_and_evaluate(config, path, cpu())


def _checkpointed(path, finished):
  """A real run's workdir with checkpoints and no config.json."""
  shutil.copytree(finished, path)
  os.remove(os.path.join(path, "config.json"))


def _template(path, data_dir):
  """A run's workdir before its first checkpoint: config.json, schedule.png, events."""
  config = default_config(data_dir=data_dir)
  os.makedirs(os.path.join(path, "checkpoints"))
  os.makedirs(os.path.join(path, "train"))
  with open(os.path.join(path, "config.json"), "w") as f:
    f.write(config_lib.to_json(config, plan_of(config, 1437, 1)))
  with open(os.path.join(path, "schedule.png"), "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
  with open(os.path.join(path, "train", "events.out.tfevents.1.host"), "wb") as f:
    f.write(os.urandom(128))


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
  """Runs every case once (two at a time); returns {id: (result, workdir, tree before)}."""
  base = tmp_path_factory.mktemp("bad_input")
  data_dir, empty = str(base / "tfds"), str(base / "empty")
  os.makedirs(empty)
  _template(str(base / "template"), data_dir)
  data.get_dataset_info("digits", data_dir)  # prepare the digits once, not in every case
  _finished(str(base / "finished"), data_dir)
  _checkpointed(str(base / "checkpointed"), str(base / "finished"))
  files = {"afile": str(base / "a-file"), "finished": str(base / "finished"),
           "fexport": str(base / "finished" / "export" / "model.keras")}
  (base / "a-file").write_text("not a directory")
  for key, text in CONFIG_FILES.items():
    files[key] = str(base / f"{key}.py")
    (base / f"{key}.py").write_text(text)
  cases, setups, held = [], {}, []
  for i, (name, flags, _, options) in enumerate(CASES):
    kind = options.get("workdir", "existing" if i % 2 else "new")
    if kind == "locked" and os.geteuid() == 0:
      kind = "proc"  # root writes through mode 0o555; /proc refuses everyone
    workdir = _workdir(kind, base, f"case{i}")
    if kind in ("held", "held_unlinked"):  # this process holds the lock while the case runs
      held.append(lock_lib.Lock(workdir))
      held[-1].__enter__()
      if kind == "held_unlinked":
        os.remove(os.path.join(workdir, ".lock"))
    before = tree(workdir) if os.path.isdir(workdir) else None
    setups[name] = (workdir, before, os.path.exists(workdir))
    flags = [f.format(empty=empty, **files) for f in flags]
    first = [f for f in flags if f.startswith("--config=")]  # before any --config.FIELD
    argv = [*first, f"--workdir={workdir}", f"--config.data_dir={data_dir}", "--strategy=cpu",
            *[f for f in flags if f not in first]]
    cases.append({"argv": argv, "env": options.get("env", {}), "files": files})
  with open(base / "cases.json", "w") as f:
    json.dump(cases, f)
  env = main_env(TMPDIR=str(base))
  env.pop("TF_CONFIG", None)
  r = subprocess.run([sys.executable, "-m", "tests.killer", "matrix", str(base / "cases.json"),
                      str(base / "results.json")], cwd=REPO, env=env, capture_output=True,
                     text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  with open(base / "results.json") as f:
    results = json.load(f)
  out = {}
  for (name, *_), case, result in zip(CASES, cases, results):
    workdir = setups[name][0]
    after = tree(workdir) if os.path.isdir(workdir) else None  # before any lock is released
    out[name] = (result, case, *setups[name], os.path.exists(workdir), after)
  for lock in held:
    lock.__exit__(None, None, None)
  return out


def test_the_matrix_is_big_enough():
  assert len(CASES) >= 30 and len({name for name, *_ in CASES}) == len(CASES)


@pytest.mark.parametrize("name,message", [(name, message) for name, _, message, _ in CASES])
def test_bad_input_exits_2_with_one_line_and_touches_nothing(matrix, name, message):
  result, case, workdir, before, existed, exists, after = matrix[name]
  stderr = result["stderr"]
  assert result["exit"] == 2, stderr[-3000:]
  assert "Traceback" not in stderr, stderr[-3000:]
  last = stderr.strip().splitlines()[-1]
  assert last.startswith("error: " + message.format(workdir=workdir, pid=os.getpid(),
                                                    **case["files"])), last
  if existed and before is not None:
    assert after == before  # same files, same bytes
  elif not existed:
    assert not exists


def test_forked_cases_match_a_fresh_interpreter(matrix):
  env = main_env()
  procs = {}
  for name in REAL_INTERPRETER:
    result, case, *_ = matrix[name]
    procs[name] = subprocess.Popen(
        [sys.executable, "-m", "trainer.main", *case["argv"]], cwd=REPO, text=True,
        env={**env, **{k: v for k, v in case["env"].items() if v is not None}},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  for name, proc in procs.items():
    _, stderr = proc.communicate(timeout=300)
    forked = matrix[name][0]
    assert proc.returncode == forked["exit"] == 2
    assert stderr.strip().splitlines()[-1] == forked["stderr"].strip().splitlines()[-1]
