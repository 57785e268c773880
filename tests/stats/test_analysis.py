"""Whole-experiment analysis and its JSON form (`nextbest stats`)."""

from __future__ import annotations

import io
import json

import pytest
from statsmodels.stats.multitest import multipletests

from nextbest.cli import main
from nextbest.stats import CupedStat, MeanStat, ProportionStat, compare
from nextbest.stats.analysis import analyze

CONTROL = MeanStat(3407, 1396.87, 52377.9767)
TREATMENT = MeanStat(3461, 2422.7, 134698.29)


def test_every_arm_against_the_control_with_a_correction() -> None:
    metrics = {
        "revenue": {"control": CONTROL, "b": TREATMENT, "c": MeanStat(3400, 1500.0, 60000.0)},
        "conversion": {
            "control": ProportionStat(3407, 300),
            "b": ProportionStat(3461, 350),
            "c": ProportionStat(3400, 305),
        },
    }
    result = analyze(
        metrics, "control", correction="holm", weights={"control": 1 / 3, "b": 1 / 3, "c": 1 / 3}
    )
    raw = [result.metrics[m].comparisons[a].relative.p_value for m in metrics for a in ("b", "c")]
    expected = multipletests(raw, method="holm")[1]
    adjusted = [result.metrics[m].adjusted_p_values[a] for m in metrics for a in ("b", "c")]  # type: ignore[index]
    assert adjusted == pytest.approx(list(expected), abs=1e-12)
    assert result.metrics["revenue"].comparisons["b"] == compare(CONTROL, TREATMENT)
    assert result.srm is not None and not result.srm.alarm


def test_cuped_metrics_report_adjusted_and_unadjusted() -> None:
    c = CupedStat(MeanStat(1000, 5000.0, 40000.0), MeanStat(1000, 4000.0, 30000.0), 32000.0)
    t = CupedStat(MeanStat(1000, 5400.0, 45000.0), MeanStat(1000, 4100.0, 31000.0), 35000.0)
    result = analyze({"revenue": {"control": c, "b": t}}, "control").metrics["revenue"]
    assert result.cuped is not None
    assert result.comparisons["b"].cuped_theta is None and result.cuped["b"].cuped_theta is not None


def test_the_headline_is_cuped_when_present_else_the_plain_comparison() -> None:
    c = CupedStat(MeanStat(1000, 5000.0, 40000.0), MeanStat(1000, 4000.0, 30000.0), 32000.0)
    t = CupedStat(MeanStat(1000, 5400.0, 45000.0), MeanStat(1000, 4100.0, 31000.0), 35000.0)
    metrics = analyze(
        {
            "revenue": {"control": c, "b": t},
            "conversion": {"control": ProportionStat(1000, 90), "b": ProportionStat(1000, 110)},
        },
        "control",
    ).metrics
    revenue, conversion = metrics["revenue"], metrics["conversion"]
    assert revenue.cuped is not None and revenue.cuped_adjusted
    assert revenue.headline == revenue.cuped and revenue.headline["b"] != revenue.comparisons["b"]
    assert conversion.cuped is None and not conversion.cuped_adjusted
    assert conversion.headline == conversion.comparisons


def test_the_correction_adjusts_the_headline_p_values() -> None:
    c = CupedStat(MeanStat(1000, 5000.0, 40000.0), MeanStat(1000, 4000.0, 30000.0), 32000.0)
    t = CupedStat(MeanStat(1000, 5400.0, 45000.0), MeanStat(1000, 4100.0, 31000.0), 35000.0)
    revenue = analyze({"revenue": {"control": c, "b": t}}, "control", correction="holm").metrics["revenue"]
    assert revenue.adjusted_p_values == {"b": revenue.headline["b"].relative.p_value}


def test_a_sample_ratio_mismatch_is_a_warning() -> None:
    result = analyze(
        {"m": {"control": MeanStat(5000, 1, 1), "b": MeanStat(4500, 1, 1)}},
        "control",
        weights={"control": 0.5, "b": 0.5},
    )
    assert result.srm is not None and result.srm.alarm
    assert any("sample-ratio mismatch" in w for w in result.warnings)


def run_cli(
    payload: object, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(payload)))
    code = main(["stats"])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_stats_cli_round_trip(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    payload = {
        "control": "a",
        "sequential": True,
        "metrics": {
            "revenue": {
                "type": "mean",
                "arms": {
                    "a": {"n": 3407, "sum": 1396.87, "sum_squares": 52377.9767},
                    "b": {"n": 3461, "sum": 2422.7, "sum_squares": 134698.29},
                },
            }
        },
    }
    code, out, _ = run_cli(payload, monkeypatch, capsys)
    assert code == 0
    result = json.loads(out)["metrics"]["revenue"]["comparisons"]["b"]
    expected = compare(CONTROL, TREATMENT, sequential=True).absolute
    assert result["absolute"]["ci_low"] == pytest.approx(expected.ci_low)
    assert result["sequential"] is True


def test_stats_cli_names_what_is_wrong(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    payload = {"control": "a", "metrics": {"m": {"type": "proportion", "arms": {"a": {"n": 3, "sum": 5}}}}}
    code, _, err = run_cli(payload, monkeypatch, capsys)
    assert code == 2 and "metrics.m.arms.a.sum: conversions must be between 0 and n = 3, not 5" in err
    code, _, err = run_cli({"control": "a", "metrics": {}, "alpha": 2}, monkeypatch, capsys)
    assert code == 2 and "alpha" in err and "metrics" in err
