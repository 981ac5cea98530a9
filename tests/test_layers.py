"""The package's structure: layers that only import downwards (lint-imports), no import cycles,
the schedule library usable alone, the entry points where the README says, every module
name from before the layers still importing, and docs that cite nothing a reader cannot see."""

import glob
import importlib
import os
import re
import shutil
import subprocess
import sys

import grimp
import pytest

from tests.conftest import REPO, main_env
import trainer

PACKAGE = os.path.join(REPO, "trainer")


def test_the_layer_contracts_hold():
  linter = shutil.which("lint-imports")
  assert linter, "import-linter is a test dependency (setup.py's test extra)"
  r = subprocess.run([linter], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stdout[-3000:]
  assert "0 broken" in r.stdout


def test_no_module_imports_itself_back():
  graph = grimp.build_graph("trainer")
  cycles = []
  for module in sorted(graph.modules):
    for imported in graph.find_modules_directly_imported_by(module):
      if module != imported and graph.find_shortest_chain(importer=imported, imported=module):
        cycles.append((module, imported))
  assert cycles == []


def test_a_reader_sees_a_few_rooms_of_short_files():
  entries = [e for e in os.listdir(PACKAGE) if e != "__pycache__"]
  assert len(entries) <= 16, sorted(entries)
  for root, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith(".py"):
        with open(os.path.join(root, name)) as f:
          assert len(f.readlines()) <= 300, os.path.join(root, name)


def test_every_subpackage_says_what_it_owns_and_may_import():
  for name in ("base", "schedules", "config", "data", "distribute", "step", "rundir", "run"):
    doc = importlib.import_module(f"trainer.{name}").__doc__
    assert doc and len(doc.strip().splitlines()) >= 3, name


def test_the_schedule_library_loads_without_the_trainer():
  code = ("import sys, trainer.schedules, trainer.schedules.callbacks; "
          "print(sorted(m for m in sys.modules if m.startswith('trainer.') "
          "and m.split('.')[1] not in ('schedules', 'base')))")
  r = subprocess.run([sys.executable, "-c", code], env=main_env(), capture_output=True,
                     text=True, timeout=120)
  assert r.returncode == 0, r.stderr[-2000:]
  assert r.stdout.strip() == "[]"


def test_the_python_entry_point_is_the_package_s():
  from trainer import load_export, train_and_evaluate  # pylint: disable=g-import-not-at-top
  from trainer.run import exported, train  # pylint: disable=g-import-not-at-top
  assert train_and_evaluate is train.train_and_evaluate
  assert load_export is exported.load_export


@pytest.mark.parametrize("old", sorted(trainer.MOVED))
def test_module_names_from_before_the_layers_still_import(old):
  module = importlib.import_module(f"trainer.{old}")
  assert module is importlib.import_module(trainer.MOVED[old])
  assert module.__name__ == trainer.MOVED[old] and module.__spec__.name == trainer.MOVED[old]
  assert getattr(trainer, old) is module


def test_the_public_names_the_readme_shows_work():
  # pylint: disable=g-import-not-at-top
  from trainer.callbacks import WarmupCosineDecayCallback, WarmupDecayCallback
  from trainer.config import override
  from trainer.models import register
  from trainer.schedules import WarmupCosineDecay, WarmupDecay, learning_rate
  from trainer.summaries import read_scalars
  from trainer.task import Task
  from trainer.train import train_and_evaluate
  assert all(callable(x) for x in (WarmupCosineDecayCallback, WarmupDecayCallback, override,
                                   register, WarmupCosineDecay, WarmupDecay, learning_rate,
                                   read_scalars, Task, train_and_evaluate))


def test_the_docs_cite_no_tracker_their_readers_cannot_see():
  """'the case of issue 13' meant nothing to a reader of the README: say what the case is."""
  for path in [os.path.join(REPO, "README.md"), *glob.glob(os.path.join(REPO, "*", "*.md"))]:
    text = open(path, encoding="utf-8").read()
    assert not re.search(r"\bissues? #?\d+", text, re.IGNORECASE), path
