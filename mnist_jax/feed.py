"""The dataset on the device, and the order an epoch takes it in.

The whole dataset is copied to every device once, as uint8 (normalised inside
the compiled step). An epoch's batches are an on-device permutation of it, so
training needs no host input at all: only the data keys, one per member.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from mnist_jax import data as data_lib
from mnist_jax import distributed, sharding
from mnist_jax import members as members_lib


@struct.dataclass
class DeviceData:
  """The dataset on device, uint8, replicated on every device of the mesh."""
  train_images: jax.Array  # [N, H, W, C]
  train_labels: jax.Array  # [N]
  test_images: jax.Array   # [T_pad, H, W, C], padded to whole eval batches
  test_labels: jax.Array   # [T_pad]
  test_mask: jax.Array     # [T_pad] bool, False on padding


def place_data(dataset: data_lib.Dataset, mesh, eval_batch_size: int) -> DeviceData:
  """Copies the dataset to every device once, padding the test set."""
  num_test = len(dataset.test_labels)
  padded = math.ceil(num_test / eval_batch_size) * eval_batch_size
  pad = padded - num_test
  test_images = np.pad(dataset.test_images,
                       ((0, pad),) + ((0, 0),) * (dataset.test_images.ndim - 1))
  test_labels = np.pad(dataset.test_labels, (0, pad))
  test_mask = np.arange(padded) < num_test
  arrays = DeviceData(dataset.train_images, dataset.train_labels,
                      test_images, test_labels, test_mask)
  return distributed.put_global(arrays, sharding.replicated(mesh))


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
