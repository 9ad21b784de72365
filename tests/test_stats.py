import math
import random
import sys

import pytest

from mnist_jax import stats

# t quantiles at 0.975, solved with mpmath at 30 digits (scipy 1.17.1's
# t.ppf agrees to 1e-14); df 1 and 2 also have closed forms, checked below.
# Typed in so the test runs without scipy or mpmath, neither a dependency.
#
# The tolerances below are float64's (eps 2.2e-16, the same on every CPU:
# Python's floats and libm) and stats.py's own accuracy: the continued
# fraction stops at 1e-16 relative, exp(log_front) carries |log_front| eps
# relative, the quantile's bisection stops at 1e-15 relative and promises
# 1e-10.
T975 = {1: 12.706204736174705, 2: 4.302652729749464, 4: 2.7764451051977944,
        10: 2.228138851986275, 30: 2.0422724563012383}


@pytest.mark.parametrize("df", sorted(T975))
def test_t_quantile_known_values(df):
  # A tail good to ~1e-15 over a density of at least 0.002 (df 1, t 12.7):
  # t to ~1e-13.
  assert stats.student_t_quantile(0.975, df) == pytest.approx(T975[df], abs=1e-12)
  assert stats.student_t_quantile(0.025, df) == pytest.approx(-T975[df], abs=1e-12)


def test_t_closed_forms():
  # df=1 is the Cauchy distribution; df=2 has an algebraic CDF.
  for t in (-30.0, -2.5, -0.3, 0.0, 0.7, 4.0, 1e4):
    # Up to 1: 1 - tail rounds to a spacing of 1.1e-16; 1e-15 is 9 of them.
    assert stats.student_t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-15)
    assert stats.student_t_cdf(t, 2) == pytest.approx(
        0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-15)
  for p in (1e-12, 1e-5, 0.01, 0.3, 0.6, 0.975, 0.999):
    # Written with the smaller tail q, which the quantile gets to the digit;
    # 1e-10: the quantile's promise.
    q, sign = min(p, 1 - p), (1 if p > 0.5 else -1)
    assert stats.student_t_quantile(p, 1) == pytest.approx(
        sign / math.tan(math.pi * q), rel=1e-10)
    assert stats.student_t_quantile(p, 2) == pytest.approx(
        sign * (1 - 2 * q) * math.sqrt(2 / (4 * q * (1 - q))), rel=1e-10)


def test_t_tends_to_the_normal():
  # The normal's z plus Cornish-Fisher's first term (z^3 + z) / (4 df) =
  # 2.4e-7 (the next: 3e-14). At df 1e7 the tail's three log-gammas, each
  # near lgamma(df / 2) = 7.2e7, round by eps of that (absolute, in the log:
  # relative in the tail), which moves t by tail / density as much.
  z, df = 1.959963984540054, 1e7
  density = math.exp(-z * z / 2) / math.sqrt(2 * math.pi)
  bound = 3 * math.lgamma(df / 2) * sys.float_info.epsilon * 0.025 / density
  assert stats.student_t_quantile(0.975, df) == pytest.approx(
      z + (z ** 3 + z) / (4 * df), abs=bound)


def test_betainc_closed_forms():
  for x in (1e-9, 0.1, 0.5, 0.77, 0.999):
    # exp(log_front) carries |log_front| eps: a log(1e-9) = -21 for a = 1
    # (5e-15), -73 for a = 3.5 (1.6e-14).
    assert stats.betainc(1, 1, x) == pytest.approx(x, rel=1e-14)
    assert stats.betainc(3.5, 1, x) == pytest.approx(x ** 3.5, rel=1e-13)
    assert stats.betainc(1, 4, x) == pytest.approx(1 - (1 - x) ** 4, rel=1e-13)
  assert stats.betainc(2, 3, 0.0) == 0.0 and stats.betainc(2, 3, 1.0) == 1.0


@pytest.mark.parametrize("df", [1, 2, 3.7, 9, 29, 200])
def test_t_properties(df):
  for t in (-25.0, -12.0, -1.3, -0.01, 0.0, 0.4, 2.2, 4.0):
    cdf = stats.student_t_cdf(t, df)
    # Symmetry: 1 - cdf rounds once, to at most 1.1e-16.
    assert stats.student_t_cdf(-t, df) == pytest.approx(1 - cdf, abs=1e-15)
    # Far in the upper tail a float p near 1 has too few digits to give t
    # back to 1e-10 (the lower tail keeps them), hence t <= 4 above 0.
    assert stats.student_t_quantile(cdf, df) == pytest.approx(t, abs=1e-10)
  cdfs = [stats.student_t_cdf(t, df) for t in (-5, -1, 0, 1, 5)]
  assert cdfs == sorted(cdfs) and cdfs[2] == 0.5


def test_t_bad_arguments():
  for p in (0.0, 1.0, -0.1, 1.5):
    with pytest.raises(ValueError, match="p must be in"):
      stats.student_t_quantile(p, 3)
  with pytest.raises(ValueError, match="degrees of freedom"):
    stats.student_t_cdf(1.0, 0)


def test_t_against_scipy():
  scipy_stats = pytest.importorskip("scipy.stats")
  rng = random.Random(0)
  for _ in range(200):
    df, t, p = rng.uniform(0.5, 80), rng.uniform(-20, 20), rng.uniform(1e-6, 1 - 1e-6)
    # |log_front| up to ~70 here: ~1.6e-14 relative on either side.
    assert stats.student_t_cdf(t, df) == pytest.approx(scipy_stats.t.cdf(t, df), abs=1e-13)
    assert stats.student_t_quantile(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-10)


def test_summary():
  s = stats.summary([0.981, 0.979])
  assert (s["n"], s["min"], s["max"]) == (2, 0.979, 0.981)
  # A correctly rounded mean: within an ulp (1.1e-16) of 0.98. Deviations of
  # 1e-3 from values near 1 keep 1e-13 of their digits: the std to 1e-12.
  assert s["mean"] == pytest.approx(0.98, abs=1e-15)
  assert s["std"] == pytest.approx(math.sqrt(2e-6), rel=1e-12)  # ddof=1, not ddof=0 (1e-3).
  # mean +- t(0.975, 1) * std / sqrt(2), as scipy.stats.t.interval gives: the
  # mean's ulp, and t to ~1e-15 relative times 1e-2.
  assert s["ci95"] == pytest.approx([0.9672937952638253, 0.9927062047361747], abs=1e-14)
  s = stats.summary([0.97, 0.972, 0.971, 0.975, 0.968])
  half = T975[4] * s["std"] / math.sqrt(5)
  # The same formula with the typed quantile: an ulp of the mean (1.1e-16).
  assert s["ci95"] == pytest.approx([s["mean"] - half, s["mean"] + half], abs=1e-15)
  one = stats.summary([0.5])
  assert one == {"n": 1, "mean": 0.5, "std": 0.0, "ci95": None, "min": 0.5, "max": 0.5}
  with pytest.raises(ValueError):
    stats.summary([])


# Welch p-values from scipy 1.17.1: scipy.stats.ttest_ind(a, b, equal_var=False).pvalue.
WELCH = [
    ([0.9712, 0.9698, 0.9731], [0.9654, 0.9671, 0.9649, 0.9660], 0.014259158829447545),
    ([0.981, 0.979], [0.975, 0.983, 0.977], 0.5740099796916893),
]


@pytest.mark.parametrize("a, b, p", WELCH)
def test_welch_known_values(a, b, p):
  # A betainc at the Welch df (~1e-14 relative, as above) on both sides.
  assert stats.welch(a, b) == pytest.approx(p, rel=1e-12)
  assert stats.welch(b, a) == pytest.approx(p, rel=1e-12)  # Two-sided.


def test_welch_is_not_students_pooled_test():
  # Unequal sizes and variances: the pooled-variance test gives 0.0456 here
  # (scipy, equal_var=True); Welch's gives 0.180.
  a, b = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], [5.0, 9.0, 13.0]
  assert stats.welch(a, b) == pytest.approx(0.18004966910949508, rel=1e-12)


def test_welch_against_scipy():
  scipy_stats = pytest.importorskip("scipy.stats")
  rng = random.Random(1)
  for _ in range(50):
    a = [rng.gauss(0.97, 0.003) for _ in range(rng.randint(2, 6))]
    b = [rng.gauss(0.972, rng.uniform(0.0005, 0.01)) for _ in range(rng.randint(2, 6))]
    expected = scipy_stats.ttest_ind(a, b, equal_var=False).pvalue
    # Far tails: p's relative digits follow t's, which the data's own
    # rounding moves by up to ~1e-12 relative; tiny p, 1e-15 absolute.
    assert stats.welch(a, b) == pytest.approx(expected, rel=1e-10, abs=1e-15)


def test_welch_edge_cases():
  assert stats.welch([0.9], [0.8, 0.85]) is None  # One value has no variance.
  assert stats.welch([0.8, 0.85], [0.9]) is None
  assert stats.welch([0.9, 0.9], [0.9, 0.9, 0.9]) == 1.0  # Identical: no difference.
  assert stats.welch([0.9, 0.9], [0.8, 0.8]) == 0.0  # Noiseless and apart.
  # One sample without variance still has a finite test (df from the other).
  p = stats.welch([0.9, 0.9, 0.9], [0.88, 0.9, 0.91])
  assert 0.0 < p < 1.0
  assert stats.welch([0.1, 0.2, 0.3], [0.1, 0.2, 0.3]) == 1.0
  # Shifting both samples does not change the test: + 5 rounds each value by
  # up to 4.4e-16 against spreads of 1e-3 (4e-13 relative), which the
  # p-value's slope (|d log p / d log t| ~ 10 here) turns into ~1e-11.
  a, b = WELCH[0][:2]
  assert stats.welch([x + 5 for x in a], [x + 5 for x in b]) == pytest.approx(
      WELCH[0][2], rel=1e-9)
