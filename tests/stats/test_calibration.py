"""Calibration by simulation (seeded): error rates and coverage are what the engine claims."""

from __future__ import annotations

import numpy as np
import pytest

from nextbest.stats import MeanStat, compare

# Thousands of simulated experiments per test.
pytestmark = pytest.mark.slow

EXPERIMENTS = 1000
DAYS = 14
UNITS_PER_DAY = 100  # per arm


def daily_stats(rng: np.random.Generator, effect: float) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (n, Σy, Σy²) per experiment and day for control and treatment, from raw lognormal rows."""
    shape = (EXPERIMENTS, DAYS, UNITS_PER_DAY)
    out = []
    for shift in (0.0, effect):
        y = rng.lognormal(0.0, 0.8, size=shape) + shift
        sums = np.cumsum(y.sum(axis=2), axis=1)
        squares = np.cumsum((y**2).sum(axis=2), axis=1)
        out.append(np.stack([sums, squares], axis=-1))
    return out[0], out[1]


def stat(arm: np.ndarray, experiment: int, day: int) -> MeanStat:
    s, ss = arm[experiment, day]
    return MeanStat(UNITS_PER_DAY * (day + 1), float(s), float(ss))


@pytest.fixture(scope="module")
def null_data() -> tuple[np.ndarray, np.ndarray]:
    return daily_stats(np.random.default_rng(20261123), effect=0.0)


def test_fixed_horizon_false_positive_rate(null_data: tuple[np.ndarray, np.ndarray]) -> None:
    control, treatment = null_data
    hits = sum(
        compare(stat(control, e, DAYS - 1), stat(treatment, e, DAYS - 1)).absolute.p_value < 0.05  # type: ignore[operator]
        for e in range(EXPERIMENTS)
    )
    assert 0.035 <= hits / EXPERIMENTS <= 0.065


def test_sequential_false_positive_rate_with_daily_peeking(null_data: tuple[np.ndarray, np.ndarray]) -> None:
    control, treatment = null_data
    peeking_fixed = peeking_sequential = 0
    for e in range(EXPERIMENTS):
        looks = [(stat(control, e, d), stat(treatment, e, d)) for d in range(DAYS)]
        peeking_fixed += any(compare(c, t).absolute.p_value < 0.05 for c, t in looks)  # type: ignore[operator]
        peeking_sequential += any(
            compare(c, t, sequential=True, tuning=2000).absolute.p_value < 0.05  # type: ignore[operator]
            for c, t in looks
        )
    assert peeking_sequential / EXPERIMENTS <= 0.05
    # The reason sequential intervals exist: peeking at a fixed-horizon test inflates its error rate.
    assert peeking_fixed / EXPERIMENTS > 0.1


def test_intervals_cover_a_known_effect() -> None:
    control, treatment = daily_stats(np.random.default_rng(7), effect=0.15)
    covered = 0
    for e in range(EXPERIMENTS):
        estimate = compare(stat(control, e, DAYS - 1), stat(treatment, e, DAYS - 1)).absolute
        covered += estimate.ci_low <= 0.15 <= estimate.ci_high  # type: ignore[operator]
    assert 0.93 <= covered / EXPERIMENTS <= 0.97
