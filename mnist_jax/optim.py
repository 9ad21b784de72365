"""Optimizers and learning-rate schedules from the config, through optax."""

import ml_collections
import optax

from mnist_jax.errors import UserError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle")


def schedule(config: ml_collections.ConfigDict,
             steps_per_epoch: int) -> optax.Schedule:
  """`constant`; `cosine` decay to zero after `warmup_epochs` of linear warm-up;
  or `onecycle`: cosine up from lr/25 to lr over the first
  `onecycle_pct_start` of training, then down to lr/25e4."""
  total_steps = config.num_epochs * steps_per_epoch
  warmup_steps = int(config.warmup_epochs * steps_per_epoch)
  if config.lr_schedule == "constant":
    return optax.constant_schedule(config.learning_rate)
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


def create(config: ml_collections.ConfigDict,
           steps_per_epoch: int) -> optax.GradientTransformation:
  lr = schedule(config, steps_per_epoch)
  if config.optimizer == "sgd":
    # Classic SGD weight decay: an L2 term added to the gradient.
    return optax.chain(
        optax.add_decayed_weights(config.weight_decay),
        optax.sgd(lr, momentum=config.momentum or None,
                  nesterov=config.nesterov))
  if config.optimizer == "adam":
    return optax.adam(lr)
  if config.optimizer == "adamw":
    return optax.adamw(lr, weight_decay=config.weight_decay)
  raise UserError(f"unknown optimizer '{config.optimizer}'; choose one of "
                  f"{', '.join(OPTIMIZERS)}")
