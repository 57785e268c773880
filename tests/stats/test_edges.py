"""Edges and defaults of the stats engine, pinned exactly: error paths at their boundaries, default
arguments, the verdict's choice of quantity, corrections with missing p-values, JSON cleaning, the
Cauchy–Schwarz check at small scales. (Mutation testing found these unpinned; benchmarks/RESULTS.md.)"""

from __future__ import annotations

import math

import pytest

from nextbest.stats import CupedStat, MeanStat, ProportionStat, compare, minimum_detectable_effect, power
from nextbest.stats.analysis import PLAUSIBLE_LIFT, Verdict, analyze, verdict
from nextbest.stats.frequentist import sequential_rho
from nextbest.stats.io import clean_json
from nextbest.stats.validate import MAX_MAGNITUDE, MAX_UNITS, statistic_problems, weight_problems

POWER_ERROR = "power needs at least 2 units per arm and a positive variance"
MDE_ERROR = "the MDE needs at least 2 units per arm and a positive variance"


@pytest.mark.parametrize(
    ("n_control", "n_treatment", "variance", "ok"),
    [
        (2, 2, 1e-9, True),
        (1, 2, 1.0, False),
        (2, 1, 1.0, False),
        (1, 1, 1.0, False),
        (2, 2, 0.0, False),
        (5, 5, 0.5, True),
        (1, 100, 0.5, False),
        (100, 1, 0.5, False),
    ],
)
def test_power_and_mde_need_two_units_per_arm_and_variance(
    n_control: int, n_treatment: int, variance: float, ok: bool
) -> None:
    p = power(0.1, variance, n_control, n_treatment)
    m = minimum_detectable_effect(variance, n_control, n_treatment, baseline_mean=2.0)
    if ok:
        assert p.value is not None and 0 < p.value <= 1 and p.error == "" and p.relative is None
        assert m.value is not None and m.relative == pytest.approx(m.value / 2.0) and m.error == ""
    else:
        assert p == type(p)(None, None, POWER_ERROR)
        assert m == type(m)(None, None, MDE_ERROR)


def test_mde_defaults_are_alpha_5_percent_and_80_percent_power() -> None:
    assert minimum_detectable_effect(4.0, 100, 100) == minimum_detectable_effect(
        4.0, 100, 100, alpha=0.05, target_power=0.8
    )
    assert power(0.5, 4.0, 100, 100) == power(0.5, 4.0, 100, 100, alpha=0.05)
    assert minimum_detectable_effect(4.0, 100, 100).relative is None
    assert minimum_detectable_effect(4.0, 100, 100, baseline_mean=-4.0).relative == pytest.approx(
        minimum_detectable_effect(4.0, 100, 100).value / 4.0  # type: ignore[operator]
    )


def test_compare_defaults() -> None:
    c, t = MeanStat(500, 1000.0, 2600.0), MeanStat(500, 1100.0, 2900.0)
    assert compare(c, t) == compare(c, t, alpha=0.05, alternative="two-sided", sequential=False, cuped=False)
    assert compare(c, t, sequential=True) == compare(c, t, sequential=True, tuning=5000.0)
    assert sequential_rho(0.05, 5000.0) == pytest.approx(
        math.sqrt((-2 * math.log(0.05) + math.log(-2 * math.log(0.05) + 1)) / 5000)
    )


def test_the_mde_is_at_80_percent_power_for_the_test_s_sidedness() -> None:
    c, t = MeanStat(500, 1000.0, 2600.0), MeanStat(500, 1100.0, 2900.0)
    two = compare(c, t)
    se = two.absolute.standard_error
    assert two.mde == pytest.approx((1.959963984540054 + 0.8416212335729143) * se, rel=1e-12)  # type: ignore[operator]
    one = compare(c, t, alternative="greater")
    assert one.mde == pytest.approx((1.6448536269514722 + 0.8416212335729143) * se, rel=1e-12)  # type: ignore[operator]
    assert two.mde_relative == pytest.approx(two.mde / 2.0)  # type: ignore[operator]
    assert compare(MeanStat(5, 0.0, 10.0), MeanStat(5, 1.0, 10.0)).mde_relative is None


def test_verdict_quantity_and_call() -> None:
    gain = compare(ProportionStat(50_000, 5000), ProportionStat(50_000, 5300))
    v = verdict(gain)
    assert v == Verdict("relative", "gain", False) and v.estimate(gain) is gain.relative
    assert verdict(gain, plausible_lift=gain.mde_relative / 2) == Verdict("relative", "gain", True)  # type: ignore[operator]
    assert verdict(gain, plausible_lift=gain.mde_relative) == Verdict("relative", "gain", False)  # type: ignore[arg-type]
    negative = compare(MeanStat(1000, -1000.0, 3000.0), MeanStat(1000, -800.0, 2800.0))
    v = verdict(negative)
    assert v.quantity == "absolute" and v.estimate(negative) is negative.absolute and v.call == "gain"
    zero = compare(MeanStat(100, 0.0, 0.0), MeanStat(100, 30.0, 90.0))
    assert verdict(zero) == Verdict("absolute", "gain", False)
    empty = compare(MeanStat(1, 1.0, 1.0), MeanStat(10, 5.0, 5.0))
    assert verdict(empty) == Verdict("absolute", "unavailable", False)
    greater = compare(ProportionStat(50_000, 5300), ProportionStat(50_000, 5000), alternative="greater")
    assert verdict(greater).call == "inconclusive" and greater.relative.ci_high is None
    less = compare(ProportionStat(50_000, 5300), ProportionStat(50_000, 5000), alternative="less")
    assert verdict(less).call == "loss" and less.relative.ci_low is None
    assert PLAUSIBLE_LIFT == 0.10


def test_the_correction_skips_comparisons_without_a_p_value() -> None:
    metrics = {
        "a": {"control": MeanStat(100, 100.0, 300.0), "b": MeanStat(100, 130.0, 400.0)},
        "b": {"control": MeanStat(100, 100.0, 300.0), "b": MeanStat(1, 1.0, 1.0)},
        "c": {"control": MeanStat(100, 100.0, 300.0), "b": MeanStat(100, 110.0, 330.0)},
    }
    for method, factor in (("holm", 2), ("bh", 2)):
        result = analyze(metrics, "control", correction=method)  # type: ignore[arg-type]
        assert result.correction == method
        assert result.metrics["b"].adjusted_p_values == {"b": None}
        raw = [result.metrics[m].headline["b"].absolute.p_value for m in ("a", "c")]
        adjusted = [result.metrics[m].adjusted_p_values["b"] for m in ("a", "c")]  # type: ignore[index]
        assert min(adjusted) == pytest.approx(min(min(raw) * factor, 1.0))  # type: ignore[type-var, operator]


def test_cuped_without_covariate_variance_warns_and_falls_back() -> None:
    c = CupedStat(MeanStat(100, 500.0, 4000.0), MeanStat(100, 200.0, 400.0), 1000.0)
    t = CupedStat(MeanStat(100, 600.0, 5000.0), MeanStat(100, 200.0, 400.0), 1200.0)
    result = compare(c, t, cuped=True)
    assert result.cuped_theta is None
    assert result.warnings == ("the pre-exposure covariate has no variance: CUPED cannot reduce variance",)
    assert result.absolute == compare(c.post, t.post).absolute


def test_clean_json_nulls_what_json_cannot_hold() -> None:
    assert clean_json({"a": [1.0, math.inf, (math.nan, 2)], "b": -math.inf, "c": "x"}) == {
        "a": [1.0, None, [None, 2]],
        "b": None,
        "c": "x",
    }


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e6])
def test_cauchy_schwarz_at_every_scale(scale: float) -> None:
    x = [scale * v for v in (1.0, 2.0, 4.0)]
    y = [scale * v for v in (2.0, 1.0, 3.0)]
    pre, post = MeanStat(3, sum(x), sum(v * v for v in x)), MeanStat(3, sum(y), sum(v * v for v in y))
    sxx = pre.sum_squares - pre.sum**2 / 3
    syy = post.sum_squares - post.sum**2 / 3
    extreme = pre.sum * post.sum / 3 + math.sqrt(sxx * syy)
    assert statistic_problems(CupedStat(post, pre, sum(a * b for a, b in zip(x, y, strict=True)))) == []
    assert statistic_problems(CupedStat(post, pre, extreme)) == []
    beyond = extreme + 1e-6 * math.sqrt(sxx * syy)
    assert [k for k, _ in statistic_problems(CupedStat(post, pre, beyond))] == ["sum_of_products"]
    below = pre.sum * post.sum / 3 - math.sqrt(sxx * syy) - 1e-6 * math.sqrt(sxx * syy)
    assert [k for k, _ in statistic_problems(CupedStat(post, pre, below))] == ["sum_of_products"]
    tight = MeanStat(3, post.sum, post.sum**2 / 3 - 1e-6 * post.sum_squares)
    assert [k for k, _ in statistic_problems(tight)] == ["sum_squares"]


def test_bounds_of_units_and_magnitudes() -> None:
    assert statistic_problems(MeanStat(MAX_UNITS, 1.0, 1.0)) == []
    assert statistic_problems(MeanStat(MAX_UNITS + 1, 1.0, 1.0))[0][0] == "n"
    assert statistic_problems(MeanStat(-1, 1.0, 1.0))[0][0] == "n"
    assert statistic_problems(MeanStat(True, 1.0, 1.0)) == [("n", "must be an integer, not bool")]  # type: ignore[arg-type]
    assert statistic_problems(MeanStat(10, MAX_MAGNITUDE, MAX_MAGNITUDE)) == [
        (
            "sum_squares",
            f"1e+100 is less than sum²/n = {MAX_MAGNITUDE * (MAX_MAGNITUDE / 10):g}: "
            "no data have a negative variance",
        )
    ]
    assert statistic_problems(MeanStat(10, -MAX_MAGNITUDE * 1.0000001, 1.0))[0][0] == "sum"
    assert statistic_problems(MeanStat(10, 1.0, -1.0)) == [("sum_squares", "must not be negative")]
    assert statistic_problems(MeanStat(10, "1", 1.0)) == [("sum", "must be a number, not str")]  # type: ignore[arg-type]
    assert statistic_problems(ProportionStat(10, -1)) == [
        ("sum", "conversions must be between 0 and n = 10, not -1")
    ]
    assert statistic_problems(ProportionStat(10, math.nan)) == [("sum", "must be a finite number, not nan")]
    assert weight_problems({"a": 0.5, "b": True, "c": math.inf, "d": MAX_MAGNITUDE}) == [
        ("b", "must be a number, not bool"),
        ("c", "must be a finite positive number, not inf"),
    ]
