"""What a lift report is asked for: the one place its defaults live and its fields are validated.

gRPC (``GetLiftReport``), the command line (``nextbest report``) and the simulator all build their
request with :meth:`ReportRequest.validated`, so they share the defaults and the error messages.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from nextbest.errors import FieldViolation, InvalidArgumentError
from nextbest.reports.aggregate import Metric

__all__ = ["DEFAULT_ALPHA", "DEFAULT_METRICS", "DEFAULT_WINDOW", "MAX_WINDOW_DAYS", "ReportRequest"]

DEFAULT_METRICS = (Metric.CONVERSION, Metric.REVENUE, Metric.ORDERS)
DEFAULT_WINDOW = timedelta(days=14)
DEFAULT_ALPHA = 0.05
MAX_WINDOW_DAYS = 365.0


@dataclass(frozen=True, slots=True)
class ReportRequest:
    """A valid lift-report request with every default applied; build one with :meth:`validated`."""

    experiment_id: str
    metrics: tuple[Metric, ...]
    window: timedelta
    as_of: datetime
    sequential: bool
    alpha: float

    @classmethod
    def validated(
        cls,
        experiment_id: str,
        metrics: Sequence[str] = (),
        *,
        window_days: float | None = None,
        as_of: datetime | None = None,
        sequential: bool = False,
        alpha: float | None = None,
    ) -> ReportRequest:
        """The request with the defaults applied, or :class:`InvalidArgumentError` naming every bad field.

        No metrics means the default ones; a window or alpha of None or 0 (protobuf's unset) means the
        default; no ``as_of`` means now, and a naive ``as_of`` is taken as UTC."""
        problems: list[FieldViolation] = []
        if not experiment_id:
            problems.append(FieldViolation("experiment_id", "required"))
        known = [m.value for m in Metric]
        chosen: list[Metric] = []
        for index, name in enumerate(metrics):
            if name in known:
                chosen.append(Metric(name))
            else:
                problems.append(
                    FieldViolation(f"metrics[{index}]", f"unknown metric {name!r}; known: {', '.join(known)}")
                )
        window_days = window_days or 0.0
        if not math.isfinite(window_days) or not 0 <= window_days <= MAX_WINDOW_DAYS:
            bounds = f"must be between 0 (meaning {DEFAULT_WINDOW.days}) and {MAX_WINDOW_DAYS:g}"
            problems.append(FieldViolation("window_days", bounds))
        alpha = alpha or 0.0
        if not math.isfinite(alpha) or not 0 <= alpha < 0.5:
            problems.append(FieldViolation("alpha", f"must be in (0, 0.5), or 0 for {DEFAULT_ALPHA:g}"))
        if problems:
            raise InvalidArgumentError(problems)
        as_of = as_of or datetime.now(UTC)
        return cls(
            experiment_id,
            tuple(chosen) or DEFAULT_METRICS,
            timedelta(days=window_days) if window_days else DEFAULT_WINDOW,
            as_of if as_of.tzinfo is not None else as_of.replace(tzinfo=UTC),
            sequential,
            alpha or DEFAULT_ALPHA,
        )
