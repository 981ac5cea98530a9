"""One resolve: a settled config checked once, at the boundary, into the frozen `RunSpec`.

  spec = resolve(settle(config), strategy)     # every user mistake is a ConfigError here
  parts = trainer.step.build.build(spec, strategy)

`resolve` runs every check that can fail on user input, in order, before anything is built or
written: the fields, the model and task names (importing your functions), the dataset (opened
once), the durations in global steps (`Plan`), the schedule (checked once, by building it),
and whether a global batch fits in memory. `trainer.run.train`, `trainer.evaluate` and
`trainer.lr_find` all start from a RunSpec.
"""

import dataclasses
from typing import Callable

from trainer import data, models, schedules
from trainer import task as task_lib
from trainer.base.errors import ConfigError
from trainer.config import preflight
from trainer.config.fields import check_fields
from trainer.config.plan import Plan, plan_run, schedule_fields
from trainer.distribute.precision import precision_policy


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """Everything a run is, resolved: what the builder, the run and its records read."""

  config: object  # the settled, checked ml_collections ConfigDict (do not change it)
  info: data.DatasetInfo  # the dataset, opened once
  plan: Plan  # the run in global steps (config.json's "plan")
  policy: str  # the Keras dtype policy
  task: task_lib.Task  # what the model is trained to do
  model_fn: Callable  # (input_shape, num_outputs) -> keras.Model, `config.model`'s function
  schedule: schedules.WarmupDecay  # the learning rate of the plan, checked

  @property
  def num_outputs(self) -> int:
    return self.task.num_outputs(self.info)


def resolve(config, strategy) -> RunSpec:
  """The RunSpec of a settled config on `strategy`.

  Raises:
    ConfigError: naming the field, before anything is built or written.
  """
  check_fields(config)  # cheap field checks before the dataset is even looked at
  model_fn = models.lookup(config.model)  # imports a model function of yours, if named
  task = task_lib.get_task(config.task)
  preflight.check_inputs(config)  # seed range, dataset name, data_dir: one line each
  with preflight.tfds_errors(config):
    info = data.get_dataset_info(config.dataset, config.data_dir, config.image_size,
                                 config.eval_fraction)
  task.check_data(info)
  preflight.check_used(config, info)  # eval_fraction, data_dir: read by some datasets only
  if config.augment and not info.is_image:
    raise ConfigError(f"augment: dataset {info.name!r} has {info.input_dtype} inputs of shape "
                      f"{info.input_shape}, not uint8 images; set augment=False")
  plan = plan_run(config, info.num_train_examples, strategy.num_replicas_in_sync)
  preflight.check_fits(config, info)
  with schedule_fields():
    schedule = schedules.WarmupDecay(**plan.schedule_kwargs())
  return RunSpec(config, info, plan, precision_policy(config.mixed_precision, strategy), task,
                 model_fn, schedule)
