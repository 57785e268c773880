"""The engine against gbstats 0.8.0, scipy, statsmodels and OLS on many seeded random cases, to 1e-9.

Documented differences, tested against another oracle instead:
- CUPED's θ is pooled within arms (the OLS coefficient of ``y ~ treated + x``), gbstats' over both arms
  together: with gbstats given our θ, the adjusted lift, interval and p-value agree.
- gbstats 0.8.0's one-sided "less" interval is ``[-inf, estimate - width]``, which excludes the estimate
  itself; ours is ``[-inf, estimate + width]``, as scipy's Welch test gives it.
- The relative interval is Fieller's (its p-value is the absolute test's); gbstats' is the delta
  method's, whose standard error the relative ``standard_error`` still is.
- gbstats' CUPED relative lift divides by the unadjusted control mean; ours is the ratio of the adjusted
  means, with the covariance both get from the pooled covariate mean (checked by simulation).
"""

from __future__ import annotations

import numpy as np
import pytest
from gbstats.frequentist.tests import (
    FrequentistConfig,
    OneSidedTreatmentGreaterTTest,
    SequentialConfig,
    SequentialTwoSidedTTest,
    TwoSidedTTest,
)
from gbstats.models.statistics import (
    ProportionStatistic,
    RatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
)
from scipy import stats as sps
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
)
from nextbest.stats.frequentist import Comparison, fieller_interval

SEEDS = range(20)
TOL = {"rel": 1e-9, "abs": 1e-12}


def mean_stat(y: np.ndarray) -> MeanStat:
    return MeanStat(len(y), float(y.sum()), float((y * y).sum()))


def gb_mean(s: MeanStat) -> SampleMeanStatistic:
    return SampleMeanStatistic(n=s.n, sum=s.sum, sum_squares=s.sum_squares)


def draw(seed: int, kind: str) -> tuple[object, object, object, object]:
    """(our control, our treatment, gbstats control, gbstats treatment) for a random case."""
    rng = np.random.default_rng(seed)
    nc, nt = (int(x) for x in rng.integers(30, 5000, size=2))
    if kind == "proportion":
        p = rng.uniform(0.02, 0.6)
        sc, st = float(rng.binomial(nc, p)), float(rng.binomial(nt, p * rng.uniform(0.8, 1.3)))
        return (
            ProportionStat(nc, sc),
            ProportionStat(nt, st),
            ProportionStatistic(n=nc, sum=sc),
            ProportionStatistic(n=nt, sum=st),
        )
    if kind == "mean":
        c = rng.lognormal(0, rng.uniform(0.3, 1.5), size=nc)
        t = rng.lognormal(rng.uniform(-0.2, 0.3), rng.uniform(0.3, 1.5), size=nt)
        ours = mean_stat(c), mean_stat(t)
        return (*ours, gb_mean(ours[0]), gb_mean(ours[1]))
    orders_c, orders_t = 1.0 + rng.poisson(1.5, size=nc), 1.0 + rng.poisson(1.5, size=nt)
    rev_c = orders_c * rng.gamma(3, 10, size=nc)
    rev_t = orders_t * rng.gamma(3, 10 * rng.uniform(0.8, 1.3), size=nt)
    ours_r = tuple(
        RatioStat(mean_stat(r), mean_stat(o), float((r * o).sum()))
        for r, o in ((rev_c, orders_c), (rev_t, orders_t))
    )
    gb = tuple(
        RatioStatistic(
            n=s.n,
            m_statistic=gb_mean(s.m),
            d_statistic=gb_mean(s.d),
            m_d_sum_of_products=s.m_d_sum_of_products,
        )
        for s in ours_r
    )
    return (*ours_r, *gb)


def assert_absolute(ours: Comparison, gb: object, *, one_sided: bool = False) -> None:
    a = ours.absolute
    result = gb.compute_result()  # type: ignore[attr-defined]
    assert a.value == pytest.approx(result.expected, **TOL)
    assert a.p_value == pytest.approx(result.p_value, rel=1e-9, abs=1e-14)
    assert a.ci_low == pytest.approx(result.ci[0], **TOL)
    if one_sided:
        assert a.ci_high is None and result.ci[1] == np.inf
    else:
        assert a.ci_high == pytest.approx(result.ci[1], **TOL)


@pytest.mark.parametrize("kind", ["proportion", "mean", "ratio"])
@pytest.mark.parametrize("seed", SEEDS)
def test_absolute_and_relative_match_gbstats(kind: str, seed: int) -> None:
    c, t, gc, gt = draw(seed, kind)
    ours = compare(c, t, alpha=0.05 + 0.01 * (seed % 5))  # type: ignore[arg-type]
    config = FrequentistConfig(alpha=0.05 + 0.01 * (seed % 5), difference_type="absolute")
    assert_absolute(ours, TwoSidedTTest(gc, gt, config))  # type: ignore[arg-type]
    relative = TwoSidedTTest(gc, gt, FrequentistConfig(difference_type="relative")).compute_result()  # type: ignore[arg-type]
    assert ours.relative.value == pytest.approx(relative.expected, **TOL)
    assert ours.relative.standard_error == pytest.approx(relative.uplift.stddev, **TOL)
    assert ours.degrees_of_freedom is not None


@pytest.mark.parametrize("kind", ["proportion", "mean", "ratio"])
@pytest.mark.parametrize("seed", SEEDS)
def test_one_sided_greater_matches_gbstats(kind: str, seed: int) -> None:
    c, t, gc, gt = draw(seed, kind)
    ours = compare(c, t, alternative="greater")  # type: ignore[arg-type]
    gb = OneSidedTreatmentGreaterTTest(gc, gt, FrequentistConfig(difference_type="absolute"))  # type: ignore[arg-type]
    assert_absolute(ours, gb, one_sided=True)


@pytest.mark.parametrize("seed", SEEDS)
def test_sequential_with_tuning_matches_gbstats(seed: int) -> None:
    for kind in ("proportion", "mean", "ratio"):
        c, t, gc, gt = draw(seed, kind)
        tuning = float(np.random.default_rng(seed).integers(100, 100_000))
        ours = compare(c, t, sequential=True, tuning=tuning)  # type: ignore[arg-type]
        config = SequentialConfig(difference_type="absolute", sequential_tuning_parameter=tuning)
        assert_absolute(ours, SequentialTwoSidedTTest(gc, gt, config))  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", SEEDS)
def test_one_sided_less_matches_scipy(seed: int) -> None:
    """gbstats 0.8.0 gets this bound wrong (see the module docstring)."""
    rng = np.random.default_rng(seed)
    c = rng.lognormal(0, 1, size=rng.integers(20, 2000))
    t = rng.lognormal(rng.uniform(-0.3, 0.3), 1, size=rng.integers(20, 2000))
    ours = compare(mean_stat(c), mean_stat(t), alternative="less").absolute
    oracle = sps.ttest_ind(t, c, equal_var=False, alternative="less")
    assert ours.p_value == pytest.approx(oracle.pvalue, rel=1e-9)
    assert ours.ci_low is None
    assert ours.ci_high == pytest.approx(oracle.confidence_interval(0.95).high, rel=1e-9)


def cuped_case(seed: int) -> tuple[CupedStat, CupedStat, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    nc, nt = (int(x) for x in rng.integers(50, 4000, size=2))
    x = rng.gamma(2.0, rng.uniform(1, 20), size=nc + nt)
    treated = np.r_[np.zeros(nc), np.ones(nt)]
    y = (
        rng.uniform(0, 10)
        + rng.uniform(0.2, 1.5) * x
        + rng.uniform(-2, 2) * treated
        + rng.normal(0, 5, nc + nt)
    )

    def stat(mask: np.ndarray) -> CupedStat:
        return CupedStat(mean_stat(y[mask]), mean_stat(x[mask]), float((x[mask] * y[mask]).sum()))

    return stat(treated == 0), stat(treated == 1), x, y, treated


@pytest.mark.parametrize("seed", SEEDS)
def test_cuped_matches_gbstats_given_the_same_theta_and_ols(seed: int) -> None:
    c, t, x, y, treated = cuped_case(seed)
    ours = compare(c, t, cuped=True)

    def gb(s: CupedStat) -> RegressionAdjustedStatistic:
        return RegressionAdjustedStatistic(
            n=s.n,
            post_statistic=gb_mean(s.post),
            pre_statistic=gb_mean(s.pre),
            post_pre_sum_of_products=s.post_pre_sum_of_products,
            theta=0.0,
        )

    test = TwoSidedTTest(gb(c), gb(t), FrequentistConfig(difference_type="absolute"))
    test.stat_a.theta = test.stat_b.theta = ours.cuped_theta  # type: ignore[union-attr]
    assert_absolute(ours, test)
    design = np.column_stack([np.ones_like(x), treated, x])
    coefficients, *_ = np.linalg.lstsq(design, y, rcond=None)
    assert ours.absolute.value == pytest.approx(coefficients[1], rel=1e-9, abs=1e-9)
    assert ours.cuped_theta == pytest.approx(coefficients[2], rel=1e-9)
    # The adjusted means are the OLS fit's predictions at the pooled covariate mean.
    for arm, s in ((0, ours.control_mean), (1, ours.treatment_mean)):
        assert s == pytest.approx(
            coefficients[0] + coefficients[1] * arm + coefficients[2] * x.mean(), rel=1e-9
        )


@pytest.mark.parametrize("seed", SEEDS)
def test_fieller_interval_solves_its_equation_and_shares_the_absolute_p_value(seed: int) -> None:
    c, t, *_ = draw(seed, "mean")
    for alternative in ("two-sided", "greater", "less"):
        result = compare(c, t, alternative=alternative)  # type: ignore[arg-type]
        r, a = result.relative, result.absolute
        assert r.p_value == a.p_value and r.method == "fieller"
        q = sps.t.ppf(0.975 if alternative == "two-sided" else 0.95, result.degrees_of_freedom)
        var_c, var_t = c.variance / c.n, t.variance / t.n  # type: ignore[attr-defined]
        mc, mt = result.control_mean, result.treatment_mean
        for bound in (r.ci_low, r.ci_high):
            if bound is not None:
                ratio = bound + 1
                assert (mt - ratio * mc) ** 2 == pytest.approx(q**2 * (var_t + ratio**2 * var_c), rel=1e-9)
        # The interval excludes zero exactly when the absolute one does.
        assert ((r.ci_low or -1) > 0 or (r.ci_high if r.ci_high is not None else 1) < 0) == (
            (a.ci_low or -1) > 0 or (a.ci_high if a.ci_high is not None else 1) < 0
        )


def test_fieller_is_unbounded_when_the_denominator_is_not_significant() -> None:
    assert fieller_interval(1.0, 0.1, 1.0, 1.0, 0.0, critical=1.96) is None
    low, high = fieller_interval(2.0, 1.0, 0.01, 0.01, 0.0, critical=1.96)  # type: ignore[misc]
    assert low < 2.0 < high


@pytest.mark.parametrize("seed", SEEDS)
def test_corrections_match_statsmodels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = list(rng.uniform(0, 0.2, size=rng.integers(1, 30)) ** rng.uniform(1, 3))
    assert holm(p) == pytest.approx(list(multipletests(p, method="holm")[1]), abs=1e-12)
    assert benjamini_hochberg(p) == pytest.approx(list(multipletests(p, method="fdr_bh")[1]), abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_power_and_mde_match_statsmodels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    variance, n, alpha = rng.uniform(0.1, 100), int(rng.integers(10, 100_000)), rng.uniform(0.01, 0.2)
    target = rng.uniform(0.5, 0.95)
    mde = minimum_detectable_effect(variance, n, n, alpha=alpha, target_power=target)
    assert mde.value is not None
    std = variance**0.5
    shift = mde.value / (std * (2 / n) ** 0.5)
    far_tail = sps.norm.cdf(-shift - sps.norm.ppf(1 - alpha / 2))
    # statsmodels' power counts the far tail too, which the MDE leaves out.
    assert NormalIndPower().power(mde.value / std, n, alpha, ratio=1.0) == pytest.approx(
        target + far_tail, rel=1e-9
    )
    effect = rng.uniform(0, 3) * std / n**0.5
    achieved = power(effect, variance, n, n, alpha=alpha).value
    assert achieved == pytest.approx(NormalIndPower().power(effect / std, n, alpha, ratio=1.0), rel=1e-9)
