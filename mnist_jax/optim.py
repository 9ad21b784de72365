"""Optimizers and learning-rate schedules from the config, through optax.

Each registers itself below (`register`, `register_schedule`): the name, the
function that makes it, and what the rest of the code needs to know.
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
import optax.contrib

from mnist_jax import registry
from mnist_jax.errors import UserError


def register(name: str, *, hyperparameters: tuple[str, ...] = ()):
  """Registers `make(learning_rate, config, **hyperparameters) -> optax
  GradientTransformation` as optimizer `name`: the protocol a user's own
  optimizer (`module:attr`, plugins.py) follows too.

  `learning_rate` is the run's schedule (a callable of the step), so
  warm-up and decay come from the config. `hyperparameters`: which of
  `weight_decay` and `momentum` it takes as keyword arguments, numbers, or
  arrays when a sweep injects them (then taken as they are); a sweep of
  another is refused (members.py). Whether a checkpoint's optimizer state
  fits (SGD's momentum switched off drops its state) is read from the
  state's tree (checkpoint.check_fits).
  """
  return registry.register("optimizer", name, hyperparameters=tuple(hyperparameters))


def register_schedule(name: str):
  """Registers `make(config, steps_per_epoch, lr) -> optax.Schedule`, a
  schedule proportional to its peak `lr`, as config.lr_schedule `name`."""
  return registry.register("schedule", name)


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
  return registry.resolve("schedule", config.lr_schedule).target(
      config, steps_per_epoch, lr)


@register_schedule("constant")
def _constant(config, steps_per_epoch: int, lr) -> optax.Schedule:
  del config, steps_per_epoch
  return optax.constant_schedule(lr)


@register_schedule("step")
def _step(config, steps_per_epoch: int, lr) -> optax.Schedule:
  return optax.piecewise_constant_schedule(
      lr,
      {round(epoch * steps_per_epoch): config.lr_step_factor
       for epoch in _epochs(config.lr_step_epochs)})


@register_schedule("cosine")
def _cosine(config, steps_per_epoch: int, lr) -> optax.Schedule:
  total_steps = config.num_epochs * steps_per_epoch
  warmup_steps = int(config.warmup_epochs * steps_per_epoch)
  if not warmup_steps:
    return optax.cosine_decay_schedule(lr, total_steps)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=lr,
      warmup_steps=warmup_steps,
      decay_steps=max(total_steps, warmup_steps + 1))


@register_schedule("onecycle")
def _onecycle(config, steps_per_epoch: int, lr) -> optax.Schedule:
  return onecycle_schedule(max(config.num_epochs * steps_per_epoch, 1), lr,
                           config.onecycle_pct_start, config.onecycle_div_factor,
                           config.onecycle_final_div_factor)


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


def _sgd(lr, weight_decay, momentum, nesterov: bool) -> optax.GradientTransformation:
  # Classic SGD weight decay: an L2 term added to the gradient.
  return optax.chain(optax.add_decayed_weights(weight_decay),
                     optax.sgd(lr, momentum=momentum, nesterov=nesterov))


_SGD = dict(hyperparameters=("weight_decay", "momentum"))


@register("sgd", **_SGD)
def _plain_sgd(lr, config, *, weight_decay, momentum):
  # config.momentum as it is; 0 means none at all (no momentum state).
  if not isinstance(momentum, jax.Array):
    momentum = momentum or None
  return _sgd(lr, weight_decay, momentum, config.nesterov)


def _on(momentum):
  """`momentum` and `nesterov` switch momentum on: 0 is taken as 0.9."""
  return momentum if isinstance(momentum, jax.Array) else (momentum or 0.9)


@register("momentum", **_SGD)
def _momentum(lr, config, *, weight_decay, momentum):
  del config
  return _sgd(lr, weight_decay, _on(momentum), False)


@register("nesterov", **_SGD)
def _nesterov(lr, config, *, weight_decay, momentum):
  del config
  return _sgd(lr, weight_decay, _on(momentum), True)


def _betas(config) -> dict[str, float]:
  return dict(b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps)


@register("adam")
def _adam(lr, config):
  return optax.adam(lr, **_betas(config))


@register("adamw", hyperparameters=("weight_decay",))
def _adamw(lr, config, *, weight_decay):
  return optax.adamw(lr, weight_decay=weight_decay, **_betas(config))


@register("lion", hyperparameters=("weight_decay",))
def _lion(lr, config, *, weight_decay):
  del config
  return optax.lion(lr, weight_decay=weight_decay)


@register("muon", hyperparameters=("weight_decay",))
def _muon(lr, config, *, weight_decay):
  # Newton-Schulz orthogonalised momentum for the dense (2D) weights; the
  # others (convolution kernels, biases) take AdamW.
  del config
  return optax.contrib.muon(lr, weight_decay=weight_decay,
                            adam_weight_decay=weight_decay)


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

  entry = registry.resolve("optimizer", config.optimizer, label="optimizer")

  def _base(lr, weight_decay, momentum):
    given = {"weight_decay": weight_decay, "momentum": momentum}
    base = entry.target(lr, config, **{h: given[h] for h in entry.hyperparameters})
    if trainable is None:
      return base
    return optax.multi_transform({"train": base, "freeze": optax.set_to_zero()},
                                 trainable)
  config_schedule = schedule(config, steps_per_epoch)
  if not injected:
    return optax.chain(clip, _base(config_schedule, config.weight_decay,
                                   config.momentum))
  unit_schedule = schedule(config, steps_per_epoch, learning_rate=1.0)

  # inject_hyperparams reads the names from the signature; those not
  # injected stay None and come from the config.
  def factory(learning_rate=None, weight_decay=None, momentum=None):
    lr = (config_schedule if learning_rate is None
          else lambda count: learning_rate * unit_schedule(count))
    return optax.chain(clip, _base(
        lr, config.weight_decay if weight_decay is None else weight_decay,
        config.momentum if momentum is None else momentum))
  return optax.inject_hyperparams(factory)(**{f: config[f] for f in injected})


def set_hyperparameters(opt_state, values: dict[str, float]):
  """The state of an optimizer made with `injected` fields, holding `values`
  ({field: number}) for them instead of the config's."""
  hyperparams = dict(opt_state.hyperparams)
  for field, value in values.items():
    hyperparams[field] = jnp.asarray(value, hyperparams[field].dtype)
  return opt_state._replace(hyperparams=hyperparams)
