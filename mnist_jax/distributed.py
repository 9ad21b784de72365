"""Multi-process runs through `jax.distributed`: the same command on every host.

JAX's multi-controller runtime runs one process per host (or per GPU); each
sees the global mesh but owns only its local devices. mnist_jax needs little
for it: the dataset is small, so every process loads all of it and places
the shards of its own devices; each device then gathers its own part of each
batch on device, so no process ever feeds another's devices. Files (logs,
metrics, summary, plots) come from process 0; checkpoints go through orbax,
which coordinates the processes itself.
"""

import os

import jax
import numpy as np
import orbax.checkpoint  # pylint: disable=unused-import  (defines the flag below)
from absl import flags, logging

from mnist_jax.errors import UserError


def _slurm_multi_task() -> bool:
  return (all(v in os.environ for v in ("SLURM_JOB_ID", "SLURM_STEP_NODELIST",
                                          "SLURM_NTASKS", "SLURM_PROCID"))
          and int(os.environ["SLURM_NTASKS"]) > 1)


def requested(config) -> bool:
  """`config.distributed`, or an environment that asks for several processes."""
  return bool(config.distributed or config.coordinator_address
              or os.environ.get("JAX_COORDINATOR_ADDRESS") or _slurm_multi_task())


def initialize(config):
  """Starts jax.distributed once per process, before anything touches a device.

  With no explicit coordinator, JAX finds one itself: TPU pod metadata,
  SLURM, or $JAX_COORDINATOR_ADDRESS with the process count and id.
  """
  if not requested(config) or jax.distributed.is_initialized():
    return
  # CPU devices of different processes talk through gloo (TCP); the option
  # only concerns the CPU backend, so it is harmless on GPU and TPU.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  explicit = {"coordinator_address": config.coordinator_address,
              "coordinator_bind_address": config.coordinator_bind_address,
              "num_processes": config.num_processes,
              "process_id": config.process_id}
  try:
    jax.distributed.initialize(
        **{k: v for k, v in explicit.items() if v is not None},
        heartbeat_timeout_seconds=config.heartbeat_timeout_seconds)
  except (ValueError, RuntimeError) as e:
    raise UserError(f"jax.distributed could not start ({e}); set "
                    f"config.coordinator_address, num_processes and "
                    f"process_id, or run under SLURM or on a TPU pod") from None
  # orbax's barriers are device collectives by default. Its save threads then
  # issue collectives that can interleave with the training step's all-reduces
  # in a different order on each process (gloo aborts: "Received data size
  # doesn't match expected size"). The coordination service's barriers use no
  # device.
  flags.FLAGS["experimental_orbax_use_distributed_barrier"].value = True
  if jax.process_index() != 0:
    logging.set_verbosity(logging.WARNING)  # One log for the run: process 0's.
  logging.info("jax.distributed: process %d of %d, %d local of %d devices",
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())


def is_main_process() -> bool:
  return jax.process_index() == 0


def put_global(tree, sharding):
  """Host arrays (the same on every process) as global arrays with `sharding`.

  Each process supplies only the shards of its own devices; with a single
  process this is `jax.device_put`.
  """
  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  return jax.tree.map(put, tree)
