"""The device mesh: one `data` axis over every device.

Data parallelism only: the batch is split along `data`, parameters, optimizer
state and the (small) dataset are replicated. The axis is `Auto` so that XLA's
sharding propagation places the gather of a batch from the replicated dataset
and the gradient all-reduce; the only annotation the step needs is the batch's.
"""

import os

import jax
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec as P

from mnist_jax import models
from mnist_jax.errors import UserError

DATA_AXIS = "data"


def auto_cpu_devices(batch_size: int, cores: int, model: str = "cnn") -> int:
  """How many virtual CPU devices to split a batch of `model` over.

  XLA:CPU runs one device's step on barely more than one core, and its
  convolution gradients slow down sharply above about 64 images per device
  (measured on 2 cores, speedrun model, benchmarks/results/cpu-cpu/: 1 device
  at batch 128 and 256 gave 7,207 and 3,872 images/s, 2 devices 8,302 and
  7,456, 4 devices at 256 8,699; records cpu-variants-b128-1dev-flags-baseline,
  harness-1dev-20261121T0448 (scaling) and harness-1dev-20261121T0520). So: at least one device per core, and enough that each
  takes about 64 images, but never more than 4 per core; then the largest
  count at most that which divides the batch. Models without convolutions
  (models.DENSE_ONLY) stay on one device.
  """
  if model in models.DENSE_ONLY:
    return 1
  limit = max(cores, min(batch_size // 64, 4 * cores))
  return max(d for d in range(1, limit + 1) if batch_size % d == 0)


def configure_cpu_devices(config, multi_process: bool):
  """Sets the number of CPU devices before JAX starts its CPU backend.

  `config.cpu_devices` if set, else `auto_cpu_devices` for a single-process
  run. A device count already given in $XLA_FLAGS wins; so does a backend
  that is already running (a second run in the same process keeps the first
  one's devices). The setting concerns only the CPU backend: on a GPU or TPU
  machine it changes nothing.
  """
  if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
    return
  if not config.cpu_devices and multi_process:
    return
  cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
           else os.cpu_count() or 1)  # macOS has no affinity.
  count = config.cpu_devices or auto_cpu_devices(config.batch_size, cores,
                                                 config.model)
  try:
    jax.config.update("jax_num_cpu_devices", count)
  except RuntimeError:  # The backend already runs; keep its devices.
    if config.cpu_devices:
      logging.warning("config.cpu_devices=%d has no effect: JAX's CPU backend "
                      "already started in this process", config.cpu_devices)


def make_mesh(devices=None) -> jax.sharding.Mesh:
  devices = list(devices if devices is not None else jax.devices())
  return jax.make_mesh((len(devices),), (DATA_AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices)


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: jax.sharding.Mesh, member_axis: bool = False) -> NamedSharding:
  """Batch dimension split over `data`, the rest whole. The batch dimension
  leads, or follows a leading member axis (vectorised runs, members.py)."""
  return NamedSharding(mesh, P(None, DATA_AXIS) if member_axis else P(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: jax.sharding.Mesh, what: str):
  n = mesh.shape[DATA_AXIS]
  if batch_size % n:
    lower = max(n, batch_size - batch_size % n)
    raise UserError(
        f"{what}={batch_size} does not divide by the {n} devices of the mesh; "
        f"use a multiple of {n}, e.g. {lower} or {lower + n}")
