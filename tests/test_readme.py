"""The README's code blocks for `fit` users run as written: the schedule with compile/fit,
gradient accumulation, the duration helpers and the callback with ReduceLROnPlateau."""

import os
import re
import subprocess
import sys

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
