"""On-device augmentation, inside the compiled training step.

Each example draws its own random transformation from the step's key, so a
batch split over devices is augmented exactly as on one device, and a
resumed run repeats the augmentations of the run it continues.
"""

import jax
import jax.numpy as jnp

from mnist_jax.errors import UserError

AUGMENTATIONS = ("flip", "translate")
# Datasets whose classes a mirror image changes (a mirrored 2 is no digit).
NO_FLIP_DATASETS = ("mnist", "kmnist", "mnist160")


def parse(text: str, dataset: str) -> tuple[str, ...]:
  """`config.augment` ("flip,translate") as a tuple; refuses what cannot apply."""
  names = tuple(name.strip() for name in text.split(",") if name.strip())
  unknown = [name for name in names if name not in AUGMENTATIONS]
  if unknown:
    raise UserError(f"config.augment: unknown augmentation '{unknown[0]}'; "
                    f"choose from {', '.join(AUGMENTATIONS)}")
  if "flip" in names and dataset in NO_FLIP_DATASETS:
    raise UserError(f"config.augment: 'flip' mirrors images, which changes "
                    f"what {dataset}'s characters mean; drop it for {dataset}")
  return names


def flip_horizontally(key: jax.Array, images_BHW: jax.Array) -> jax.Array:
  """Mirrors each image left-right with probability 1/2."""
  flip_B = jax.random.bernoulli(key, 0.5, images_BHW.shape[:1])
  return jnp.where(flip_B[:, None, None], images_BHW[:, :, ::-1], images_BHW)


def translate(key: jax.Array, images_BHW: jax.Array, max_pixels: int) -> jax.Array:
  """Shifts each image by up to `max_pixels` rows and columns, filling with 0.

  The same as padding by `max_pixels` and taking a random 28x28 crop.
  """
  if max_pixels == 0:
    return images_BHW
  b, h, w = images_BHW.shape
  shift_B2 = jax.random.randint(key, (b, 2), 0, 2 * max_pixels + 1)
  padded_BHW = jnp.pad(images_BHW, ((0, 0), (max_pixels,) * 2, (max_pixels,) * 2))
  crop = lambda image, shift: jax.lax.dynamic_slice(image, shift, (h, w))
  return jax.vmap(crop)(padded_BHW, shift_B2)


def make(names: tuple[str, ...], translate_pixels: int):
  """f(key, uint8 images [B, H, W]) -> augmented images, or None for none."""
  if not names:
    return None

  def augment(key, images_BHW):
    flip_key, translate_key = jax.random.split(key)
    if "flip" in names:
      images_BHW = flip_horizontally(flip_key, images_BHW)
    if "translate" in names:
      images_BHW = translate(translate_key, images_BHW, translate_pixels)
    return images_BHW

  return augment
