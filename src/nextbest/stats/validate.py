"""What makes sufficient statistics possible: every violation named by its key, before any arithmetic.

Real data satisfy Σy² ≥ (Σy)²/n (a variance is never negative) and, for two values per unit,
(Σ(x - x̄)(y - ȳ))² ≤ Σ(x - x̄)²·Σ(y - ȳ)² (Cauchy–Schwarz); a proportion's conversions lie in [0, n].
Sums that break these cannot come from any data, and used anyway they are clamped into a variance of
zero and a confident, wrong result. Magnitudes are bounded so that no square or product overflows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from nextbest.stats.statistics import CupedStat, MeanStat, ProportionStat, Statistic

__all__ = ["MAX_MAGNITUDE", "MAX_UNITS", "statistic_problems", "weight_problems"]

# Every sum's absolute value stays below this (so a square or product of two stays below 1e200) and
# every count below MAX_UNITS (exactly representable as a float).
MAX_MAGNITUDE = 1e100
MAX_UNITS = 2**53
# Rounding in sums accumulated in floating point: relative slack allowed in the constraints above.
_SLACK = 1e-9


def _number(key: str, value: float) -> list[tuple[str, str]]:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return [(key, f"must be a number, not {type(value).__name__}")]
    if not math.isfinite(value):
        return [(key, f"must be a finite number, not {value}")]
    if abs(value) > MAX_MAGNITUDE:
        return [(key, f"{value:g} is too large (at most {MAX_MAGNITUDE:g} in absolute value)")]
    return []


def _mean_problems(s: MeanStat, prefix: str = "") -> list[tuple[str, str]]:
    """``prefix`` names the value in the input keys: "" (sum, sum_squares), "pre_", "denominator_"."""
    problems = _number(f"{prefix}sum", s.sum) + _number(f"{prefix}sum_squares", s.sum_squares)
    if problems or s.n == 0:
        return problems
    if s.sum_squares < 0:
        return [(f"{prefix}sum_squares", "must not be negative")]
    if s.sum_squares - s.sum * (s.sum / s.n) < -_SLACK * s.sum_squares:
        return [
            (
                f"{prefix}sum_squares",
                f"{s.sum_squares:g} is less than {prefix}sum²/n = {s.sum * (s.sum / s.n):g}: "
                "no data have a negative variance",
            )
        ]
    return []


def _cross_problems(key: str, x: MeanStat, y: MeanStat, products: float) -> list[tuple[str, str]]:
    problems = _number(key, products)
    if problems or x.n == 0:
        return problems
    sxx = max(x.sum_squares - x.sum * (x.sum / x.n), 0.0)
    syy = max(y.sum_squares - y.sum * (y.sum / y.n), 0.0)
    sxy = products - x.sum * (y.sum / x.n)
    bound = math.sqrt(sxx) * math.sqrt(syy) + _SLACK * math.sqrt(x.sum_squares) * math.sqrt(y.sum_squares)
    if abs(sxy) > bound:
        return [(key, f"{products:g} implies a correlation beyond ±1 (Cauchy–Schwarz): no data give it")]
    return []


def statistic_problems(s: Statistic) -> list[tuple[str, str]]:
    """(key, problem) for each impossible or unsafe value of one arm's statistic; keys are those of
    ``nextbest stats`` input (n, sum, sum_squares, pre_sum, …)."""
    n = s.n
    if isinstance(n, bool) or not isinstance(n, int):
        return [("n", f"must be an integer, not {type(n).__name__}")]
    if not 0 <= n <= MAX_UNITS:
        return [("n", f"must be between 0 and {MAX_UNITS}, not {n}")]
    if isinstance(s, ProportionStat):
        problems = _number("sum", s.sum)
        if not problems and not 0 <= s.sum <= n:
            problems.append(("sum", f"conversions must be between 0 and n = {n}, not {s.sum:g}"))
        return problems
    if isinstance(s, MeanStat):
        return _mean_problems(s)
    if isinstance(s, CupedStat):
        problems = _mean_problems(s.post) + _mean_problems(s.pre, "pre_")
        if s.pre.n != n:
            problems.append(("n", f"the covariate counts {s.pre.n} units, the metric {n}"))
        if problems:
            return problems
        return _cross_problems("sum_of_products", s.pre, s.post, s.post_pre_sum_of_products)
    # A RatioStat.
    problems = _mean_problems(s.m) + _mean_problems(s.d, "denominator_")
    if s.d.n != n:
        problems.append(("n", f"the denominator counts {s.d.n} units, the numerator {n}"))
    if problems:
        return problems
    return _cross_problems("sum_of_products", s.d, s.m, s.m_d_sum_of_products)


def weight_problems(weights: Mapping[str, float]) -> list[tuple[str, str]]:
    """(arm, problem) for weights that are not finite and positive."""
    problems: list[tuple[str, str]] = []
    for arm, weight in weights.items():
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            problems.append((arm, f"must be a number, not {type(weight).__name__}"))
        elif not math.isfinite(weight) or not 0 < weight <= MAX_MAGNITUDE:
            problems.append((arm, f"must be a finite positive number, not {weight}"))
    return problems
