"""A trained model restored from a workdir's checkpoint (best, last or an
epoch), for evaluation, prediction and export; `restore`, the one routine
that reads a checkpoint back outside training, also serves init_from."""

import dataclasses
import functools
from pathlib import Path

import jax
import ml_collections
from absl import logging

from mnist_jax import checkpoint as checkpoint_lib
from mnist_jax import config as config_lib
from mnist_jax import models, sharding, steps, survivors
from mnist_jax import state as state_lib
from mnist_jax.errors import UserError
from mnist_jax.members import select


@dataclasses.dataclass(frozen=True)
class Trained:
  config: ml_collections.ConfigDict  # As saved, the fields it lacks filled.
  epoch: int
  class_names: tuple[str, ...]
  image_shape: tuple[int, int, int]  # (H, W, C) of the images it takes.
  graphs: state_lib.Graphs
  recipe: state_lib.StepRecipe
  state: state_lib.TrainState

  def with_ema_weights(self) -> "Trained":
    """The same run with the moving average of its weights as parameters."""
    if self.state.ema is None:
      raise UserError("this run kept no moving average of its weights; train "
                      "with e.g. --config.ema_decay=0.999")
    return dataclasses.replace(self, state=state_lib.with_ema_weights(self.state))

  @functools.cached_property
  def logits_fn(self):
    """A jitted f(state, uint8 images [B, H, W, C]) -> logits [B, K], compiled once per shape."""
    return steps.make_logits_fn(self.graphs, self.recipe)


def which_checkpoint(workdir: Path, checkpoint: str = ""
                     ) -> tuple[Path, int | None, str]:
  """(folder, epoch or None for its newest, what it is) of `checkpoint`
  (--checkpoint): "best" (the best epoch by validation accuracy, kept by a
  run with a validation split), "last" (the newest), or an epoch number;
  "": best where the run kept one, else last."""
  best = workdir / checkpoint_lib.BEST_FOLDER
  has_best = best.is_dir() and any(p.name.isdigit() for p in best.iterdir())
  if checkpoint == "best" and not has_best:
    raise UserError(f"--checkpoint=best: {workdir} kept no best checkpoint (it "
                    f"was trained without a validation split); use "
                    f"--checkpoint=last or an epoch number")
  if checkpoint in ("", "best") and has_best:
    return best, None, "the best by validation accuracy"
  if checkpoint in ("", "last"):
    return workdir / "checkpoints", None, "the newest"
  if not checkpoint.isdigit():
    raise UserError(f"--checkpoint={checkpoint}: use best, last or an epoch number")
  epoch = int(checkpoint)
  if has_best and (best / checkpoint).is_dir():
    return best, epoch, "the best by validation accuracy"
  return workdir / "checkpoints", epoch, f"epoch {epoch}'s"


@dataclasses.dataclass(frozen=True)
class Restored:
  """A checkpoint as saved: every member of its run, on replicated arrays."""
  config: ml_collections.ConfigDict  # As saved, the fields it lacks filled.
  image_shape: tuple[int, int, int]
  built: state_lib.Built  # Graphs, recipe and members of the saved config.
  state: state_lib.TrainState
  meta: dict  # The checkpoint's JSON record (epoch, num_classes, class names...).


def restore(folder: Path, epoch: int | None = None, mesh=None) -> Restored:
  """Checkpoint `epoch` of `folder` (None: the newest that reads), placed
  replicated over `mesh` (default: every device)."""
  checkpoints = checkpoint_lib.Checkpoints(folder, read_only=True)
  try:
    meta = checkpoints.latest_meta(epoch)
    if meta is None:
      raise UserError(f"no readable checkpoint in {folder}")
    config = config_lib.with_defaults(meta["config"])
    num_classes = meta["num_classes"]
    # Runs saved before images had other shapes were all MNIST's.
    image_shape = tuple(meta.get("image_shape", models.MNIST_SHAPE))
    built = state_lib.build(config, num_classes, steps_per_epoch=1,
                            image_shape=image_shape)
    mesh = mesh or sharding.make_mesh()
    like = jax.device_put(built.state, sharding.replicated(mesh))
    # A halved run's checkpoint holds only the members it kept.
    built, like = survivors.saved_members(built, like, meta, mesh)
    restored = checkpoints.restore_latest(like, config, num_classes, epoch)
    if restored is None:
      raise UserError(f"no readable checkpoint in {folder}")
  finally:
    checkpoints.close()
  state, meta = restored
  return Restored(config, image_shape, built, state, meta)


def load_trained(workdir: str | Path, member: int | None = None,
                 checkpoint: str = "") -> Trained:
  """A checkpoint of `workdir` (`which_checkpoint`); of a run of several
  members, member `member` (default 0; of a halved sweep, its number before
  the rungs, default the first left), with its own seed and
  hyperparameters in `config`."""
  folder, epoch, what = which_checkpoint(Path(workdir), checkpoint)
  restored = restore(folder, epoch)
  config, state, meta = restored.config, restored.state, restored.meta
  built, image_shape = restored.built, restored.image_shape
  logging.info("the checkpoint of epoch %d (%s)", meta["epoch"], what)
  members, recipe = built.members, built.recipe
  # A halved run's members go by their original numbers: as positions here.
  member = survivors.position(meta, member, len(members.seeds))
  if members.count == 1 and member not in (None, 0):
    raise UserError(f"--member={member}: this run trained one model; drop --member")
  if members.count > 1:
    member = member or 0
    if not 0 <= member < members.count:
      raise UserError(f"--member={member}: this run has members 0 to "
                      f"{members.count - 1}; see its summary.json")
    state = select(state, member)
    recipe = dataclasses.replace(recipe, members=1, seeds_per_point=1)
    config = members.configs(config)[member]
    logging.info("member %d of %d: %s", member, members.count,
                 members.describe(member))
  return Trained(config, meta["epoch"], tuple(meta["class_names"]), image_shape,
                 built.graphs, recipe, state)
