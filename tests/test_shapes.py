"""The decay-shape seam: a shape is one function and its name in trainer.schedules.shapes, and
everything that reads schedules (config checks, the Plan, the Keras schedule, the fit
callback, the picture, the resume check) takes it from the registry."""

import json
import math
import os
import textwrap

import numpy as np
import pytest

from tests.conftest import run_main
from trainer import schedules
from trainer.rundir.history import read_scalars
from trainer.schedules import callbacks, picture, shapes

TOY = textwrap.dedent("""
    \"\"\"A config whose decay is a shape of its own: the full peak for the first half of the
    decay, then half of it. Launch: python -m trainer.main --config=this file. Expected: it
    trains.\"\"\"
    from configs import default
    from trainer.schedules import shapes


    @shapes.register_decay("halves")
    def halves(t, length, timescale, xp):
      return xp.where(t < length / 2, 1.0, 0.5)


    def get_config():
      c = default.get_config()
      c.schedule.decay = "halves"
      return c
    """)


def _halves(t, length, timescale, xp):
  del timescale
  return xp.where(t < length / 2, 1.0, 0.5)


@pytest.fixture
def halves():
  shapes.register_decay("halves")(_halves)
  yield "halves"
  shapes.DECAYS.pop("halves")


def test_a_registered_shape_is_used_everywhere_schedules_are_read(halves):
  kwargs = dict(total_steps=20, warmup_steps=4, target_lr=1.0, final_lr=0.0, decay=halves)
  lrs = schedules.learning_rate(np.arange(20), **kwargs)
  np.testing.assert_allclose(lrs[4:12], 1.0)  # 8 of 16 decay steps at the peak
  np.testing.assert_allclose(lrs[12:20], 0.5)
  keras_lrs = [float(schedules.WarmupDecay(**kwargs)(s)) for s in range(20)]
  np.testing.assert_allclose(keras_lrs, lrs, rtol=1e-6)
  config = schedules.WarmupDecay(**kwargs).get_config()
  assert schedules.WarmupDecay.from_config(config).args == schedules.check(**kwargs)
  assert callbacks.WarmupDecayCallback(**kwargs).args.decay == halves
  labels = picture.plot_schedule(**kwargs).axes[0].get_legend_handles_labels()[1]
  assert "halves decay (16 steps)" in labels


def test_an_unknown_shape_is_one_line_naming_the_field_and_the_choices():
  with pytest.raises(ValueError) as e:
    schedules.learning_rate(3, total_steps=10, decay="halvez")
  assert str(e.value).startswith("decay: unknown 'halvez'; allowed: cosine, linear, constant")
  with pytest.raises(ValueError, match="the name is taken"):
    shapes.register_decay("cosine")(_halves)


def test_the_cosine_behind_the_seam_is_the_formula_of_the_first_version():
  """Byte for byte the rates of `f + (b - f) * 0.5 * (1 + cos(pi p))`, as before the seam."""
  w, h, t, a, b, f = 60, 20, 600, 1e-4, 3e-3, 1e-5
  s = np.arange(-2, 610, dtype=np.float64)
  p = np.clip((np.clip(s, 0, t) - (w + h)) / (t - w - h), 0.0, 1.0)
  cosine = f + (b - f) * 0.5 * (1.0 + np.cos(math.pi * p))
  sc = np.clip(s, 0, t)
  expected = np.where(sc < w, a + (b - a) * sc / w, np.where(sc < w + h, b,
                                                             np.where(sc >= t, f, cosine)))
  got = schedules.lr_warmup_cosine_decay(s, w, h, t, a, b, f)
  assert got.tobytes() == expected.tobytes()


@pytest.mark.slow
def test_a_toy_shape_trains_from_the_command_line(data_dir, tmp_path):
  (tmp_path / "toy_config.py").write_text(TOY)
  workdir = str(tmp_path / "w")
  r = run_main(f"--config={tmp_path / 'toy_config.py'}", f"--workdir={workdir}",
               "--strategy=cpu", "--config.model=mlp", f"--config.data_dir={data_dir}",
               "--config.total_steps=24", "--config.steps_per_loop=4",
               "--config.schedule.warmup_fraction=0", "--config.schedule.warmup_steps=4",
               "--config.eval_every=0", cwd=str(tmp_path))
  assert r.returncode == 0, r.stderr[-3000:]
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["plan"]["decay"] == "halves"
  lrs = read_scalars(workdir, "train", "learning_rate")
  for step, lr in lrs.items():
    want = 3e-3 if step < 4 + 10 else 1.5e-3  # the decay's 20 steps: 10 at the peak, then half
    if step < 4:
      want = 3e-3 * step / 4
    if step >= 24:
      want = 0.0
    assert lr == pytest.approx(want, rel=1e-6), step
