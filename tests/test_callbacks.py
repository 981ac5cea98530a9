"""WarmupCosineDecayCallback inside real `model.fit` runs."""

import logging

import numpy as np
import pytest
import tensorflow as tf

from trainer import schedules
from trainer.callbacks import WarmupCosineDecayCallback
from trainer.compat import keras
from trainer.errors import ConfigError

SCHED = dict(total_steps=30, warmup_steps=6, start_lr=0.01, target_lr=0.5, hold=3,
             final_lr=0.02)
X = np.random.RandomState(0).randn(32, 4).astype("float32")
Y = (X[:, 0] > 0).astype("int32")  # 32 examples / batch 8 = 4 global steps per epoch


def _model(lr=0.1, **compile_kwargs):
  model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
  model.compile(keras.optimizers.SGD(lr),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True), **compile_kwargs)
  return model


def _schedule(steps):
  return schedules.lr_warmup_cosine_decay(np.asarray(steps), **SCHED)


def test_sets_the_schedule_before_every_batch():
  model, cb = _model(), WarmupCosineDecayCallback(**SCHED)
  model.fit(X, Y, batch_size=8, epochs=3, callbacks=[cb], verbose=0)
  assert len(cb.lrs) == 12
  np.testing.assert_allclose(cb.lrs, _schedule(range(12)), rtol=1e-12)
  # The optimizer really used it: its LR is the last value set.
  assert float(np.asarray(model.optimizer.learning_rate)) == pytest.approx(cb.lrs[-1])


def test_second_fit_and_restored_model_continue_the_schedule(tmp_path):
  model, cb = _model(), WarmupCosineDecayCallback(**SCHED)
  model.fit(X, Y, batch_size=8, epochs=2, callbacks=[cb], verbose=0)
  model.fit(X, Y, batch_size=8, epochs=1, callbacks=[cb], verbose=0)
  np.testing.assert_allclose(cb.lrs, _schedule(range(12)), rtol=1e-12)  # no second warmup

  # A model restored from a checkpoint, with a *new* callback, picks up at the saved step.
  ckpt = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
  path = ckpt.save(str(tmp_path / "ckpt"))
  restored, fresh_cb = _model(), WarmupCosineDecayCallback(**SCHED)
  restored.optimizer.build(restored.trainable_variables)
  tf.train.Checkpoint(model=restored, optimizer=restored.optimizer).restore(path)
  assert int(restored.optimizer.iterations) == 12
  restored.fit(X, Y, batch_size=8, epochs=1, callbacks=[fresh_cb], verbose=0)
  np.testing.assert_allclose(fresh_cb.lrs, _schedule(range(12, 16)), rtol=1e-12)


def test_reduce_lr_on_plateau_cut_persists():
  model, cb = _model(), WarmupCosineDecayCallback(**SCHED)
  # min_delta so large that no epoch counts as an improvement: a cut after epochs 2 and 3.
  plateau = keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0,
                                              min_delta=1e9, verbose=0)
  model.fit(X, Y, batch_size=8, epochs=4, callbacks=[cb, plateau], verbose=0)
  factors = np.repeat([1.0, 1.0, 0.5, 0.25], 4)
  np.testing.assert_allclose(cb.lrs, _schedule(range(16)) * factors, rtol=1e-5)
  # The cut is schedule x factor, not a one-off value that the next batch overwrites.
  assert cb.lrs[9] != pytest.approx(_schedule(9))


def test_refuses_an_optimizer_that_already_holds_a_schedule():
  model = _model(lr=schedules.WarmupCosineDecay(0.0, 0.1, 2, 10))
  with pytest.raises(ConfigError, match="^learning_rate: .*LearningRateSchedule"):
    model.fit(X, Y, batch_size=8, epochs=1, callbacks=[WarmupCosineDecayCallback(10)],
              verbose=0)


def test_warns_when_steps_per_execution_makes_it_coarse(caplog):
  model = _model(steps_per_execution=4)
  cb = WarmupCosineDecayCallback(**SCHED)
  with caplog.at_level(logging.WARNING):
    model.fit(X, Y, batch_size=8, epochs=1, callbacks=[cb], verbose=0)
  assert any("steps_per_execution=4" in r.getMessage() and "WarmupCosineDecay" in r.getMessage()
             for r in caplog.records)


def test_no_warning_with_one_step_per_execution(caplog):
  with caplog.at_level(logging.WARNING):
    _model().fit(X, Y, batch_size=8, epochs=1, callbacks=[WarmupCosineDecayCallback(**SCHED)],
                 verbose=0)
  assert not any("steps_per_execution" in r.getMessage() for r in caplog.records)


def test_invalid_arguments_fail_at_construction():
  with pytest.raises(ConfigError, match="^total_steps: "):
    WarmupCosineDecayCallback(total_steps=10, warmup_steps=20)
