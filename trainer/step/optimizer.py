"""Per-variable learning rates: `optimizer.lr_mults` and `optimizer.layer_decay`.

Every trainable variable of the model gets a multiplier m: the first pattern of `lr_mults` that
matches its whole path (`re.fullmatch`: `conv1/.*` matches `conv1/kernel`, `conv1` does not)
gives a factor (1 if none matches), times `layer_decay**i` for a variable of the layer i layers
below the output (with layer_decay > 0). Its learning rate is `schedule(step) * m`, with every
optimizer:

- m = 0 freezes: the variable is marked non-trainable (Keras 3's `Variable.trainable`) before
  the optimizer is built, so the tape computes no gradient for it, the optimizer holds no slots
  for it, and every form of the step (micro-batches, the EMA, XLA, the mirrored local update)
  has one trainable variable fewer; its value stays bit for bit what it was.
- Any other m scales the update, not the gradient (Adam's normalisation would cancel a scaled
  gradient). Keras 3 updates one variable at a time, `update_step(gradient, variable,
  learning_rate)` (keras/src/optimizers/base_optimizer.py, `_backend_update_step`; the TF
  backend's `_distributed_tf_update_step`, keras/src/backend/tensorflow/optimizer.py, which the
  mirrored device path's local update runs too), so the optimizer's `update_step` is wrapped to
  pass `learning_rate * m`. Keras applies decoupled weight decay to every variable at the shared
  rate just before (`_apply_weight_decay`); with multipliers the wrapper applies it instead, at
  the variable's rate: `w -= w * weight_decay * learning_rate * m`, then the update.

With no lr_mults and no layer_decay nothing is wrapped: the optimizer is Keras' own.

Layers, for layer_decay: a variable's layer is its path without the last part (`conv1` for
`conv1/kernel`, `sequential/dense_1` for `sequential/dense_1/kernel`), and layers are counted
in the order of `model.trainable_variables`, from the last (the output layer, i = 0) back.
For functional and Sequential models that is the order of their layers from input to output
(a nested model, e.g. a keras.applications backbone, counts its own layers); for a subclassed
model it is the order its layers were assigned in `__init__`. Every layer that owns a trainable
variable counts once (a BatchNormalization after a convolution is a layer of its own).
`python -m trainer.main ... --print_lr_mults` shows what each variable gets.

Under tf_keras (TF_USE_LEGACY_KERAS=1) both are refused: its optimizers' `update_step(gradient,
variable)` (tf_keras/src/optimizers/optimizer.py) take no learning rate to scale.
"""

import dataclasses
import re

import tensorflow as tf

from trainer.base.compat import LEGACY_KERAS, unwrap_optimizer
from trainer.base.errors import ConfigError
from trainer.config.fields import parse_lr_mults


def layer_of(path):
  """The layer of a variable path: the path without its last part."""
  return path.rsplit("/", 1)[0]


@dataclasses.dataclass(frozen=True)
class Rates:
  """The multiplier of each trainable variable of a model (see the module docstring)."""

  paths: tuple  # the model's trainable variables' paths, in model order (before freezing)
  multipliers: tuple  # one per path
  depths: tuple  # layers below the output, one per path
  given: bool = False  # lr_mults or layer_decay was set

  @classmethod
  def of(cls, model, optimizer_config):
    """The rates `optimizer_config` gives `model`'s trainable variables.

    Raises:
      ConfigError: a pattern matches no variable, every variable would be frozen, or
        multipliers were asked for under tf_keras.
    """
    rules = parse_lr_mults(optimizer_config.lr_mults)
    decay = float(optimizer_config.layer_decay)
    if LEGACY_KERAS and (rules or decay):
      field = "optimizer.lr_mults" if rules else "optimizer.layer_decay"
      raise ConfigError(f"{field}: per-variable learning rates need Keras 3: tf_keras "
                        f"(TF_USE_LEGACY_KERAS=1) optimizers take no learning rate per "
                        f"variable; unset TF_USE_LEGACY_KERAS or leave {field} unset")
    variables = model.trainable_variables
    paths = tuple(getattr(v, "path", v.name) for v in variables)
    layers = list(dict.fromkeys(layer_of(p) for p in paths))
    depth_of = {layer: len(layers) - 1 - i for i, layer in enumerate(layers)}
    depths = tuple(depth_of[layer_of(p)] for p in paths)
    for pattern, _ in rules:
      if not any(re.fullmatch(pattern, p) for p in paths):
        shown = ", ".join(paths[:6]) + (f", ... ({len(paths)} in all)" if len(paths) > 6 else "")
        raise ConfigError(f"optimizer.lr_mults: {pattern!r} matches no trainable variable path "
                          f"of this model (a pattern matches a whole path; the paths: {shown}; "
                          f"--print_lr_mults lists them)")
    multipliers = []
    for path, depth in zip(paths, depths):
      factor = next((m for pattern, m in rules if re.fullmatch(pattern, path)), 1.0)
      multipliers.append(factor * decay**depth if decay else factor)
    if paths and not any(multipliers):
      raise ConfigError("optimizer.lr_mults: freezes every trainable variable (all multipliers "
                        "are 0), so nothing would train")
    return cls(paths, tuple(multipliers), depths, bool(rules or decay))

  @property
  def frozen(self):
    return [p for p, m in zip(self.paths, self.multipliers) if m == 0]

  def freeze(self, model):
    """Marks the variables with multiplier 0 non-trainable. Before the optimizer is built."""
    frozen = set(self.frozen)
    for v in model.trainable_variables:
      if getattr(v, "path", None) in frozen:
        v.trainable = False

  def attach(self, optimizer):
    """Wraps the (built) optimizer's update so each variable moves at its own rate."""
    by_path = dict(zip(self.paths, self.multipliers))
    if all(m in (0.0, 1.0) for m in self.multipliers):
      return  # frozen or at the schedule's rate: Keras' own update
    # pylint: disable=protected-access  (Keras' own per-variable index and decay rule)
    inner = unwrap_optimizer(optimizer)
    scale = [by_path.get(v.path, 1.0) for v in inner._trainable_variables]
    update_step = inner.update_step

    def scaled_update_step(gradient, variable, learning_rate):
      m = scale[inner._get_variable_index(variable)]
      if m != 1.0:
        learning_rate = learning_rate * m
      if inner.weight_decay is not None and inner._use_weight_decay(variable):
        # Keras' own decay (TFOptimizer._apply_weight_decay), at this variable's rate.
        rate = tf.cast(learning_rate, variable.dtype)
        variable.assign_sub(variable * tf.cast(inner.weight_decay, variable.dtype) * rate)
      return update_step(gradient, variable, learning_rate)

    inner.update_step = scaled_update_step
    inner._apply_weight_decay = lambda variables: None

  def summary(self):
    """One line: every variable and its multiplier (the start-up log)."""
    return ", ".join(f"{p} {_number(m)}" for p, m in zip(self.paths, self.multipliers))

  def table(self, shapes=None):
    """Every trainable variable, its layer's depth below the output and its multiplier."""
    shapes = shapes or {}
    width = max([len(p) for p in self.paths] + [8])
    lines = [f"{'variable':<{width}}  {'shape':<18}  layer  multiplier"]
    for path, depth, m in zip(self.paths, self.depths, self.multipliers):
      shape = str(tuple(shapes[path])) if path in shapes else ""
      lines.append(f"{path:<{width}}  {shape:<18}  {depth:>5}  {_number(m)}"
                   f"{' (frozen)' if m == 0 else ''}")
    return "\n".join(lines)


def _number(m):
  return f"{m:.6g}"
