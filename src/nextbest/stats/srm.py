"""Sample-ratio mismatch: do the units per arm match the configured weights?

Pearson's chi-squared goodness-of-fit test of the observed unit counts against the counts the weights
imply; an alarm below p = 0.001 (the threshold GrowthBook and most experimentation platforms use), which
means the assignment or the logging is broken and the experiment's results cannot be trusted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scipy import stats
else:  # imported on first use (see lazy_scipy)
    from nextbest.stats.lazy_scipy import stats

__all__ = ["SRM_ALARM_P", "SrmResult", "srm_check"]

SRM_ALARM_P = 0.001


@dataclass(frozen=True, slots=True)
class SrmResult:
    chi2: float
    p_value: float
    total: int
    alarm: bool
    error: str = ""


def srm_check(counts: Mapping[str, int], weights: Mapping[str, float]) -> SrmResult:
    """``counts`` and ``weights`` by arm id; arms missing from ``counts`` had no units."""
    arms = list(weights)
    observed = [float(counts.get(arm, 0)) for arm in arms]
    total = int(sum(observed))
    unknown = set(counts) - set(arms)
    if unknown:
        return SrmResult(float("nan"), float("nan"), total, True, f"units in unknown arms: {sorted(unknown)}")
    if total == 0 or len(arms) < 2:
        return SrmResult(0.0, 1.0, total, False, "no units yet" if total == 0 else "fewer than two arms")
    weight_sum = sum(weights.values())
    expected = [total * weights[arm] / weight_sum for arm in arms]
    chi2, p_value = stats.chisquare(observed, expected)
    return SrmResult(float(chi2), float(p_value), total, bool(p_value < SRM_ALARM_P))
