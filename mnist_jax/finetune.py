"""Starting a run from a trained one (config.init_from): fine-tuning, transfer.

The new run takes the source's parameters and batch statistics; its
optimizer state, step and data order start fresh, in a workdir of its own.
The architecture must match (model, width, depth, image shape); where the
number of classes differs (MNIST -> KMNIST, EMNIST letters -> digits) the
classifier (the `classifier` its models.register names) keeps its fresh initialisation. A run that
has checkpoints of its own resumes from those instead (training.py).
"""

from pathlib import Path

import jax
import numpy as np
from absl import logging

from mnist_jax import members as members_lib
from mnist_jax import models, trained
from mnist_jax import state as state_lib
from mnist_jax.errors import UserError

# Config fields that fix the shapes of the parameters.
ARCHITECTURE = ("model", "width", "depth")


def source(path: str) -> tuple[Path, int | None, str]:
  """(checkpoint folder, epoch or None for its choice, what it is) of
  config.init_from: a workdir (its best checkpoint where it kept one, else
  its newest) or one checkpoint folder of it (`<workdir>/checkpoints/<epoch>`)."""
  path = Path(path).expanduser()
  if ".orbax-checkpoint-tmp" in path.name:
    raise UserError(f"config.init_from={path} is a checkpoint being written (or "
                    f"cut off while written); point to a complete one")
  if path.name.isdigit() and path.is_dir():
    return path.parent, int(path.name), f"epoch {path.name}'s"
  if not path.is_dir():
    raise UserError(f"config.init_from={path} does not exist; give a run's "
                    f"workdir or one of its checkpoints")
  if not ((path / "checkpoints").is_dir()
          or (path / "best_checkpoint").is_dir()):
    raise UserError(f"config.init_from={path} holds no checkpoints; give a run's "
                    f"workdir (with checkpoints/) or one of its checkpoints")
  return trained.which_checkpoint(path, "")


def initialize(state: state_lib.TrainState, config, num_classes: int,
               image_shape: tuple[int, int, int], mesh) -> state_lib.TrainState:
  """`state` with the parameters and batch statistics of config.init_from
  (into every member of a several-member run), as host arrays: the caller
  places them (distributed.put_global)."""
  folder, epoch, what = source(config.init_from)
  def check(saved_config, saved_shape):  # Before the saved model is built.
    _check_architecture(saved_config, saved_shape, config, image_shape, folder)
  saved = trained.restore(folder, epoch, mesh, check)
  meta, restored = saved.meta, saved.state
  if saved.built.members.count > 1:
    logging.info("init_from: member 0 of %s's several", folder)
    restored = members_lib.select(restored, 0)
  head = meta["num_classes"] != num_classes
  logging.info("initialised from the checkpoint of epoch %d of %s (%s)%s",
               meta["epoch"], folder.parent, what,
               f"; its classifier is new: {meta['num_classes']} classes there, "
               f"{num_classes} here" if head else "")
  params = _copied(state.params, restored.params, config.model, head)
  rest = _copied(state.rest, restored.rest, config.model, head)
  ema = (None if state.ema is None else
         {"count": state.ema["count"], "params": params, "rest": rest})
  return state.replace(params=params, rest=rest, ema=ema)


def _check_architecture(saved, saved_shape, config, image_shape, folder):
  differences = [f"{f}={saved[f]!r} there, {config[f]!r} here"
                 for f in ARCHITECTURE if saved[f] != config[f]]
  if tuple(saved_shape) != tuple(image_shape):
    differences.append(f"images {saved_shape} there, {tuple(image_shape)} here")
  if differences:
    raise UserError(f"config.init_from={folder.parent}: another architecture "
                    f"({'; '.join(differences)}); start from a run of the same "
                    f"model, or drop init_from")


def _copied(target, source, model: str, fresh_head: bool):
  """`target`'s leaves replaced by `source`'s (broadcast over a leading
  member axis), but the classifier's where `fresh_head`."""
  def take(path, new, old):
    new, old = np.asarray(jax.device_get(new)), np.asarray(jax.device_get(old))
    if fresh_head and models.is_classifier(model, path):
      return new
    if old.shape != new.shape[new.ndim - old.ndim:]:
      raise UserError(f"init_from: parameter {jax.tree_util.keystr(path)} is "
                      f"{old.shape} there, {new.shape} here")
    return np.broadcast_to(old.astype(new.dtype), new.shape).copy()
  return jax.tree_util.tree_map_with_path(take, target, source)
