"""Training and evaluation: the state, the compiled steps and the epoch loop.

The hot path is pure functions over pytrees. The model is split once into a
static graph definition and its variables (`nnx.split`); the steps merge them
back inside `jax.jit`, so a compiled call carries no Python object overhead.

One compiled call runs `steps_per_call` training steps (a `lax.scan` when more
than one). Each step gathers its batch from the device-resident dataset by an
on-device permutation, so an epoch needs no host input at all, and the host
only waits for the device at the end of an epoch.

A run of several members (`num_seeds`, `sweep`: see members.py) stacks their
states on a leading axis M and maps the same steps over it
(`members.map_members`: `jax.vmap`, or written out member by member on CPU).
"""

import contextlib
import dataclasses
import functools
import json
import math
import os
import signal
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import nnx, struct

import mnist_jax
from mnist_jax import checkpoint as checkpoint_lib
from mnist_jax import data as data_lib
from mnist_jax import augment, distributed, models, optim, sharding, signals
from mnist_jax import members as members_lib
from mnist_jax import metrics_file
from mnist_jax import progress as progress_lib
from mnist_jax import report, tensorboard, timing, workdir_lock
from mnist_jax.errors import Interrupted, UserError


@struct.dataclass
class TrainState:
  step: jax.Array
  params: nnx.State
  rest: nnx.State  # Model variables that are not parameters (e.g. batch stats).
  opt_state: optax.OptState
  # For stochastic layers. Raw key data (uint32), not a typed key, so that the
  # state is plain arrays that checkpoint libraries can save.
  rng: jax.Array
  # With config.ema_decay > 0: {"count", "params", "rest"}, the moving average
  # of the weights and of the batch statistics that go with them; else None.
  ema: Any = None


@struct.dataclass
class Totals:
  """Sums over the steps or batches done so far: device scalars, or [M]
  arrays (one per member) but for `steps`."""
  loss: jax.Array
  correct: jax.Array
  count: jax.Array
  steps: jax.Array

  @classmethod
  def zeros(cls, shape: tuple[int, ...] = ()) -> "Totals":
    # numpy arrays: valid jit inputs in a multi-process run too, where a
    # jax array committed to one local device would not be.
    return cls(np.zeros(shape, np.float32), np.zeros(shape, np.int32),
               np.zeros(shape, np.int32), np.int32(0))

  def add(self, loss_sum, correct, count) -> "Totals":
    return Totals(self.loss + loss_sum, self.correct + correct,
                  self.count + count, self.steps + 1)

  def means(self):
    """(mean loss, accuracy) on the host, floats or [M] arrays: this waits
    for the device."""
    loss, correct, count = jax.device_get((self.loss, self.correct, self.count))
    count = np.maximum(count, 1)
    if np.ndim(count) == 0:
      return float(loss) / int(count), float(correct) / int(count)
    return loss / count, correct / count


@struct.dataclass
class DeviceData:
  """The dataset on device, uint8, replicated on every device of the mesh."""
  train_images: jax.Array  # [N, 28, 28]
  train_labels: jax.Array  # [N]
  test_images: jax.Array   # [T_pad, 28, 28], padded to whole eval batches
  test_labels: jax.Array   # [T_pad]
  test_mask: jax.Array     # [T_pad] bool, False on padding


@dataclasses.dataclass(frozen=True)
class Model:
  """The static half of a split NNX model, in training and evaluation mode,
  and what else the steps need besides the state: the training batch's
  augmentation and mixing, the loss's label smoothing, the test-time views
  and the computation dtype."""
  train_graph: nnx.GraphDef
  eval_graph: nnx.GraphDef
  augment: Callable[[jax.Array, jax.Array], jax.Array] | None = None
  label_smoothing: float = 0.0  # Of the training loss only.
  # f(key, float images) -> (mixed images, lam): mixup / cutmix, or None.
  mix: Callable | None = None
  tta: tuple[str, ...] = ()  # Test-time views: "flip", "translate".
  # Computation dtype; parameters, optimizer state and loss stay float32.
  dtype: Any = jnp.float32
  ema_decay: float = 0.0
  dropout: float = 0.0  # The rate; > 0: the model's call takes a dropout_key.
  # Members of the run (states stacked on a leading axis, steps vmapped over
  # it when > 1), and seeds per sweep point: their ensembles are evaluated.
  members: int = 1
  seeds_per_point: int = 1
  member_loop: str = "vmap"  # members.map_members: "vmap" or "unroll".
  # Inputs are (pixel / 255 - pixel_mean) / pixel_std (models.normalize).
  pixel_mean: float = 0.0
  pixel_std: float = 1.0


def create_model_and_state(config, num_classes: int,
                           steps_per_epoch: int) -> tuple[Model, TrainState,
                                                         optax.GradientTransformation]:
  """The model, the initial state (stacked when the run has several members)
  and the optimizer."""
  members = members_lib.Members.from_config(config)
  tx = optim.create(config, steps_per_epoch, injected=members.swept)
  inits = [_init_member(member_config, num_classes, tx, members.describe(k))
           for k, member_config in enumerate(members.configs(config))]
  train_graph, eval_graph, state = inits[0]
  if members.count > 1:
    state = members_lib.stack([member_state for *_, member_state in inits])
  # .get: configs saved in checkpoints before these fields existed lack them.
  names = augment.parse(config.get("augment", ""), config.dataset)
  model = Model(train_graph, eval_graph,
                augment.make(names, config.get("translate_pixels", 0)),
                config.get("label_smoothing", 0.0),
                augment.make_mix(names, config.get("mix_alpha", 1.0)),
                augment.parse_tta(config.get("tta", ""), config.dataset),
                DTYPES[config.get("dtype", "float32")],
                config.get("ema_decay", 0.0), config.get("dropout", 0.0),
                members.count, len(members.seeds),
                members_lib.member_loop(config.get("member_loop", "auto"),
                                        jax.default_backend()),
                config.get("pixel_mean", 0.0), config.get("pixel_std", 1.0))
  return model, state, tx


def _init_member(config, num_classes: int, tx, description: dict[str, Any]):
  """(train graph, eval graph, initial state) of the model of `config.seed`;
  the optimizer's injected hyperparameters set to the ones `description`
  gives."""
  init_key, rng = jax.random.split(jax.random.key(config.seed))
  module = models.create(config.model, num_classes, nnx.Rngs(params=init_key),
                         width=config.get("width", 1.0),
                         depth=config.get("depth", 0) or None,
                         dropout=config.get("dropout", 0.0),
                         init=config.get("init", "flax"))
  module.eval()
  eval_graph, *_ = nnx.split(module, nnx.Param, ...)
  module.train()
  train_graph, params, rest = nnx.split(module, nnx.Param, ...)
  opt_state = tx.init(params)
  injected = {field: description[field] for field in description if field != "seed"}
  if injected:
    opt_state = optim.set_hyperparameters(opt_state, injected)
  state = TrainState(step=jnp.int32(0), params=params, rest=rest,
                     opt_state=opt_state, rng=jax.random.key_data(rng),
                     ema=({"count": jnp.int32(0), "params": params, "rest": rest}
                          if config.get("ema_decay", 0.0) else None))
  return train_graph, eval_graph, state


def data_keys(config) -> jax.Array:
  """Raw key data of the data order: [2], or [M, 2] with a row per member."""
  members = members_lib.Members.from_config(config)
  keys = [jax.random.key_data(jax.random.fold_in(jax.random.key(seed), 1))
          for seed in (members.describe(k)["seed"] for k in range(members.count))]
  return keys[0] if members.count == 1 else jnp.stack(keys)


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _in_dtype(tree, dtype):
  """Floating-point leaves of `tree` cast to `dtype` (a no-op for float32).

  The model then computes in `dtype`; gradients flow back through the cast
  to the float32 parameters.
  """
  return jax.tree.map(
      lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def loss_and_metrics(logits_BK, labels_B, mask_B=None, label_smoothing=0.0):
  """Summed cross-entropy and correct count over the (unmasked) batch."""
  if label_smoothing:
    targets_BK = optax.smooth_labels(
        jax.nn.one_hot(labels_B, logits_BK.shape[-1]), label_smoothing)
    losses_B = optax.softmax_cross_entropy(logits_BK, targets_BK)
  else:
    losses_B = optax.softmax_cross_entropy_with_integer_labels(logits_BK, labels_B)
  correct_B = jnp.argmax(logits_BK, -1) == labels_B
  if mask_B is None:
    mask_B = jnp.ones_like(labels_B, dtype=bool)
  return (jnp.sum(jnp.where(mask_B, losses_B, 0.0)),
          jnp.sum(correct_B & mask_B, dtype=jnp.int32),
          jnp.sum(mask_B, dtype=jnp.int32))


def train_step(model: Model, tx: optax.GradientTransformation,
               state: TrainState, images_BHW, labels_B):
  """One optimizer step on one batch; returns the new state and batch sums."""
  step_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  if model.augment:
    images_BHW = model.augment(step_key, images_BHW)
  x_BHWC, lam = models.normalize(images_BHW, model.pixel_mean, model.pixel_std), None
  if model.mix:
    x_BHWC, lam = model.mix(jax.random.fold_in(step_key, 1), x_BHWC)

  def loss_fn(params, rest):
    # Fresh variables (copy=True) made inside the gradient's trace: layers
    # that update their state (batch norm's statistics) may then do so.
    module = nnx.merge(model.train_graph, _in_dtype(params, model.dtype), rest,
                       copy=True)
    # Only models built with dropout take its key (a user's model may not).
    dropout = {"dropout_key": jax.random.fold_in(step_key, 2)} if model.dropout else {}
    logits_BK = module(x_BHWC.astype(model.dtype), **dropout).astype(jnp.float32)
    loss_sum, correct, count = loss_and_metrics(
        logits_BK, labels_B, label_smoothing=model.label_smoothing)
    if lam is not None:  # Mixed images: their partners' labels weigh 1 - lam.
      partner_sum, _, _ = loss_and_metrics(
          logits_BK, labels_B[::-1], label_smoothing=model.label_smoothing)
      loss_sum = lam * loss_sum + (1 - lam) * partner_sum
    _, _, new_rest = nnx.split(module, nnx.Param, ...)
    return loss_sum / count, (loss_sum, correct, count, new_rest)

  grads, (loss_sum, correct, count, new_rest) = jax.grad(
      loss_fn, has_aux=True)(state.params, state.rest)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  ema = (update_ema(state.ema, params, new_rest, model.ema_decay)
         if state.ema is not None else None)
  state = state.replace(step=state.step + 1, params=params, rest=new_rest,
                        opt_state=opt_state, ema=ema)
  return state, (loss_sum, correct, count)


def update_ema(ema: dict, params, rest, decay: float) -> dict:
  """The moving average after one more step.

  Update t decays by min(decay, (1 + t) / (10 + t)), as TensorFlow's
  ExponentialMovingAverage with num_updates does: early on the average
  follows the weights instead of holding on to their random initialisation.
  Batch statistics are averaged alongside the weights, so that the average
  evaluates with statistics of the same mix of weights; integer state (e.g.
  RNG counters) is taken as it is.
  """
  count = ema["count"]
  d = jnp.minimum(decay, (1.0 + count) / (10.0 + count))
  def average(old, new):
    return d * old + (1 - d) * new if jnp.issubdtype(new.dtype, jnp.floating) else new
  return {"count": count + 1, "params": jax.tree.map(average, ema["params"], params),
          "rest": jax.tree.map(average, ema["rest"], rest)}


def with_ema_weights(state: TrainState) -> TrainState:
  """`state` with the moving average as its weights and batch statistics."""
  return state.replace(params=state.ema["params"], rest=state.ema["rest"])


def eval_logits(model: Model, state: TrainState, images_BHW):
  """Evaluation-mode logits [B, K] of uint8 images [B, 28, 28].

  With test-time augmentation, the log of the views' mean probabilities
  (softmax of it gives that mean, so it serves as logits).
  """
  module = nnx.merge(model.eval_graph, _in_dtype(state.params, model.dtype),
                     state.rest)
  normalize = lambda v: models.normalize(v, model.pixel_mean, model.pixel_std)
  logits = lambda v: module(normalize(v).astype(model.dtype)).astype(jnp.float32)
  if not model.tta:
    return logits(images_BHW)
  views = augment.test_time_views(model.tta, images_BHW)
  return log_mean_probabilities(jnp.stack([logits(v) for v in views]), axis=0)


def log_mean_probabilities(logits, axis: int):
  """Log of the mean over `axis` of softmax(logits): the logits of an
  average of predictions (test-time views, or the models of an ensemble)."""
  probs = jax.nn.softmax(logits).mean(axis)
  return jnp.log(jnp.maximum(probs, jnp.finfo(probs.dtype).tiny))


def eval_step(model: Model, state: TrainState, images_BHW, labels_B, mask_B):
  return loss_and_metrics(eval_logits(model, state, images_BHW), labels_B, mask_B)


def _repeat(step_fn: Callable, num_steps: int, carry):
  """`num_steps` calls of `step_fn(carry, i)`: a Python call when 1, else a scan.

  A scan of one step still compiles to a loop, which XLA:CPU runs slowly for
  convolution gradients (jax-ml/jax#12868), so one step stays straight-line.
  """
  if num_steps == 1:
    return step_fn(carry, jnp.int32(0))[0]
  return jax.lax.scan(step_fn, carry, jnp.arange(num_steps))[0]


def make_train_chunk(model: Model, tx, mesh, num_steps: int) -> Callable:
  """Returns f(state, totals, data, perm) running the next `num_steps` steps.

  `perm` is [S, B], or [M, S, B] with a data order per member. Step
  `totals.steps` of the epoch trains on images `perm[..., totals.steps, :]`.
  The batch's indices are constrained to the `data` axis, so each device
  gathers only its own shard of the batch from the replicated dataset.
  """
  step = functools.partial(train_step, model, tx)
  if model.members > 1:
    # Over the members' states, images and labels.
    step = members_lib.map_members(step, model.members, model.member_loop)
  batch_sharding = sharding.batch_sharded(mesh, member_axis=model.members > 1)

  def one_step(carry, _):
    state, totals, data, perm = carry
    idx = jax.lax.dynamic_index_in_dim(perm, totals.steps, axis=perm.ndim - 2,
                                       keepdims=False)
    idx = jax.lax.with_sharding_constraint(idx, batch_sharding)
    state, sums = step(state, data.train_images[idx], data.train_labels[idx])
    return (state, totals.add(*sums), data, perm), None

  def chunk(state, totals, data, perm):
    state, totals, _, _ = _repeat(one_step, num_steps, (state, totals, data, perm))
    return state, totals

  return jax.jit(chunk, donate_argnums=0)


def scan_test_set(add_batch: Callable, zeros, data: DeviceData, mesh,
                  eval_batch_size: int, num_batches: int):
  """Folds `add_batch(sums, images_BHW, labels_B, mask_B)` over the test batches.

  Forward-only convolutions do not hit XLA:CPU's slow loop path (the CNN over
  the 10,000 MNIST test images took the same time as one scan as in per-batch
  calls, in a measurement that was not recorded), so
  the whole test set is one scan, inside one call, on every backend. Each
  batch is split over the `data` axis.
  """
  batch_sharding = sharding.batch_sharded(mesh)

  def one_batch(sums, i):
    def take(x):
      x = jax.lax.dynamic_slice_in_dim(x, i * eval_batch_size, eval_batch_size)
      return jax.lax.with_sharding_constraint(x, batch_sharding)
    return add_batch(sums, take(data.test_images), take(data.test_labels),
                     take(data.test_mask)), None
  return jax.lax.scan(one_batch, zeros, jnp.arange(num_batches))[0]


def make_evaluate(model: Model, mesh, eval_batch_size: int,
                  num_batches: int) -> Callable:
  """Returns f(state, data) -> (Totals, ensembles) over the whole (padded,
  masked) test set.

  With members the Totals are per member, [M]. `ensembles` are the Totals
  of each sweep point's seeds' averaged predictions, [P], when points have
  several seeds; else None.
  """
  member_logits = members_lib.map_members(functools.partial(eval_logits, model),
                                          model.members, model.member_loop,
                                          in_axes=(0, None))
  # Cheap (no convolutions): always vmapped.
  member_metrics = jax.vmap(loss_and_metrics, in_axes=(0, None, None))

  def add_batch(sums, state, images_BHW, labels_B, mask_B):
    totals, ensembles = sums
    if model.members == 1:
      return totals.add(*eval_step(model, state, images_BHW, labels_B, mask_B)), None
    logits_MBK = member_logits(state, images_BHW)
    totals = totals.add(*member_metrics(logits_MBK, labels_B, mask_B))
    if ensembles is not None:
      logits_PSBK = logits_MBK.reshape(-1, model.seeds_per_point, *logits_MBK.shape[1:])
      ensembles = ensembles.add(*member_metrics(
          log_mean_probabilities(logits_PSBK, axis=1), labels_B, mask_B))
    return totals, ensembles

  def evaluate(state, data):
    zeros = (Totals.zeros(state.step.shape),
             Totals.zeros((model.members // model.seeds_per_point,))
             if model.seeds_per_point > 1 else None)
    return scan_test_set(lambda sums, *batch: add_batch(sums, state, *batch),
                         zeros, data, mesh, eval_batch_size, num_batches)
  return jax.jit(evaluate)


def make_logits_fn(model: Model) -> Callable:
  """A jitted f(state, uint8 images [B, 28, 28]) -> logits [B, K], eval mode."""
  return jax.jit(functools.partial(eval_logits, model))


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


def default_steps_per_call(backend: str, steps_per_epoch: int) -> int:
  """One step per call on CPU, the whole epoch per call elsewhere.

  Measured: XLA:CPU runs convolution gradients inside a loop about 11x slower
  than straight-line code (jax-ml/jax#12868; the CNN at batch 128 trained 186
  images/s with 8 steps per call, 1,999 with one step per call:
  benchmarks/results/cpu-cpu/harness-1dev-20261121T0448.json, strategies),
  so CPU dispatches each step from
  Python (async dispatch keeps the device busy). GPU and TPU run the epoch as
  one scan so the host is never between steps.
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


def place_data(dataset: data_lib.Dataset, mesh, eval_batch_size: int) -> DeviceData:
  """Copies the dataset to every device once, padding the test set."""
  num_test = len(dataset.test_labels)
  padded = math.ceil(num_test / eval_batch_size) * eval_batch_size
  pad = padded - num_test
  test_images = np.pad(dataset.test_images, ((0, pad), (0, 0), (0, 0)))
  test_labels = np.pad(dataset.test_labels, (0, pad))
  test_mask = np.arange(padded) < num_test
  arrays = DeviceData(dataset.train_images, dataset.train_labels,
                      test_images, test_labels, test_mask)
  return distributed.put_global(arrays, sharding.replicated(mesh))


def evaluation_batch_size(config, num_test: int, num_devices: int) -> int:
  """`config.eval_batch_size`, made to fit the devices and the test set.

  The evaluation batch changes no result, so rather than refuse a size that
  does not divide by the devices, round it up to one that does; and never pad
  the test set beyond one batch.
  """
  return math.ceil(min(config.eval_batch_size, num_test) / num_devices) * num_devices


def validate(config: ml_collections.ConfigDict):
  """Config errors that need no data: one message each, with the fix."""
  for field in ("batch_size", "num_epochs", "eval_batch_size",
                "checkpoint_every_epochs", "checkpoints_to_keep"):
    if not isinstance(config[field], int) or config[field] <= 0:
      raise UserError(f"config.{field} must be a positive integer, got "
                      f"{config[field]!r}")
  if not (isinstance(config.width, (int, float)) and config.width > 0):
    raise UserError(f"config.width must be a positive number, got {config.width!r}")
  if not config.learning_rate > 0:
    raise UserError(f"config.learning_rate must be positive, got "
                    f"{config.learning_rate!r}")
  if not isinstance(config.cpu_devices, int) or config.cpu_devices < 0:
    raise UserError("config.cpu_devices must be 0 (automatic) or a positive "
                    f"number of devices, got {config.cpu_devices!r}")
  augment.parse(config.augment, config.dataset)
  augment.parse_tta(config.tta, config.dataset)
  members_lib.Members.from_config(config)
  # Checks the name only: asking JAX for the backend here would start it
  # before configure_cpu_devices.
  members_lib.member_loop(config.member_loop, backend="cpu")
  if config.require_backend not in BACKEND_FIXES:
    raise UserError(f"config.require_backend={config.require_backend!r}: choose "
                    f"gpu, tpu, cpu, or '' for any backend")
  if config.dtype not in DTYPES:
    raise UserError(f"config.dtype={config.dtype!r}: choose one of "
                    f"{', '.join(DTYPES)}")
  if not config.mix_alpha > 0:
    raise UserError(f"config.mix_alpha must be positive, got {config.mix_alpha!r}")
  if not 0 <= config.dropout < 1:
    raise UserError(f"config.dropout is a rate in [0, 1), got {config.dropout!r}")
  if not 0 <= config.label_smoothing < 1:
    raise UserError(f"config.label_smoothing must be in [0, 1), got "
                    f"{config.label_smoothing!r}")
  if config.grad_clip_norm < 0:
    raise UserError(f"config.grad_clip_norm must be 0 (off) or positive, got "
                    f"{config.grad_clip_norm!r}")
  if config.steps_per_call < 0:
    raise UserError("config.steps_per_call must be 0 (per-backend default) or "
                    f"positive, got {config.steps_per_call}")
  if config.model not in models.MODELS:
    raise UserError(f"unknown model '{config.model}'; choose one of "
                    f"{', '.join(models.MODELS)}")
  if config.optimizer not in optim.OPTIMIZERS:
    raise UserError(f"unknown optimizer '{config.optimizer}'; choose one of "
                    f"{', '.join(optim.OPTIMIZERS)}")
  if config.init not in models.INITS:
    raise UserError(f"unknown init '{config.init}'; choose one of "
                    f"{', '.join(models.INITS)}")
  if not config.pixel_std > 0:
    raise UserError(f"config.pixel_std must be positive, got {config.pixel_std!r}")
  if not (0 <= config.adam_b1 < 1 and 0 <= config.adam_b2 < 1):
    raise UserError(f"config.adam_b1 and config.adam_b2 must be in [0, 1), got "
                    f"{config.adam_b1!r} and {config.adam_b2!r}")
  if not config.adam_eps > 0:
    raise UserError(f"config.adam_eps must be positive, got {config.adam_eps!r}")
  if not (0 < config.onecycle_pct_start < 1 and config.onecycle_div_factor > 0
          and config.onecycle_final_div_factor > 0):
    raise UserError("config.onecycle_pct_start must be in (0, 1) and the "
                    "onecycle_div_factor and onecycle_final_div_factor positive, "
                    f"got {config.onecycle_pct_start!r}, "
                    f"{config.onecycle_div_factor!r}, "
                    f"{config.onecycle_final_div_factor!r}")
  if config.lr_schedule not in optim.SCHEDULES:
    raise UserError(f"unknown lr_schedule '{config.lr_schedule}'; choose one "
                    f"of {', '.join(optim.SCHEDULES)}")


# config.require_backend: how to get each backend.
BACKEND_FIXES = {
    "": "", "gpu": "install JAX's CUDA build (pip install -e '.[cuda12]' or '.[cuda13]')",
    "tpu": "install JAX's TPU build on a TPU VM (pip install -e '.[tpu]')",
    "cpu": "hide the accelerators (JAX_PLATFORMS=cpu)"}


def check_backend(config: ml_collections.ConfigDict):
  """Refuses a run whose backend is not the one config.require_backend names:
  a benchmark must not silently run on the CPU. Starts JAX's backend."""
  backend = jax.default_backend()
  if config.require_backend and config.require_backend != backend:
    raise UserError(f"config.require_backend={config.require_backend} but JAX's "
                    f"backend is {backend}: {BACKEND_FIXES[config.require_backend]} "
                    f"or drop require_backend")


def enable_compilation_cache(config: ml_collections.ConfigDict):
  """JAX's persistent compilation cache: a second start skips XLA compilation.

  Every program is cached (the default threshold of 1 s would leave out most
  of ours). Set config.compilation_cache=False to turn it off.
  """
  if not config.compilation_cache:
    return
  cache_home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
  path = Path(config.compilation_cache_dir or
              cache_home / "mnist_jax" / "jax_compilation_cache").expanduser()
  jax.config.update("jax_compilation_cache_dir", str(path))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def config_differences(config: ml_collections.ConfigDict) -> str:
  """The fields that differ from configs/default.py, as `name=value, ...`."""
  from configs import default  # pylint: disable=g-import-not-at-top
  defaults = default.get_config().to_dict()
  return ", ".join(f"{k}={v!r}" for k, v in config.to_dict().items()
                   if k not in defaults or defaults[k] != v)


def write_json_atomic(path: Path, obj: Any):
  """Written beside `path`, then renamed: a reader never sees half a file."""
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text(json.dumps(obj, indent=2) + "\n")
  os.replace(tmp, path)


def _prepare_workdir(workdir: Path) -> Path:
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe = workdir / f".write_test.{os.getpid()}"
    probe.write_text("")
    probe.unlink()
  except OSError as e:
    raise UserError(f"cannot write to workdir {workdir} ({e.strerror}); "
                    f"pass --workdir with a writable folder") from None
  return workdir


# For the callers of train.read_metrics (evaluate, compare, benchmarks).
read_metrics = metrics_file.read_metrics


_runs_started = 0  # Runs started in this process.


@dataclasses.dataclass(frozen=True)
class TrainResult:
  summary: dict[str, Any]
  model: Model
  state: TrainState


@dataclasses.dataclass(frozen=True)
class Plan:
  """How a run's epochs are cut into compiled calls, from config, data and mesh."""
  backend: str
  num_devices: int
  num_train: int
  batch_size: int
  steps_per_epoch: int
  steps_per_call: int
  calls: tuple[int, ...]  # Steps of each compiled call of an epoch.
  eval_batch_size: int

  @classmethod
  def make(cls, config, dataset: data_lib.Dataset, mesh) -> "Plan":
    num_devices = mesh.devices.size
    backend = jax.default_backend()
    sharding.check_batch_size(config.batch_size, mesh, "config.batch_size")
    num_train = len(dataset.train_labels)
    if config.batch_size > num_train:
      raise UserError(f"config.batch_size={config.batch_size} exceeds the "
                      f"{num_train} training images of {dataset.name}; use a "
                      f"smaller batch size")
    steps_per_epoch = num_train // config.batch_size
    steps_per_call = min(config.steps_per_call or
                         default_steps_per_call(backend, steps_per_epoch),
                         steps_per_epoch)
    full_calls, remainder = divmod(steps_per_epoch, steps_per_call)
    return cls(backend, num_devices, num_train, config.batch_size,
               steps_per_epoch, steps_per_call,
               (steps_per_call,) * full_calls + ((remainder,) if remainder else ()),
               evaluation_batch_size(config, len(dataset.test_labels), num_devices))


def _log_start(config, dataset: data_lib.Dataset, mesh, plan: Plan, state,
               members: members_lib.Members):
  logging.info("backend %s, %d device(s): %s; mesh %s", plan.backend,
               plan.num_devices, jax.devices()[0].device_kind, dict(mesh.shape))
  logging.info("config: %s", config_differences(config) or "the defaults")
  logging.info("%s: %d train / %d test images, %d classes; model %s with %s "
               "parameters", dataset.name, plan.num_train,
               len(dataset.test_labels), dataset.num_classes, config.model,
               f"{models.num_params(state.params) // members.count:,}")
  if members.count > 1:
    logging.info("%d members in one compiled program (%s): seeds %s%s",
                 members.count,
                 members_lib.member_loop(config.member_loop, plan.backend),
                 list(members.seeds),
                 f" at each of {len(members.points)} sweep points of "
                 f"{', '.join(members.swept)}" if members.swept else "")
  dropped = plan.num_train - plan.steps_per_epoch * plan.batch_size
  logging.info("each epoch: %d steps of %d, %d step(s) per compiled call%s",
               plan.steps_per_epoch, plan.batch_size, plan.steps_per_call,
               f"; the last partial batch ({dropped} images, a different "
               f"subset each epoch) is dropped" if dropped else "")


def _compile(model: Model, tx, mesh, plan: Plan, state, device_data, data_key):
  """Compiles the training chunks and the evaluation ahead of time.

  Returns ({steps: Chunk}, evaluate): compilation is then timed apart from
  training.
  """
  perm = epoch_permutation(data_key, 0, plan.num_train, plan.steps_per_epoch,
                           plan.batch_size)
  chunks = {n: Chunk(make_train_chunk(model, tx, mesh, n).lower(
                state, Totals.zeros(state.step.shape), device_data, perm).compile(), n)
            for n in set(plan.calls)}
  num_eval_batches = len(device_data.test_labels) // plan.eval_batch_size
  evaluate = make_evaluate(model, mesh, plan.eval_batch_size, num_eval_batches
                           ).lower(state, device_data).compile()
  return chunks, evaluate


class _RunFiles:
  """metrics.jsonl, TensorBoard, summary.json and plots; process 0 writes them."""

  def __init__(self, workdir: Path, enabled: bool):
    self.workdir, self.enabled = workdir, enabled
    self._tensorboard = (tensorboard.SummaryWriter(workdir / "tensorboard")
                         if enabled else None)

  def add_epoch(self, record: dict[str, Any]):
    if not self.enabled:
      return
    _append_record(self.workdir, record)
    self._tensorboard.scalars({
        "train/loss": record["train_loss"],
        "train/accuracy": record["train_accuracy"],
        "test/loss": record["test_loss"],
        "test/accuracy": record["test_accuracy"],
        "learning_rate": record["learning_rate"],
        "images_per_sec": record["images_per_sec"]}, step=record["epoch"])

  def close(self):
    if self._tensorboard:
      self._tensorboard.close()


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str | os.PathLike) -> TrainResult:
  """Trains to `config.num_epochs`, evaluating after each epoch.

  A workdir with checkpoints is resumed from the newest one. SIGTERM and
  Ctrl-C stop the run after saving the last finished epoch. A workdir in use
  by another run is refused (workdir_lock.py).
  """
  # Releases the workdir's lock however the run ends.
  with contextlib.ExitStack() as run_scope:
    return _train_and_evaluate(config, workdir, run_scope)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir,
                        run_scope: contextlib.ExitStack) -> TrainResult:
  # A process's first run starts at its import; later ones (compare, tests)
  # at their own call.
  global _runs_started
  run_start = mnist_jax.IMPORT_TIME if not _runs_started else time.perf_counter()
  _runs_started += 1
  validate(config)
  # Both before anything touches a device.
  sharding.configure_cpu_devices(config, multi_process=distributed.requested(config))
  distributed.initialize(config)
  enable_compilation_cache(config)
  check_backend(config)  # Before loading data or compiling anything.
  dataset = data_lib.load(config.dataset, config.data_dir, config.data_source)
  mesh = sharding.make_mesh()
  plan = Plan.make(config, dataset, mesh)
  model, state, tx = create_model_and_state(config, dataset.num_classes,
                                            plan.steps_per_epoch)
  replicated = sharding.replicated(mesh)
  state = distributed.put_global(state, replicated)

  # Only once the config and data are known good: a refused run leaves
  # nothing behind. A refused resume leaves the workdir as it was.
  workdir = _prepare_workdir(Path(workdir))
  run_scope.enter_context(workdir_lock.for_run(workdir))  # Before any write.
  checkpoints = checkpoint_lib.Checkpoints(workdir / "checkpoints",
                                           config.checkpoints_to_keep)
  restored = checkpoints.restore_latest(state, config, dataset.num_classes)
  done_epochs = 0
  if restored:
    state, meta = restored
    done_epochs = meta["epoch"]
    # As saved (plain dicts through JSON), not ConfigDicts: those never equal.
    now = json.loads(json.dumps(config.to_dict()))
    changed = {k: (v, now[k]) for k, v in meta["config"].items()
               if k in now and now[k] != v}
    logging.info("resuming from the checkpoint of epoch %d in %s%s", done_epochs,
                 checkpoints.directory, f"; changed fields: {changed}" if changed else "")
  main_process = distributed.is_main_process()
  history = metrics_file.resume_metrics(workdir, done_epochs,
                                        rewrite=main_process)

  device_data = place_data(dataset, mesh, plan.eval_batch_size)
  data_key = distributed.put_global(data_keys(config), replicated)
  members = members_lib.Members.from_config(config)
  _log_start(config, dataset, mesh, plan, state, members)
  (chunks, evaluate), compile_seconds = timing.timed(
      lambda: _compile(model, tx, mesh, plan, state, device_data, data_key))
  seconds_to_first_step = time.perf_counter() - run_start
  logging.info("compiled in %.1f s; %.1f s from start to the first step",
               compile_seconds, seconds_to_first_step)

  max_in_flight = max_calls_in_flight(plan.backend, plan.num_devices)
  schedule = optim.schedule(config, plan.steps_per_epoch)
  meta = {"config": config.to_dict(), "num_classes": dataset.num_classes,
          "class_names": list(dataset.class_names)}
  saved_epoch = done_epochs

  def stop_after_saving(signum, epoch_state, epoch):
    """Saves the last finished epoch (unless saved already), then stops."""
    if epoch > saved_epoch:
      checkpoints.save(epoch, epoch_state, {**meta, "epoch": epoch})
    checkpoints.wait()
    name = signal.Signals(signum).name
    if epoch == 0:
      raise Interrupted(f"stopped by {name} before the first epoch finished; "
                        f"nothing to save", signum)
    raise Interrupted(
        f"stopped by {name}: the checkpoint of epoch {epoch} is in "
        f"{checkpoints.directory}; run the same command again to resume", signum)

  files = _RunFiles(workdir, enabled=main_process)
  diverged_members = set()
  with signals.StopOnSignal() as stop, contextlib.closing(files):
    for epoch in range(done_epochs + 1, config.num_epochs + 1):
      # A stop request mid-epoch falls back to this epoch's start; the
      # copy is needed because the calls donate (consume) their input state.
      epoch_start_state = (jax.tree.map(jnp.copy, state) if len(plan.calls) > 1
                           else state)
      epoch_start = time.perf_counter()
      perm = epoch_permutation(data_key, epoch, plan.num_train,
                               plan.steps_per_epoch, plan.batch_size)
      progress = progress_lib.EpochProgress(
          epoch, config.num_epochs, plan.steps_per_epoch, plan.batch_size,
          enabled=None if main_process else False)
      state, totals = run_epoch([chunks[n] for n in plan.calls], state,
                                device_data, perm, max_in_flight,
                                should_stop=lambda: stop.requested,
                                on_dispatch=progress.dispatched)
      if totals is None:  # Stopped part-way through the epoch.
        progress.close()
        stop_after_saving(stop.signum, epoch_start_state, epoch - 1)
      progress.wait(totals.steps)  # The end of the epoch.
      epoch_seconds = time.perf_counter() - epoch_start
      values = dict(zip(("train_loss", "train_accuracy"), totals.means()))

      eval_start = time.perf_counter()
      test_totals, ensembles = evaluate(state, device_data)
      values["test_loss"], values["test_accuracy"] = test_totals.means()
      eval_seconds = time.perf_counter() - eval_start
      if state.ema is not None:  # The same compiled evaluation, other weights.
        values["ema_test_loss"], values["ema_test_accuracy"] = evaluate(
            with_ema_weights(state), device_data)[0].means()
      images_per_sec = plan.steps_per_epoch * plan.batch_size / epoch_seconds
      record = {
          "epoch": epoch,
          **_epoch_values(members, values, ensembles),
          "learning_rate": float(schedule(epoch * plan.steps_per_epoch - 1)),
          "images_per_sec": images_per_sec,
          **({"images_per_sec_all_members": members.count * images_per_sec}
             if members.count > 1 else {}),
          "epoch_seconds": epoch_seconds,
          "eval_seconds": eval_seconds,
      }
      diverged = ~np.isfinite(values["train_loss"])
      if diverged.all():
        files.add_epoch(record)
        checkpoints.wait()
        raise UserError(
            f"training loss became "
            f"{values['train_loss'] if members.count == 1 else 'non-finite for every member'}"
            f" in epoch {epoch} (learning rate {record['learning_rate']:.3g}); "
            f"stopped, keeping the checkpoint of epoch {saved_epoch or 'none'}; "
            f"lower config.learning_rate")
      for k in np.flatnonzero(diverged):
        if k not in diverged_members:
          diverged_members.add(k)
          logging.warning("member %d (%s) diverged in epoch %d: its training "
                          "loss is not finite; the others go on", k,
                          members.describe(k), epoch)
      if epoch % config.checkpoint_every_epochs == 0 or epoch == config.num_epochs:
        save_start = time.perf_counter()
        checkpoints.save(epoch, state, {**meta, "epoch": epoch})
        record["checkpoint_seconds"] = time.perf_counter() - save_start
        saved_epoch = epoch
      files.add_epoch(record)
      history.append(record)
      _log_epoch(record, config.num_epochs, members.count)
      if stop.requested:
        stop_after_saving(stop.signum, state, epoch)
  checkpoints.wait()
  checkpoints.close()

  if not history:
    raise UserError(f"{workdir} holds no metrics for its checkpoint of epoch "
                    f"{done_epochs}; use a new --workdir")
  train_seconds = sum(r["epoch_seconds"] for r in history)
  summary = {
      "dataset": dataset.name,
      "model": config.model,
      "num_epochs": config.num_epochs,
      "final_test_accuracy": history[-1]["test_accuracy"],
      "best_test_accuracy": max(r["test_accuracy"] for r in history),
      "final_test_loss": history[-1]["test_loss"],
      **({"final_ema_test_accuracy": history[-1]["ema_test_accuracy"]}
         if "ema_test_accuracy" in history[-1] else {}),
      "train_seconds": train_seconds,
      "compile_seconds": compile_seconds,
      "seconds_to_first_step": seconds_to_first_step,
      "images_per_sec": (plan.steps_per_epoch * plan.batch_size * len(history)
                         / train_seconds),
      "resumed_from_epoch": done_epochs,
      "steps_per_call": plan.steps_per_call,
      "backend": plan.backend,
      "device_kind": jax.devices()[0].device_kind,
      "device_count": plan.num_devices,
      "jax_version": jax.__version__,
      "config": config.to_dict(),
      **(_members_summary(members, history) if members.count > 1 else {}),
  }
  if main_process:
    write_json_atomic(workdir / "summary.json", summary)
    if config.plots:
      # Of the member with the best final accuracy, with several.
      best = (int(np.argmax([m["test_accuracy"] for m in history[-1]["members"]]))
              if members.count > 1 else None)
      written = report.write_plots(
          workdir, functools.partial(make_logits_fn(model), state if best is None
                                     else members_lib.select(state, best)),
          dataset.class_names,
          dataset, history, plan.eval_batch_size,
          f"{dataset.name}, {config.model}, epoch {config.num_epochs}"
          + ("" if best is None else f", member {best} {members.describe(best)}"))
      logging.info("plots: %s", ", ".join(str(p) for p in written))
    if members.count > 1:
      _log_members(summary)
    logging.info("final test accuracy %.2f%% (best %.2f%%)%s, %.1f s training, "
                 "summary in %s", 100 * summary["final_test_accuracy"],
                 100 * summary["best_test_accuracy"],
                 f", mean of {members.count} members" if members.count > 1 else "",
                 train_seconds, workdir / "summary.json")
  return TrainResult(summary, model, state)


def _epoch_values(members: members_lib.Members, values: dict[str, Any],
                  ensembles: Totals | None) -> dict[str, Any]:
  """An epoch's metrics for its record: each of `values` (floats, or [M]
  arrays with a value per member) as the mean over members; with several
  members also each one's (under "members") and the ensembles' of each
  sweep point's seeds (under "ensembles")."""
  record = {name: float(np.mean(v)) for name, v in values.items()}
  if members.count > 1:
    record["members"] = [
        {**members.describe(k), **{name: float(v[k]) for name, v in values.items()}}
        for k in range(members.count)]
  if ensembles is not None:
    losses, accuracies = ensembles.means()
    record["ensembles"] = [
        {**point, "seeds": list(members.seeds), "test_loss": float(losses[p]),
         "test_accuracy": float(accuracies[p])}
        for p, point in enumerate(members.points)]
  return record


def _log_epoch(record: dict[str, Any], num_epochs: int, num_members: int):
  accuracy = f"acc {100 * record['test_accuracy']:.2f}%"
  if num_members > 1:
    accuracies = [100 * m["test_accuracy"] for m in record["members"]]
    accuracy = (f"acc {min(accuracies):.2f}..{max(accuracies):.2f}% over "
                f"{num_members} members (mean {100 * record['test_accuracy']:.2f}%)")
  logging.info(
      "epoch %d/%d  train loss %.4f acc %.2f%%  test loss %.4f %s  "
      "%s img/s  %.1f s%s%s", record["epoch"], num_epochs, record["train_loss"],
      100 * record["train_accuracy"], record["test_loss"], accuracy,
      f"{record['images_per_sec']:,.0f}", record["epoch_seconds"],
      f"  (EMA: test acc {100 * record['ema_test_accuracy']:.2f}%)"
      if "ema_test_accuracy" in record else "",
      "  ensembles: " + ", ".join(f"{100 * e['test_accuracy']:.2f}%"
                                  for e in record["ensembles"])
      if "ensembles" in record else "")


def _members_summary(members: members_lib.Members,
                     history: list[dict[str, Any]]) -> dict[str, Any]:
  """summary.json's account of each member, and of each sweep point over
  its seeds: the spread of final accuracies and its ensemble's."""
  last = history[-1]
  per_member = []
  for k, final in enumerate(last["members"]):
    per_member.append({
        **members.describe(k),
        "final_test_accuracy": final["test_accuracy"],
        "best_test_accuracy": max(r["members"][k]["test_accuracy"] for r in history),
        "final_test_loss": final["test_loss"],
        **({"final_ema_test_accuracy": final["ema_test_accuracy"]}
           if "ema_test_accuracy" in final else {})})
  num_seeds = len(members.seeds)
  points = []
  for p, point in enumerate(members.points):
    finals = [m["final_test_accuracy"] for m in per_member[p * num_seeds:(p + 1) * num_seeds]]
    points.append({**point, "seeds": list(members.seeds),
                   "final_test_accuracy": timing.spread(finals),
                   **({"final_ensemble_test_accuracy": last["ensembles"][p]["test_accuracy"]}
                      if "ensembles" in last else {})})
  return {"num_members": members.count, "members": per_member,
          "final_test_accuracy_over_members": timing.spread(
              [m["final_test_accuracy"] for m in per_member]),
          "points": points,
          **({"final_ensemble_test_accuracy": points[0]["final_ensemble_test_accuracy"]}
             if len(points) == 1 and "ensembles" in last else {})}


def _log_members(summary: dict[str, Any]):
  """One line per sweep point: its seeds' final test accuracies, ensembled."""
  for point in summary["points"]:
    values = {k: v for k, v in point.items()
              if k not in ("seeds", "final_test_accuracy",
                           "final_ensemble_test_accuracy")}
    accuracy = point["final_test_accuracy"]
    logging.info(
        "%s: final test accuracy %.2f%% mean over seeds %s (std %.2f, "
        "%.2f..%.2f%%)%s", ", ".join(f"{k}={v:g}" for k, v in values.items())
        or "all members", 100 * accuracy["mean"], point["seeds"],
        100 * accuracy["std"], 100 * accuracy["min"], 100 * accuracy["max"],
        f"; their ensemble {100 * point['final_ensemble_test_accuracy']:.2f}%"
        if "final_ensemble_test_accuracy" in point else "")


def _append_record(workdir: Path, record: dict[str, Any]):
  with (workdir / "metrics.jsonl").open("a") as f:
    f.write(json.dumps(record) + "\n")
