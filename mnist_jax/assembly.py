"""A run built once: `assemble(config) -> Run`.

The wiring every caller of the epoch loop needs (training.py, the benchmarks,
the tests) in one place: the runtime, the dataset with its validation split,
the plan of an epoch's calls, the built model, recipe and optimizer, the
state and data key on the devices, the data placed, and the compiled calls.
`Run` holds them; it compiles only when asked (`compile`), so that a
finished run, which a rerun only summarises, compiles nothing.
"""

import dataclasses
from typing import Iterator

import jax
import ml_collections
from absl import logging

from mnist_jax import config as config_lib
from mnist_jax import data as data_lib
from mnist_jax import distributed, feed, halving, loop, sharding
from mnist_jax import members as members_lib
from mnist_jax import runtime as runtime_lib
from mnist_jax import state as state_lib
from mnist_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Run:
  """A run's pieces. `device_data` is None until placed (`placed`),
  `compiled` None until compiled (`compile`); each returns a new Run."""
  config: ml_collections.ConfigDict
  runtime: runtime_lib.Runtime
  dataset: data_lib.Dataset
  plan: loop.Plan
  built: state_lib.Built
  state: state_lib.TrainState  # On the devices, replicated.
  data_key: jax.Array  # Each member's data order, replicated.
  device_data: feed.DeviceData | None = None
  compiled: loop.Compiled | None = None

  @property
  def mesh(self):
    return self.runtime.mesh

  def placed(self, drop_host_images: bool = False) -> "Run":
    """The run with its data on the devices. `drop_host_images`: without
    the host's copy of the training images, which the devices hold now."""
    device_data = feed.place_data(self.dataset, self.mesh, self.plan.eval_batch_size)
    dataset = (dataclasses.replace(self.dataset, train_images=None)
               if drop_host_images else self.dataset)
    return dataclasses.replace(self, dataset=dataset, device_data=device_data)

  def with_state(self, state) -> "Run":
    return dataclasses.replace(self, state=state)

  def compile(self) -> "Run":
    """The run with its training calls and evaluations compiled ahead of
    time (loop.compile_steps), for the shapes of its placed data and state."""
    if self.device_data is None:
      raise UserError("a run compiles once its data is placed: call placed() first")
    built = self.built
    return dataclasses.replace(self, compiled=loop.compile_steps(
        built.graphs, built.recipe, built.tx, self.mesh, self.plan, self.state,
        self.device_data, self.data_key))

  def epochs(self, first: int, last: int, state=None, **options
             ) -> Iterator[loop.EpochResult | loop.StoppedMidEpoch]:
    """loop.epochs over this run's compiled calls, from `state` (default:
    the run's, which the first epoch consumes); `options` as loop.epochs's."""
    if self.compiled is None:
      raise UserError("a run trains once compiled: call compile() first")
    return loop.epochs(self.compiled, self.plan,
                       self.state if state is None else state, self.device_data,
                       self.data_key, first, last, **options)


def assemble(config: ml_collections.ConfigDict,
             dataset: data_lib.Dataset | None = None,
             runtime: runtime_lib.Runtime | None = None,
             place: bool = True) -> Run:
  """The run of a validated `config`: its runtime (default:
  runtime.start(config)), its dataset (default: loaded as config says) with
  config.validation_size held out, its plan, built state and data key on the
  devices and, with `place`, its data placed. Not compiled."""
  # Before anything loads: a halving the sweep cannot run is refused first.
  halving.check(config, members_lib.Members.from_config(config))
  runtime = runtime or runtime_lib.start(config)
  if dataset is None:
    dataset = data_lib.load(config.dataset, config.data_dir, config.data_source,
                            config.dataset_format, config.image_size)
  if config.validation_size and dataset.val_images is not None:
    logging.info("%s ships a validation split: using it, not validation_size",
                 dataset.name)
  dataset = feed.with_validation(dataset, config.validation_size,
                                 config.validation_seed, config.batch_size)
  if config.early_stopping_patience and dataset.val_images is None:
    raise UserError("config.early_stopping_patience needs a validation split to "
                    "watch: set config.validation_size (e.g. 5000), or drop the "
                    "patience")
  halving.check_validation(config, dataset.val_images is not None)
  config_lib.validate_for_images(config, dataset.image_shape)
  plan = loop.Plan.make(dataset, runtime, config.batch_size, config.steps_per_call,
                        config.eval_batch_size, config.steps_per_epoch)
  built = state_lib.build(config, dataset.num_classes, plan.steps_per_epoch,
                          runtime.backend, dataset.image_shape)
  replicated = sharding.replicated(runtime.mesh)
  run = Run(config, runtime, dataset, plan, built,
            distributed.put_global(built.state, replicated),
            distributed.put_global(feed.data_keys(built.members), replicated))
  return run.placed() if place else run
