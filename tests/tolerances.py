"""Tolerances derived from what a test compares, so that each one reads as its reason.

float32: eps = 2**-23 (about 1.19e-7), twice the unit roundoff u = 2**-24. A
sum of n terms, in any order, is within (n - 1) * u * sum|terms| of the exact
sum (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., 4.2);
two orders of it (another device split, another blocking or vector width,
as on another CPU) so differ by at most n * eps * sum|terms|.
That, and a float32 or float64 result's own roundings, are worst cases
over every order, hence hold on every CPU. Through a chain (a model's
layers, a run's steps) the bounds here are first order, each rounding taken
relative to the size of what is compared; each names what it leaves out.
A test that needs one bound for several machines takes these, never a
number that one machine happened to meet.
"""

import math

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)  # 2**-23.
EPS64 = float(np.finfo(np.float64).eps)  # 2**-52: Python floats.


def float32_sum(n_terms: int, abs_sum: float) -> float:
  """The most two float32 sums of the same `n_terms` terms, in different
  orders, can differ by; `abs_sum` is the sum of the terms' magnitudes (for a
  mean, their mean magnitude). A value computed through a chain of sums
  counts the terms of them all (the relative errors add, to first order)."""
  return n_terms * EPS32 * abs_sum


def assert_within(got, want, bound, what: str = ""):
  """|got - want| <= bound elementwise (bound broadcasts), with the worst
  offender in the message."""
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  excess = np.abs(got - want) - np.asarray(bound, np.float64)
  worst = np.unravel_index(np.argmax(excess), excess.shape) if excess.ndim else ()
  assert (excess <= 0).all(), (
      f"{what} {np.sum(excess > 0)} of {excess.size} beyond their bound; worst at "
      f"{worst}: {got[worst]} vs {want[worst]}, bound "
      f"{np.broadcast_to(bound, excess.shape)[worst]}")


def float64_sum(n_terms: int, abs_sum: float) -> float:
  """`float32_sum` for float64 (Python floats, numpy's default)."""
  return n_terms * EPS64 * abs_sum


def float32_relative(n_ops: int = 1) -> float:
  """Relative error of a float32 result after `n_ops` correctly rounded
  operations on exact inputs: each may be off by u = eps / 2; eps each
  when two such results, each with its own rounding, are compared."""
  return n_ops * EPS32


def float32_steps(steps: int, n_terms: int, magnitude: float) -> float:
  """Two runs of `steps` training steps that differ only in the order of
  sums of at most `n_terms` terms (another device split, a scan or not):
  to first order each step adds one such rounding, relative to what the
  step moves (a gradient passes its relative error on to its update, with
  Adam's normalisation too), so they differ by at most steps *
  float32_sum(n_terms, magnitude), `magnitude` the most one step moves what
  is compared (a parameter: about lr with Adam; a loss: less than itself).
  First order only: a gradient within rounding of zero, or a ReLU or
  max-pool decision that rounds the other way, moves a whole term instead
  (with Adam up to 2 lr, `adam_steps`)."""
  return steps * float32_sum(n_terms, magnitude)


def sums_of(params, batch: int = 0, positions: int = 0,
            backward: bool = True) -> int:
  """The terms of the longest chain of sums through a model with `params`:
  each layer sums its fan-in forward and (`backward`) its fan-out back
  (kernels are [..., in, out]); a kernel's gradient adds `batch` x
  `positions` terms (a convolution's output positions; 1 for a dense layer)."""
  kernels = [k for k in _leaves(params) if k.ndim >= 2]
  return (sum(math.prod(k.shape[:-1])
              + backward * math.prod(k.shape[:-2]) * k.shape[-1] for k in kernels)
          + batch * max(positions, 1))


def _leaves(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def mean_loss(loss: float, n_examples: int, params, num_classes: int) -> float:
  """Two float32 evaluations of the same model's mean loss over
  `n_examples` (another program, batch or device count): a sum over the
  examples, each loss through the model's sums (`sums_of`, forward) and a
  log-sum-exp over the classes; first order, with a loss's rounding taken
  relative to it (cross-entropy is positive)."""
  return float32_sum(n_examples + sums_of(params, backward=False) + num_classes,
                     abs(loss))


def onecycle(peak: float) -> float:
  """The most optim.onecycle_schedule's float32 rate can be off from the
  exact one, absolutely: x = pi / 2 * pct carries 3 roundings (|dx| <=
  3 u pi / 2, u = eps / 2), cos(x)^2 moves by at most |dx| (its slope is at
  most 1) and takes a few roundings of its own, and the rate is start * w +
  end * (1 - w) with both ends at most `peak`. (A relative tolerance would
  not do: near the end the rate falls to peak / 25e4.)"""
  return peak * (3 * math.pi / 4 + 3) * EPS32


def sample_mean(n: int, std: float, sigmas: float = 5.0) -> float:
  """How far the mean of `n` independent draws of standard deviation `std`
  may fall from its expectation: `sigmas` standard errors (5: exceeded
  with probability under 6e-7). Draws from a fixed key are the same on every
  CPU, so this only decides how sharp a test of a distribution can be."""
  return sigmas * std / math.sqrt(n)


def adam_step_bound(step: int, b1: float = 0.9, b2: float = 0.999) -> float:
  """The most |m_hat / sqrt(v_hat)| can be at Adam's step `step` (from 1),
  whatever the gradients: m_hat = sum w_i g_i and v_hat = sum v_i g_i^2 with
  the bias-corrected weights below, so by Cauchy-Schwarz |m_hat| <=
  sqrt(sum w_i^2 / v_i) sqrt(v_hat). About 1 for the first steps (1.0013 at
  step 2): a step moves each parameter by at most about lr, however small
  its gradient, so a rounding difference in a near-zero gradient may flip
  that move's sign."""
  total = 0.0
  for i in range(1, step + 1):
    w = (1 - b1) * b1 ** (step - i) / (1 - b1 ** step)
    v = (1 - b2) * b2 ** (step - i) / (1 - b2 ** step)
    total += w * w / v
  return math.sqrt(total)


def adam_steps(lr: float, steps: int, b1: float = 0.9, b2: float = 0.999) -> float:
  """The most two runs' parameters can differ by after `steps` Adam steps of
  rate at most `lr` from the same start: each step moves each of them by at
  most lr * adam_step_bound, in opposite directions in the worst case."""
  return sum(2 * lr * adam_step_bound(t, b1, b2) for t in range(1, steps + 1))


def logits(logits_BK, params) -> np.ndarray:
  """Per image [B, 1], the most two float32 evaluations of a model's logits
  may differ by (two programs for it: jit and an export, or two batch
  sizes): each logit passes through the model's sums (`sums_of`, forward;
  plus 1024 for the pools, a global mean of at most 28 x 28 and batch norm's
  handful of operations), each rounding taken relative to the image's
  largest logit (first order). Where a layer's terms cancel, a rounding
  weighs more (up to |W_L| ... |W_1| |x| over |W_L ... W_1 x|), but
  independent roundings add as a random walk, far below n of them."""
  magnitude = np.abs(np.asarray(logits_BK, np.float64)).max(-1, keepdims=True)
  return float32_sum(sums_of(params, backward=False) + 1024, magnitude)


def probabilities(probs_BK, logits_bound_B1) -> np.ndarray:
  """Elementwise, the most softmax probabilities may move when their logits
  move by at most `logits_bound_B1` each (`logits`): p_k exp(dz_k - sum_j
  p_j dz_j) moves p_k by at most 2 p_k max|dz| (first order), plus the
  softmax's own roundings (an exp, a sum of K, a division: K + 2)."""
  probs_BK = np.asarray(probs_BK, np.float64)
  own = float32_relative(probs_BK.shape[-1] + 2)
  return probs_BK * (2 * np.asarray(logits_bound_B1) + own)


def stored32(value):
  """pytest.approx of `value` (a number or a list) after a float32 store (an
  event file, an optimizer state): one rounding, relative u = eps / 2."""
  import pytest  # pylint: disable=g-import-not-at-top
  return pytest.approx(value, rel=float32_relative(1))
