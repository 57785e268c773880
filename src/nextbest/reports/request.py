"""A lift-report request as the pipeline sees it, and its validation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from nextbest.errors import FieldViolation, InvalidArgumentError
from nextbest.reports.aggregate import Metric
from nextbest.reports.report import DEFAULT_METRICS

__all__ = ["ReportRequest", "validated"]


@dataclass(frozen=True, slots=True)
class ReportRequest:
    experiment_id: str
    metrics: tuple[Metric, ...]
    window: timedelta
    as_of: datetime
    sequential: bool
    alpha: float


def validated(
    experiment_id: str,
    metrics: list[str],
    *,
    window_days: float,
    as_of: datetime,
    sequential: bool,
    alpha: float,
) -> ReportRequest:
    """Defaults applied (0 means default), every bad field named."""
    problems: list[FieldViolation] = []
    if not experiment_id:
        problems.append(FieldViolation("experiment_id", "required"))
    known = [m.value for m in Metric]
    chosen: list[Metric] = []
    for index, name in enumerate(metrics):
        if name not in known:
            problems.append(
                FieldViolation(f"metrics[{index}]", f"unknown metric {name!r}; known: {', '.join(known)}")
            )
        else:
            chosen.append(Metric(name))
    if not math.isfinite(window_days) or not 0 <= window_days <= 365:
        problems.append(FieldViolation("window_days", "must be between 0 (meaning 14) and 365"))
    if not math.isfinite(alpha) or not 0 <= alpha < 0.5:
        problems.append(FieldViolation("alpha", "must be in (0, 0.5), or 0 for 0.05"))
    if problems:
        raise InvalidArgumentError(problems)
    return ReportRequest(
        experiment_id,
        tuple(chosen) or DEFAULT_METRICS,
        timedelta(days=window_days or 14.0),
        as_of,
        sequential,
        alpha or 0.05,
    )
