"""A whole experiment's analysis: every treatment arm against the control on every metric, with the
sample-ratio check and a multiple-comparison correction across arms × metrics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal, TypedDict

from nextbest.stats.corrections import benjamini_hochberg, holm
from nextbest.stats.frequentist import Alternative, Comparison, compare
from nextbest.stats.srm import SrmResult, srm_check
from nextbest.stats.statistics import CupedStat, Statistic

__all__ = ["Analysis", "ArmSummary", "MetricAnalysis", "analyze"]

Correction = Literal["holm", "bh"]


class _CompareOptions(TypedDict):
    alpha: float
    alternative: Alternative
    sequential: bool
    tuning: float


@dataclass(frozen=True, slots=True)
class ArmSummary:
    n: int
    mean: float
    variance: float


@dataclass(frozen=True, slots=True)
class MetricAnalysis:
    """One metric: each arm's summary and each treatment arm against the control.

    It carries both the plain comparisons and, with a CUPED covariate, the adjusted ones; ``headline``
    says which of them a reader should see, so that no display has to choose."""

    arms: dict[str, ArmSummary]
    comparisons: dict[str, Comparison]
    # With a CUPED covariate: the adjusted comparisons; ``comparisons`` stay unadjusted.
    cuped: dict[str, Comparison] | None = None
    # p-values after the correction, by treatment arm (relative lift's), when a correction was asked for.
    adjusted_p_values: dict[str, float | None] | None = None

    @property
    def cuped_adjusted(self) -> bool:
        """Whether the headline comparisons are CUPED-adjusted."""
        return bool(self.cuped)

    @property
    def headline(self) -> dict[str, Comparison]:
        """The comparisons to show and act on, by treatment arm: the CUPED-adjusted ones when there are
        any, else the plain ones."""
        return self.cuped if self.cuped else self.comparisons


@dataclass(frozen=True, slots=True)
class Analysis:
    control: str
    metrics: dict[str, MetricAnalysis]
    srm: SrmResult | None
    correction: Correction | None
    warnings: tuple[str, ...] = ()


def analyze(
    metrics: Mapping[str, Mapping[str, Statistic]],
    control: str,
    *,
    alpha: float = 0.05,
    alternative: Alternative = "two-sided",
    sequential: bool = False,
    tuning: float = 5000.0,
    correction: Correction | None = None,
    weights: Mapping[str, float] | None = None,
    units: Mapping[str, int] | None = None,
) -> Analysis:
    """``metrics`` maps metric → arm → statistic. ``units`` (arm → units) feeds the sample-ratio check
    against ``weights``; without it, the first metric's counts are used."""
    options = _CompareOptions(alpha=alpha, alternative=alternative, sequential=sequential, tuning=tuning)
    warnings: list[str] = []
    results: dict[str, MetricAnalysis] = {}
    for name, arms in metrics.items():
        if control not in arms:
            warnings.append(f"metric {name!r} has no {control!r} arm; skipped")
            continue
        base = arms[control]
        comparisons: dict[str, Comparison] = {}
        cuped: dict[str, Comparison] = {}
        for arm, statistic in arms.items():
            if arm == control:
                continue
            comparisons[arm] = compare(base, statistic, **options)
            if isinstance(base, CupedStat) and isinstance(statistic, CupedStat):
                cuped[arm] = compare(base, statistic, cuped=True, **options)
        summaries = {arm: ArmSummary(s.n, s.mean, s.variance) for arm, s in arms.items()}
        results[name] = MetricAnalysis(summaries, comparisons, cuped or None)
    if correction is not None:
        results = _correct(results, correction)
    srm = None
    if weights:
        counts = units or ({arm: s.n for arm, s in next(iter(metrics.values())).items()} if metrics else {})
        srm = srm_check(counts, weights)
        if srm.alarm:
            warnings.append(
                f"sample-ratio mismatch (p = {srm.p_value:.2g}): assignment or logging is broken; "
                "do not trust these results"
            )
    return Analysis(control, results, srm, correction, tuple(warnings))


def _correct(results: dict[str, MetricAnalysis], correction: Correction) -> dict[str, MetricAnalysis]:
    """Adjusts the headline relative lift's p-values across every arm × metric."""
    keys: list[tuple[str, str]] = []
    p_values: list[float] = []
    for name, metric in results.items():
        for arm, comparison in metric.headline.items():
            if comparison.relative.p_value is not None:
                keys.append((name, arm))
                p_values.append(comparison.relative.p_value)
    adjusted = holm(p_values) if correction == "holm" else benjamini_hochberg(p_values)
    by_key = dict(zip(keys, adjusted, strict=True))
    return {
        name: replace(metric, adjusted_p_values={arm: by_key.get((name, arm)) for arm in metric.comparisons})
        for name, metric in results.items()
    }
