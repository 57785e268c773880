"""A lift-report request: one set of defaults, every bad field named."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nextbest.errors import InvalidArgumentError
from nextbest.reports import DEFAULT_METRICS, Metric, ReportRequest

AS_OF = datetime(2026, 11, 23, 9, tzinfo=UTC)


def test_unset_fields_take_the_defaults() -> None:
    request = ReportRequest.validated("exp", as_of=AS_OF)
    assert request == ReportRequest("exp", DEFAULT_METRICS, timedelta(days=14), AS_OF, False, 0.05)
    assert DEFAULT_METRICS == (Metric.CONVERSION, Metric.REVENUE, Metric.ORDERS)
    # 0 is protobuf's "unset": the same defaults
    assert ReportRequest.validated("exp", [], window_days=0, alpha=0, as_of=AS_OF) == request


def test_given_fields_are_kept() -> None:
    request = ReportRequest.validated(
        "exp", ["visit", "revenue"], window_days=7.5, as_of=AS_OF, sequential=True, alpha=0.1
    )
    assert request.metrics == (Metric.VISIT, Metric.REVENUE)
    assert (request.window, request.sequential, request.alpha) == (timedelta(days=7.5), True, 0.1)


def test_as_of_defaults_to_now_and_a_naive_time_is_utc() -> None:
    before = datetime.now(UTC)
    assert before <= ReportRequest.validated("exp").as_of <= datetime.now(UTC)
    assert ReportRequest.validated("exp", as_of=datetime(2026, 11, 23, 9)).as_of == AS_OF


def test_every_bad_field_is_named() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        ReportRequest.validated("", ["conversion", "nps"], window_days=400, alpha=0.5, as_of=AS_OF)
    problems = {v.field: v.description for v in info.value.violations}
    assert problems == {
        "experiment_id": "required",
        "metrics[1]": "unknown metric 'nps'; known: conversion, revenue, orders, visit, revenue_per_order",
        "window_days": "must be between 0 (meaning 14) and 365",
        "alpha": "must be in (0, 0.5), or 0 for 0.05",
    }


@pytest.mark.parametrize("window_days", [-1.0, float("nan"), float("inf")])
def test_a_window_outside_the_range_is_refused(window_days: float) -> None:
    with pytest.raises(InvalidArgumentError, match="window_days"):
        ReportRequest.validated("exp", window_days=window_days, as_of=AS_OF)


@pytest.mark.parametrize("alpha", [-0.01, 0.7, float("nan")])
def test_an_alpha_outside_the_range_is_refused(alpha: float) -> None:
    with pytest.raises(InvalidArgumentError, match="alpha"):
        ReportRequest.validated("exp", alpha=alpha, as_of=AS_OF)
