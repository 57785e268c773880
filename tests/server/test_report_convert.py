"""GetLiftReport's conversions: the request through ReportRequest, the reply from the headline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nextbest.api.v1 import decision_service_pb2 as pb
from nextbest.client import timestamp
from nextbest.errors import InvalidArgumentError
from nextbest.reports import LiftReport, ReportRequest
from nextbest.server.convert import report_request_from_proto, report_to_proto
from nextbest.stats import CupedStat, MeanStat, ProportionStat
from nextbest.stats.analysis import analyze

AS_OF = datetime(2026, 11, 23, 9, tzinfo=UTC)


def test_an_unset_field_takes_the_same_default_as_on_the_command_line() -> None:
    message = pb.GetLiftReportRequest(experiment_id="exp", as_of=timestamp(AS_OF))
    assert report_request_from_proto(message) == ReportRequest.validated("exp", as_of=AS_OF)
    before = datetime.now(UTC)
    assert report_request_from_proto(pb.GetLiftReportRequest(experiment_id="exp")).as_of >= before


def test_bad_fields_get_the_request_s_violations() -> None:
    message = pb.GetLiftReportRequest(experiment_id="exp", metrics=["nps"], window_days=-1, alpha=0.9)
    with pytest.raises(InvalidArgumentError) as from_proto:
        report_request_from_proto(message)
    with pytest.raises(InvalidArgumentError) as direct:
        ReportRequest.validated("exp", ["nps"], window_days=-1, alpha=0.9)
    assert from_proto.value.violations == direct.value.violations
    assert [v.field for v in direct.value.violations] == ["metrics[0]", "window_days", "alpha"]


def test_the_reply_shows_the_headline_and_keeps_the_unadjusted_comparisons() -> None:
    c = CupedStat(MeanStat(1000, 5000.0, 40000.0), MeanStat(1000, 4000.0, 30000.0), 32000.0)
    t = CupedStat(MeanStat(1000, 5400.0, 45000.0), MeanStat(1000, 4100.0, 31000.0), 35000.0)
    conversion = {"control": ProportionStat(1000, 90), "b": ProportionStat(1000, 110)}
    weights = {"control": 0.5, "b": 0.5}
    analysis = analyze(
        {"revenue": {"control": c, "b": t}, "conversion": conversion}, "control", weights=weights
    )
    assert analysis.srm is not None
    units = {"control": 1000, "b": 1000}
    report = LiftReport("exp", "control", AS_OF, timedelta(days=14), analysis, units, 0, analysis.srm)
    reply = {m.metric: m for m in report_to_proto(report).metrics}
    revenue = analysis.metrics["revenue"]
    assert revenue.cuped is not None
    assert reply["revenue"].comparisons[0].cuped_theta == revenue.cuped["b"].cuped_theta
    assert reply["revenue"].comparisons[0].absolute.value == revenue.headline["b"].absolute.value
    assert reply["revenue"].unadjusted[0].absolute.value == revenue.comparisons["b"].absolute.value
    assert not reply["revenue"].unadjusted[0].HasField("cuped_theta")
    headline = analysis.metrics["conversion"].headline["b"]
    assert reply["conversion"].comparisons[0].absolute.value == headline.absolute.value
    assert not reply["conversion"].unadjusted
