"""The README's code blocks for `fit` users run as written: the schedule with compile/fit,
gradient accumulation, the duration helpers and the callback with ReduceLROnPlateau."""

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO, main_env

SECTIONS = ("### With `compile` / `fit` (recommended)", "### As a callback, with `ReduceLROnPlateau`")


def readme_blocks(heading):
  """The ```python blocks of the README section under `heading` (up to the next heading)."""
  with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
    text = f.read()
  start = text.index(heading) + len(heading)
  end = min(i for i in (text.find("\n## ", start), text.find("\n### ", start)) if i > 0)
  return re.findall(r"```python\n(.*?)```", text[start:end], re.S)


def test_the_fit_sections_have_code():
  assert len(readme_blocks(SECTIONS[0])) == 3 and len(readme_blocks(SECTIONS[1])) == 1


def test_the_fit_snippets_run_as_written(tmp_path):
  code = "\n".join(block for heading in SECTIONS for block in readme_blocks(heading))
  code += ("\nassert len(cb.lrs) == 580 and model.optimizer.iterations.numpy() == 580"
           "\nprint('ok', total, warmup, round(peak, 6))\n")
  r = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), env=main_env(),
                     capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "ok 4320 216 0.4" in r.stdout, r.stdout[-300:]  # 48 steps an epoch, 5% warmup


@pytest.mark.slow  # end to end (10-30 s): the slow tier keeps the fast one under 10 minutes
def test_the_export_section_trains_an_export_further_as_written(data_dir, tmp_path):
  """model.keras's optimizer is at the end of its schedule (final_lr 0: fit moves nothing);
  the README's block recompiles with a WarmupDecay of its own, and it trains."""
  from tests.conftest import cpu, default_config  # pylint: disable=g-import-not-at-top
  from trainer.run import train  # pylint: disable=g-import-not-at-top
  (block,) = [b for b in readme_blocks("### The trained model out") if "WarmupDecay(" in b]
  config = default_config(data_dir=data_dir, total_steps=20, steps_per_loop=10, eval_every=0)
  train.train_and_evaluate(config, str(tmp_path / "runs" / "a"), cpu())
  path = "runs/a/export/model.keras"
  before = (f"import keras, numpy as np, trainer.schedules\n"
            f"m = keras.models.load_model({path!r})\n"
            f"w = m.get_weights()\n"
            f"m.fit(np.random.rand(64, 8, 8, 1).astype('float32'), np.arange(64) % 10, "
            f"batch_size=32, verbose=0)\n"
            f"assert all((a == b).all() for a, b in zip(w, m.get_weights()))  # nothing moved\n")
  after = (f"\nref = keras.models.load_model({path!r})\n"
           f"assert int(model.optimizer.iterations) == 80\n"
           f"assert any(not np.array_equal(a, b) for a, b in "
           f"zip(model.get_weights(), ref.get_weights()))\nprint('ok')\n")
  r = subprocess.run([sys.executable, "-c", before + block + after], cwd=str(tmp_path),
                     env=main_env(), capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  assert r.stdout.splitlines()[0] == "20 0.0" and r.stdout.splitlines()[-1] == "ok", r.stdout
