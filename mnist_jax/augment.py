"""On-device augmentation, inside the compiled training step.

Each example draws its own random transformation from the step's key, so a
batch split over devices is augmented exactly as on one device, and a
resumed run repeats the augmentations of the run it continues.

Each augmentation and test-time view registers itself below (`register`,
`register_view`); config.augment and config.tta name them, or a user's own
as `module:attr` / `file.py:attr` (plugins.py): `augment(key, float images
[B, H, W, C]) -> images`, applied per batch after normalisation, in the
order listed, and `view(float images) -> images`.
"""

import jax
import jax.numpy as jnp

from mnist_jax import registry
from mnist_jax.errors import UserError

# Datasets whose classes a mirror image changes (a mirrored 2 is no digit):
# digits and characters. Clothing and medical images may be flipped.
NO_FLIP_DATASETS = ("mnist", "kmnist", "mnist160")
NO_FLIP_PREFIXES = ("emnist",)


def register(name: str, *, mixes: bool = False, mirrors: bool = False):
  """Registers an augmentation of training batches as config.augment `name`.

  Per image (`mixes` False): `fn(key, uint8 images [B, H, W, C], *,
  translate_pixels) -> images`, each example drawing its own from `key`.
  The per-image ones apply in the order registered, each with its share of
  jax.random.split(key, how many are registered), so adding one changes the
  draws of the others. Mixing the batch (`mixes`): `fn(key, lam, float
  images) -> (images, the weight of each image's own label)`, the partner of
  example i being example B-1-i. `mirrors`: refused for datasets whose
  classes a mirror image changes.
  """
  return registry.register("augmentation", name, mixes=mixes, mirrors=mirrors)


def register_view(name: str, *, mirrors: bool = False):
  """Registers `fn(images [B, H, W, C]) -> [views]`, test-time views whose
  predictions are averaged with the batch's, as config.tta `name`."""
  return registry.register("tta", name, mirrors=mirrors)


def _parse(text: str, dataset: str, field: str, kind: str,
           label: str) -> tuple[str, ...]:
  names = tuple(name.strip() for name in text.split(",") if name.strip())
  for name in names:
    try:
      entry = registry.resolve(kind, name, label=label)
    except UserError as e:
      raise type(e)(f"config.{field}: {e}") from None
    if entry.mirrors and (dataset in NO_FLIP_DATASETS
                          or dataset.startswith(NO_FLIP_PREFIXES)):
      raise UserError(f"config.{field}: '{name}' mirrors images, which changes "
                      f"what {dataset}'s characters mean; drop it for {dataset}")
  return names


def parse(text: str, dataset: str) -> tuple[str, ...]:
  """`config.augment` ("flip,translate") as a tuple; refuses what cannot apply."""
  return _parse(text, dataset, "augment", "augmentation", "augmentation")


def parse_tta(text: str, dataset: str) -> tuple[str, ...]:
  """`config.tta` ("flip,translate") as a tuple; refuses what cannot apply."""
  return _parse(text, dataset, "tta", "tta", "test-time view")


@register("flip", mirrors=True)
def _flip(key, images_BHWC, **_):
  return flip_horizontally(key, images_BHWC)


@register("translate")
def _translate(key, images_BHWC, *, translate_pixels: int, **_):
  return translate(key, images_BHWC, translate_pixels)


@register("erase")
def _erase(key, images_BHWC, **_):
  return erase(key, images_BHWC)


def flip_horizontally(key: jax.Array, images_BHWC: jax.Array) -> jax.Array:
  """Mirrors each image left-right with probability 1/2."""
  flip_B = jax.random.bernoulli(key, 0.5, images_BHWC.shape[:1])
  return jnp.where(flip_B[:, None, None, None], images_BHWC[:, :, ::-1], images_BHWC)


def translate(key: jax.Array, images_BHWC: jax.Array, max_pixels: int) -> jax.Array:
  """Shifts each image by up to `max_pixels` rows and columns, filling with 0.

  The same as padding by `max_pixels` and taking a random H x W crop.
  """
  if max_pixels == 0:
    return images_BHWC
  b, h, w, c = images_BHWC.shape
  shift_B2 = jax.random.randint(key, (b, 2), 0, 2 * max_pixels + 1)
  padded_BHWC = jnp.pad(images_BHWC, ((0, 0), (max_pixels,) * 2, (max_pixels,) * 2,
                                      (0, 0)))
  crop = lambda image, shift: jax.lax.dynamic_slice(
      image, (shift[0], shift[1], 0), (h, w, c))
  return jax.vmap(crop)(padded_BHWC, shift_B2)


def erase(key: jax.Array, images_BHWC: jax.Array, probability: float = 0.5,
          area=(0.02, 0.25), aspect=(0.3, 3.3)) -> jax.Array:
  """Random erasing (Zhong et al. 2017): with `probability`, each image gets
  a rectangle of random area and aspect ratio set to 0 (every channel)."""
  b, h, w, _ = images_BHWC.shape
  keys = jax.random.split(key, 5)
  erase_B = jax.random.bernoulli(keys[0], probability, (b,))
  area_B = jax.random.uniform(keys[1], (b,), minval=area[0], maxval=area[1]) * h * w
  log_aspect_B = jax.random.uniform(keys[2], (b,), minval=jnp.log(aspect[0]),
                                    maxval=jnp.log(aspect[1]))
  eh_B = jnp.clip(jnp.round(jnp.sqrt(area_B * jnp.exp(log_aspect_B))), 1, h)
  ew_B = jnp.clip(jnp.round(jnp.sqrt(area_B / jnp.exp(log_aspect_B))), 1, w)
  top_B = jnp.floor(jax.random.uniform(keys[3], (b,)) * (h - eh_B + 1))
  left_B = jnp.floor(jax.random.uniform(keys[4], (b,)) * (w - ew_B + 1))
  rows_BH = jnp.arange(h)[None, :]
  cols_BW = jnp.arange(w)[None, :]
  in_rows_BH = (rows_BH >= top_B[:, None]) & (rows_BH < (top_B + eh_B)[:, None])
  in_cols_BW = (cols_BW >= left_B[:, None]) & (cols_BW < (left_B + ew_B)[:, None])
  box_BHW = in_rows_BH[:, :, None] & in_cols_BW[:, None, :] & erase_B[:, None, None]
  return jnp.where(box_BHW[..., None], jnp.zeros_like(images_BHWC), images_BHWC)


def make(names: tuple[str, ...], translate_pixels: int):
  """f(key, uint8 images [B, H, W, C]) -> augmented images, or None for none."""
  per_image = [e for e in registry.entries("augmentation").values() if not e.mixes]
  if not any(e.name in names for e in per_image):
    return None

  def augment(key, images_BHWC):
    for entry, entry_key in zip(per_image, jax.random.split(key, len(per_image))):
      if entry.name in names:
        images_BHWC = entry.target(entry_key, images_BHWC,
                                   translate_pixels=translate_pixels)
    return images_BHWC

  return augment


@register("mixup", mixes=True)
def _mixup(key, lam, x_BHWC):
  del key
  return mixup(lam, x_BHWC), lam


def mixup(lam: jax.Array, x_BHWC: jax.Array) -> jax.Array:
  """Each image blended with its partner (the batch reversed), weight `lam`."""
  return lam * x_BHWC + (1 - lam) * x_BHWC[::-1]


@register("cutmix", mixes=True)
def cutmix(key: jax.Array, lam: jax.Array, x_BHWC: jax.Array):
  """Each image with a box of its partner's pasted in, the box's area about
  1 - `lam` of the image; returns (images, the kept fraction of area)."""
  _, h, w, _ = x_BHWC.shape
  cut = jnp.sqrt(1 - lam)
  ch, cw = jnp.round(h * cut), jnp.round(w * cut)
  cy, cx = jax.random.uniform(key, (2,)) * jnp.array([h, w])
  top, bottom = jnp.clip(cy - ch / 2, 0, h), jnp.clip(cy + ch / 2, 0, h)
  left, right = jnp.clip(cx - cw / 2, 0, w), jnp.clip(cx + cw / 2, 0, w)
  rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
  box_HW = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
  mixed = jnp.where(box_HW[None, :, :, None], x_BHWC[::-1], x_BHWC)
  return mixed, 1 - box_HW.mean()


def _plugins(kind: str, names: tuple[str, ...]) -> list:
  return [registry.resolve(kind, n).target for n in names if ":" in n]


def make_floats(names: tuple[str, ...]):
  """f(key, float images [B, H, W, C]) -> images: the user's own
  augmentations among `names`, in their order, each with its own key; or
  None for none."""
  plugins = _plugins("augmentation", names)
  if not plugins:
    return None

  def augment(key, x_BHWC):
    for plugin, plugin_key in zip(plugins, jax.random.split(key, len(plugins))):
      x_BHWC = plugin(plugin_key, x_BHWC)
    return x_BHWC
  return augment


def float_views(names: tuple[str, ...], x_BHWC: jax.Array) -> list[jax.Array]:
  """The views of the user's own test-time views among `names`, of float images."""
  return [view(x_BHWC) for view in _plugins("tta", names)]


def make_mix(names: tuple[str, ...], alpha: float):
  """f(key, float images [B, H, W, C]) -> (images, lam), or None.

  The partner of example i is example B-1-i; the loss weighs each example's
  own label by `lam` and its partner's by 1 - `lam`. With several (mixup
  and cutmix), each step takes one of them at random.
  """
  kinds = [e for e in registry.entries("augmentation").values()
           if e.mixes and e.name in names]
  if not kinds:
    return None

  def mix(key, x_BHWC):
    lam_key, box_key, choice_key = jax.random.split(key, 3)
    lam = jax.random.beta(lam_key, alpha, alpha)
    (x, weight), *others = [e.target(box_key, lam, x_BHWC) for e in kinds]
    if not others:
      return x, weight
    if len(others) == 1:  # A fair coin between two, as ever.
      pick = jax.random.bernoulli(choice_key).astype(jnp.int32)
    else:
      pick = jax.random.randint(choice_key, (), 0, len(kinds))
    for k, (other, other_weight) in enumerate(others, 1):
      x = jnp.where(pick == k, other, x)
      weight = jnp.where(pick == k, other_weight, weight)
    return x, weight

  return mix


def test_time_views(names: tuple[str, ...], images_BHWC: jax.Array) -> list[jax.Array]:
  """The views of a test batch whose predictions are averaged: the batch, and
  its mirror image (for "flip") and one-pixel shifts (for "translate")."""
  views = [images_BHWC]
  for entry in registry.entries("tta").values():  # In the order registered.
    if entry.name in names:
      views.extend(entry.target(images_BHWC))
  return views


@register_view("flip", mirrors=True)
def _mirror(images_BHWC: jax.Array) -> list[jax.Array]:
  return [images_BHWC[:, :, ::-1]]


@register_view("translate")
def _one_pixel_shifts(images_BHWC: jax.Array) -> list[jax.Array]:
  padded = jnp.pad(images_BHWC, ((0, 0), (1, 1), (1, 1), (0, 0)))
  h, w = images_BHWC.shape[1:3]
  return [padded[:, dy:dy + h, dx:dx + w]
          for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2))]
