"""The JSON form of ``nextbest stats``: per-arm sufficient statistics in, the full analysis out.

Input (keys not listed are errors)::

    {
      "control": "control",                      # the baseline arm
      "alpha": 0.05, "alternative": "two-sided", # or "greater" / "less"
      "sequential": false, "tuning": 5000,       # always-valid intervals, expected total sample size
      "correction": null,                        # or "holm" / "bh", across arms x metrics
      "weights": {"control": 0.5, "b": 0.5},     # optional: sample-ratio check
      "metrics": {
        "conversion": {"type": "proportion", "arms": {"control": {"n": 100, "sum": 12}, ...}},
        "revenue":    {"type": "mean", "arms": {"control": {"n": 100, "sum": 840.5, "sum_squares": 21000.2}}},
        "revenue_cuped": {"type": "cuped", "arms": {"control": {"n": .., "sum": .., "sum_squares": ..,
                          "pre_sum": .., "pre_sum_squares": .., "sum_of_products": ..}}},
        "revenue_per_order": {"type": "ratio", "arms": {"control": {"n": .., "sum": .., "sum_squares": ..,
                          "denominator_sum": .., "denominator_sum_squares": .., "sum_of_products": ..}}}
      }
    }
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nextbest.stats.analysis import Analysis, analyze
from nextbest.stats.statistics import CupedStat, MeanStat, ProportionStat, RatioStat, Statistic
from nextbest.stats.validate import MAX_MAGNITUDE, MAX_UNITS

__all__ = ["StatsRequest", "analysis_to_json", "clean_json", "run"]


class _Strict(BaseModel):
    # Numbers must be JSON numbers: "1000" and true are refused, and so are NaN, infinity and 1e309.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class ArmInput(_Strict):
    n: int = Field(ge=1, le=MAX_UNITS)
    sum: Number
    sum_squares: Number | None = None
    pre_sum: Number | None = None
    pre_sum_squares: Number | None = None
    denominator_sum: Number | None = None
    denominator_sum_squares: Number | None = None
    sum_of_products: Number | None = None


_NEEDS = {
    "proportion": (),
    "mean": ("sum_squares",),
    "cuped": ("sum_squares", "pre_sum", "pre_sum_squares", "sum_of_products"),
    "ratio": ("sum_squares", "denominator_sum", "denominator_sum_squares", "sum_of_products"),
}


class MetricInput(_Strict):
    type: Literal["proportion", "mean", "cuped", "ratio"]
    arms: dict[str, ArmInput] = Field(min_length=1)

    @model_validator(mode="after")
    def _fields_for_type(self) -> MetricInput:
        for arm, values in self.arms.items():
            missing = [f for f in _NEEDS[self.type] if getattr(values, f) is None]
            if missing:
                raise ValueError(f"arm {arm!r}: a {self.type} metric needs {', '.join(missing)}")
            extra = [
                f
                for f in ArmInput.model_fields
                if f not in ("n", "sum", *_NEEDS[self.type]) and getattr(values, f) is not None
            ]
            if extra:
                raise ValueError(f"arm {arm!r}: a {self.type} metric has no {', '.join(extra)}")
        return self


class StatsRequest(_Strict):
    control: str
    alpha: Number = Field(default=0.05, gt=0, lt=1)
    alternative: Literal["two-sided", "greater", "less"] = "two-sided"
    sequential: bool = False
    tuning: Number = Field(default=5000.0, gt=0, le=MAX_MAGNITUDE)
    correction: Literal["holm", "bh"] | None = None
    weights: dict[str, Number] | None = None
    metrics: dict[str, MetricInput] = Field(min_length=1)

    @model_validator(mode="after")
    def _arms(self) -> StatsRequest:
        for name, metric in self.metrics.items():
            if self.control not in metric.arms:
                raise ValueError(f"metric {name!r} has no control arm {self.control!r}")
        if self.weights is not None:
            arms = {arm for m in self.metrics.values() for arm in m.arms}
            unknown = sorted(set(self.weights) - arms)
            if unknown:
                raise ValueError(f"weights for arms no metric has: {', '.join(map(repr, unknown))}")
            missing = sorted(arms - set(self.weights))
            if missing:
                raise ValueError(f"weights: one per arm; none for {', '.join(map(repr, missing))}")
        return self


def _statistic(kind: str, a: ArmInput) -> Statistic:
    if kind == "proportion":
        return ProportionStat(a.n, a.sum)
    post = MeanStat(a.n, a.sum, a.sum_squares or 0.0)
    if kind == "mean":
        return post
    if kind == "cuped":
        return CupedStat(
            post, MeanStat(a.n, a.pre_sum or 0.0, a.pre_sum_squares or 0.0), a.sum_of_products or 0.0
        )
    denominator = MeanStat(a.n, a.denominator_sum or 0.0, a.denominator_sum_squares or 0.0)
    return RatioStat(post, denominator, a.sum_of_products or 0.0)


def run(request: StatsRequest) -> Analysis:
    """The analysis; :class:`InvalidArgumentError` names the metric, arm and key of any impossible
    statistic (see ``nextbest.stats.validate``)."""
    metrics = {
        name: {arm: _statistic(m.type, values) for arm, values in m.arms.items()}
        for name, m in request.metrics.items()
    }
    return analyze(
        metrics,
        request.control,
        alpha=request.alpha,
        alternative=request.alternative,
        sequential=request.sequential,
        tuning=request.tuning,
        correction=request.correction,
        weights=request.weights,
    )


def clean_json(value: Any) -> Any:
    """JSON has no NaN or infinity: such numbers become null (the accompanying ``error`` says why)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    return value


def analysis_to_json(analysis: Analysis) -> dict[str, Any]:
    return dict(clean_json(asdict(analysis)))
