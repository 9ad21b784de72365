"""Optimizers and learning-rate schedules from the config, through optax."""

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
import optax.contrib

from mnist_jax.errors import UserError

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "lion", "muon")
SCHEDULES = ("constant", "step", "cosine", "onecycle")


def schedule(config: ml_collections.ConfigDict, steps_per_epoch: int,
             learning_rate: float | None = None) -> optax.Schedule:
  """`constant`; `step`: times `lr_step_factor` at each of `lr_step_epochs`;
  `cosine` decay to zero after `warmup_epochs` of linear warm-up; or
  `onecycle`: PyTorch's OneCycleLR (see `onecycle_schedule`), cosine up from
  lr / `onecycle_div_factor` to lr over the first `onecycle_pct_start` of
  training, then down to that start over `onecycle_final_div_factor`.

  lr is `learning_rate`, by default `config.learning_rate`. Every schedule
  here is proportional to it.
  """
  lr = config.learning_rate if learning_rate is None else learning_rate
  total_steps = config.num_epochs * steps_per_epoch
  warmup_steps = int(config.warmup_epochs * steps_per_epoch)
  if config.lr_schedule == "constant":
    return optax.constant_schedule(lr)
  if config.lr_schedule == "step":
    return optax.piecewise_constant_schedule(
        lr,
        {round(epoch * steps_per_epoch): config.lr_step_factor
         for epoch in _epochs(config.lr_step_epochs)})
  if config.lr_schedule == "onecycle":
    return onecycle_schedule(max(total_steps, 1), lr, config.onecycle_pct_start,
                             config.onecycle_div_factor,
                             config.onecycle_final_div_factor)
  if config.lr_schedule == "cosine" and not warmup_steps:
    return optax.cosine_decay_schedule(lr, total_steps)
  if config.lr_schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=lr,
        warmup_steps=warmup_steps,
        decay_steps=max(total_steps, warmup_steps + 1))
  raise KeyError(config.lr_schedule)  # config.validate names the valid ones.


def onecycle_schedule(total_steps: int, peak: float, pct_start: float = 0.3,
                      div_factor: float = 25.0,
                      final_div_factor: float = 1e4) -> optax.Schedule:
  """`torch.optim.lr_scheduler.OneCycleLR` (two phases, cosine annealing),
  step for step: update k (from 0) takes the rate PyTorch's scheduler gives
  after k calls of `scheduler.step()`.

  The rate rises from peak / div_factor at step 0 to `peak` at step
  pct_start * total_steps - 1 (a float, as PyTorch keeps it), then falls to
  peak / div_factor / final_div_factor at step total_steps - 1. (optax's
  cosine_onecycle_schedule peaks and bottoms out one step later.)
  """
  initial = peak / div_factor
  final = initial / final_div_factor
  rise_end = float(pct_start * total_steps) - 1.0
  fall_end = float(total_steps - 1)

  def anneal(start, end, pct):
    # PyTorch's end + (start - end) / 2 * (cos(pi pct) + 1), written with
    # (cos(pi pct) + 1) / 2 = cos(pi pct / 2)^2 so that float32 keeps its
    # relative precision near either end (the tail falls to peak / 25e4).
    weight = jnp.cos(jnp.pi / 2 * pct) ** 2
    return start * weight + end * (1.0 - weight)

  def rate(count):
    step = jnp.asarray(count, jnp.float32)
    rising = anneal(initial, peak, step / rise_end) if rise_end > 0 else peak
    falling = anneal(peak, final, (step - rise_end) / max(fall_end - rise_end, 1e-12))
    return jnp.where(step <= rise_end, rising, falling)
  return rate


def _epochs(text: str) -> list[float]:
  try:
    return [float(x) for x in str(text).split(",") if x.strip()]
  except ValueError:
    raise UserError(f"config.lr_step_epochs={text!r}: expected epochs separated "
                    f"by commas, e.g. '5,8'") from None


def _optimizer(config: ml_collections.ConfigDict, lr, weight_decay,
               momentum) -> optax.GradientTransformation:
  """The config's optimizer. `weight_decay` and `momentum` are numbers, or
  arrays when injected (then taken as they are)."""
  wd = weight_decay
  if config.optimizer in ("sgd", "momentum", "nesterov"):
    nesterov = config.optimizer == "nesterov" or (config.optimizer == "sgd"
                                                  and config.nesterov)
    if not isinstance(momentum, jax.Array):
      # "sgd" takes config.momentum as it is; the other two names switch
      # momentum (default 0.9) on; 0 means none at all.
      momentum = ((momentum or 0.9) if config.optimizer != "sgd" else momentum) or None
    # Classic SGD weight decay: an L2 term added to the gradient.
    return optax.chain(optax.add_decayed_weights(wd),
                       optax.sgd(lr, momentum=momentum, nesterov=nesterov))
  betas = dict(b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps)
  if config.optimizer == "adam":
    return optax.adam(lr, **betas)
  if config.optimizer == "adamw":
    return optax.adamw(lr, weight_decay=wd, **betas)
  if config.optimizer == "lion":
    return optax.lion(lr, weight_decay=wd)
  if config.optimizer == "muon":
    # Newton-Schulz orthogonalised momentum for the dense (2D) weights; the
    # others (convolution kernels, biases) take AdamW.
    return optax.contrib.muon(lr, weight_decay=wd, adam_weight_decay=wd)
  raise KeyError(config.optimizer)  # config.validate names the valid ones.


def create(config: ml_collections.ConfigDict, steps_per_epoch: int,
           injected: tuple[str, ...] = (),
           trainable: Callable[[Any], Any] | None = None
           ) -> optax.GradientTransformation:
  """The config's optimizer on its schedule, after optional gradient clipping.

  Clipping (`grad_clip_norm` > 0, by global norm) keeps the same optimizer
  state whether on or off, so a run may be resumed with it changed.

  `injected` names hyperparameters (of members.SWEEPABLE) to hold as arrays
  in the optimizer state (`optax.inject_hyperparams`), so that the members
  of a vectorised run can each have their own: see `set_hyperparameters`.
  An injected learning rate is the peak of the config's schedule.

  `trainable(params)` (config.freeze), where given, labels each parameter
  "train" or "freeze": frozen ones get no update at all (not even weight
  decay), through `optax.multi_transform`.
  """
  clip = (optax.clip_by_global_norm(config.grad_clip_norm)
          if config.grad_clip_norm else optax.identity())

  def _base(*args):
    base = _optimizer(*args)
    if trainable is None:
      return base
    return optax.multi_transform({"train": base, "freeze": optax.set_to_zero()},
                                 trainable)
  config_schedule = schedule(config, steps_per_epoch)
  if not injected:
    return optax.chain(clip, _base(config, config_schedule, config.weight_decay,
                                   config.momentum))
  unit_schedule = schedule(config, steps_per_epoch, learning_rate=1.0)

  # inject_hyperparams reads the names from the signature; those not
  # injected stay None and come from the config.
  def factory(learning_rate=None, weight_decay=None, momentum=None):
    lr = (config_schedule if learning_rate is None
          else lambda count: learning_rate * unit_schedule(count))
    return optax.chain(clip, _base(
        config, lr, config.weight_decay if weight_decay is None else weight_decay,
        config.momentum if momentum is None else momentum))
  return optax.inject_hyperparams(factory)(**{f: config[f] for f in injected})


def set_hyperparameters(opt_state, values: dict[str, float]):
  """The state of an optimizer made with `injected` fields, holding `values`
  ({field: number}) for them instead of the config's."""
  hyperparams = dict(opt_state.hyperparams)
  for field, value in values.items():
    hyperparams[field] = jnp.asarray(value, hyperparams[field].dtype)
  return opt_state._replace(hyperparams=hyperparams)
