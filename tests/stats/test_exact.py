"""Every result of the stats engine pinned whole (all fields, not just the interesting ones), on each
path: degenerate inputs, one-sided and sequential tests, the relative lift's errors, the sample-ratio
check's edges and the input checks' messages. Mutation testing showed that a result's other fields
(its standard error, its method, its error text) could change unnoticed."""

from __future__ import annotations

import math

import pytest
from scipy import stats as sps

from nextbest.errors import FieldViolation, InvalidArgumentError
from nextbest.stats import CupedStat, MeanStat, ProportionStat, compare, srm_check
from nextbest.stats.analysis import Analysis, ArmSummary, Verdict, analyze, verdict
from nextbest.stats.frequentist import Comparison, Estimate, sequential_rho
from nextbest.stats.srm import SrmResult
from nextbest.stats.validate import statistic_problems

C, T = MeanStat(400, 800.0, 2000.0), MeanStat(300, 660.0, 1700.0)
NONE = Estimate(None, None, None, None, None)


def welch(c: MeanStat, t: MeanStat) -> tuple[float, float, float]:
    """(difference, standard error, degrees of freedom), computed here."""
    sc, st = c.variance / c.n, t.variance / t.n
    dof = (sc + st) ** 2 / (sc**2 / (c.n - 1) + st**2 / (t.n - 1))
    return t.mean - c.mean, math.sqrt(sc + st), dof


def test_too_few_units() -> None:
    error = "not enough units: control has 1, treatment 300 (at least 2 each)"
    e = Estimate(None, None, None, None, None, error)
    assert compare(MeanStat(1, 2.0, 4.0), T) == Comparison(2.0, T.mean, e, e, None, 0.05, "two-sided", False)


def test_sequential_one_sided_is_refused() -> None:
    error = "sequential intervals are two-sided only"
    assert compare(C, T, sequential=True, alternative="less") == Comparison(
        C.mean,
        T.mean,
        Estimate(T.mean - C.mean, None, None, None, None, error),
        Estimate(None, None, None, None, None, error),
        None,
        0.05,
        "less",
        True,
    )


def test_no_variance() -> None:
    error = "no variance in either arm: every unit has the same value"
    c, t = MeanStat(10, 20.0, 40.0), MeanStat(10, 30.0, 90.0)
    assert compare(c, t) == Comparison(
        2.0,
        3.0,
        Estimate(1.0, None, None, None, 0.0, error),
        Estimate(None, None, None, None, None, error),
        None,
        0.05,
        "two-sided",
        False,
    )


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_fixed_horizon_estimates_whole(alternative: str) -> None:
    diff, se, dof = welch(C, T)
    result = compare(C, T, alternative=alternative, alpha=0.1)  # type: ignore[arg-type]
    q = sps.t.ppf(0.95 if alternative == "two-sided" else 0.9, dof)
    t = diff / se
    p = {"two-sided": 2 * sps.t.sf(abs(t), dof), "greater": sps.t.sf(t, dof), "less": sps.t.cdf(t, dof)}
    low = diff - q * se if alternative != "less" else None
    high = diff + q * se if alternative != "greater" else None
    expected = Estimate(diff, low, high, float(p[alternative]), se, "", "welch")
    a = result.absolute
    assert a.method == expected.method and a.error == "" and a.standard_error == pytest.approx(se, rel=1e-12)
    assert (a.ci_low is None, a.ci_high is None) == (low is None, high is None)
    got = [x for x in (a.value, a.ci_low, a.ci_high, a.p_value) if x is not None]
    want = [x for x in (diff, low, high, expected.p_value) if x is not None]
    assert got == pytest.approx(want, rel=1e-10)
    assert (result.degrees_of_freedom, result.alpha, result.alternative, result.sequential) == (
        pytest.approx(dof, rel=1e-12),
        0.1,
        alternative,
        False,
    )
    r = result.relative
    assert (r.method, r.error, r.p_value) == ("fieller", "", a.p_value)
    assert (r.ci_low is None, r.ci_high is None) == (low is None, high is None)
    se_rel = math.sqrt(T.variance / (T.n * C.mean**2) + C.variance * T.mean**2 / (C.n * C.mean**4))
    assert r.value == pytest.approx(T.mean / C.mean - 1, rel=1e-12)
    assert r.standard_error == pytest.approx(se_rel, rel=1e-12)
    assert result.cuped_theta is None and result.warnings == ()


def test_sequential_estimate_whole() -> None:
    diff, se, _ = welch(C, T)
    result = compare(C, T, sequential=True, tuning=1234.0, alpha=0.1)
    nr2 = (C.n + T.n) * sequential_rho(0.1, 1234.0) ** 2
    half = se * math.sqrt(2 * (nr2 + 1) * math.log(math.sqrt(nr2 + 1) / 0.1) / nr2)
    log_e = nr2 * (diff / se) ** 2 / (2 * (nr2 + 1)) - 0.5 * math.log(nr2 + 1)
    p = 1.0 if log_e <= 0 else math.exp(-log_e)
    a = result.absolute
    assert (a.method, a.error) == ("sequential", "")
    assert (a.value, a.ci_low, a.ci_high, a.p_value, a.standard_error) == pytest.approx(
        (diff, diff - half, diff + half, p, se), rel=1e-10
    )
    assert result.relative.method == "fieller-sequential" and result.relative.p_value == a.p_value
    assert result.sequential is True


def test_a_strong_sequential_effect_has_a_small_p_value() -> None:
    strong = compare(C, MeanStat(300, 900.0, 3000.0), sequential=True, tuning=700.0)
    assert strong.absolute.p_value is not None and strong.absolute.p_value < 1e-6
    flat = compare(C, MeanStat(400, 800.0, 2000.0), sequential=True)
    assert flat.absolute.p_value == 1.0


def test_relative_lift_errors_whole() -> None:
    zero = compare(MeanStat(100, 0.0, 50.0), MeanStat(100, 30.0, 90.0)).relative
    assert zero == Estimate(
        None, None, None, None, None, "the control mean is zero: relative lift is undefined"
    )
    # The control mean is not distinguishable from zero: Fieller's interval is unbounded.
    c, t = MeanStat(50, 5.0, 500.0), MeanStat(50, 100.0, 800.0)
    result = compare(c, t)
    r = result.relative
    error = (
        "the control mean is not distinguishable from zero at this level: the relative interval is unbounded"
    )
    assert (r.value, r.ci_low, r.ci_high, r.p_value, r.error, r.method) == (
        pytest.approx(t.mean / c.mean - 1),
        None,
        None,
        result.absolute.p_value,
        error,
        "fieller",
    )
    assert r.standard_error is not None and r.standard_error > 0
    negative = compare(MeanStat(100, -200.0, 1000.0), MeanStat(100, -150.0, 900.0), alternative="greater")
    r = negative.relative
    assert (r.ci_low, r.ci_high, r.p_value, r.error, r.method) == (
        None,
        None,
        negative.absolute.p_value,
        "the control mean is negative: a one-sided relative interval is not defined",
        "fieller",
    )
    assert r.value == pytest.approx(-0.25) and r.standard_error is not None
    # Absolute test without a p-value (a zero standard error): the relative carries its error.
    flat = compare(ProportionStat(10, 0), ProportionStat(10, 0))
    assert flat.relative.error and flat.relative.p_value is None


def test_srm_edges_whole() -> None:
    unknown = srm_check({"a": 10, "z": 5}, {"a": 0.5, "b": 0.5})
    assert (unknown.total, unknown.alarm, unknown.error) == (10, True, "units in unknown arms: ['z']")
    assert math.isnan(unknown.chi2) and math.isnan(unknown.p_value)
    assert srm_check({}, {"a": 0.5, "b": 0.5}) == SrmResult(0.0, 1.0, 0, False, "no units yet")
    assert srm_check({"a": 7}, {"a": 1.0}) == SrmResult(0.0, 1.0, 7, False, "fewer than two arms")
    result = srm_check({"a": 1000, "b": 1200}, {"a": 1.0, "b": 1.0})
    oracle = sps.chisquare([1000, 1200], [1100, 1100])
    assert result == SrmResult(float(oracle.statistic), float(oracle.pvalue), 2200, True, "")
    near = srm_check({"a": 1000, "b": 1100}, {"a": 2.0, "b": 2.0})
    assert near.alarm is False and near.p_value > 0.001 and near.total == 2100


def test_analysis_whole() -> None:
    metrics = {"m": {"control": C, "b": T}}
    result = analyze(metrics, "control", correction="bh", weights={"control": 0.5, "b": 0.5}, alpha=0.1)
    assert isinstance(result, Analysis) and (result.control, result.correction) == ("control", "bh")
    assert result.metrics["m"].arms == {
        "control": ArmSummary(C.n, C.mean, C.variance),
        "b": ArmSummary(T.n, T.mean, T.variance),
    }
    assert result.metrics["m"].comparisons == {"b": compare(C, T, alpha=0.1)}
    assert result.srm == srm_check({"control": C.n, "b": T.n}, {"control": 0.5, "b": 0.5})
    assert any(w.startswith("sample-ratio mismatch (p = ") for w in result.warnings)
    counted = analyze(
        metrics, "control", weights={"control": 0.5, "b": 0.5}, units={"control": 350, "b": 350}
    )
    assert counted.srm is not None and counted.srm.p_value == 1.0 and counted.warnings == ()
    plain = analyze(metrics, "control")
    assert plain.srm is None and plain.correction is None and plain.metrics["m"].adjusted_p_values is None
    c = CupedStat(MeanStat(100, 500.0, 4000.0), MeanStat(100, 200.0, 900.0), 1500.0)
    t = CupedStat(MeanStat(100, 600.0, 5000.0), MeanStat(100, 210.0, 1000.0), 1800.0)
    cuped = analyze({"r": {"control": c, "b": t}}, "control", sequential=True, tuning=999.0).metrics["r"]
    assert cuped.cuped == {"b": compare(c, t, cuped=True, sequential=True, tuning=999.0)}
    assert cuped.comparisons == {"b": compare(c, t, sequential=True, tuning=999.0)}


@pytest.mark.parametrize(
    ("kwargs", "violations"),
    [
        ({"alpha": 1.0}, [FieldViolation("alpha", "must be between 0 and 1, not 1.0")]),
        ({"alpha": 0.0}, [FieldViolation("alpha", "must be between 0 and 1, not 0.0")]),
        ({"tuning": 0.0}, [FieldViolation("tuning", "must be a finite positive number, not 0.0")]),
        ({"tuning": math.inf}, [FieldViolation("tuning", "must be a finite positive number, not inf")]),
        ({"tuning": 1e101}, [FieldViolation("tuning", "must be a finite positive number, not 1e+101")]),
        (
            {"weights": {"control": -1.0}},
            [FieldViolation("weights.control", "must be a finite positive number, not -1.0")],
        ),
    ],
)
def test_analysis_options_are_checked(kwargs: dict[str, object], violations: list[FieldViolation]) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        analyze({"m": {"control": C, "b": T}}, "control", **kwargs)  # type: ignore[arg-type]
    assert caught.value.violations == violations


def test_analysis_structure_is_checked() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        analyze({}, "control")
    assert caught.value.violations == [FieldViolation("metrics", "at least one metric is required")]
    with pytest.raises(InvalidArgumentError) as caught:
        analyze({"m": {"b": T, "c": ProportionStat(3, 1)}}, "control")
    assert caught.value.violations == [
        FieldViolation("metrics.m.arms", "the control arm 'control' is missing"),
        FieldViolation("metrics.m", "mixes statistic types ['MeanStat', 'ProportionStat']"),
    ]
    assert analyze({"m": {"control": C, "b": T}}, "control", alpha=0.999, tuning=1e100).control == "control"


def test_statistic_problem_messages() -> None:
    pre_short = CupedStat(MeanStat(5, 5.0, 10.0), MeanStat(4, 4.0, 8.0), 5.0)
    assert statistic_problems(pre_short) == [("n", "the covariate counts 4 units, the metric 5")]
    from nextbest.stats import RatioStat

    d_short = RatioStat(MeanStat(5, 5.0, 10.0), MeanStat(4, 4.0, 8.0), 5.0)
    assert statistic_problems(d_short) == [("n", "the denominator counts 4 units, the numerator 5")]
    assert statistic_problems(MeanStat(2.0, 1.0, 1.0)) == [("n", "must be an integer, not float")]  # type: ignore[arg-type]
    assert statistic_problems(MeanStat(3, 1.0, 1e101)) == [
        ("sum_squares", "1e+101 is too large (at most 1e+100 in absolute value)")
    ]
    bad_pre = CupedStat(MeanStat(5, 5.0, 10.0), MeanStat(5, 5.0, 1.0), 5.0)
    assert [k for k, _ in statistic_problems(bad_pre)] == ["pre_sum_squares"]
    cross = CupedStat(MeanStat(3, 6.0, 14.0), MeanStat(3, 6.0, 14.0), 20.0)
    assert statistic_problems(cross) == [
        ("sum_of_products", "20 implies a correlation beyond ±1 (Cauchy–Schwarz): no data give it")
    ]


def test_two_units_per_arm_are_enough() -> None:
    result = compare(MeanStat(2, 3.0, 5.0), MeanStat(2, 5.0, 13.0))
    assert result.absolute.p_value is not None and result.absolute.error == ""


def test_an_infinite_variance_is_an_error_not_a_number() -> None:
    error = "the variance is not finite: sums too large to analyse"
    result = compare(MeanStat(10, 1.0, math.inf), MeanStat(10, 1.0, 2.0))
    assert result.absolute == Estimate(None, None, None, None, None, error) == result.relative


def test_zero_sums_and_no_conversions_are_possible() -> None:
    assert statistic_problems(MeanStat(10, 0.0, 0.0)) == []
    assert statistic_problems(ProportionStat(10, 0)) == []
    zeros = MeanStat(3, 0.0, 0.0)
    assert statistic_problems(CupedStat(zeros, zeros, 0.0)) == []
    empty = MeanStat(0, 0.0, 0.0)
    assert statistic_problems(CupedStat(empty, empty, 0.0)) == []
    one = CupedStat(MeanStat(1, 3.0, 9.0), MeanStat(1, 2.0, 4.0), 10.0)  # x·y must be 6
    assert [k for k, _ in statistic_problems(one)] == ["sum_of_products"]
    assert statistic_problems(CupedStat(MeanStat(1, 3.0, 9.0), MeanStat(1, 2.0, 4.0), 6.0)) == []
    assert statistic_problems(CupedStat(zeros, zeros, math.nan)) == [
        ("sum_of_products", "must be a finite number, not nan")
    ]


def test_small_scale_cuped() -> None:
    """Covariate and metric below 1 in scale: θ's denominator and the adjusted variance are below 1."""
    c = CupedStat(MeanStat(4, 0.04, 0.00060), MeanStat(4, 0.04, 0.00050), 0.00052)
    t = CupedStat(MeanStat(4, 0.06, 0.00110), MeanStat(4, 0.04, 0.00046), 0.00066)
    result = compare(c, t, cuped=True)
    assert result.cuped_theta is not None
    assert result.absolute.standard_error is not None and result.absolute.standard_error < 0.01


def test_an_inconclusive_relative_interval_below_one() -> None:
    v = verdict(compare(ProportionStat(1000, 100), ProportionStat(1000, 110)))
    assert v == Verdict("relative", "inconclusive", True)


def test_analysis_passes_every_option() -> None:
    from nextbest.stats.io import StatsRequest, run

    c, t = ProportionStat(1000, 100), ProportionStat(1000, 125)
    options = {"alpha": 0.2, "alternative": "greater", "tuning": 777.0}
    result = analyze({"m": {"control": c, "b": t}}, "control", plausible_lift=0.9, **options)  # type: ignore[arg-type]
    assert result.metrics["m"].comparisons["b"] == compare(c, t, **options)  # type: ignore[arg-type]
    assert result.metrics["m"].verdicts == {"b": verdict(compare(c, t, **options), 0.9)}  # type: ignore[arg-type]
    sequential = analyze({"m": {"control": c, "b": t}}, "control", sequential=True)
    assert sequential.metrics["m"].comparisons["b"] == compare(c, t, sequential=True, tuning=5000.0)
    assert analyze({"m": {"control": c, "b": t}}, "control", tuning=0.5).control == "control"
    request = StatsRequest.model_validate(
        {
            "control": "control",
            "alpha": 0.2,
            "alternative": "greater",
            "tuning": 777.0,
            "correction": "bh",
            "metrics": {
                "m": {
                    "type": "proportion",
                    "arms": {"control": {"n": 1000, "sum": 100}, "b": {"n": 1000, "sum": 125}},
                }
            },
        }
    )
    via_json = run(request)
    assert via_json.correction == "bh"
    assert via_json.metrics["m"].comparisons["b"] == compare(c, t, **options)  # type: ignore[arg-type]


def test_corrections_differ_and_warnings_read_whole() -> None:
    from statsmodels.stats.multitest import multipletests

    metrics = {
        name: {"control": ProportionStat(1000, 100), "b": ProportionStat(1000, 100 + lift)}
        for name, lift in (("a", 20), ("b", 30), ("c", 38))
    }
    for method, oracle in (("holm", "holm"), ("bh", "fdr_bh")):
        result = analyze(metrics, "control", correction=method)  # type: ignore[arg-type]
        raw = [result.metrics[m].headline["b"].absolute.p_value for m in "abc"]
        adjusted = [result.metrics[m].adjusted_p_values["b"] for m in "abc"]  # type: ignore[index]
        assert adjusted == pytest.approx(list(multipletests(raw, method=oracle)[1]), rel=1e-12)
    srm = analyze(metrics, "control", weights={"control": 0.5, "b": 0.5}, units={"control": 1000, "b": 1300})
    assert srm.srm is not None
    assert srm.warnings == (
        f"sample-ratio mismatch (p = {srm.srm.p_value:.2g}): assignment or logging is broken; "
        "do not trust these results",
    )


def test_cuped_with_one_and_two_units_per_arm() -> None:
    one = CupedStat(MeanStat(1, 3.0, 9.0), MeanStat(1, 2.0, 4.0), 6.0)
    two = CupedStat(MeanStat(2, 3.0, 5.0), MeanStat(2, 3.0, 5.0), 4.0)
    result = compare(one, two, cuped=True)
    assert result.absolute.error == "not enough units: control has 1, treatment 2 (at least 2 each)"
    c = CupedStat(MeanStat(2, 3.0, 5.0), MeanStat(2, 1.0, 1.0), 2.0)  # y (1, 2), x (0, 1)
    t = CupedStat(MeanStat(2, 7.0, 25.0), MeanStat(2, 2.0, 4.0), 6.0)  # y (3, 4), x (2, 0)
    result = compare(c, t, cuped=True)
    theta = (0.5 - 1.0) / (0.5 + 2.0)
    assert result.cuped_theta == pytest.approx(theta)
    var_c = 0.5 + theta**2 * 0.5 - 2 * theta * 0.5
    var_t = 0.5 + theta**2 * 2.0 - 2 * theta * -1.0
    assert result.absolute.standard_error == pytest.approx(math.sqrt(var_c / 2 + var_t / 2))


def test_relative_intervals_with_negative_or_small_control_means() -> None:
    two_sided = compare(MeanStat(400, -800.0, 2000.0), MeanStat(300, -660.0, 1700.0))
    assert two_sided.relative.error == "" and two_sided.relative.ci_low is not None
    small = compare(MeanStat(400, 200.0, 150.0), MeanStat(300, 180.0, 140.0), alternative="greater")
    assert small.control_mean == 0.5 and small.relative.error == "" and small.relative.ci_low is not None


def test_the_json_path_passes_sequential_tuning() -> None:
    from nextbest.stats.io import StatsRequest, run

    arms = {"control": {"n": 1000, "sum": 100}, "b": {"n": 1000, "sum": 125}}
    request = StatsRequest.model_validate(
        {
            "control": "control",
            "sequential": True,
            "tuning": 321.0,
            "metrics": {"m": {"type": "proportion", "arms": arms}},
        }
    )
    c, t = ProportionStat(1000, 100), ProportionStat(1000, 125)
    assert run(request).metrics["m"].comparisons["b"] == compare(c, t, sequential=True, tuning=321.0)
