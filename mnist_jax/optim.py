"""Optimizers and learning-rate schedules from the config, through optax."""

import ml_collections
import optax
import optax.contrib

from mnist_jax.errors import UserError

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "lion", "muon")
SCHEDULES = ("constant", "step", "cosine", "onecycle")


def schedule(config: ml_collections.ConfigDict,
             steps_per_epoch: int) -> optax.Schedule:
  """`constant`; `step`: times `lr_step_factor` at each of `lr_step_epochs`;
  `cosine` decay to zero after `warmup_epochs` of linear warm-up; or
  `onecycle`: cosine up from lr/25 to lr over the first `onecycle_pct_start`
  of training, then down to lr/25e4."""
  total_steps = config.num_epochs * steps_per_epoch
  warmup_steps = int(config.warmup_epochs * steps_per_epoch)
  if config.lr_schedule == "constant":
    return optax.constant_schedule(config.learning_rate)
  if config.lr_schedule == "step":
    return optax.piecewise_constant_schedule(
        config.learning_rate,
        {round(epoch * steps_per_epoch): config.lr_step_factor
         for epoch in _epochs(config.lr_step_epochs)})
  if config.lr_schedule == "onecycle":
    return optax.cosine_onecycle_schedule(
        max(total_steps, 1), config.learning_rate,
        pct_start=config.onecycle_pct_start)
  if config.lr_schedule == "cosine" and not warmup_steps:
    return optax.cosine_decay_schedule(config.learning_rate, total_steps)
  if config.lr_schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=config.learning_rate,
        warmup_steps=warmup_steps,
        decay_steps=max(total_steps, warmup_steps + 1))
  raise UserError(f"unknown lr_schedule '{config.lr_schedule}'; choose one of "
                  f"{', '.join(SCHEDULES)}")


def _epochs(text: str) -> list[float]:
  try:
    return [float(x) for x in str(text).split(",") if x.strip()]
  except ValueError:
    raise UserError(f"config.lr_step_epochs={text!r}: expected epochs separated "
                    f"by commas, e.g. '5,8'") from None


def _base(config: ml_collections.ConfigDict, lr) -> optax.GradientTransformation:
  wd = config.weight_decay
  if config.optimizer in ("sgd", "momentum", "nesterov"):
    # "sgd" takes config.momentum and config.nesterov as they are; the other
    # two names switch momentum (default 0.9) and Nesterov's variant on.
    named = config.optimizer != "sgd"
    momentum = (config.momentum or 0.9) if named else config.momentum
    nesterov = config.optimizer == "nesterov" if named else config.nesterov
    # Classic SGD weight decay: an L2 term added to the gradient.
    return optax.chain(optax.add_decayed_weights(wd),
                       optax.sgd(lr, momentum=momentum or None, nesterov=nesterov))
  if config.optimizer == "adam":
    return optax.adam(lr)
  if config.optimizer == "adamw":
    return optax.adamw(lr, weight_decay=wd)
  if config.optimizer == "lion":
    return optax.lion(lr, weight_decay=wd)
  if config.optimizer == "muon":
    # Newton-Schulz orthogonalised momentum for the dense (2D) weights; the
    # others (convolution kernels, biases) take AdamW.
    return optax.contrib.muon(lr, weight_decay=wd, adam_weight_decay=wd)
  raise UserError(f"unknown optimizer '{config.optimizer}'; choose one of "
                  f"{', '.join(OPTIMIZERS)}")


def create(config: ml_collections.ConfigDict,
           steps_per_epoch: int) -> optax.GradientTransformation:
  """The config's optimizer on its schedule, after optional gradient clipping.

  Clipping (`grad_clip_norm` > 0, by global norm) keeps the same optimizer
  state whether on or off, so a run may be resumed with it changed.
  """
  clip = (optax.clip_by_global_norm(config.grad_clip_norm)
          if config.grad_clip_norm else optax.identity())
  return optax.chain(clip, _base(config, schedule(config, steps_per_epoch)))
