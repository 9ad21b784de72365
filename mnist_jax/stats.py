"""Small-sample statistics for comparing runs over seeds: Student t, Welch.

Pure Python (`math`): scipy is not a dependency, and jax's `betainc` computes
in float32 unless x64 is on, too coarse to invert a CDF to 1e-10. The
regularized incomplete beta function is the continued fraction of Numerical
Recipes (3rd ed., 6.4) evaluated with the modified Lentz method.
"""

import math
import statistics
from collections.abc import Sequence
from typing import Any

_EPS = 1e-16  # Relative accuracy the continued fraction stops at.
_TINY = 1e-300  # Keeps Lentz's denominators away from zero.


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
  """The continued fraction of I_x(a, b); converges fast for x < (a+1)/(a+b+2)."""
  qab, qap, qam = a + b, a + 1.0, a - 1.0
  c, d = 1.0, 1.0 - qab * x / qap
  d = 1.0 / (d if abs(d) > _TINY else _TINY)
  h = d
  for m in range(1, 10_000):
    m2 = 2 * m
    for numerator in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                      -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
      d = 1.0 + numerator * d
      d = 1.0 / (d if abs(d) > _TINY else _TINY)
      c = 1.0 + numerator / c
      c = c if abs(c) > _TINY else _TINY
      h *= d * c
    if abs(d * c - 1.0) < _EPS:
      return h
  raise ArithmeticError(f"incomplete beta did not converge at a={a}, b={b}, x={x}")


def betainc(a: float, b: float, x: float) -> float:
  """The regularized incomplete beta function I_x(a, b), for a, b > 0."""
  if not 0.0 <= x <= 1.0:
    raise ValueError(f"betainc: x must be in [0, 1], got {x}")
  if x in (0.0, 1.0):
    return x
  log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
               + a * math.log(x) + b * math.log1p(-x))
  # The fraction converges on one side of the mean; the symmetry
  # I_x(a, b) = 1 - I_{1-x}(b, a) covers the other.
  if x < (a + 1.0) / (a + b + 2.0):
    return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
  return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def _check_df(df: float):
  if not df > 0:
    raise ValueError(f"degrees of freedom must be positive, got {df}")


def student_t_tail(t: float, df: float) -> float:
  """P(T > |t|), one tail, computed directly so that tiny tails keep their digits."""
  _check_df(df)
  if math.isinf(t):
    return 0.0
  return 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))


def student_t_cdf(t: float, df: float) -> float:
  """P(T <= t) for Student's t with `df` (> 0, not necessarily whole) degrees of freedom."""
  tail = student_t_tail(t, df)
  return 1.0 - tail if t > 0 else tail


def student_t_quantile(p: float, df: float) -> float:
  """The t with student_t_cdf(t, df) == p, for 0 < p < 1, to 1e-10 or better.

  Bisection on the tail: it is monotone, so this cannot diverge the way
  Newton's method can in the heavy tails of small df. Below 0.5 the lower
  tail is p itself, so tiny p keep their digits (1 - p would lose them).
  """
  _check_df(df)
  if not 0.0 < p < 1.0:
    raise ValueError(f"student_t_quantile: p must be in (0, 1), got {p}")
  if p == 0.5:
    return 0.0
  if p < 0.5:
    return -_upper_quantile(p, df)
  return _upper_quantile(1.0 - p, df)


def _upper_quantile(tail: float, df: float) -> float:
  """The t > 0 with P(T > t) == tail, for 0 < tail < 0.5."""
  low, high = 0.0, 1.0
  while student_t_tail(high, df) > tail:
    low, high = high, 2.0 * high
  # Relative width 1e-15: far below the 1e-10 asked, in about 50 halvings.
  while high - low > 1e-15 * high:
    middle = 0.5 * (low + high)
    if middle in (low, high):
      break
    if student_t_tail(middle, df) > tail:
      low = middle
    else:
      high = middle
  return 0.5 * (low + high)


def summary(values: Sequence[float]) -> dict[str, Any]:
  """n, mean, sample std (ddof=1; 0 for one value), the 95% Student t
  interval of the mean ([low, high]; None for fewer than 2 values), min, max."""
  values = [float(v) for v in values]
  n = len(values)
  if n == 0:
    raise ValueError("summary of no values")
  mean = statistics.fmean(values)
  std = statistics.stdev(values) if n > 1 else 0.0
  ci95 = None
  if n > 1:
    half = student_t_quantile(0.975, n - 1) * std / math.sqrt(n)
    ci95 = [mean - half, mean + half]
  return {"n": n, "mean": mean, "std": std, "ci95": ci95,
          "min": min(values), "max": max(values)}


def welch(a: Sequence[float], b: Sequence[float]) -> float | None:
  """Two-sided p-value of Welch's t-test that `a` and `b` have equal means
  (unequal variances; Welch-Satterthwaite degrees of freedom).

  None when either sample has fewer than 2 values (no variance to test with).
  When both samples have zero variance the statistic is 0/0; the p-value
  returned is its limit: 1.0 when the means are equal (nothing differs) and
  0.0 when they differ (every value of one sample beats every value of the
  other, without any noise to explain it).
  """
  a, b = [float(v) for v in a], [float(v) for v in b]
  if len(a) < 2 or len(b) < 2:
    return None
  mean_a, mean_b = statistics.fmean(a), statistics.fmean(b)
  se2_a = statistics.variance(a) / len(a)
  se2_b = statistics.variance(b) / len(b)
  se2 = se2_a + se2_b
  if se2 == 0.0:
    return 1.0 if mean_a == mean_b else 0.0
  t = (mean_a - mean_b) / math.sqrt(se2)
  df = se2 * se2 / (se2_a * se2_a / (len(a) - 1) + se2_b * se2_b / (len(b) - 1))
  return min(1.0, 2.0 * student_t_tail(t, df))
