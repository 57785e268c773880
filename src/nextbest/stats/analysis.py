"""A whole experiment's analysis: every treatment arm against the control on every metric, with the
sample-ratio check, a multiple-comparison correction across arms × metrics, and one verdict per
comparison that every display shows as it is."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal, TypedDict

from nextbest.errors import FieldViolation, InvalidArgumentError
from nextbest.stats.corrections import benjamini_hochberg, holm
from nextbest.stats.frequentist import Alternative, Comparison, Estimate, compare
from nextbest.stats.srm import SrmResult, srm_check
from nextbest.stats.statistics import CupedStat, Statistic
from nextbest.stats.validate import MAX_MAGNITUDE, statistic_problems, weight_problems

__all__ = ["PLAUSIBLE_LIFT", "Analysis", "ArmSummary", "MetricAnalysis", "Verdict", "analyze", "verdict"]

Correction = Literal["holm", "bh"]
Call = Literal["gain", "loss", "inconclusive", "unavailable"]

# A relative lift a marketing action can plausibly have. A comparison whose minimum detectable effect
# (80 % power) is larger than this had too few units: it says so rather than paint a winner.
PLAUSIBLE_LIFT = 0.10


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
class Verdict:
    """What a comparison says, decided once from one quantity's interval.

    ``quantity`` is the lift the call is made on and every display leads with: ``relative`` (Fieller's
    interval, whose test is the absolute one) when the control mean is positive, else ``absolute``.
    ``call`` is ``gain`` or ``loss`` when that interval excludes zero, ``inconclusive`` when it does not,
    ``unavailable`` when there is no interval (``Estimate.error`` says why). ``underpowered``: the
    minimum detectable relative lift exceeds ``PLAUSIBLE_LIFT``."""

    quantity: Literal["absolute", "relative"]
    call: Call
    underpowered: bool

    def estimate(self, comparison: Comparison) -> Estimate:
        return comparison.relative if self.quantity == "relative" else comparison.absolute


def verdict(comparison: Comparison, plausible_lift: float = PLAUSIBLE_LIFT) -> Verdict:
    relative = comparison.relative
    use_relative = comparison.control_mean > 0 and relative.value is not None and not relative.error
    estimate = relative if use_relative else comparison.absolute
    call: Call
    if estimate.p_value is None or (estimate.ci_low is None and estimate.ci_high is None):
        call = "unavailable"
    elif estimate.ci_low is not None and estimate.ci_low > 0:
        call = "gain"
    elif estimate.ci_high is not None and estimate.ci_high < 0:
        call = "loss"
    else:
        call = "inconclusive"
    mde = comparison.mde_relative
    underpowered = mde is not None and mde > plausible_lift
    return Verdict("relative" if use_relative else "absolute", call, underpowered)


@dataclass(frozen=True, slots=True)
class MetricAnalysis:
    """One metric: each arm's summary and each treatment arm against the control.

    It carries both the plain comparisons and, with a CUPED covariate, the adjusted ones; ``headline``
    says which of them a reader should see, and ``verdicts`` what each of those says, so that no display
    has to choose."""

    arms: dict[str, ArmSummary]
    comparisons: dict[str, Comparison]
    # With a CUPED covariate: the adjusted comparisons; ``comparisons`` stay unadjusted.
    cuped: dict[str, Comparison] | None = None
    # p-values after the correction, by treatment arm (the headline's), when a correction was asked for.
    adjusted_p_values: dict[str, float | None] | None = None
    # The verdict on each headline comparison, by treatment arm.
    verdicts: dict[str, Verdict] | None = None

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


def _check(
    metrics: Mapping[str, Mapping[str, Statistic]],
    control: str,
    options: _CompareOptions,
    weights: Mapping[str, float] | None,
) -> None:
    """Raises :class:`InvalidArgumentError` naming every bad metric, arm and key."""
    problems: list[FieldViolation] = []
    alpha, tuning = options["alpha"], options["tuning"]
    if not (isinstance(alpha, float | int) and math.isfinite(alpha) and 0 < alpha < 1):
        problems.append(FieldViolation("alpha", f"must be between 0 and 1, not {alpha}"))
    if not (isinstance(tuning, float | int) and math.isfinite(tuning) and 0 < tuning <= MAX_MAGNITUDE):
        problems.append(FieldViolation("tuning", f"must be a finite positive number, not {tuning}"))
    if not metrics:
        problems.append(FieldViolation("metrics", "at least one metric is required"))
    for name, by_arm in metrics.items():
        if control not in by_arm:
            problems.append(FieldViolation(f"metrics.{name}.arms", f"the control arm {control!r} is missing"))
        kinds = {type(s).__name__ for s in by_arm.values()}
        if len(kinds) > 1:
            problems.append(FieldViolation(f"metrics.{name}", f"mixes statistic types {sorted(kinds)}"))
        for arm, statistic in by_arm.items():
            problems.extend(
                FieldViolation(f"metrics.{name}.arms.{arm}.{key}", message)
                for key, message in statistic_problems(statistic)
            )
    if weights is not None:
        problems.extend(FieldViolation(f"weights.{a}", m) for a, m in weight_problems(weights))
    if problems:
        raise InvalidArgumentError(problems)


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
    plausible_lift: float = PLAUSIBLE_LIFT,
) -> Analysis:
    """``metrics`` maps metric → arm → statistic. ``units`` (arm → units) feeds the sample-ratio check
    against ``weights``; without it, the first metric's counts are used.

    Raises :class:`InvalidArgumentError` naming metric, arm and key when a statistic is impossible (a
    negative variance, a correlation beyond ±1, conversions above n), not finite or too large, when the
    control arm is missing, or when a weight is not finite and positive."""
    options = _CompareOptions(alpha=alpha, alternative=alternative, sequential=sequential, tuning=tuning)
    _check(metrics, control, options, weights)
    results: dict[str, MetricAnalysis] = {}
    for name, arms in metrics.items():
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
        headline = cuped or comparisons
        verdicts = {arm: verdict(c, plausible_lift) for arm, c in headline.items()}
        results[name] = MetricAnalysis(summaries, comparisons, cuped or None, None, verdicts)
    if correction is not None:
        results = _correct(results, correction)
    warnings: list[str] = []
    srm = None
    if weights:
        counts = units or {arm: s.n for arm, s in next(iter(metrics.values())).items()}
        srm = srm_check(counts, weights)
        if srm.alarm:
            warnings.append(
                f"sample-ratio mismatch (p = {srm.p_value:.2g}): assignment or logging is broken; "
                "do not trust these results"
            )
    return Analysis(control, results, srm, correction, tuple(warnings))


def _correct(results: dict[str, MetricAnalysis], correction: Correction) -> dict[str, MetricAnalysis]:
    """Adjusts the headline p-values across every arm × metric (the relative lift's p-value is the
    absolute one's: both test "no lift")."""
    keys: list[tuple[str, str]] = []
    p_values: list[float] = []
    for name, metric in results.items():
        for arm, comparison in metric.headline.items():
            if comparison.absolute.p_value is not None:
                keys.append((name, arm))
                p_values.append(comparison.absolute.p_value)
    adjusted = holm(p_values) if correction == "holm" else benjamini_hochberg(p_values)
    by_key = dict(zip(keys, adjusted, strict=True))
    return {
        name: replace(metric, adjusted_p_values={arm: by_key.get((name, arm)) for arm in metric.comparisons})
        for name, metric in results.items()
    }
