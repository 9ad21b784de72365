"""Exports a trained model: `python -m mnist_jax.export --workdir=DIR [--out=PATH]`.

Writes the classifier of a checkpoint of DIR (`--checkpoint`: by default the
best by validation accuracy where the run kept one, else the last) as a
serialized `jax.export` module (StableHLO with the parameters inside) to
PATH, default DIR/model.jax_export, and what a user of it needs to know to
PATH.json.
It runs without this package, Flax, optax or the checkpoint, on any of
`--platforms` (default: all of JAX's, whichever machine exported it):

  exported = jax.export.deserialize(bytearray(open(path, "rb").read()))
  logits_BK = exported.call(images_BHW)  # uint8 [B, H, W] (RGB: [B, H, W, 3]), any B.
"""

import json
import os
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags, logging

from mnist_jax import cli, fileio
from mnist_jax.errors import UserError
from mnist_jax.trained import Trained, load_trained

DEFAULT_NAME = "model.jax_export"


def input_shape(trained: Trained) -> tuple[int, ...]:
  """An image's shape in the module's signature: [H, W] for grayscale (as
  MNIST's IDX files hold them), [H, W, 3] for RGB."""
  h, w, c = trained.image_shape
  return (h, w) if c == 1 else (h, w, c)
# All of them by default: else a model exported on a GPU runs only on GPUs.
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")

_WORKDIR = cli.workdir_flag()
_MEMBER = cli.member_flag()
_CHECKPOINT = cli.checkpoint_flag()
_OUT = cli.out_flag(
    "Where to write the exported model; default "
    "<workdir>/model.jax_export. Its description goes to <out>.json.")
_PLATFORMS = flags.DEFINE_list(
    "platforms", list(PLATFORMS),
    "Where the exported model can run (one lowering each, sharing the "
    "parameters, so each adds only a few hundred bytes).")



def _write_atomic(path: Path, data: bytes):
  """Whole or not at all: a reader never sees half a file, even after a kill."""
  try:
    fileio.write_atomic(path, data)
  except OSError as e:
    raise UserError(f"cannot write {path} ({e.strerror}); pass --out with a "
                    f"writable path") from None


def check_platforms(platforms: Sequence[str]):
  """jax.export takes any name, and the module would then fail where it is used."""
  unknown = [p for p in platforms if p not in PLATFORMS]
  if unknown or not platforms:
    raise UserError(f"--platforms: unknown {', '.join(unknown) or '(none given)'}; "
                    f"choose from {', '.join(PLATFORMS)}")


def export_trained(trained: Trained,
                   platforms: Sequence[str] = PLATFORMS) -> jax.export.Exported:
  """f(images_BHW uint8) -> logits_BK float32, for any batch size B.

  The parameters are host copies closed over by the function, so they are
  constants inside the module, and the module is not tied to the devices or
  the mesh that the checkpoint was restored to.
  """
  check_platforms(platforms)
  # Only what inference reads; the optimizer state would double the file.
  inference_state = jax.device_get(trained.state.replace(opt_state=None))
  logits = trained.logits_fn

  def logits_from_images(images_BHW):
    # Grayscale [B, H, W] (input_shape's) gain the channel axis of the
    # dataset's layout, which the step takes.
    images_BHWC = images_BHW[..., None] if images_BHW.ndim == 3 else images_BHW
    return logits(inference_state, images_BHWC)

  (batch,) = jax.export.symbolic_shape("b")
  images_spec = jax.ShapeDtypeStruct((batch, *input_shape(trained)), jnp.uint8)
  return jax.export.export(jax.jit(logits_from_images),
                           platforms=tuple(platforms))(images_spec)


def describe(trained: Trained, exported: jax.export.Exported) -> dict:
  """What PATH.json says: how to call the module and what its output means."""
  num_classes = len(trained.class_names)
  return {
      "format": "jax.export serialized module (jax.export.deserialize)",
      "input": {
          "shape": ["b", *input_shape(trained)],
          "dtype": str(np.dtype(exported.in_avals[0].dtype)),
          "description": ("grayscale images as in the dataset's files: light on "
                          "dark, 0..255" if trained.image_shape[-1] == 1 else
                          "RGB images as in the dataset's files, 0..255")
                         + "; any batch size b >= 1",
      },
      "output": {
          "shape": ["b", num_classes],
          "dtype": str(np.dtype(exported.out_avals[0].dtype)),
          "description": "logits; softmax gives the class probabilities, "
                         "in the order of class_names",
      },
      "class_names": list(trained.class_names),
      "platforms": list(exported.platforms),
      "jax_version": jax.__version__,
      "calling_convention_version": exported.calling_convention_version,
      "dataset": trained.config.dataset,
      "model": trained.config.model,
      "epoch": trained.epoch,
  }


def export(trained: Trained, path: str | os.PathLike,
           platforms: Sequence[str] = PLATFORMS) -> Path:
  """Writes the module to `path` and its description to `path`.json."""
  path = Path(path)
  exported = export_trained(trained, platforms)
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot create {path.parent} ({e.strerror}); pass --out "
                    f"with a writable path") from None
  _write_atomic(path, bytes(exported.serialize()))
  _write_atomic(Path(f"{path}.json"),
                (json.dumps(describe(trained, exported), indent=2) + "\n").encode())
  return path


def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not _WORKDIR.value:
    raise UserError("--workdir is required: the workdir of a training run")
  check_platforms(_PLATFORMS.value)  # Before the slow part.
  trained = load_trained(_WORKDIR.value, _MEMBER.value, _CHECKPOINT.value)
  path = export(trained, _OUT.value or Path(_WORKDIR.value) / DEFAULT_NAME,
                _PLATFORMS.value)
  logging.info("exported the checkpoint of epoch %d", trained.epoch)
  print(f"wrote {path} ({path.stat().st_size:,} bytes) and {path}.json")


if __name__ == "__main__":
  cli.run(main)
