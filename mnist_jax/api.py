"""mnist_jax from Python, for notebooks: train a config, watch its epochs,
load a trained run, predict.

  import mnist_jax
  result = mnist_jax.train("configs/mnist.py", num_epochs=3,
                           callbacks=[lambda record: print(record["test_accuracy"])])
  probabilities_NK = result.model.predict(images_NHW)   # uint8 images
  model = mnist_jax.load("runs/mnist")                  # a run trained before

`mnist_jax.train` and `mnist_jax.load` are this module's `train` and `load`.
"""

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import ml_collections
import numpy as np

from mnist_jax import config as config_lib
from mnist_jax import inference, outputs, plugins, training
from mnist_jax.errors import UserError
from mnist_jax.trained import Trained, load_trained


class Model:
  """A trained model, restored from a run's checkpoint."""

  def __init__(self, trained: Trained):
    self.trained = trained

  @property
  def class_names(self) -> tuple[str, ...]:
    return self.trained.class_names

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return self.trained.image_shape

  def predict(self, images, batch_size: int = inference.BATCH_SIZE) -> np.ndarray:
    """Class probabilities [N, K] of uint8 images [N, H, W, C] (or [N, H, W]
    for grayscale), as the dataset's: 0..255, the model's image size."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
      raise UserError(f"predict takes uint8 images (0..255), got {images.dtype}; "
                      f"convert with .astype(np.uint8)")
    if images.ndim == 3:
      images = images[..., None]
    if images.shape[1:] != tuple(self.image_shape):
      raise UserError(f"predict takes images of shape [N, {', '.join(map(str, self.image_shape))}]"
                      f" (the model's), got {list(images.shape)}")
    if len(images) == 0:
      raise UserError("predict takes at least one image")
    return inference.probabilities(inference.bound_logits_fn(self.trained), images,
                                   batch_size)


@dataclasses.dataclass(frozen=True)
class Result:
  """What `train` returns: the run's summary.json, its metrics history (one
  record per epoch), its workdir and its model (the checkpoint `load`
  chooses: the best by validation accuracy where there is one, else the last)."""
  summary: dict[str, Any]
  history: list[dict[str, Any]]
  workdir: Path
  model: Model


def train(config: str | os.PathLike | ml_collections.ConfigDict,
          workdir: str | os.PathLike | None = None,
          callbacks: Sequence[Callable[..., Any]] = (), **overrides) -> Result:
  """Trains `config` (a config file's path, or a ConfigDict) with
  `overrides` by field name (`num_epochs=3`, `sweep={"learning_rate":
  "0.01,0.1"}` or `**{"sweep.learning_rate": "0.01,0.1"}`; `model=MyNet`,
  `optimizer=make_tx`, `loss=my_loss`, `augment=[my_noise, "translate"]`:
  your own components as objects, recorded by their `module:attribute`
  where an import finds them again, else usable in this process only) in `workdir`
  (default: runs/<config file's name>, or a new temporary folder). Each
  callback is called with each finished epoch's record, or, where it takes
  two arguments, with (record, state) (the epoch's TrainState; an object
  with `on_epoch_end(record, state)` too); returning True stops the run
  after saving. A workdir with checkpoints resumes."""
  if isinstance(config, ml_collections.ConfigDict):
    config = config.copy_and_resolve_references()
    workdir = workdir or tempfile.mkdtemp(prefix="mnist_jax_")
  else:
    workdir = workdir or Path("runs") / Path(config).stem
    config = config_lib.from_file(str(config))
  for name, value in overrides.items():  # As --config.<name>=, unparsed.
    config_lib.override(config, name, _as_specs(name, value))
  result = training.train_and_evaluate(config, workdir, callbacks=callbacks)
  return Result(result.summary, outputs.read_metrics(workdir), Path(workdir),
                load(workdir))


# The fields whose value may be an object (a class, a function) rather than
# a name: the user's own component, and its kind.
_OBJECT_FIELDS = {"model": "model", "optimizer": "optimizer", "loss": "loss",
                  "augment": "augmentation", "tta": "tta"}


def _as_specs(name: str, value):
  """`value` of field `name` as the config holds it: an object of a component
  field (model=MyNet; augment=[noise, "translate"]) as its spec
  (plugins.spec_of: `module:attribute` where an import finds it again)."""
  kind = _OBJECT_FIELDS.get(name)
  if kind is None or isinstance(value, str):
    return value
  if name in ("augment", "tta") and isinstance(value, (list, tuple)):
    return ",".join(plugins.spec_of(kind, v) for v in value)
  return plugins.spec_of(kind, value)


def load(workdir: str | os.PathLike, checkpoint: str = "",
         member: int | None = None) -> Model:
  """The model of a trained run: its checkpoint `checkpoint` ("best", "last"
  or an epoch; by default the best where the run kept one, else the last),
  of a run of several, member `member`."""
  return Model(load_trained(workdir, member, checkpoint))
