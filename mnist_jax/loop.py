"""The epoch loop: plan an epoch's compiled calls, compile them ahead of
time, dispatch them, evaluate, and hand each finished epoch to the caller.

`epochs` is an iterator of `EpochResult`s (the shape of levanter's and
nanodo's loops): the caller decides what an epoch's end means (checkpoint,
log, stop). Within an epoch the host never waits for the device; it waits
once, at the epoch's end, for the metrics.
"""

import dataclasses
import functools
import time
from pathlib import Path
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from mnist_jax import data as data_lib
from mnist_jax import feed, sharding, steps
from mnist_jax import progress as progress_lib
from mnist_jax.errors import UserError
from mnist_jax.feed import DeviceData
from mnist_jax.runtime import Runtime
from mnist_jax.state import Graphs, StepRecipe, TrainState, with_ema_weights
from mnist_jax.steps import Totals


def default_steps_per_call(backend: str, steps_per_epoch: int) -> int:
  """One step per call on CPU, the whole epoch per call elsewhere.

  Measured: XLA:CPU runs convolution gradients inside a loop about 11x slower
  than straight-line code (jax-ml/jax#12868; the CNN at batch 128 trained 186
  images/s with 8 steps per call, 1,999 with one step per call:
  benchmarks/results/cpu-cpu/harness-1dev-20261121T0448.json, strategies),
  so CPU dispatches each step from
  Python (async dispatch keeps the device busy). GPU and TPU run the epoch as
  one scan so the host is never between steps. On CPU, a config may ask for
  a few steps a call: they are unrolled, not scanned (`compile_steps`).
  """
  return 1 if backend == "cpu" else steps_per_epoch


def max_calls_in_flight(backend: str, num_devices: int) -> int | None:
  """How many compiled calls may be queued before the host waits on the oldest.

  Unbounded, except on several CPU devices: XLA:CPU's in-process all-reduce
  can deadlock when many steps are queued at once, so there the host keeps at
  most two in flight, which still overlaps dispatch with compute.
  """
  return 2 if backend == "cpu" and num_devices > 1 else None


@dataclasses.dataclass(frozen=True)
class Plan:
  """How a run's epochs are cut into compiled calls, from its batch size,
  data and devices."""
  backend: str
  num_devices: int
  num_train: int
  batch_size: int
  steps_per_epoch: int
  steps_per_call: int
  calls: tuple[int, ...]  # Steps of each compiled call of an epoch.
  eval_batch_size: int

  @classmethod
  def make(cls, dataset: data_lib.Dataset, runtime: Runtime, batch_size: int,
           steps_per_call: int = 0, eval_batch_size: int = 500,
           steps_per_epoch: int = 0) -> "Plan":
    """`steps_per_call` 0: the backend's default; `eval_batch_size` as asked,
    fitted to the devices and the test set (feed.evaluation_batch_size);
    `steps_per_epoch` 0: every full batch of the training split, else that
    many batches of each epoch's permutation (config.steps_per_epoch)."""
    sharding.check_batch_size(batch_size, runtime.mesh, "config.batch_size")
    num_train = len(dataset.train_labels)
    if batch_size > num_train:
      raise UserError(f"config.batch_size={batch_size} exceeds the "
                      f"{num_train} training images of {dataset.name}; use a "
                      f"smaller batch size")
    full_batches = num_train // batch_size
    if steps_per_epoch > full_batches:
      raise UserError(f"config.steps_per_epoch={steps_per_epoch} exceeds the "
                      f"{full_batches} full batches of {batch_size} in the "
                      f"{num_train} training images of {dataset.name}; use at "
                      f"most {full_batches}, or 0 for all of them")
    steps_per_epoch = steps_per_epoch or full_batches
    steps_per_call = min(steps_per_call or
                         default_steps_per_call(runtime.backend, steps_per_epoch),
                         steps_per_epoch)
    full_calls, remainder = divmod(steps_per_epoch, steps_per_call)
    return cls(runtime.backend, runtime.num_devices, num_train, batch_size,
               steps_per_epoch, steps_per_call,
               (steps_per_call,) * full_calls + ((remainder,) if remainder else ()),
               feed.evaluation_batch_size(eval_batch_size, len(dataset.test_labels),
                                          runtime.num_devices))

  @property
  def images_per_epoch(self) -> int:
    return self.steps_per_epoch * self.batch_size


@dataclasses.dataclass(frozen=True)
class Chunk:
  """A compiled f(state, totals, data, perm) that runs `num_steps` steps."""
  fn: Callable
  num_steps: int

  def __call__(self, *args):
    return self.fn(*args)


def run_epoch(chunks: list[Callable], state: TrainState, data: DeviceData,
              perm: jax.Array, max_in_flight: int | None,
              should_stop: Callable[[], bool] = lambda: False,
              on_dispatch: Callable[[jax.Array, int], None] | None = None):
  """Dispatches an epoch's compiled chunks in order; returns (state, totals).

  Returns as soon as the work is queued: the caller decides when to wait.
  If `should_stop()` turns true between chunks, returns (state, None): the
  state is then part-way through the epoch. `on_dispatch(steps, n)` hears of
  each call: `steps` is its (not yet ready) step counter, `n` its step count.
  """
  totals, in_flight = Totals.zeros(state.step.shape), []
  # Nothing inside an epoch may copy from the device: that would stall it.
  with jax.transfer_guard_device_to_host("disallow"):
    for chunk in chunks:
      if should_stop():
        return state, None
      state, totals = chunk(state, totals, data, perm)
      if on_dispatch:
        on_dispatch(totals.steps, chunk.num_steps)
      if max_in_flight:
        in_flight.append(totals.steps)
        if len(in_flight) > max_in_flight:
          in_flight.pop(0).block_until_ready()
  return state, totals


@dataclasses.dataclass(frozen=True)
class Compiled:
  """The compiled training calls ({steps: Chunk}) and evaluations of a run:
  of the test split, and of the validation split where there is one."""
  chunks: dict[int, Chunk]
  evaluate: Callable
  evaluate_validation: Callable | None = None


def compile_steps(graphs: Graphs, recipe: StepRecipe, tx, mesh, plan: Plan,
                  state: TrainState, device_data: DeviceData, data_key) -> Compiled:
  """Compiles the training chunks and the evaluation ahead of time.

  Compilation is then timed apart from training.
  """
  perm = feed.epoch_permutation(data_key, 0, plan.num_train, plan.steps_per_epoch,
                           plan.batch_size)
  # CPU unrolls a call's steps (steps._repeat says why).
  unroll = plan.backend == "cpu"
  chunks = {n: Chunk(steps.make_train_chunk(graphs, recipe, tx, mesh, n, unroll).lower(
                state, Totals.zeros(state.step.shape), device_data, perm).compile(), n)
            for n in set(plan.calls)}
  def evaluation(split):
    num_batches = len(device_data.split(split)[1]) // plan.eval_batch_size
    return steps.make_evaluate(graphs, recipe, mesh, plan.eval_batch_size,
                               num_batches, split).lower(state, device_data).compile()
  return Compiled(chunks, evaluation("test"),
                  evaluation("val") if device_data.val_labels is not None else None)


class Profile:
  """A JAX profiler trace of `num_steps` training steps into `directory`
  (config.profile_steps), for the context's length.

  It starts once the run's first compiled call has finished, so that
  compilation and warm-up stay out of it, and stops once the calls after it
  have run `num_steps` steps (whole calls, across epochs), or when the
  context ends. Host-side only: the compiled calls are the same, and with no
  steps to trace (`num_steps` 0, or `directory` None: not the main process)
  the chunks are not even wrapped, so the loop has no extra wait.
  """

  def __init__(self, directory: Path | None, num_steps: int):
    self.directory = directory
    self._left = num_steps if directory is not None else 0
    self._tracing = False

  def wrap(self, chunks: list[Chunk], first_step: int) -> list[Chunk]:
    """An epoch's chunks, whose first step is `first_step` (0-based, of the
    run), as traced calls while there are steps left to trace."""
    if self._left <= 0:
      return chunks
    starts = np.cumsum([0] + [c.num_steps for c in chunks]) + first_step
    return [Chunk(functools.partial(self._call, c, int(step)), c.num_steps)
            for c, step in zip(chunks, starts)]

  def _call(self, chunk: Chunk, step: int, *args):
    if not self._tracing:
      out = chunk(*args)
      if self._left > 0:  # The first call: its wait is the only one added.
        jax.block_until_ready(out)
        jax.profiler.start_trace(self.directory, create_perfetto_trace=True)
        self._tracing = True
      return out
    # The trace viewer's "train <step>" rows and its per-step analysis.
    with jax.profiler.StepTraceAnnotation("train", step_num=step):
      out = chunk(*args)
    self._left -= chunk.num_steps
    if self._left <= 0:
      jax.block_until_ready(out)  # The traced steps' device work, whole.
      self._stop()
    return out

  def _stop(self):
    jax.profiler.stop_trace()
    self._tracing = False
    self._left = 0
    logging.info("profile written to %s", self.directory)

  def __enter__(self) -> "Profile":
    return self

  def __exit__(self, *exc_info):
    # The run ended first (its last epoch's metrics were waited for), or
    # stopped: the trace holds what ran.
    if self._tracing:
      self._stop()


@dataclasses.dataclass(frozen=True)
class EpochResult:
  """A finished epoch. `values` are floats, or [M] arrays (one per member):
  train_loss, train_accuracy, test_loss, test_accuracy (and validation_loss,
  validation_accuracy with a validation split; ema_test_loss,
  ema_test_accuracy with a moving average). `ensembles` is (losses,
  accuracies), [P] arrays, of each sweep point's seeds' averaged
  predictions, or None."""
  epoch: int
  state: TrainState
  values: dict[str, float | np.ndarray]
  ensembles: tuple[np.ndarray, np.ndarray] | None
  epoch_seconds: float
  eval_seconds: float


@dataclasses.dataclass(frozen=True)
class StoppedMidEpoch:
  """A stop request came part-way through epoch `last_epoch` + 1: `state` is
  the state at the end of `last_epoch` (the caller saves it)."""
  last_epoch: int
  state: TrainState


def epochs(compiled: Compiled, plan: Plan, state: TrainState, data: DeviceData,
           data_key: jax.Array, first: int, last: int,
           should_stop: Callable[[], bool] = lambda: False,
           show_progress: bool | None = None, profile: Profile | None = None
           ) -> Iterator[EpochResult | StoppedMidEpoch]:
  """Trains epochs `first`..`last`, yielding each one's result as it ends.

  The next epoch starts when the caller asks for it, and consumes (donates)
  the state it was given: use a result's state before taking the next. A
  stop request between calls ends the iteration with a StoppedMidEpoch.
  `show_progress`: the console's progress bar (None: when it is a terminal).
  `profile` traces some of the calls (see Profile).
  """
  max_in_flight = max_calls_in_flight(plan.backend, plan.num_devices)
  for epoch in range(first, last + 1):
    # A stop request mid-epoch falls back to this epoch's start; the copy is
    # needed because the calls donate (consume) their input state.
    epoch_start_state = (jax.tree.map(jnp.copy, state) if len(plan.calls) > 1
                         else state)
    epoch_start = time.perf_counter()
    perm = feed.epoch_permutation(data_key, epoch, plan.num_train,
                                  plan.steps_per_epoch, plan.batch_size)
    progress = progress_lib.EpochProgress(epoch, last, plan.steps_per_epoch,
                                          plan.batch_size, enabled=show_progress)
    chunks = [compiled.chunks[n] for n in plan.calls]
    if profile:
      chunks = profile.wrap(chunks, (epoch - 1) * plan.steps_per_epoch)
    state, totals = run_epoch(chunks, state, data, perm, max_in_flight,
                              should_stop=should_stop,
                              on_dispatch=progress.dispatched)
    if totals is None:
      progress.close()
      yield StoppedMidEpoch(epoch - 1, epoch_start_state)
      return
    progress.wait(totals.steps)  # The end of the epoch.
    epoch_seconds = time.perf_counter() - epoch_start
    values = dict(zip(("train_loss", "train_accuracy"), totals.means()))
    eval_start = time.perf_counter()
    test_totals, ensembles = compiled.evaluate(state, data)
    values["test_loss"], values["test_accuracy"] = test_totals.means()
    eval_seconds = time.perf_counter() - eval_start
    if compiled.evaluate_validation is not None:
      values["validation_loss"], values["validation_accuracy"] = (
          compiled.evaluate_validation(state, data)[0].means())
    if state.ema is not None:  # The same compiled evaluation, other weights.
      values["ema_test_loss"], values["ema_test_accuracy"] = compiled.evaluate(
          with_ema_weights(state), data)[0].means()
    yield EpochResult(epoch, state, values,
                      ensembles.means() if ensembles is not None else None,
                      epoch_seconds, eval_seconds)
