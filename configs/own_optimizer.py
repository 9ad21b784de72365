"""MNIST, configs/mnist.py's cnn, with an optimizer of this file's own:
Cautious AdamW (Liang, Chen, Liu and Liu 2024, "Cautious Optimizers:
Improving Training with One Line of Code", arXiv:2411.16085), which optax
does not ship.

AdamW's update is applied only where its sign agrees with the current
gradient's: per parameter tensor, the entries where update x gradient <= 0
are zeroed and the rest rescaled by 1 / (the fraction kept) (at most 1000),
so the update's scale stays that of AdamW (the paper's Algorithm 1 and its
code, `mask / mask.mean().clamp(min=1e-3)`). Weight decay is decoupled, as
AdamW's, and not masked. `config.optimizer = "own_optimizer.py:cautious_adamw"`
names `cautious_adamw` below (a file spec, looked for in the working
directory, else in this config's folder); it declares `weight_decay` as a
hyperparameter, so `sweep.weight_decay` works. Betas and epsilon are the
config's adam_b1, adam_b2, adam_eps. The model, the batch, the epochs and
the schedule are configs/mnist.py's, so the comparison isolates the optimizer.

Learning rate 2e-3 and weight decay 0.01 were set beforehand, not tuned (the
paper runs Cautious AdamW at AdamW's settings).

Command:  python -m mnist_jax.main --config=configs/own_optimizer.py
Result:   99.31% mean test accuracy over seeds 0-2 (99.28..99.36%) after 4
          epochs, against configs/mnist.py's SGD 99.15% (99.13..99.18%;
          Welch p 0.008) in the same comparison: the same cnn, batch,
          schedule and epochs (2 epochs, in an earlier run: 99.10% against
          98.85%, own-plugins-compare-mnist-2epochs.json). Run as `python -m
          mnist_jax.compare configs/mnist.py configs/own_model.py
          configs/own_optimizer.py --seeds=3` on a 2-core AMD EPYC with 2
          virtual CPU devices, jax 0.10.2, 2026-12-05, while other engineers'
          tests shared the cores (its times are not compared). Against plain
          AdamW at the same settings: not measured, so what the mask itself
          adds is not known.
Record:   benchmarks/results/cpu-cpu/own-plugins-compare-mnist.json
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from configs import default


def get_config():
  config = default.get_config()
  config.dataset = "mnist"
  config.optimizer = "own_optimizer.py:cautious_adamw"
  config.learning_rate = 2e-3
  config.weight_decay = 0.01
  config.num_epochs = 4
  return config


class CautiousState(NamedTuple):
  inner: optax.OptState


def cautious(inner: optax.GradientTransformation,
             min_fraction: float = 1e-3) -> optax.GradientTransformation:
  """`inner`'s update, masked where its sign disagrees with the gradient's
  and rescaled by 1 / max(fraction kept, `min_fraction`), per tensor."""

  def init(params):
    return CautiousState(inner.init(params))

  def update(grads, state, params=None):
    updates, inner_state = inner.update(grads, state.inner, params)

    def mask(u, g):
      keep = (u * g > 0).astype(u.dtype)
      return u * keep / jnp.maximum(keep.mean(), min_fraction)

    return jax.tree.map(mask, updates, grads), CautiousState(inner_state)

  return optax.GradientTransformation(init, update)


def cautious_adamw(learning_rate, config, *, weight_decay):
  """The optimizer plugin: make(learning_rate, config, weight_decay=...)."""
  return optax.chain(
      cautious(optax.scale_by_adam(b1=config.adam_b1, b2=config.adam_b2,
                                   eps=config.adam_eps)),
      optax.add_decayed_weights(weight_decay),
      optax.scale_by_learning_rate(learning_rate))


cautious_adamw.hyperparameters = ("weight_decay",)
