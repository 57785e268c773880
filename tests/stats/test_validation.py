"""Malformed statistics are refused with the metric, arm and key named: exit 2 from `nextbest stats`,
InvalidArgumentError from analyze(), never a traceback, a NaN or a null presented as a result."""

from __future__ import annotations

import io
import json
import math

import pytest

from nextbest.cli import main
from nextbest.errors import InvalidArgumentError
from nextbest.stats import CupedStat, MeanStat, ProportionStat, RatioStat
from nextbest.stats.analysis import analyze
from nextbest.stats.validate import statistic_problems

GOOD = '{"n": 100, "sum": 130, "sum_squares": 400}'


def payload(control: str = GOOD, extra: str = "", kind: str = "mean", b: str = GOOD) -> str:
    return (
        '{"control": "control"' + extra + ', "metrics": {"revenue": {"type": "' + kind + '", "arms": '
        '{"control": ' + control + ', "b": ' + b + "}}}}"
    )


CUPED_B = (
    '{"n": 100, "sum": 100, "sum_squares": 200, "pre_sum": 100, "pre_sum_squares": 200,'
    ' "sum_of_products": 150}'
)
RATIO_B = (
    '{"n": 100, "sum": 100, "sum_squares": 200, "denominator_sum": 100, "denominator_sum_squares": 200,'
    ' "sum_of_products": 150}'
)

CASES = [
    pytest.param(
        payload('{"n": 100, "sum": 1e308, "sum_squares": 1e308}'),
        "arms.control.sum: 1e+308 is too large",
        id="huge-sum",
    ),
    pytest.param(
        payload('{"n": 1' + "0" * 400 + ', "sum": 1, "sum_squares": 5}'), "arms.control.n:", id="n-10-400"
    ),
    pytest.param(
        payload(extra=', "sequential": true, "tuning": Infinity'),
        "tuning: Input should be a finite number",
        id="tuning-inf",
    ),
    pytest.param(
        payload('{"n": 100, "sum": 1e309, "sum_squares": 5}'),
        "arms.control.sum: Input should be a finite number",
        id="1e309",
    ),
    pytest.param(
        payload('{"n": 100, "sum": 100, "sum_squares": 50}'),
        "arms.control.sum_squares: 50 is less than sum²/n = 100",
        id="impossible-variance",
    ),
    pytest.param(
        payload(extra=', "weights": {"control": 0, "b": 0}'),
        "weights.control: must be a finite positive number",
        id="weights-zero",
    ),
    pytest.param(
        payload(extra=', "weights": {"control": -1, "b": 2}'),
        "weights.control: must be a finite positive number",
        id="weight-negative",
    ),
    pytest.param(
        payload(extra=', "weights": {"control": NaN, "b": 2}'),
        "weights.control: Input should be a finite number",
        id="weight-nan",
    ),
    pytest.param(
        payload(extra=', "weights": {"control": 0.5}'),
        "weights: one per arm; none for 'b'",
        id="weight-missing",
    ),
    pytest.param(
        payload(extra=', "weights": {"control": 0.5, "b": 0.4, "z": 0.1}'),
        "weights for arms no metric has: 'z'",
        id="weight-unknown",
    ),
    pytest.param(
        payload().replace('"control": "control"', '"control": "ctl"'),
        "metric 'revenue' has no control arm 'ctl'",
        id="no-control",
    ),
    pytest.param(
        payload('{"n": "1000", "sum": 1, "sum_squares": 5}'),
        "arms.control.n: Input should be a valid integer",
        id="n-string",
    ),
    pytest.param(
        payload('{"n": 100, "sum": true, "sum_squares": 5}'),
        "arms.control.sum: Input should be a valid number",
        id="sum-bool",
    ),
    pytest.param(
        payload('{"n": 0, "sum": 0, "sum_squares": 0}'),
        "arms.control.n: Input should be greater than or equal to 1",
        id="n-zero",
    ),
    pytest.param(
        payload('{"n": 2.5, "sum": 1, "sum_squares": 5}'),
        "arms.control.n: Input should be a valid integer",
        id="n-float",
    ),
    pytest.param(
        payload('{"n": 10, "sum": 11}', kind="proportion", b='{"n": 10, "sum": 1}'),
        "arms.control.sum: conversions must be between 0 and n = 10, not 11",
        id="conversions-above-n",
    ),
    pytest.param(
        payload(CUPED_B.replace("150", "1000"), kind="cuped", b=CUPED_B),
        "arms.control.sum_of_products: 1000 implies a correlation beyond ±1",
        id="cuped-correlation",
    ),
    pytest.param(
        payload(CUPED_B.replace('"pre_sum_squares": 200', '"pre_sum_squares": 20'), kind="cuped", b=CUPED_B),
        "arms.control.pre_sum_squares: 20 is less than pre_sum²/n",
        id="cuped-pre-variance",
    ),
    pytest.param(
        payload(
            RATIO_B.replace('"denominator_sum_squares": 200', '"denominator_sum_squares": 20'),
            kind="ratio",
            b=RATIO_B,
        ),
        "arms.control.denominator_sum_squares: 20 is less than denominator_sum²/n",
        id="ratio-denominator-variance",
    ),
    pytest.param(
        payload(RATIO_B.replace("150", "-1000"), kind="ratio", b=RATIO_B),
        "arms.control.sum_of_products: -1000 implies a correlation beyond ±1",
        id="ratio-correlation",
    ),
    pytest.param(
        payload('{"n": 100, "sum": 1, "sum_squares": 5, "pre_sum": 3}'),
        "a mean metric has no pre_sum",
        id="key-of-another-type",
    ),
]


@pytest.mark.parametrize(("text", "message"), CASES)
def test_malformed_stats_input_is_a_clear_error(
    text: str, message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    code = main(["stats"])
    out = capsys.readouterr()
    assert code == 2, out
    assert out.out == ""
    assert message in out.err and "Traceback" not in out.err


def test_the_same_input_well_formed_is_analysed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(
        "sys.stdin",
        io.StringIO(
            payload('{"n": 100, "sum": 100, "sum_squares": 300}', ', "weights": {"control": 0.5, "b": 0.5}')
        ),
    )
    assert main(["stats"]) == 0
    result = json.loads(capsys.readouterr().out)
    comparison = result["metrics"]["revenue"]["comparisons"]["b"]
    assert comparison["absolute"]["value"] == pytest.approx(0.3)
    assert result["metrics"]["revenue"]["verdicts"]["b"]["quantity"] == "relative"


def test_analyze_names_metric_arm_and_key() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        analyze(
            {"revenue": {"control": MeanStat(100, 100.0, 50.0), "b": MeanStat(10, 1.0, 1.0)}},
            "control",
            weights={"control": 0.5, "b": math.inf},
        )
    fields = [v.field for v in caught.value.violations]
    assert fields == ["metrics.revenue.arms.control.sum_squares", "weights.b"]
    with pytest.raises(InvalidArgumentError, match="the control arm 'a' is missing"):
        analyze({"m": {"b": MeanStat(10, 1.0, 1.0)}}, "a")
    with pytest.raises(InvalidArgumentError, match="alpha: must be between 0 and 1"):
        analyze({"m": {"a": MeanStat(10, 1.0, 1.0)}}, "a", alpha=math.nan)
    with pytest.raises(InvalidArgumentError, match="mixes statistic types"):
        analyze({"m": {"a": MeanStat(10, 1.0, 1.0), "b": ProportionStat(10, 1)}}, "a")


@pytest.mark.parametrize(
    "statistic",
    [
        pytest.param(MeanStat(10, 10.0, 10.0 - 1e-12), id="rounding-below-sum2/n"),
        pytest.param(MeanStat(0, 0.0, 0.0), id="empty-arm"),
        pytest.param(ProportionStat(10, 10), id="all-converted"),
        pytest.param(
            CupedStat(MeanStat(3, 6.0, 14.0), MeanStat(3, 6.0, 14.0), 14.0), id="perfect-correlation"
        ),
        pytest.param(
            RatioStat(MeanStat(3, 6.0, 14.0), MeanStat(3, 3.0, 3.0), 6.0), id="constant-denominator"
        ),
    ],
)
def test_possible_statistics_pass(statistic: MeanStat | ProportionStat | CupedStat | RatioStat) -> None:
    assert statistic_problems(statistic) == []
