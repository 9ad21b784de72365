"""Models, written with Flax NNX. Input: float images [B, 28, 28, 1]."""

import inspect
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from mnist_jax.errors import UserError


def avg_pool_2x2(x_BHWC: jax.Array) -> jax.Array:
  """2x2 average pooling, stride 2, as a reshape and a mean.

  Same result as `nnx.avg_pool(x, (2, 2), (2, 2))` for even H and W, but its
  gradient is a broadcast, where `reduce_window`'s backward pass is several
  times slower on XLA:CPU.
  """
  b, h, w, c = x_BHWC.shape
  return x_BHWC.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def max_pool_2x2(x_BHWC: jax.Array) -> jax.Array:
  """2x2 max pooling, stride 2, as a reshape and a max (even H and W).

  Same values as `nnx.max_pool(x, (2, 2), (2, 2))`; on XLA:CPU its backward
  pass is several times cheaper than `reduce_window`'s.
  """
  b, h, w, c = x_BHWC.shape
  return x_BHWC.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _scaled(features: tuple[int, ...], width: float) -> tuple[int, ...]:
  """Layer widths times `width` (config.width), at least 1 each."""
  return tuple(max(1, round(f * width)) for f in features)


class Speedrun(nnx.Module):
  """The fast MNIST recipe's model (tuomaso/train_mnist_fast): conv 24 5x5,
  max-pool, conv 32 3x3, max-pool, dense 256, dense out; valid convolutions,
  28 -> 24 -> 12 -> 10 -> 5."""

  def __init__(self, num_classes: int, *, rngs: nnx.Rngs, width: float = 1.0):
    c1, c2, d = _scaled((24, 32, 256), width)
    self.conv1 = nnx.Conv(1, c1, kernel_size=(5, 5), padding="VALID", rngs=rngs)
    self.conv2 = nnx.Conv(c1, c2, kernel_size=(3, 3), padding="VALID", rngs=rngs)
    self.dense1 = nnx.Linear(5 * 5 * c2, d, rngs=rngs)
    self.dense2 = nnx.Linear(d, num_classes, rngs=rngs)

  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    x = max_pool_2x2(nnx.relu(self.conv1(x_BHWC)))
    x = max_pool_2x2(nnx.relu(self.conv2(x)))
    x = x.reshape(x.shape[0], -1)
    return self.dense2(nnx.relu(self.dense1(x)))


class CNN(nnx.Module):
  """The CNN of Flax's MNIST example: conv 32, conv 64, dense 256, dense out."""

  def __init__(self, num_classes: int, *, rngs: nnx.Rngs, width: float = 1.0):
    c1, c2, d = _scaled((32, 64, 256), width)
    self.conv1 = nnx.Conv(1, c1, kernel_size=(3, 3), rngs=rngs)
    self.conv2 = nnx.Conv(c1, c2, kernel_size=(3, 3), rngs=rngs)
    self.dense1 = nnx.Linear(7 * 7 * c2, d, rngs=rngs)
    self.dense2 = nnx.Linear(d, num_classes, rngs=rngs)

  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    x = avg_pool_2x2(nnx.relu(self.conv1(x_BHWC)))
    x = avg_pool_2x2(nnx.relu(self.conv2(x)))
    x = x.reshape(x.shape[0], -1)
    return self.dense2(nnx.relu(self.dense1(x)))


class MLP(nnx.Module):
  """The simplest baseline: two hidden ReLU layers."""

  def __init__(self, num_classes: int, *, rngs: nnx.Rngs, width: float = 1.0,
               hidden: tuple[int, ...] = (512, 512)):
    widths = (28 * 28, *_scaled(hidden, width))
    self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs)
                            for a, b in zip(widths[:-1], widths[1:])])
    self.out = nnx.Linear(widths[-1], num_classes, rngs=rngs)

  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    x = x_BHWC.reshape(x_BHWC.shape[0], -1)
    for layer in self.hidden:
      x = nnx.relu(layer(x))
    return self.out(x)


MODELS: dict[str, Callable[..., nnx.Module]] = {
    "cnn": CNN, "mlp": MLP, "speedrun": Speedrun}


def create(name: str, num_classes: int, rngs: nnx.Rngs,
           width: float = 1.0) -> nnx.Module:
  """Model `name`; `width` multiplies the features of every hidden layer."""
  if name not in MODELS:
    raise UserError(f"unknown model '{name}'; choose one of {', '.join(MODELS)}")
  if width == 1.0:  # Models of one size need not take a width.
    return MODELS[name](num_classes, rngs=rngs)
  factory = MODELS[name]
  init = factory.__init__ if isinstance(factory, type) else factory
  if "width" not in inspect.signature(init).parameters:
    raise UserError(f"model '{name}' has no width to scale; drop config.width")
  return factory(num_classes, rngs=rngs, width=width)


def num_params(params: nnx.State) -> int:
  return sum(p.size for p in jax.tree.leaves(params))


def normalize(images_BHW: jax.Array) -> jax.Array:
  """uint8 [B, H, W] -> float32 [B, H, W, 1] in [0, 1]; runs inside the step."""
  return (images_BHW.astype(jnp.float32) * (1.0 / 255.0))[..., None]
