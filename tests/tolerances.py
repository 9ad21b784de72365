"""Tolerances derived from what a test compares, so that each one reads as its reason.

float32: eps = 2**-23 (about 1.19e-7), twice the unit roundoff u = 2**-24. A
sum of n terms, in any order, is within (n - 1) * u * sum|terms| of the exact
sum (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., 4.2);
two orders of it (another device split, another blocking or vector width,
as on another CPU) so differ by at most n * eps * sum|terms|.
These are worst cases over every order, hence hold on every CPU; a test
that needs one bound for several machines takes these, never a number that
one machine happened to meet.
"""

import math

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)  # 2**-23.


def float32_sum(n_terms: int, abs_sum: float) -> float:
  """The most two float32 sums of the same `n_terms` terms, in different
  orders, can differ by; `abs_sum` is the sum of the terms' magnitudes (for a
  mean, their mean magnitude). A value computed through a chain of sums
  counts the terms of them all (the relative errors add, to first order)."""
  return n_terms * EPS32 * abs_sum


def float32_relative(n_ops: int = 1) -> float:
  """Relative error of a float32 result after `n_ops` correctly rounded
  operations on exact inputs: each may be off by u = eps / 2; eps each
  when two such results, each with its own rounding, are compared."""
  return n_ops * EPS32


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
