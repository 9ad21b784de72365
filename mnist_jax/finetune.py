"""Starting a run from a trained one (config.init_from): fine-tuning, transfer.

The new run takes the source's parameters and batch statistics; its
optimizer state, step and data order start fresh, in a workdir of its own.
The architecture must match: the parameters' and batch statistics' trees
(structure, shapes) of the two builds are compared; where the number of
classes differs (MNIST -> KMNIST, EMNIST letters -> digits) the classifier
(the layer its models.register names) keeps its fresh initialisation. A run
that has checkpoints of its own resumes from those instead (training.py).
"""

from pathlib import Path

import jax
import numpy as np
from absl import logging

from mnist_jax import checkpoint as checkpoint_lib
from mnist_jax import members as members_lib
from mnist_jax import models, registry, trained
from mnist_jax import state as state_lib
from mnist_jax.errors import UserError


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
  saved = trained.restore(folder, epoch, mesh)
  meta, restored = saved.meta, saved.state
  if saved.built.members.count > 1:
    logging.info("init_from: member 0 of %s's several", folder)
    restored = members_lib.select(restored, 0)
  head = meta["num_classes"] != num_classes
  if head:
    _check_head(config.model, state.params, meta["num_classes"], num_classes, folder)
  _check_architecture(state, restored, head, saved, config, image_shape, folder)
  logging.info("initialised from the checkpoint of epoch %d of %s (%s)%s",
               meta["epoch"], folder.parent, what,
               f"; its classifier is new: {meta['num_classes']} classes there, "
               f"{num_classes} here" if head else "")
  params = _copied(state.params, restored.params, config.model, head)
  rest = _copied(state.rest, restored.rest, config.model, head)
  ema = (None if state.ema is None else
         {"count": state.ema["count"], "params": params, "rest": rest})
  return state.replace(params=params, rest=rest, ema=ema)


def _check_head(model: str, params, there: int, here: int, folder: Path):
  """Refuses other classes where the layer drawn afresh for them is unknown:
  the model declares no classifier, or one that is none of its layers."""
  entry = registry.resolve("model", model)
  layers = sorted({path.split(".")[0] for path in checkpoint_lib.leaves(params)})
  if entry.classifier in layers:
    return
  why = ("names no classifier" if entry.classifier is None else
         f"declares classifier={entry.classifier!r}, which is none of its "
         f"layers ({', '.join(layers)})")
  how = ("register it with models.register(..., classifier=<its last layer's "
         "attribute>)" if registry.is_builtin(entry) else
         "declare classifier = '<its last layer's attribute>' on the class")
  raise UserError(f"config.init_from={folder.parent}: {there} classes there, "
                  f"{here} here, so its classifier starts afresh, but model "
                  f"'{model}' {why}; {how}")


def _check_architecture(state, restored, head: bool, saved, config, image_shape,
                        folder: Path):
  """Refuses a source whose parameters or batch statistics do not fit the
  new model's (their trees: structure and shapes, past a member axis; the
  classifier left out where it is drawn afresh), naming the fields of the
  models (their registered `accepts`) that differ, else the leaves."""
  classifier = registry.resolve("model", config.model).classifier
  def shapes(tree_state) -> dict[str, tuple[int, ...]]:
    found = {}
    for part in ("params", "rest"):
      for path, (shape, _) in checkpoint_lib.leaves(getattr(tree_state, part)).items():
        if not (head and path.split(".")[0] == classifier):
          found[f"{part}.{path}"] = shape
    return found
  here, there = shapes(state), shapes(restored)
  misfits = [f"{p}: {list(there.get(p, ()))} there, {list(here.get(p, ()))} here"
             for p in sorted(here.keys() | there.keys())
             if p not in here or p not in there
             or here[p][len(here[p]) - len(there[p]):] != there[p]]
  if not misfits:
    return
  fields = {"model"} | {f for name in (saved.config.model, config.model)
                        for f in registry.resolve("model", name).accepts
                        if f != "input_shape"}
  differences = [f"{f}={saved.config[f]!r} there, {config[f]!r} here"
                 for f in sorted(fields, key=lambda f: (f != "model", f))
                 if saved.config[f] != config[f]]
  if tuple(saved.image_shape) != tuple(image_shape):
    differences.append(f"images {saved.image_shape} there, {tuple(image_shape)} here")
  raise UserError(f"config.init_from={folder.parent}: another architecture "
                  f"({'; '.join(differences or misfits[:3])}); start from a run "
                  f"of the same model, or drop init_from")


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
