"""A report never contradicts itself: the p-value sits next to the interval it tests, the call comes
from the interval of the stated quantity, underpowered comparisons say so, and an incremental revenue
or return on cost whose interval spans zero is no headline — in the table, the JSON and the HTML alike."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from nextbest.reports import Incremental, LiftReport
from nextbest.reports.html import report_to_html
from nextbest.reports.render import report_to_json, report_to_table
from nextbest.stats import MeanStat, ProportionStat
from nextbest.stats.analysis import analyze

AS_OF = datetime(2026, 11, 23, 9, tzinfo=UTC)


def report(control: ProportionStat, treatment: ProportionStat, incremental: list[Incremental]) -> LiftReport:
    analysis = analyze(
        {"conversion": {"control": control, "b": treatment}}, "control", weights={"control": 0.5, "b": 0.5}
    )
    assert analysis.srm is not None
    units = {"control": control.n, "b": treatment.n}
    return LiftReport(
        "exp", "control", AS_OF, timedelta(days=14), analysis, units, 0, analysis.srm, incremental
    )


# make demo's cart_incentive_discount (seed 1): 28/91 against 15/82. GrowthBook's delta method gives a
# relative interval of about -73 % … -8 % ("a significant loss") next to an absolute one spanning zero.
DISCOUNT = (ProportionStat(91, 28), ProportionStat(82, 15))
SPANNING = Incremental("b", 82, -10.2, -1079.4, -2328.0, 169.2, 0.11, -20.7, 0.2)


def test_the_demo_discount_is_not_a_significant_loss() -> None:
    r = report(*DISCOUNT, [SPANNING])
    comparison = r.analysis.metrics["conversion"].headline["b"]
    verdict = r.analysis.metrics["conversion"].verdicts["b"]  # type: ignore[index]
    a, rel = comparison.absolute, comparison.relative
    assert a.ci_low < 0 < a.ci_high and a.p_value > 0.05  # type: ignore[operator]
    assert rel.ci_low < 0 < rel.ci_high and rel.p_value == a.p_value  # type: ignore[operator]
    assert verdict.quantity == "relative" and verdict.call == "inconclusive" and verdict.underpowered
    table = report_to_table(r)
    row = next(line for line in table.splitlines() if line.strip().startswith("b "))
    assert f"{a.p_value:.3g}" in row and "[-0.2521, 0.0026]" in row
    assert "underpowered (MDE ±" in row and "loss" not in row
    assert "extra revenue inconclusive [-2328.00, 169.20]" in table
    assert "return on cost inconclusive [-21163.64x, 1538.18x]" in table
    page = report_to_html(r)
    assert "#b00020" not in page.split("<h2>conversion</h2>")[1].split("<h2>Details")[0]  # no red bar
    assert "inconclusive (-2,328.00 … 169.20)" in page
    data = report_to_json(r)
    assert data["analysis"]["metrics"]["conversion"]["verdicts"]["b"] == {
        "quantity": "relative",
        "call": "inconclusive",
        "underpowered": True,
    }
    assert data["incremental"][0]["revenue_conclusive"] is False
    assert data["incremental"][0]["return_on_cost_low"] == pytest.approx(-2328.0 / 0.11)


def test_a_well_powered_gain_is_called_and_painted_green() -> None:
    gained = Incremental("b", 50_000, 1500.0, 9000.0, 4000.0, 14000.0, 1000.0, 900.0, 2100.0)
    r = report(ProportionStat(50_000, 5000), ProportionStat(50_000, 5300), [gained])
    verdict = r.analysis.metrics["conversion"].verdicts["b"]  # type: ignore[index]
    assert (verdict.call, verdict.underpowered) == ("gain", False)
    table = report_to_table(r)
    assert re.search(r"\+6\.00%\s+\[\+\d\.\d\d%, \+\d+\.\d\d%\]\s+gain$", table, re.MULTILINE), table
    assert "extra revenue 9,000.00 [4000.00, 14000.00]" in table
    assert "return on cost 9.0x [4.00x, 14.00x]" in table
    page = report_to_html(r)
    assert "#2e7d32" in page and "<b>9.0x</b>" in page


def test_a_significant_loss_is_called_from_the_same_interval() -> None:
    r = report(ProportionStat(50_000, 5300), ProportionStat(50_000, 5000), [])
    comparison = r.analysis.metrics["conversion"].headline["b"]
    verdict = r.analysis.metrics["conversion"].verdicts["b"]  # type: ignore[index]
    assert verdict.call == "loss" and comparison.relative.ci_high < 0  # type: ignore[operator]
    assert "#b00020" in report_to_html(r)


def test_no_nan_or_null_stands_for_a_result() -> None:
    r = report(ProportionStat(50, 0), ProportionStat(50, 0), [])
    comparison = r.analysis.metrics["conversion"].headline["b"]
    assert comparison.absolute.error and r.analysis.metrics["conversion"].verdicts["b"].call == "unavailable"  # type: ignore[index]
    row = next(line for line in report_to_table(r).splitlines() if line.strip().startswith("b "))
    assert "n/a" in row and "no variance" in row and "nan" not in row.lower()


def test_an_empty_control_is_not_enough_units_not_an_error() -> None:
    analysis = analyze({"revenue": {"control": MeanStat(0, 0.0, 0.0), "b": MeanStat(5, 5.0, 7.0)}}, "control")
    assert "not enough units" in analysis.metrics["revenue"].headline["b"].absolute.error


def test_the_grpc_reply_carries_the_verdict_the_mde_and_the_intervals() -> None:
    from nextbest.server.convert import report_to_proto

    reply = report_to_proto(report(*DISCOUNT, [SPANNING]))
    comparison = reply.metrics[0].comparisons[0]
    assert (comparison.verdict.quantity, comparison.verdict.call, comparison.verdict.underpowered) == (
        "relative",
        "inconclusive",
        True,
    )
    assert comparison.relative.method == "fieller" and comparison.absolute.method == "welch"
    assert comparison.relative.p_value == comparison.absolute.p_value
    assert comparison.HasField("mde") and comparison.mde_relative > 0.5
    totals = reply.incremental[0]
    assert not totals.revenue_conclusive
    assert totals.return_on_cost_low == pytest.approx(-2328.0 / 0.11)
    assert totals.extra_conversions_high == pytest.approx(0.2)
