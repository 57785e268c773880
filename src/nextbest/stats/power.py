"""Planning: power of a two-arm test for a given effect, and the minimum detectable effect.

Normal approximation of the two-sided Welch test: with σ_δ = sqrt(σ²/n_c + σ²/n_t),
power = Φ(|δ|/σ_δ - z) + Φ(-|δ|/σ_δ - z) where z = Φ⁻¹(1 - α/2); the MDE is the δ whose power is the
target, ``(z + Φ⁻¹(power))·σ_δ`` (the far tail's contribution is negligible at useful powers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scipy import stats
else:  # imported on first use (see lazy_scipy)
    from nextbest.stats.lazy_scipy import stats

__all__ = ["PowerResult", "minimum_detectable_effect", "power"]


@dataclass(frozen=True, slots=True)
class PowerResult:
    value: float | None
    relative: float | None
    error: str = ""


def _sigma_delta(variance: float, n_control: int, n_treatment: int) -> float:
    return math.sqrt(variance / n_control + variance / n_treatment)


def power(
    effect: float, variance: float, n_control: int, n_treatment: int, alpha: float = 0.05
) -> PowerResult:
    """Probability that a two-sided test at ``alpha`` detects an absolute ``effect``."""
    if n_control < 2 or n_treatment < 2 or variance <= 0:
        return PowerResult(None, None, "power needs at least 2 units per arm and a positive variance")
    z = float(stats.norm.ppf(1 - alpha / 2))
    shift = abs(effect) / _sigma_delta(variance, n_control, n_treatment)
    return PowerResult(float(stats.norm.cdf(shift - z) + stats.norm.cdf(-shift - z)), None)


def minimum_detectable_effect(
    variance: float,
    n_control: int,
    n_treatment: int,
    *,
    alpha: float = 0.05,
    target_power: float = 0.8,
    baseline_mean: float | None = None,
) -> PowerResult:
    """The smallest absolute effect detected with ``target_power``; relative to ``baseline_mean`` too."""
    if n_control < 2 or n_treatment < 2 or variance <= 0:
        return PowerResult(None, None, "the MDE needs at least 2 units per arm and a positive variance")
    z = float(stats.norm.ppf(1 - alpha / 2)) + float(stats.norm.ppf(target_power))
    mde = z * _sigma_delta(variance, n_control, n_treatment)
    relative = mde / abs(baseline_mean) if baseline_mean else None
    return PowerResult(mde, relative)
