"""The dataset on the device, and the order an epoch takes it in.

The whole dataset is copied to every device once, as uint8 (normalised inside
the compiled step). An epoch's batches are an on-device permutation of it, so
training needs no host input at all: only the data keys, one per member.
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from mnist_jax import data as data_lib
from mnist_jax import distributed, sharding
from mnist_jax import members as members_lib
from mnist_jax.errors import UserError


@struct.dataclass
class DeviceData:
  """The dataset on device, uint8, replicated on every device of the mesh.
  The evaluated splits are padded to whole evaluation batches, and masked."""
  train_images: jax.Array  # [N, H, W, C]
  train_labels: jax.Array  # [N]
  test_images: jax.Array   # [T_pad, H, W, C]
  test_labels: jax.Array   # [T_pad]
  test_mask: jax.Array     # [T_pad] bool, False on padding
  # The validation split, the same way, or None without one.
  val_images: jax.Array | None = None
  val_labels: jax.Array | None = None
  val_mask: jax.Array | None = None

  def split(self, name: str) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(images, labels, mask) of the evaluated split "test" or "val"."""
    return (getattr(self, f"{name}_images"), getattr(self, f"{name}_labels"),
            getattr(self, f"{name}_mask"))


def place_data(dataset: data_lib.Dataset, mesh, eval_batch_size: int) -> DeviceData:
  """Copies the dataset to every device once, padding the evaluated splits."""
  test = _padded(dataset.test_images, dataset.test_labels, eval_batch_size)
  val = (_padded(dataset.val_images, dataset.val_labels, eval_batch_size)
         if dataset.val_images is not None else (None, None, None))
  arrays = DeviceData(dataset.train_images, dataset.train_labels, *test, *val)
  return distributed.put_global(arrays, sharding.replicated(mesh))


def _padded(images, labels, batch_size: int):
  """(images, labels, mask) padded to whole batches; the mask is False on padding."""
  num = len(labels)
  padded = math.ceil(num / batch_size) * batch_size
  pad = padded - num
  return (np.pad(images, ((0, pad),) + ((0, 0),) * (images.ndim - 1)),
          np.pad(labels, (0, pad)), np.arange(padded) < num)


def with_validation(dataset: data_lib.Dataset, size: int, seed: int,
                    batch_size: int) -> data_lib.Dataset:
  """`dataset` with `size` training images held out as its validation split,
  stratified by class, chosen by `seed` alone (config.validation_size,
  validation_seed). A dataset that ships a validation split keeps its own."""
  if dataset.val_images is not None or not size:
    return dataset
  labels = dataset.train_labels
  counts = np.bincount(labels, minlength=dataset.num_classes)
  if size < dataset.num_classes or len(labels) - size < max(batch_size,
                                                             dataset.num_classes):
    raise UserError(
        f"config.validation_size={size}: {dataset.name} has {len(labels)} "
        f"training images and {dataset.num_classes} classes; hold out at least "
        f"one image per class and leave at least one batch of {batch_size} "
        f"(and every class) to train on")
  # Each class's share of `size`, the rounding left over going to the classes
  # with the largest remainders (ties to the lower class): proportional.
  exact = size * counts / len(labels)
  quota = np.floor(exact).astype(int)
  order = np.lexsort((np.arange(len(counts)), -(exact - quota)))
  quota[order[:size - quota.sum()]] += 1
  quota = np.minimum(quota, counts - 1)  # Every class keeps a training image.
  rng = np.random.default_rng(seed)
  held = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:quota[c]]
                         for c in range(len(counts))])
  held = np.sort(held)
  keep = np.ones(len(labels), bool)
  keep[held] = False
  return dataclasses.replace(
      dataset, train_images=dataset.train_images[keep], train_labels=labels[keep],
      val_images=dataset.train_images[held], val_labels=labels[held])


def evaluation_batch_size(requested: int, num_test: int, num_devices: int) -> int:
  """`requested` (config.eval_batch_size), made to fit the devices and the
  test set.

  The evaluation batch changes no result, so rather than refuse a size that
  does not divide by the devices, round it up to one that does; and never pad
  the test set beyond one batch.
  """
  return math.ceil(min(requested, num_test) / num_devices) * num_devices


def data_keys(members: members_lib.Members) -> jax.Array:
  """Raw key data of the data order: [2], or [M, 2] with a row per member."""
  keys = [jax.random.key_data(jax.random.fold_in(jax.random.key(seed), 1))
          for seed in (members.describe(k)["seed"] for k in range(members.count))]
  return keys[0] if members.count == 1 else jnp.stack(keys)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def epoch_permutation(data_key, epoch, num_examples: int, num_steps: int,
                      batch_size: int):
  """The epoch's shuffle of all examples, cut to whole batches: [S, B]
  indices, or [M, S, B] for a [M, 2] `data_key` with a row per member.

  `data_key` is raw key data (`jax.random.key_data`), which can be placed as
  a global array in a multi-process run.

  The `N - S * B` examples left over form no batch this epoch; a different
  subset is left over each epoch.
  """
  def permutation(key_data):
    key = jax.random.fold_in(jax.random.wrap_key_data(key_data), epoch)
    perm_N = jax.random.permutation(key, num_examples)
    return perm_N[:num_steps * batch_size].reshape(num_steps, batch_size)
  return permutation(data_key) if data_key.ndim == 1 else jax.vmap(permutation)(data_key)
