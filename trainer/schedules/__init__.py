"""The schedule library: warmup, then the decay shape you choose, and a cooldown, in global steps.

  learning_rate(step, *, total_steps, warmup_steps=0, hold=0, start_lr=0.0, target_lr=1e-3,
                final_lr=0.0, decay="cosine", cooldown_steps=0, cooldown_shape="linear",
                rsqrt_timescale=0)                 Python numbers, NumPy arrays, TF tensors
  WarmupDecay(**the same)                          a Keras LearningRateSchedule
  callbacks.WarmupDecayCallback(**the same)        for model.fit with ReduceLROnPlateau
  picture.plot_schedule(...)                       the schedule as a picture
  shapes.register_decay / register_cooldown        add a shape

and the first version's names, unchanged: `lr_warmup_cosine_decay`, `WarmupCosineDecay`,
`callbacks.WarmupCosineDecayCallback`. Durations from epochs, warmup (or cooldown) as a
fraction, and linear LR scaling by batch: `steps_per_epoch`, `total_steps_from_epochs`,
`resolve_warmup_steps`, `scale_lr_by_batch`.

This layer imports nothing of the trainer but `trainer.base`: use it in any Keras program.
"""

from trainer.schedules.durations import (resolve_steps, resolve_warmup_steps,
                                         scale_lr_by_batch, steps_per_epoch,
                                         total_steps_from_epochs)
from trainer.schedules.formula import Args, check, learning_rate, lr_warmup_cosine_decay, validate
from trainer.schedules.keras_schedule import WarmupCosineDecay, WarmupDecay
from trainer.schedules.shapes import COOLDOWNS, DECAYS, register_cooldown, register_decay

__all__ = ["learning_rate", "lr_warmup_cosine_decay", "WarmupDecay", "WarmupCosineDecay",
           "Args", "check", "validate", "steps_per_epoch", "total_steps_from_epochs",
           "resolve_warmup_steps", "resolve_steps", "scale_lr_by_batch", "DECAYS",
           "COOLDOWNS", "register_decay", "register_cooldown"]
