"""2x2 pooling as a reshape and a reduction: on XLA:CPU, cheaper gradients
than `reduce_window`'s (benchmarks/README.md, items 3 and 11). Odd sizes drop
their last row or column, as PyTorch's pooling floors.
"""

import jax
import jax.numpy as jnp


def avg_pool_2x2(x_BHWC: jax.Array) -> jax.Array:
  """2x2 average pooling, stride 2, as a reshape and a mean.

  Same result as `nnx.avg_pool(x, (2, 2), (2, 2))` for even H and W, but its
  gradient is a broadcast, where `reduce_window`'s backward pass is slower on
  XLA:CPU (as measured for max pooling: benchmarks/README.md, item 3).
  """
  b, h, w, c = _even(x_BHWC).shape
  return _even(x_BHWC).reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def _even(x_BHWC: jax.Array) -> jax.Array:
  """The even rows and columns' part: an odd last row or column is dropped,
  as PyTorch's pooling floors. (No slice at all for even sizes.)"""
  _, h, w, _ = x_BHWC.shape
  return x_BHWC if not (h % 2 or w % 2) else x_BHWC[:, :h - h % 2, :w - w % 2]


def max_pool_2x2(x_BHWC: jax.Array) -> jax.Array:
  """2x2 max pooling, stride 2, as a reshape and a max (even H and W).

  Same values as `nnx.max_pool(x, (2, 2), (2, 2))`; on XLA:CPU its backward
  pass is cheaper than `reduce_window`'s (measured before the first commit,
  not recorded: benchmarks/README.md, item 3). Its gradient shares each tie
  evenly (reduce-max's own); `max_pool_2x2_first` is faster.
  """
  b, h, w, c = _even(x_BHWC).shape
  return _even(x_BHWC).reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


@jax.custom_vjp
def max_pool_2x2_first(x_BHWC: jax.Array) -> jax.Array:
  """`max_pool_2x2` whose gradient goes to the first maximum of each window
  (row by row), as PyTorch's max_pool2d routes it, in one select.

  reduce-max's own gradient (an indicator, its count and a division, to
  share ties) made the whole speedrun step 1.39 times slower on XLA:CPU
  (benchmarks/results/cpu-cpu/cpu-variants-b256-4dev-xeon-pools2.json).
  Without ties the two are equal. With ties they are different valid
  gradients: where ties are common (pooling after a ReLU, as bn_cnn does),
  float rounding that breaks a tie one way or the other then moves the whole
  gradient, not a share of it, so bn_cnn keeps `max_pool_2x2`.
  """
  return max_pool_2x2(x_BHWC)


def _max_pool_first_fwd(x_BHWC):
  y_BHWC = max_pool_2x2(x_BHWC)  # Odd sizes: see _max_pool_first_bwd.
  return y_BHWC, (x_BHWC, y_BHWC)


def _max_pool_first_bwd(residuals, dy_BHWC):
  full_BHWC, y_BHWC = residuals
  x_BHWC = _even(full_BHWC)  # A dropped row or column gets no gradient.
  b, h, w, c = x_BHWC.shape
  # Windows as [B, H/2, 2, W/2, 2, C]; hit[:, :, i, :, j]: position (i, j)
  # holds its window's maximum.
  hit = x_BHWC.reshape(b, h // 2, 2, w // 2, 2, c) == y_BHWC[:, :, None, :, None]
  h00, h01 = hit[:, :, 0, :, 0], hit[:, :, 0, :, 1]
  h10 = hit[:, :, 1, :, 0]
  first_row = jnp.stack([h00, h01 & ~h00], axis=3)
  second_row = jnp.stack([h10 & ~(h00 | h01), ~(h00 | h01 | h10)], axis=3)
  take = jnp.stack([first_row, second_row], axis=2)
  dx = jnp.where(take, dy_BHWC[:, :, None, :, None], jnp.zeros((), dy_BHWC.dtype))
  dx = dx.reshape(b, h, w, c)
  _, full_h, full_w, _ = full_BHWC.shape
  if (full_h, full_w) != (h, w):
    dx = jnp.pad(dx, ((0, 0), (0, full_h - h), (0, full_w - w), (0, 0)))
  return (dx,)


max_pool_2x2_first.defvjp(_max_pool_first_fwd, _max_pool_first_bwd)
