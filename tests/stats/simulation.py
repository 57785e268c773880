"""Seeded simulated experiments with a known true lift, as sufficient statistics built from raw rows;
shared by the calibration tests and ``benchmarks/bench_calibration.py`` (which runs them at full size).

Each kind draws unit-level data for the control and, with every unit's value scaled by ``1 + lift``
(a multiplicative effect), for the treatment, so the true relative lift is ``lift`` and the true absolute
lift is ``lift`` × the control's population mean.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from nextbest.stats import CupedStat, MeanStat, ProportionStat, RatioStat, Statistic, compare
from nextbest.stats.frequentist import Comparison

__all__ = ["KINDS", "Coverage", "coverage", "experiments"]

Pair = tuple[Statistic, Statistic]


def _mean(y: np.ndarray) -> MeanStat:
    return MeanStat(y.shape[-1], float(y.sum()), float((y * y).sum()))


def _proportion(rng: np.random.Generator, n: int, lift: float) -> tuple[Pair, float]:
    """Conversion at 20 % in the control."""
    p = 0.2
    c = ProportionStat(n, float(rng.binomial(n, p)))
    t = ProportionStat(n, float(rng.binomial(n, p * (1 + lift))))
    return (c, t), p


def _lognormal(rng: np.random.Generator, n: int, lift: float) -> tuple[Pair, float]:
    """Revenue-like, right-skewed: lognormal(0, 1)."""
    c = rng.lognormal(0.0, 1.0, size=n)
    t = rng.lognormal(0.0, 1.0, size=n) * (1 + lift)
    return (_mean(c), _mean(t)), math.exp(0.5)


def _cuped(rng: np.random.Generator, n: int, lift: float) -> tuple[Pair, float]:
    """y = 2 + x + noise with x ~ gamma(2, 2) the same metric before exposure (correlation ≈ 0.94)."""

    def arm(scale: float) -> CupedStat:
        x = rng.gamma(2.0, 2.0, size=n)
        y = (2.0 + x + rng.normal(0.0, 1.0, size=n)) * scale
        return CupedStat(_mean(y), _mean(x), float((x * y).sum()))

    return (arm(1.0), arm(1 + lift)), 2.0 + 4.0


def _cuped_additive(rng: np.random.Generator, n: int, lift: float) -> tuple[Pair, float]:
    """As ``_cuped``, the treatment adding ``lift`` × the control mean to every unit: the case where the
    delta method without the covariance of the adjusted means covered 89 % (issue 21)."""

    def arm(shift: float) -> CupedStat:
        x = rng.gamma(2.0, 2.0, size=n)
        y = 2.0 + x + rng.normal(0.0, 1.0, size=n) + shift
        return CupedStat(_mean(y), _mean(x), float((x * y).sum()))

    return (arm(0.0), arm(lift * 6.0)), 6.0


def _ratio(rng: np.random.Generator, n: int, lift: float) -> tuple[Pair, float]:
    """Revenue per order: orders ~ 1 + Poisson(1), revenue = orders × gamma(3, 15) per unit."""

    def arm(scale: float) -> RatioStat:
        orders = 1.0 + rng.poisson(1.0, size=n)
        revenue = orders * rng.gamma(3.0, 15.0, size=n) * scale
        return RatioStat(_mean(revenue), _mean(orders), float((revenue * orders).sum()))

    return (arm(1.0), arm(1 + lift)), 45.0


Draw = Callable[[np.random.Generator, int, float], tuple[Pair, float]]
KINDS: dict[str, tuple[Draw, bool]] = {
    "proportion": (_proportion, False),
    "mean": (_lognormal, False),
    "cuped": (_cuped, True),
    "cuped-additive": (_cuped_additive, True),
    "ratio": (_ratio, False),
}


def experiments(kind: str, n: int, lift: float, count: int, seed: int) -> Iterator[tuple[Comparison, float]]:
    """``count`` comparisons of ``n`` units per arm, with the true control mean."""
    draw, cuped = KINDS[kind]
    rng = np.random.default_rng(seed)
    for _ in range(count):
        (c, t), truth = draw(rng, n, lift)
        yield compare(c, t, cuped=cuped), truth


@dataclass(frozen=True, slots=True)
class Coverage:
    """Shares of experiments whose 95 % interval covered the truth; for the relative lift the engine's
    (Fieller's) interval and, for comparison, the delta method's and the delta method's on the log scale.
    ``positives``: shares whose p-value was below 0.05 (the false-positive rate when lift is 0)."""

    absolute: float
    relative: float
    relative_delta: float
    relative_log: float
    positives: float
    count: int


def coverage(kind: str, n: int, lift: float, count: int, seed: int) -> Coverage:
    hits = [0, 0, 0, 0, 0]
    for result, control_mean in experiments(kind, n, lift, count, seed):
        a, r = result.absolute, result.relative
        assert a.ci_low is not None and a.ci_high is not None and a.p_value is not None
        hits[0] += a.ci_low <= lift * control_mean <= a.ci_high
        if r.ci_low is not None and r.ci_high is not None:
            hits[1] += r.ci_low <= lift <= r.ci_high
        assert r.value is not None and r.standard_error is not None and result.degrees_of_freedom
        q = a.ci_high - a.value if a.value is not None else 0.0
        q /= a.standard_error or 1.0
        half = q * r.standard_error
        hits[2] += r.value - half <= lift <= r.value + half
        ratio, log_half = 1 + r.value, q * r.standard_error / (1 + r.value)
        hits[3] += ratio * math.exp(-log_half) - 1 <= lift <= ratio * math.exp(log_half) - 1
        hits[4] += a.p_value < 0.05
    return Coverage(*(h / count for h in hits), count=count)


def peeking(count: int, seed: int, days: int = 14, per_day: int = 100) -> tuple[float, float]:
    """A/A experiments looked at daily (``per_day`` lognormal units per arm each day): the shares in
    which any look was significant at 0.05 with fixed-horizon and with sequential (tuning 2,000) tests."""
    rng = np.random.default_rng(seed)
    fixed = sequential = 0
    for _ in range(count):
        y = rng.lognormal(0.0, 0.8, size=(2, days, per_day))
        sums, squares = np.cumsum(y.sum(axis=2), axis=1), np.cumsum((y * y).sum(axis=2), axis=1)
        looks = [
            tuple(MeanStat(per_day * (d + 1), float(sums[arm, d]), float(squares[arm, d])) for arm in (0, 1))
            for d in range(days)
        ]
        fixed += any((compare(c, t).absolute.p_value or 1.0) < 0.05 for c, t in looks)
        sequential += any(
            (compare(c, t, sequential=True, tuning=2000).absolute.p_value or 1.0) < 0.05 for c, t in looks
        )
    return fixed / count, sequential / count
