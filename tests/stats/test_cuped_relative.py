"""CUPED relative lift against an independent first-order delta method computed from the raw rows:
numerical gradients of the adjusted means over (ȳ_c, x̄_c, ȳ_t, x̄_t) and those means' sample covariance.
Also: sufficient statistics add (two days' sums are the sums of both days)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from nextbest.stats import CupedStat, MeanStat, ProportionStat, RatioStat, compare


def mean_stat(y: np.ndarray) -> MeanStat:
    return MeanStat(len(y), float(y.sum()), float((y * y).sum()))


def case(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    nc, nt = (int(v) for v in rng.integers(40, 3000, size=2))
    xc, xt = rng.gamma(2.0, 3.0, size=nc), rng.gamma(2.0, 3.0, size=nt) + rng.uniform(-0.5, 0.5)
    yc = 5 + rng.uniform(0.5, 2) * xc + rng.normal(0, 2, nc)
    yt = (5 + rng.uniform(0.5, 2) * xt + rng.normal(0, 2, nt)) * rng.uniform(0.8, 1.5)
    return xc, yc, xt, yt


def cuped(x: np.ndarray, y: np.ndarray) -> CupedStat:
    return CupedStat(mean_stat(y), mean_stat(x), float((x * y).sum()))


@pytest.mark.parametrize("seed", range(15))
def test_cuped_relative_matches_an_independent_delta_method(seed: int) -> None:
    xc, yc, xt, yt = case(seed)
    nc, nt = len(xc), len(xt)
    result = compare(cuped(xc, yc), cuped(xt, yt), cuped=True)
    theta = result.cuped_theta
    assert theta is not None

    def adjusted(m: np.ndarray) -> tuple[float, float]:
        ybc, xbc, ybt, xbt = m
        pooled = (nc * xbc + nt * xbt) / (nc + nt)
        return ybc - theta * (xbc - pooled), ybt - theta * (xbt - pooled)

    means = np.array([yc.mean(), xc.mean(), yt.mean(), xt.mean()])
    sigma = np.zeros((4, 4))
    sigma[:2, :2] = np.cov(np.vstack([yc, xc])) / nc
    sigma[2:, 2:] = np.cov(np.vstack([yt, xt])) / nt

    def gradient(f: object) -> np.ndarray:
        out = np.zeros(4)
        for i in range(4):
            step = np.zeros(4)
            step[i] = 1e-6 * max(1.0, abs(means[i]))
            out[i] = (f(means + step) - f(means - step)) / (2 * step[i])  # type: ignore[operator]
        return out

    ac, at = adjusted(means)
    assert (result.control_mean, result.treatment_mean) == pytest.approx((ac, at), rel=1e-12)
    g = gradient(lambda m: adjusted(m)[1] / adjusted(m)[0])
    assert result.relative.standard_error == pytest.approx(float(np.sqrt(g @ sigma @ g)), rel=1e-6)
    # Fieller's bounds r solve (a_t - r·a_c)² = q²·var(a_t - r·a_c), the variance from the same sigma.
    q = sps.t.ppf(0.975, result.degrees_of_freedom)
    for bound in (result.relative.ci_low, result.relative.ci_high):
        assert bound is not None
        r = bound + 1
        h = gradient(lambda m, r=r: adjusted(m)[1] - r * adjusted(m)[0])
        assert (at - r * ac) ** 2 == pytest.approx(q**2 * float(h @ sigma @ h), rel=1e-6)
    # The absolute lift's standard error from the same sigma (the OLS-equivalent Welch one).
    d = gradient(lambda m: adjusted(m)[1] - adjusted(m)[0])
    assert result.absolute.standard_error == pytest.approx(float(np.sqrt(d @ sigma @ d)), rel=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_sufficient_statistics_add(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Whole numbers, so that every sum is exact whatever the order of addition.
    x, y = rng.integers(0, 50, size=(2, 300)).astype(float)
    d = 1.0 + rng.poisson(1, size=300)
    cut = int(rng.integers(1, 299))
    parts = [slice(0, cut), slice(cut, None)]
    means = [mean_stat(y[p]) for p in parts]
    assert means[0] + means[1] == mean_stat(y)
    props = [ProportionStat(len(y[p]), float((y[p] > 20).sum())) for p in parts]
    assert props[0] + props[1] == ProportionStat(300, float((y > 20).sum()))
    cupeds = [cuped(x[p], y[p]) for p in parts]
    total = cupeds[0] + cupeds[1]
    assert (total.post, total.pre) == (means[0] + means[1], mean_stat(x[parts[0]]) + mean_stat(x[parts[1]]))
    assert total.post_pre_sum_of_products == float((x * y).sum())
    ratios = [RatioStat(mean_stat(y[p]), mean_stat(d[p]), float((y[p] * d[p]).sum())) for p in parts]
    ratio = ratios[0] + ratios[1]
    assert (ratio.m, ratio.d) == (means[0] + means[1], mean_stat(d[parts[0]]) + mean_stat(d[parts[1]]))
    assert ratio.m_d_sum_of_products == float((y * d).sum())
