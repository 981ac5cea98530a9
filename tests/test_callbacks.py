"""WarmupCosineDecayCallback inside real `model.fit` runs."""

import logging

import numpy as np
import pytest
import tensorflow as tf

from trainer import schedules
from trainer.schedules.callbacks import WarmupCosineDecayCallback
from trainer.base.compat import LEGACY_KERAS, keras
from trainer.base.errors import ConfigError

needs_accumulation = pytest.mark.skipif(
    LEGACY_KERAS, reason="tf_keras optimizers have no gradient_accumulation_steps")

SCHED = dict(total_steps=30, warmup_steps=6, start_lr=0.01, target_lr=0.5, hold=3,
             final_lr=0.02)
X = np.random.RandomState(0).randn(32, 4).astype("float32")
Y = (X[:, 0] > 0).astype("int32")  # 32 examples / batch 8 = 4 global steps per epoch


def _model(lr=0.1, k=1, **compile_kwargs):
  model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
  accumulate = {"gradient_accumulation_steps": k} if k > 1 else {}
  model.compile(keras.optimizers.SGD(lr, **accumulate),
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


def _plateau():
  """Halves the LR after every epoch but the first: with min_delta=1e9 no later one improves."""
  return keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0,
                                           min_delta=1e9, verbose=0)


def test_reduce_lr_on_plateau_cut_persists():
  model, cb = _model(), WarmupCosineDecayCallback(**SCHED)
  model.fit(X, Y, batch_size=8, epochs=4, callbacks=[cb, _plateau()], verbose=0)  # 2 cuts
  factors = np.repeat([1.0, 1.0, 0.5, 0.25], 4)
  np.testing.assert_allclose(cb.lrs, _schedule(range(16)) * factors, rtol=1e-5)
  # The cut is schedule x factor, not a one-off value that the next batch overwrites.
  assert cb.lrs[9] != pytest.approx(_schedule(9))


@needs_accumulation
def test_counts_real_updates_under_keras_gradient_accumulation():
  """Read from the weights: w starts at 0, every gradient is 1, so update u moves w by -lr."""
  k, updates = 4, 12
  model = keras.Sequential([keras.Input((1,)),
                            keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
  model.compile(keras.optimizers.SGD(0.1, gradient_accumulation_steps=k),
                loss=lambda y_true, y_pred: tf.reduce_mean(y_pred))
  w = []
  record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: w.append(
      float(model.layers[0].kernel.numpy().ravel()[0])))
  cb, data = WarmupCosineDecayCallback(**SCHED), np.ones((k * updates, 1), "float32")
  model.fit(data, data, batch_size=1, shuffle=False, callbacks=[cb, record], verbose=0)
  assert int(model.optimizer.iterations) == updates
  delta = -np.diff([0.0] + w).reshape(updates, k)
  np.testing.assert_array_equal(delta[:, :-1], 0.0)
  np.testing.assert_allclose(delta[:, -1], _schedule(range(updates)), rtol=1e-5)
  np.testing.assert_allclose(cb.lrs, _schedule(np.arange(k * updates) // k), rtol=1e-12)


@pytest.mark.parametrize("k", [1, pytest.param(4, marks=needs_accumulation)])
def test_plateau_cut_survives_load_model_with_a_new_callback(tmp_path, k):
  """A reloaded .keras model with a fresh callback goes on at schedule x the saved cut.

  Batches of 6 make 6 micro steps an epoch: with k=4 the last rate of the first fit was set
  at micro step 17, update 17 // 4 = 4, not iterations - 1 = 3.
  """
  model, cb = _model(k=k), WarmupCosineDecayCallback(**SCHED)
  model.fit(X, Y, batch_size=6, epochs=3, callbacks=[cb, _plateau()], verbose=0)  # 2 cuts
  np.testing.assert_allclose(cb.lrs, _schedule(np.arange(18) // k) * np.repeat([1, 1, .5], 6),
                             rtol=1e-5)  # the second cut, after epoch 3, is in the LR alone
  model.save(str(tmp_path / "m.keras"))

  loaded = keras.models.load_model(str(tmp_path / "m.keras"))  # as a new process would
  assert float(np.asarray(loaded.optimizer.learning_rate)) == pytest.approx(
      _schedule(17 // k) * 0.25, rel=1e-5)
  fresh = WarmupCosineDecayCallback(**SCHED)
  loaded.fit(X, Y, batch_size=6, epochs=2, callbacks=[fresh], verbose=0)
  assert fresh.factor == pytest.approx(0.25, rel=1e-5)
  np.testing.assert_allclose(fresh.lrs, _schedule(np.arange(18, 30) // k) * 0.25, rtol=1e-5)
  assert float(np.asarray(loaded.optimizer.learning_rate)) == pytest.approx(fresh.lrs[-1])


class _Interrupt(keras.callbacks.Callback):
  def on_epoch_begin(self, epoch, logs=None):
    if epoch == 3:
      raise RuntimeError("interrupted")


def test_plateau_cut_survives_backup_and_restore(tmp_path):
  backup = str(tmp_path / "backup")
  model, cb = _model(), WarmupCosineDecayCallback(**SCHED)
  # The cut comes before the backup in the list, so each epoch's backup holds that epoch's cut.
  with pytest.raises(RuntimeError, match="interrupted"):
    model.fit(X, Y, batch_size=8, epochs=6, verbose=0, callbacks=[
        cb, _plateau(), keras.callbacks.BackupAndRestore(backup), _Interrupt()])
  # Cut after epochs 2 and 3, then backed up.
  assert float(np.asarray(model.optimizer.learning_rate)) == pytest.approx(
      _schedule(11) * 0.25, rel=1e-5)

  restarted, fresh = _model(), WarmupCosineDecayCallback(**SCHED)
  restarted.fit(X, Y, batch_size=8, epochs=6, verbose=0, callbacks=[
      fresh, keras.callbacks.BackupAndRestore(backup)])
  assert int(restarted.optimizer.iterations) == 24  # resumed at epoch 4 of 6, step 12
  np.testing.assert_allclose(fresh.lrs, _schedule(range(12, 24)) * 0.25, rtol=1e-5)


def test_a_zero_rate_or_schedule_restarts_at_factor_1():
  """0 x any factor is 0: a saved 0, or a 0 scheduled for the last step, gives no factor."""
  zero_start = dict(SCHED, start_lr=0.0)
  model = _model()
  model.fit(X[:8], Y[:8], batch_size=8, epochs=1, verbose=0,
            callbacks=[WarmupCosineDecayCallback(**zero_start)])  # set lr(0) = 0
  assert float(np.asarray(model.optimizer.learning_rate)) == 0.0
  fresh = WarmupCosineDecayCallback(**zero_start)
  model.fit(X, Y, batch_size=8, epochs=1, callbacks=[fresh], verbose=0)
  assert fresh.factor == 1.0
  np.testing.assert_allclose(fresh.lrs, schedules.lr_warmup_cosine_decay(
      np.arange(1, 5), **zero_start), rtol=1e-12)
  model.optimizer.learning_rate = 0.0  # a 0 where the schedule is not
  again = WarmupCosineDecayCallback(**SCHED)
  model.fit(X, Y, batch_size=8, epochs=1, callbacks=[again], verbose=0)
  assert again.factor == 1.0
  np.testing.assert_allclose(again.lrs, _schedule(range(5, 9)), rtol=1e-12)


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
