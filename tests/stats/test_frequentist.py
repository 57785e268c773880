"""The stats engine against outside oracles (scipy, statsmodels, OLS) and pinned published numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats import proportion as sm_proportion
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower

from nextbest.stats import (
    CupedStat,
    MeanStat,
    ProportionStat,
    RatioStat,
    benjamini_hochberg,
    compare,
    holm,
    minimum_detectable_effect,
    power,
    srm_check,
)

CONTROL = MeanStat(3407, 1396.87, 52377.9767)
TREATMENT = MeanStat(3461, 2422.7, 134698.29)


def mean_stat(values: np.ndarray) -> MeanStat:
    return MeanStat(len(values), float(values.sum()), float((values**2).sum()))


def test_published_case_absolute_and_relative() -> None:
    """GrowthBook's frequentist test case, to 1e-6."""
    result = compare(CONTROL, TREATMENT)
    a, r = result.absolute, result.relative
    assert a.value == pytest.approx(0.29, abs=1e-9)
    assert (a.ci_low, a.ci_high, a.p_value) == pytest.approx((0.0453779, 0.5346221, 0.0201584), abs=1e-6)
    assert r.value == pytest.approx(0.7073171, abs=1e-6)
    # GrowthBook's delta-method interval (-0.0352601, 1.4498942) with p 0.0619 contradicts the absolute
    # test (p 0.020); the standard error is still the delta method's, the interval Fieller's.
    q = sps.t.ppf(0.975, result.degrees_of_freedom)
    assert r.standard_error * q == pytest.approx((1.4498942 + 0.0352601) / 2, abs=1e-6)
    assert r.method == "fieller" and r.p_value == a.p_value
    assert (r.ci_low, r.ci_high) == pytest.approx((0.0940620, 1.7086899), abs=1e-6)


@pytest.mark.parametrize("seed", range(8))
def test_absolute_welch_matches_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    c = rng.lognormal(0, 1, size=rng.integers(20, 3000))
    t = rng.lognormal(0.1, 1.2, size=rng.integers(20, 3000))
    result = compare(mean_stat(c), mean_stat(t))
    oracle = sps.ttest_ind_from_stats(
        t.mean(), t.std(ddof=1), len(t), c.mean(), c.std(ddof=1), len(c), equal_var=False
    )
    assert result.absolute.value / result.absolute.standard_error == pytest.approx(oracle.statistic, abs=1e-6)
    assert result.absolute.p_value == pytest.approx(oracle.pvalue, abs=1e-6)
    greater = compare(mean_stat(c), mean_stat(t), alternative="greater")
    one_sided = sps.ttest_ind_from_stats(
        t.mean(),
        t.std(ddof=1),
        len(t),
        c.mean(),
        c.std(ddof=1),
        len(c),
        equal_var=False,
        alternative="greater",
    )
    assert greater.absolute.p_value == pytest.approx(one_sided.pvalue, abs=1e-6)
    assert greater.absolute.ci_high is None and greater.absolute.ci_low is not None
    less = compare(mean_stat(c), mean_stat(t), alternative="less")
    assert less.absolute.p_value == pytest.approx(1 - one_sided.pvalue, abs=1e-6)


def test_interval_level_is_configurable() -> None:
    wide = compare(CONTROL, TREATMENT, alpha=0.01).absolute
    narrow = compare(CONTROL, TREATMENT, alpha=0.2).absolute
    assert wide.ci_low < narrow.ci_low < narrow.ci_high < wide.ci_high  # type: ignore[operator]


def test_proportions_match_statsmodels_wald() -> None:
    control, treatment = ProportionStat(21306, 122), ProportionStat(21307, 267)  # Hillstrom conversions
    result = compare(control, treatment).absolute
    oracle = sm_proportion.test_proportions_2indep(267, 21307, 122, 21306, method="wald", compare="diff")
    assert result.value == pytest.approx(oracle.diff, abs=1e-12)
    assert result.standard_error == pytest.approx(math.sqrt(oracle.variance), rel=1e-9)
    # The engine uses Student's t with Welch's ~40,000 degrees of freedom; statsmodels the normal.
    assert result.p_value == pytest.approx(oracle.pvalue, rel=1e-3)


def test_cuped_estimate_equals_ols_on_the_raw_rows() -> None:
    rng = np.random.default_rng(7)
    n_c, n_t = 4000, 3800
    x = rng.gamma(2.0, 10.0, size=n_c + n_t)
    treated = np.r_[np.zeros(n_c), np.ones(n_t)]
    y = 5 + 0.8 * x + 1.5 * treated + rng.normal(0, 8, size=n_c + n_t)

    def cuped(mask: np.ndarray) -> CupedStat:
        return CupedStat(mean_stat(y[mask]), mean_stat(x[mask]), float((y[mask] * x[mask]).sum()))

    control, treatment = cuped(treated == 0), cuped(treated == 1)
    adjusted = compare(control, treatment, cuped=True)
    design = np.column_stack([np.ones_like(x), treated, x])
    coefficients, *_ = np.linalg.lstsq(design, y, rcond=None)
    assert adjusted.absolute.value == pytest.approx(coefficients[1], abs=1e-6)
    assert adjusted.cuped_theta == pytest.approx(coefficients[2], abs=1e-6)
    plain = compare(control, treatment)
    assert adjusted.absolute.standard_error < 0.6 * plain.absolute.standard_error  # variance reduced
    assert plain.cuped_theta is None


def test_ratio_variance_by_the_delta_method_matches_simulation() -> None:
    rng = np.random.default_rng(11)
    n = 2000
    orders = rng.poisson(2.0, size=n) + 1
    revenue = orders * rng.gamma(3.0, 15.0, size=n)
    stat = RatioStat(mean_stat(revenue), mean_stat(orders.astype(float)), float((revenue * orders).sum()))
    assert stat.mean == pytest.approx(revenue.sum() / orders.sum())
    boot = [revenue[idx].sum() / orders[idx].sum() for idx in rng.integers(0, n, size=(2000, n))]
    assert stat.variance / n == pytest.approx(np.var(boot), rel=0.1)


def test_corrections_match_multipletests() -> None:
    p = [0.001, 0.04, 0.03, 0.2, 0.5, 0.011, 0.049]
    assert holm(p) == pytest.approx(list(multipletests(p, method="holm")[1]), abs=1e-12)
    assert benjamini_hochberg(p) == pytest.approx(list(multipletests(p, method="fdr_bh")[1]), abs=1e-12)


def test_srm_matches_scipy_chisquare() -> None:
    result = srm_check({"a": 10_140, "b": 9_860, "c": 20_400}, {"a": 0.25, "b": 0.25, "c": 0.5})
    oracle = sps.chisquare([10_140, 9_860, 20_400], [10_100, 10_100, 20_200])
    assert (result.chi2, result.p_value) == pytest.approx((oracle.statistic, oracle.pvalue), abs=1e-9)


def test_power_and_mde_match_statsmodels() -> None:
    variance, n = 4.0, 5000
    mde = minimum_detectable_effect(variance, n, n, alpha=0.05, target_power=0.8, baseline_mean=10.0)
    assert mde.value is not None and mde.relative == pytest.approx(mde.value / 10.0)
    achieved = power(mde.value, variance, n, n)
    oracle = NormalIndPower().power(effect_size=mde.value / 2.0, nobs1=n, alpha=0.05, ratio=1.0)
    assert achieved.value == pytest.approx(oracle, abs=1e-6)
    assert achieved.value == pytest.approx(0.8, abs=1e-3)


@pytest.mark.parametrize(
    ("control", "treatment", "message"),
    [
        pytest.param(MeanStat(0, 0, 0), MeanStat(10, 5, 5), "not enough units", id="empty-arm"),
        pytest.param(MeanStat(1, 3, 9), MeanStat(10, 5, 5), "not enough units", id="one-unit"),
        pytest.param(MeanStat(10, 10, 10), MeanStat(10, 10, 10), "no variance", id="zero-variance"),
        pytest.param(ProportionStat(100, 0), ProportionStat(100, 0), "no variance", id="no-conversions"),
    ],
)
def test_degenerate_data_is_an_error_not_an_exception(control, treatment, message: str) -> None:  # type: ignore[no-untyped-def]
    result = compare(control, treatment)
    assert message in result.absolute.error and result.absolute.p_value is None
    for estimate in (result.absolute, result.relative):
        for number in (estimate.value, estimate.ci_low, estimate.ci_high, estimate.p_value):
            assert number is None or math.isfinite(number)


def test_zero_control_mean_leaves_absolute_lift_alone() -> None:
    result = compare(MeanStat(100, 0.0, 0.0), MeanStat(100, 30.0, 90.0))
    assert result.relative.error == "the control mean is zero: relative lift is undefined"
    assert result.absolute.error == "" and result.absolute.p_value is not None
