"""The device mesh: one `data` axis over every device.

Data parallelism only: the batch is split along `data`, parameters, optimizer
state and the (small) dataset are replicated. The axis is `Auto` so that XLA's
sharding propagation places the gather of a batch from the replicated dataset
and the gradient all-reduce; the only annotation the step needs is the batch's.
"""

import jax
from jax.sharding import NamedSharding, PartitionSpec as P

from mnist_jax.errors import UserError

DATA_AXIS = "data"


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
