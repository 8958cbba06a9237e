"""Statistics of the leaderboard: Student t (scipy or an own incomplete beta), mean +- CI over seeds,
the paired t-test."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

CONFIDENCE = 0.95


class _StudentT:
    """Student t distribution: scipy.stats when installed, else the regularised incomplete beta
    function (continued fraction, Numerical Recipes 6.4), which agrees with scipy to ~1e-12."""

    def __init__(self) -> None:
        try:
            from scipy import stats
        except ImportError:  # pragma: no cover - exercised by tests through the fallback functions
            stats = None
        self._scipy = stats

    def ppf(self, q: float, df: float) -> float:
        if self._scipy is not None:
            return float(self._scipy.t.ppf(q, df))
        return t_ppf(q, df)

    def two_sided_p(self, t: float, df: float) -> float:
        if self._scipy is not None:
            return float(2.0 * self._scipy.t.sf(abs(t), df))
        return t_two_sided_p(t, df)


def _betacf(a: float, b: float, x: float) -> float:
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for T ~ Student t with df degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def t_cdf(t: float, df: float) -> float:
    tail = 0.5 * t_two_sided_p(t, df)
    return 1.0 - tail if t >= 0 else tail


def t_ppf(q: float, df: float) -> float:
    """Quantile of Student t (bisection on the cdf; q in (0, 1))."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile {q} outside (0, 1)")
    if q < 0.5:
        return -t_ppf(1.0 - q, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < q:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


STUDENT_T = _StudentT()


def _num(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


@dataclass
class Stat:
    """A metric over seeds: mean +- half-width of the 95% confidence interval."""

    values: dict[int, float]  # seed -> value (finite values only)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.values.values()))) if self.values else math.nan

    @property
    def sd(self) -> float:
        return float(np.std(list(self.values.values()), ddof=1)) if self.n >= 2 else math.nan

    @property
    def ci95(self) -> float:
        """t_{0.975, n-1} * sd / sqrt(n); NaN for fewer than two seeds."""
        if self.n < 2:
            return math.nan
        return STUDENT_T.ppf(0.5 + CONFIDENCE / 2, self.n - 1) * self.sd / math.sqrt(self.n)

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "mean": _num(self.mean), "sd": _num(self.sd), "ci95": _num(self.ci95),
                "values": {str(seed): value for seed, value in sorted(self.values.items())}}


@dataclass
class Paired:
    """Paired t-test of a row against the reference row on the seeds both have."""

    n: int
    delta: float  # mean of (row - reference)
    t: float
    p: float  # two-sided; NaN when n < 2

    def to_json(self) -> dict[str, Any]:
        return {"n_pairs": self.n, "delta": _num(self.delta), "t": _num(self.t), "p": _num(self.p)}


def paired_t_test(a: dict[int, float], b: dict[int, float]) -> Paired:
    """Two-sided paired t-test of a vs b over the seeds in both (finite values).

    t = mean(d) / (sd(d) / sqrt(n)), d = a - b per seed, df = n - 1. Identical results on every seed
    give p = 1; a constant non-zero difference gives p = 0 (t is infinite). Fewer than 2 pairs: p = NaN.
    """
    seeds = sorted(set(a) & set(b))
    d = np.array([a[s] - b[s] for s in seeds], dtype=float)
    n = len(d)
    if n == 0:
        return Paired(0, math.nan, math.nan, math.nan)
    delta = float(d.mean())
    if n < 2:
        return Paired(n, delta, math.nan, math.nan)
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        return Paired(n, delta, 0.0 if delta == 0 else math.copysign(math.inf, delta), 1.0 if delta == 0 else 0.0)
    t = delta / (sd / math.sqrt(n))
    return Paired(n, delta, t, STUDENT_T.two_sided_p(t, n - 1))
