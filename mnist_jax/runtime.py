"""What must happen before anything touches a device, in this order.

The CPU device count is fixed when JAX starts its CPU backend and
`jax.distributed` must start before any device is used, so `start` sets
both, then the compilation cache, then checks the backend and makes the
mesh: every run (train, evaluate, benchmarks) starts through it.
"""

import dataclasses
import os
from pathlib import Path

import jax
import ml_collections
from absl import logging

from mnist_jax import config as config_lib
from mnist_jax import distributed, registry, sharding
from mnist_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Runtime:
  """The devices a run uses: its mesh over them and the backend."""
  mesh: jax.sharding.Mesh
  backend: str
  main_process: bool  # Process 0, which writes the workdir's files.

  @property
  def num_devices(self) -> int:
    return self.mesh.devices.size


def start(config: ml_collections.ConfigDict) -> Runtime:
  """Configures JAX for a (validated) config's run, then makes its mesh."""
  configure_cpu_devices(config, multi_process=distributed.requested(config))
  distributed.initialize(config)
  enable_compilation_cache(config.compilation_cache, config.compilation_cache_dir)
  check_backend(config.require_backend)  # Before loading data or compiling.
  return Runtime(sharding.make_mesh(), jax.default_backend(),
                 distributed.is_main_process())


def auto_cpu_devices(batch_size: int, cores: int, dense_only: bool = False) -> int:
  """How many virtual CPU devices to split a batch over.

  XLA:CPU runs one device's step on barely more than one core, and its
  convolution gradients slow down sharply above about 64 images per device
  (measured on 2 cores, speedrun model, benchmarks/results/cpu-cpu/: 1 device
  at batch 128 and 256 gave 7,207 and 3,872 images/s, 2 devices 8,302 and
  7,456, 4 devices at 256 8,699; records cpu-variants-b128-1dev-flags-baseline,
  harness-1dev-20261121T0448 (scaling) and harness-1dev-20261121T0520). So: at least one device per core, and enough that each
  takes about 64 images, but never more than 4 per core; then the largest
  count at most that which divides the batch. Models without convolutions
  (`dense_only`, declared by models.register) stay on one device.
  """
  if dense_only:
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
  count = config.cpu_devices or auto_cpu_devices(
      config.batch_size, cores, dense_only=registry.resolve("model", config.model).dense_only)
  try:
    jax.config.update("jax_num_cpu_devices", count)
  except RuntimeError:  # The backend already runs; keep its devices.
    if config.cpu_devices:
      logging.warning("config.cpu_devices=%d has no effect: JAX's CPU backend "
                      "already started in this process", config.cpu_devices)


def check_backend(required: str):
  """Refuses a run whose backend is not `required` (config.require_backend):
  a benchmark must not silently run on the CPU. Starts JAX's backend."""
  backend = jax.default_backend()
  if required and required != backend:
    raise UserError(f"config.require_backend={required} but JAX's "
                    f"backend is {backend}: {config_lib.BACKEND_FIXES[required]} "
                    f"or drop require_backend")


def enable_compilation_cache(enabled: bool, directory: str | None):
  """JAX's persistent compilation cache: a second start skips XLA compilation.

  Every program is cached (the default threshold of 1 s would leave out most
  of ours). Set config.compilation_cache=False to turn it off.
  """
  if not enabled:
    return
  cache_home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
  path = Path(directory or
              cache_home / "mnist_jax" / "jax_compilation_cache").expanduser()
  jax.config.update("jax_compilation_cache_dir", str(path))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
