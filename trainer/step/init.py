"""Another run's values in this run's parts, by variable path: the step side of `init_from`.

A checkpoint names its tensors by where they sit among the objects saved
(`optimizer/_trainable_variables/0`), not by Keras path, so a source checkpoint is read through
a proxy: the source's model (its config's model function, built for this run's inputs and
outputs) and, to fork, its optimizer and weight average built as the source run built them
(its frozen variables included), outside any strategy. Walking the checkpoint's object graph
beside the proxy's objects, as `tf.train.Checkpoint` does when it restores, gives every proxy
variable its tensor whatever its shape, and the proxy's Keras paths name them. An export's
`model.keras` carries its paths itself.

  weights = read_checkpoint_weights(path, spec, source_config)   # {path: array}
  report = load_weights(parts.model, weights)                    # matched by path and shape
  state = read_checkpoint_state(path, spec, parts.schedule, source_config)
  notes = continue_from(parts, state)                            # weights, slots, EMA, step
"""

import dataclasses

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2

from trainer import models
from trainer.base.compat import keras, unwrap_optimizer
from trainer.base.errors import ConfigError, first_line
from trainer.distribute.precision import global_policy
from trainer.step import build as build_lib
from trainer.step import ema as ema_lib
from trainer.step import optimizer as optimizer_lib

_OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"  # tf.train.Checkpoint's own key


class CheckpointGraph:
  """The object graph of the checkpoint at `path` and a reader of its tensors (reads only)."""

  def __init__(self, path):
    self.reader = tf.train.load_checkpoint(path)
    self.graph = trackable_object_graph_pb2.TrackableObjectGraph()
    self.graph.ParseFromString(self.reader.get_tensor(_OBJECT_GRAPH))

  def children(self, *names):
    """The names of the children of the object at `names` from the root ('optimizer')."""
    node = self.graph.nodes[0]
    for name in names:
      ids = [c.node_id for c in node.children if c.local_name == name]
      if not ids:
        return set()
      node = self.graph.nodes[ids[0]]
    return {c.local_name for c in node.children}

  def values(self, roots):
    """{id(variable): array} of every variable reachable from `roots` ({'model': model, ...},
    the names a run's checkpoint saves its objects under) that the checkpoint holds."""
    values, seen = {}, set()
    stack = [(c.node_id, roots[c.local_name]) for c in self.graph.nodes[0].children
             if c.local_name in roots]
    while stack:
      node_id, obj = stack.pop()
      if node_id in seen:
        continue
      seen.add(node_id)
      node = self.graph.nodes[node_id]
      for attribute in node.attributes:
        if attribute.name == "VARIABLE_VALUE":
          values[id(obj)] = self.reader.get_tensor(attribute.checkpoint_key)
      if node.children:
        children = tf.train.TrackableView(obj).children(obj)
        stack.extend((c.node_id, children[c.local_name]) for c in node.children
                     if c.local_name in children)
    return values


def source_model(spec, model_name):
  """The source's model (`model_name`, its config's) for this run's inputs and outputs."""
  try:
    fn = spec.model_fn if model_name == spec.config.model else models.lookup(model_name)
    with global_policy("float32"):
      return models.build(model_name, spec.info.input_shape, spec.num_outputs, fn=fn)
  except ConfigError as e:
    raise ConfigError(f"init_from: cannot build the source's model {model_name!r} "
                      f"({first_line(e, 200)})") from None


def read_checkpoint_weights(path, spec, source_config):
  """{path: array} of the model weights in the checkpoint at `path` (the source's model as
  `source_config`, its config.json, names it; this run's model without one)."""
  model = source_model(spec, source_config.model if source_config else spec.config.model)
  values = CheckpointGraph(path).values({"model": model})
  return {v.path: values[id(v)] for v in model.weights if id(v) in values}


def read_export_weights(path, spec):
  """{path: array} of the weights of an export's model.keras made for this run's inputs."""
  try:
    with global_policy("float32"):
      model = keras.models.load_model(path, compile=False)
  except Exception as e:  # pylint: disable=broad-except  (whatever the file or its classes do)
    raise ConfigError(f"init_from: cannot load {path} ({first_line(e, 200)}); import the "
                      f"module of its custom classes from your config, or give a checkpoint"
                      ) from None
  try:
    shape = tuple(model.inputs[0].shape[1:])
  except (AttributeError, IndexError, TypeError, ValueError):
    shape = None  # a subclassed model: its variable shapes are checked instead
  if shape is not None and shape != tuple(spec.info.input_shape):
    raise ConfigError(f"init_from: {path} takes inputs of shape {shape}, this run's dataset "
                      f"gives {tuple(spec.info.input_shape)}; start from a model made for "
                      f"these inputs")
  return {v.path: np.asarray(v.numpy()) for v in model.weights}


@dataclasses.dataclass
class Report:
  """What `load_weights` loaded: paths, and the kept ones with why."""

  loaded: list
  kept: list  # [(path, reason)]
  loaded_size: int = 0
  total_size: int = 0


def load_weights(model, source):
  """Assigns every weight of `model` whose path `source` ({path: array}) has with its shape;
  the others keep their values. Returns a Report."""
  report = Report([], [])
  paths = [v.path for v in model.weights]
  twice = sorted({p for p in paths if paths.count(p) > 1})
  if twice:
    raise ConfigError(f"init_from: this model has more than one variable at {twice[0]!r}, so "
                      f"weights cannot be matched by path; give its layers distinct names")
  for v in model.weights:
    size = int(np.prod(v.shape))
    report.total_size += size
    value = source.get(v.path)
    if value is None:
      report.kept.append((v.path, "not in the source"))
    elif tuple(value.shape) != tuple(v.shape):
      report.kept.append((v.path, f"{tuple(v.shape)} here, {tuple(value.shape)} in the source"))
    else:
      v.assign(np.asarray(value, v.dtype))
      report.loaded.append(v.path)
      report.loaded_size += size
  return report


@dataclasses.dataclass
class State:
  """A source checkpoint read through its proxy: objects and {id(variable): array}."""

  model: object
  optimizer: object
  ema: object
  values: dict


def read_checkpoint_state(path, spec, schedule, source_config):
  """The model, optimizer and EMA state of the checkpoint at `path`, written by a run of
  `source_config` (its config.json): a proxy built as that run built its objects."""
  graph = CheckpointGraph(path)
  model = source_model(spec, source_config.model)
  try:
    optimizer_lib.Rates.of(model, source_config.optimizer).freeze(model)  # its frozen ones
  except ConfigError as e:
    raise ConfigError(f"init_from: the source's optimizer.lr_mults do not fit this model "
                      f"({first_line(e, 200)})") from None
  # A schedule, as the run's: a float rate would add a variable and move the slots' indices.
  optimizer = build_lib.build_optimizer(source_config.optimizer, schedule)
  if "inner_optimizer" in graph.children("optimizer"):  # it ran under mixed_float16
    optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
  optimizer.build(model.trainable_variables)
  average = None
  if graph.children("ema"):
    average = ema_lib.EMA(model, source_config.ema_decay or 0.5, source_config.ema_warmup)
  roots = {"model": model, "optimizer": optimizer, **({"ema": average} if average else {})}
  return State(model, optimizer, average, graph.values(roots))


def _own_name(variable):
  """An optimizer variable's name without its optimizer's ('conv1_kernel_momentum'), which
  Keras numbers per process ('adam_w_2/...')."""
  return variable.path.split("/", 1)[-1]


def continue_from(parts, state):
  """Puts the source's weights, optimizer state (slots and `iterations`) and weight average
  into `parts`; returns notes on what started fresh. Every weight must fit.

  Slots are matched by their variable's path, so a variable frozen in the source and trained
  here starts with zero slots, and one trained there and frozen here leaves its slots behind.
  """
  source = {v.path: state.values.get(id(v)) for v in state.model.weights}
  for v in parts.model.weights:
    value = source.get(v.path)
    if value is None or tuple(value.shape) != tuple(v.shape):
      there = "absent" if value is None else tuple(value.shape)
      raise ConfigError(f"init_mode: continue needs the source's model exactly: {v.path} is "
                        f"{tuple(v.shape)} here and {there} in the source; init_mode=weights "
                        f"starts from the weights that fit")
  for v in parts.model.weights:
    v.assign(np.asarray(source[v.path], v.dtype))
  notes = []
  ours, theirs = unwrap_optimizer(parts.optimizer), unwrap_optimizer(state.optimizer)
  pairs = [(ours, theirs)]
  if ours is not parts.optimizer and theirs is not state.optimizer:  # both loss-scaled
    pairs.append((parts.optimizer, state.optimizer))
  fresh = []
  for mine, other in pairs:
    slots = {_own_name(v): state.values.get(id(v)) for v in _own_variables(other)}
    for v in _own_variables(mine):
      value = slots.get(_own_name(v))
      if value is None or tuple(value.shape) != tuple(v.shape):
        fresh.append(_own_name(v))
      else:
        v.assign(np.asarray(value, v.dtype))
  if "iteration" in fresh:
    raise ConfigError("init_from: the source checkpoint holds no optimizer step to continue; "
                      "init_mode=weights starts from its weights")
  if fresh:
    notes.append(f"optimizer state started fresh for {', '.join(fresh)}")
  average = parts.learner.ema
  if average is not None:
    copied = state.ema is not None and _copy_average(average, parts.model, state)
    if not copied:
      average.reset()
      notes.append("the weight average starts at the forked weights (the source has none)")
  return notes


def _own_variables(optimizer):
  """An optimizer's own variables (a LossScaleOptimizer's without its inner one's)."""
  inner = getattr(optimizer, "inner_optimizer", None)
  inside = {id(v) for v in inner.variables} if inner is not None else set()
  return [v for v in optimizer.variables if id(v) not in inside]


def _copy_average(average, model, state):
  """Copies the source's averages by variable path; False if one is missing."""
  source = {w.path: state.values.get(id(e)) for e, w in
            zip(state.ema.averages, ema_lib.averaged_variables(state.model))}
  pairs = list(zip(average.averages, ema_lib.averaged_variables(model)))
  values = [source.get(w.path) for _, w in pairs]
  if any(v is None or tuple(v.shape) != tuple(e.shape) for v, (e, _) in zip(values, pairs)):
    return False
  for value, (e, _) in zip(values, pairs):
    e.assign(np.asarray(value, e.dtype.as_numpy_dtype))
  return True
