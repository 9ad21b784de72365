"""The pure steps: loss, a training step, evaluation; no I/O, no logging.

Each step merges the static graph with the state's variables inside the
compiled function (`nnx.merge`), so a compiled call carries no Python object
overhead. One compiled training call runs `num_steps` steps (a `lax.scan`
when more than one); each gathers its batch from the device-resident
dataset by the epoch's permutation. Runs of several members (members.py)
map the same steps over their stacked states.
"""

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct

from mnist_jax import augment, models, registry, sharding
from mnist_jax import members as members_lib
from mnist_jax.feed import DeviceData
from mnist_jax.state import Graphs, StepRecipe, TrainState


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


def in_dtype(tree, dtype):
  """Floating-point leaves of `tree` cast to `dtype` (a no-op for float32).

  The model then computes in `dtype`; gradients flow back through the cast
  to the float32 parameters.
  """
  return jax.tree.map(
      lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


@registry.register("loss", "cross_entropy")
def cross_entropy(logits_BK, labels_BK):
  """Softmax cross-entropy of each example, [B], against one-hot (smoothed,
  mixed) labels [B, K]: the loss protocol (config.loss) a user's own loss
  follows too."""
  return optax.softmax_cross_entropy(logits_BK, labels_BK)


def training_labels(labels_B, num_classes: int, label_smoothing: float = 0.0,
                    lam=None):
  """The one-hot labels [B, K] a training loss takes: smoothed by
  `label_smoothing`, and with mixed images (`lam`) each example's own label
  weighing `lam`, its partner's (the batch reversed) 1 - `lam`. For
  cross-entropy, linear in its labels, that is the weighted sum of the two
  losses the mixup and cutmix papers write."""
  labels_BK = jax.nn.one_hot(labels_B, num_classes)
  if label_smoothing:
    labels_BK = optax.smooth_labels(labels_BK, label_smoothing)
  if lam is not None:
    labels_BK = lam * labels_BK + (1 - lam) * labels_BK[::-1]
  return labels_BK


def loss_and_metrics(logits_BK, labels_B, mask_B=None):
  """Summed cross-entropy (evaluation's loss) and correct count over the
  (unmasked) batch."""
  losses_B = optax.softmax_cross_entropy_with_integer_labels(logits_BK, labels_B)
  correct_B = jnp.argmax(logits_BK, -1) == labels_B
  if mask_B is None:
    mask_B = jnp.ones_like(labels_B, dtype=bool)
  return (jnp.sum(jnp.where(mask_B, losses_B, 0.0)),
          jnp.sum(correct_B & mask_B, dtype=jnp.int32),
          jnp.sum(mask_B, dtype=jnp.int32))


def train_step(graphs: Graphs, recipe: StepRecipe, tx: optax.GradientTransformation,
               state: TrainState, images_BHWC, labels_B):
  """One optimizer step on one batch; returns the new state and batch sums."""
  step_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  if recipe.augment:
    images_BHWC = recipe.augment(step_key, images_BHWC)
  x_BHWC, lam = models.normalize(images_BHWC, recipe.pixel_mean, recipe.pixel_std), None
  if recipe.augment_floats:  # A user's own augmentations, on float images.
    x_BHWC = recipe.augment_floats(jax.random.fold_in(step_key, 3), x_BHWC)
  if recipe.mix:
    x_BHWC, lam = recipe.mix(jax.random.fold_in(step_key, 1), x_BHWC)
  loss = registry.resolve("loss", recipe.loss).target  # At trace time.

  def loss_fn(params, rest):
    # Fresh variables (copy=True) made inside the gradient's trace: layers
    # that update their state (batch norm's statistics) may then do so.
    module = nnx.merge(graphs.train, in_dtype(params, recipe.dtype), rest,
                       copy=True)
    # Only models built with dropout take its key (a user's model may not).
    dropout = ({"dropout_key": jax.random.fold_in(step_key, 2)}
               if recipe.dropout_key else {})
    logits_BK = module(x_BHWC.astype(recipe.dtype), **dropout).astype(jnp.float32)
    if loss is cross_entropy and not recipe.label_smoothing and lam is None:
      # The same loss of plain one-hot labels, from the integer labels: no
      # one-hot matrix in the step (the built-ins' step as before plugins).
      losses_B = optax.softmax_cross_entropy_with_integer_labels(logits_BK, labels_B)
    else:
      losses_B = loss(logits_BK, training_labels(
          labels_B, logits_BK.shape[-1], recipe.label_smoothing, lam))
    loss_sum = jnp.sum(losses_B.astype(jnp.float32))
    correct = jnp.sum(jnp.argmax(logits_BK, -1) == labels_B, dtype=jnp.int32)
    count = jnp.int32(labels_B.shape[0])
    _, _, new_rest = nnx.split(module, nnx.Param, ...)
    return loss_sum / count, (loss_sum, correct, count, new_rest)

  grads, (loss_sum, correct, count, new_rest) = jax.grad(
      loss_fn, has_aux=True)(state.params, state.rest)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  ema = (update_ema(state.ema, params, new_rest, recipe.ema_decay)
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


def eval_logits(graphs: Graphs, recipe: StepRecipe, state: TrainState, images_BHWC):
  """Evaluation-mode logits [B, K] of uint8 images [B, H, W, C].

  With test-time augmentation, the log of the views' mean probabilities
  (softmax of it gives that mean, so it serves as logits).
  """
  module = nnx.merge(graphs.eval, in_dtype(state.params, recipe.dtype),
                     state.rest)
  normalize = lambda v: models.normalize(v, recipe.pixel_mean, recipe.pixel_std)
  logits = lambda v: module(normalize(v).astype(recipe.dtype)).astype(jnp.float32)
  if not recipe.tta:
    return logits(images_BHWC)
  views = [logits(v) for v in augment.test_time_views(recipe.tta, images_BHWC)]
  # A user's own views take the normalised images (plugins.py).
  model = lambda x: module(x.astype(recipe.dtype)).astype(jnp.float32)
  views += [model(v) for v in augment.float_views(recipe.tta, normalize(images_BHWC))]
  return log_mean_probabilities(jnp.stack(views), axis=0)


def log_mean_probabilities(logits, axis: int):
  """Log of the mean over `axis` of softmax(logits): the logits of an
  average of predictions (test-time views, or the models of an ensemble)."""
  probs = jax.nn.softmax(logits).mean(axis)
  return jnp.log(jnp.maximum(probs, jnp.finfo(probs.dtype).tiny))


def eval_step(graphs: Graphs, recipe: StepRecipe, state: TrainState, images_BHWC,
              labels_B, mask_B):
  return loss_and_metrics(eval_logits(graphs, recipe, state, images_BHWC),
                          labels_B, mask_B)


def _repeat(step_fn: Callable, num_steps: int, carry, unroll: bool = False):
  """`num_steps` calls of `step_fn(carry, i)`: a `lax.scan`, or with `unroll`
  (and always for one step) straight-line code, the calls written out.

  XLA:CPU runs convolution gradients inside a loop, a scan of one step
  included, about 11x slower (jax-ml/jax#12868), so CPU unrolls: there 4
  unrolled steps a call took 0.81 to 0.86 of one step a call's time, with
  the same parameters bit for bit (benchmarks/results/cpu-cpu/
  step-variants-b128-2dev.json and -confirm.json). GPU and TPU scan, so that
  a whole epoch compiles once.
  """
  if num_steps == 1 or unroll:
    for i in range(num_steps):
      carry = step_fn(carry, jnp.int32(i))[0]
    return carry
  return jax.lax.scan(step_fn, carry, jnp.arange(num_steps))[0]


def make_train_chunk(graphs: Graphs, recipe: StepRecipe, tx, mesh,
                     num_steps: int, unroll: bool = False) -> Callable:
  """Returns f(state, totals, data, perm) running the next `num_steps` steps,
  unrolled or as a scan (`_repeat`).

  `perm` is [S, B], or [M, S, B] with a data order per member. Step
  `totals.steps` of the epoch trains on images `perm[..., totals.steps, :]`.
  The batch's indices are constrained to the `data` axis, so each device
  gathers only its own shard of the batch from the replicated dataset.
  """
  step = functools.partial(train_step, graphs, recipe, tx)
  if recipe.members > 1:
    # Over the members' states, images and labels.
    step = members_lib.map_members(step, recipe.members, recipe.member_loop)
  batch_sharding = sharding.batch_sharded(mesh, member_axis=recipe.members > 1)

  def one_step(carry, _):
    state, totals, data, perm = carry
    idx = jax.lax.dynamic_index_in_dim(perm, totals.steps, axis=perm.ndim - 2,
                                       keepdims=False)
    idx = jax.lax.with_sharding_constraint(idx, batch_sharding)
    state, sums = step(state, data.train_images[idx], data.train_labels[idx])
    return (state, totals.add(*sums), data, perm), None

  def chunk(state, totals, data, perm):
    state, totals, _, _ = _repeat(one_step, num_steps, (state, totals, data, perm),
                                  unroll)
    return state, totals

  return jax.jit(chunk, donate_argnums=0)


def scan_test_set(add_batch: Callable, zeros, data: DeviceData, mesh,
                  eval_batch_size: int, num_batches: int, split: str = "test"):
  """Folds `add_batch(sums, images_BHWC, labels_B, mask_B)` over the batches
  of the evaluated split `split` ("test", or "val": the validation split).

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
    return add_batch(sums, *(take(x) for x in data.split(split))), None
  return jax.lax.scan(one_batch, zeros, jnp.arange(num_batches))[0]


def make_evaluate(graphs: Graphs, recipe: StepRecipe, mesh, eval_batch_size: int,
                  num_batches: int, split: str = "test") -> Callable:
  """Returns f(state, data) -> (Totals, ensembles) over the whole (padded,
  masked) split `split`: "test", or "val" (the validation split).

  With members the Totals are per member, [M]. `ensembles` are the Totals
  of each sweep point's seeds' averaged predictions, [P], when points have
  several seeds; else None.
  """
  member_logits = members_lib.map_members(functools.partial(eval_logits, graphs, recipe),
                                          recipe.members, recipe.member_loop,
                                          in_axes=(0, None))
  # Cheap (no convolutions): always vmapped.
  member_metrics = jax.vmap(loss_and_metrics, in_axes=(0, None, None))

  def add_batch(sums, state, images_BHWC, labels_B, mask_B):
    totals, ensembles = sums
    if recipe.members == 1:
      return totals.add(*eval_step(graphs, recipe, state, images_BHWC, labels_B, mask_B)), None
    logits_MBK = member_logits(state, images_BHWC)
    totals = totals.add(*member_metrics(logits_MBK, labels_B, mask_B))
    if ensembles is not None:
      logits_PSBK = logits_MBK.reshape(-1, recipe.seeds_per_point, *logits_MBK.shape[1:])
      ensembles = ensembles.add(*member_metrics(
          log_mean_probabilities(logits_PSBK, axis=1), labels_B, mask_B))
    return totals, ensembles

  def evaluate(state, data):
    zeros = (Totals.zeros(state.step.shape),
             Totals.zeros((recipe.members // recipe.seeds_per_point,))
             if recipe.seeds_per_point > 1 else None)
    return scan_test_set(lambda sums, *batch: add_batch(sums, state, *batch),
                         zeros, data, mesh, eval_batch_size, num_batches, split)
  return jax.jit(evaluate)


def make_logits_fn(graphs: Graphs, recipe: StepRecipe) -> Callable:
  """A jitted f(state, uint8 images [B, H, W, C]) -> logits [B, K], eval mode."""
  return jax.jit(functools.partial(eval_logits, graphs, recipe))
