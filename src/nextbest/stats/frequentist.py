"""Frequentist comparison of a treatment arm with its control, from sufficient statistics.

- Welch's t-test with Welch–Satterthwaite degrees of freedom (which becomes the z-test at scale); two-sided
  or one-sided, intervals at any level.
- Relative lift ``mean_t / mean_c - 1``: Fieller's interval (Fieller, JRSS B 1954; Statsig's default),
  the set of ratios r for which ``mean_t - r·mean_c`` is not significantly different from zero. Its test
  of "no lift" is the absolute test, so the relative interval excludes zero exactly when the absolute
  p-value is below alpha: the two never contradict each other. At ≈ 100 units per arm the delta-method
  interval is too narrow and skewed the wrong way (benchmarks/bench_calibration.py measures it); as the
  sample grows Fieller's interval converges to the delta method's. The relative ``standard_error`` is the
  delta method's, ``var_t/(n_t·m_c²) + var_c·m_t²/(n_c·m_c⁴)`` (with the covariance term under CUPED).
- CUPED (Deng, Xu, Kohavi & Walker, WSDM 2013): ``y - θ(x - x̄)`` with x the same metric before exposure,
  x̄ pooled over both arms and θ pooled within arms, which makes the adjusted difference equal to the
  treatment coefficient of an OLS fit ``y ~ treated + x``. Both adjusted means share x̄, so they are
  correlated: the relative lift uses the full first-order delta method over (ȳ_c, x̄_c, ȳ_t, x̄_t).
- Always-valid (sequential) intervals and p-values: the asymptotic confidence sequences of Waudby-Smith et
  al. 2023 (https://arxiv.org/abs/2103.06476, eq. 9 and 155), tuned for an expected sample size, as in
  GrowthBook's engine. Valid however often the results are looked at.
- The minimum detectable effect at the current sample (80 % power, normal approximation), so that a
  report can say when it had too few units to see a plausible effect.

Degenerate inputs (too few units, no variance, a zero control mean) give an estimate with ``error`` set;
never an exception, never a NaN passed off as a number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from scipy import stats
else:  # imported on first use (see lazy_scipy)
    from nextbest.stats.lazy_scipy import stats

from nextbest.stats.statistics import CupedStat, Statistic

__all__ = [
    "MDE_POWER",
    "Alternative",
    "Comparison",
    "Estimate",
    "compare",
    "cuped_theta",
    "fieller_interval",
    "sequential_rho",
]

Alternative = Literal["two-sided", "greater", "less"]

# The power at which the minimum detectable effect is stated.
MDE_POWER = 0.8


@dataclass(frozen=True, slots=True)
class Estimate:
    """A lift with its interval (a side is None when the test is one-sided) and p-value. ``method`` names
    how the interval was computed (``welch``, ``sequential``, ``fieller``, ``fieller-sequential``)."""

    value: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    standard_error: float | None
    error: str = ""
    method: str = ""


@dataclass(frozen=True, slots=True)
class Comparison:
    control_mean: float
    treatment_mean: float
    absolute: Estimate
    relative: Estimate
    degrees_of_freedom: float | None
    alpha: float
    alternative: Alternative
    sequential: bool
    cuped_theta: float | None = None
    warnings: tuple[str, ...] = field(default=())
    # The smallest absolute (and relative) lift this sample detects with 80 % power at ``alpha``.
    mde: float | None = None
    mde_relative: float | None = None


def sequential_rho(alpha: float, tuning: float) -> float:
    """The mixing parameter that makes the (two-sided) confidence sequence tightest near ``tuning`` units
    (Waudby-Smith et al., eq. 161)."""
    return math.sqrt((-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / tuning)


def cuped_theta(control: CupedStat, treatment: CupedStat) -> float | None:
    """θ pooled within arms: Σ(y - ȳ)(x - x̄) / Σ(x - x̄)², each sum taken within its arm. None when the
    covariate has no variance."""
    denominator = control.centered_pre_squares + treatment.centered_pre_squares
    if denominator <= 0:
        return None
    return (control.centered_cross + treatment.centered_cross) / denominator


@dataclass(frozen=True, slots=True)
class _Moments:
    """Per-arm means and per-unit variances (for the absolute test and Welch's degrees of freedom), and
    the variances and covariance of the two means' estimates (for the relative lift)."""

    mc: float
    vc: float
    mt: float
    vt: float
    var_mc: float
    var_mt: float
    cov: float
    theta: float | None
    warnings: tuple[str, ...]


def _moments(control: Statistic, treatment: Statistic, use_cuped: bool) -> _Moments:
    nc, nt = max(control.n, 1), max(treatment.n, 1)
    warning: tuple[str, ...] = ()
    if use_cuped and isinstance(control, CupedStat) and isinstance(treatment, CupedStat):
        theta = cuped_theta(control, treatment)
        if theta is not None:
            return _cuped_moments(control, treatment, theta)
        warning = ("the pre-exposure covariate has no variance: CUPED cannot reduce variance",)
    else:
        theta = None
    vc, vt = control.variance, treatment.variance
    return _Moments(control.mean, vc, treatment.mean, vt, vc / nc, vt / nt, 0.0, theta, warning)


def _cuped_moments(control: CupedStat, treatment: CupedStat, theta: float) -> _Moments:
    """a = ȳ - θ(x̄_arm - x̄) with x̄ = w_c·x̄_c + w_t·x̄_t (w the arms' shares of units), so
    a_t = ȳ_t - θ·w_c·x̄_t + θ·w_c·x̄_c and a_c = ȳ_c - θ·w_t·x̄_c + θ·w_t·x̄_t: first-order variances and
    the covariance over (ȳ_c, x̄_c, ȳ_t, x̄_t), θ held fixed."""
    nc, nt = control.n, treatment.n
    wc, wt = nc / (nc + nt), nt / (nc + nt)
    pooled_pre = (control.pre.sum + treatment.pre.sum) / (nc + nt)

    def arm(s: CupedStat) -> tuple[float, float, float, float, float]:
        """(adjusted mean, adjusted per-unit variance, var(ȳ), var(x̄), cov(ȳ, x̄)) of one arm."""
        n = s.n
        cov = s.centered_cross / (n - 1) if n >= 2 else 0.0
        var = max(s.post.variance + theta**2 * s.pre.variance - 2 * theta * cov, 0.0)
        return (
            s.post.mean - theta * (s.pre.mean - pooled_pre),
            var,
            s.post.variance / n,
            s.pre.variance / n,
            cov / n,
        )

    mc, vc, yc, xc, cyc = arm(control)
    mt, vt, yt, xt, cyt = arm(treatment)
    var_mt = yt + theta**2 * wc**2 * (xt + xc) - 2 * theta * wc * cyt
    var_mc = yc + theta**2 * wt**2 * (xc + xt) - 2 * theta * wt * cyc
    cov = theta * wt * cyt + theta * wc * cyc - theta**2 * wc * wt * (xt + xc)
    return _Moments(mc, vc, mt, vt, max(var_mc, 0.0), max(var_mt, 0.0), cov, theta, ())


def fieller_interval(
    a: float, b: float, var_a: float, var_b: float, cov: float, *, critical: float
) -> tuple[float, float] | None:
    """Fieller's interval for the ratio a/b at the given critical value: the r with
    (a - r·b)² ≤ critical²·(var_a - 2r·cov + r²·var_b). None when it is unbounded (b is not
    significantly different from zero at that level)."""
    c2 = critical * critical
    qa = b * b - c2 * var_b
    if qa <= 0:
        return None
    qb = a * b - c2 * cov
    qc = a * a - c2 * var_a
    root = math.sqrt(max(qb * qb - qa * qc, 0.0))
    return (qb - root) / qa, (qb + root) / qa


def compare(
    control: Statistic,
    treatment: Statistic,
    *,
    alpha: float = 0.05,
    alternative: Alternative = "two-sided",
    sequential: bool = False,
    tuning: float = 5000.0,
    cuped: bool = False,
) -> Comparison:
    """Absolute and relative lift of ``treatment`` over ``control``."""
    nc, nt = control.n, treatment.n
    m = _moments(control, treatment, cuped)
    mc, vc, mt, vt = m.mc, m.vc, m.mt, m.vt
    warnings = list(m.warnings)

    def result(
        absolute: Estimate, relative: Estimate, dof: float | None = None, mde: float | None = None
    ) -> Comparison:
        mde_relative = mde / abs(mc) if mde is not None and mc != 0 else None
        return Comparison(
            mc,
            mt,
            absolute,
            relative,
            dof,
            alpha,
            alternative,
            sequential,
            m.theta,
            tuple(warnings),
            mde,
            mde_relative,
        )

    if nc < 2 or nt < 2:
        error = f"not enough units: control has {nc}, treatment {nt} (at least 2 each)"
        return result(
            Estimate(None, None, None, None, None, error), Estimate(None, None, None, None, None, error)
        )
    if sequential and alternative != "two-sided":
        error = "sequential intervals are two-sided only"
        return result(
            Estimate(mt - mc, None, None, None, None, error), Estimate(None, None, None, None, None, error)
        )
    sc, st = vc / nc, vt / nt
    if not math.isfinite(sc + st):
        error = "the variance is not finite: sums too large to analyse"
        return result(
            Estimate(None, None, None, None, None, error), Estimate(None, None, None, None, None, error)
        )
    if sc + st <= 0:
        error = "no variance in either arm: every unit has the same value"
        return result(
            Estimate(mt - mc, None, None, None, 0.0, error), Estimate(None, None, None, None, None, error)
        )
    dof = (sc + st) ** 2 / (sc**2 / (nc - 1) + st**2 / (nt - 1))
    test = _Test(alpha, alternative, sequential, tuning, dof, nc + nt)
    se = math.sqrt(sc + st)
    absolute = test.estimate(mt - mc, se)
    z = float(stats.norm.ppf(1 - alpha / 2 if alternative == "two-sided" else 1 - alpha))
    mde = (z + float(stats.norm.ppf(MDE_POWER))) * se
    return result(absolute, _relative(m, test, absolute), dof, mde)


def _relative(m: _Moments, test: _Test, absolute: Estimate) -> Estimate:
    """The relative lift with Fieller's interval at the absolute test's critical value, and the absolute
    test's p-value (the same hypothesis: no lift)."""
    mc, mt = m.mc, m.mt
    if mc == 0:
        return Estimate(None, None, None, None, None, "the control mean is zero: relative lift is undefined")
    value = mt / mc - 1
    se_rel = math.sqrt(max(m.var_mt / mc**2 + m.var_mc * mt**2 / mc**4 - 2 * m.cov * mt / mc**3, 0.0))
    method = "fieller-sequential" if test.sequential else "fieller"
    if test.alternative != "two-sided" and mc < 0:
        error = "the control mean is negative: a one-sided relative interval is not defined"
        return Estimate(value, None, None, absolute.p_value, se_rel, error, method)
    interval = fieller_interval(mt, mc, m.var_mt, m.var_mc, m.cov, critical=test.critical())
    if interval is None:
        error = (
            "the control mean is not distinguishable from zero at this level: the relative interval is "
            "unbounded"
        )
        return Estimate(value, None, None, absolute.p_value, se_rel, error, method)
    low, high = interval[0] - 1, interval[1] - 1
    if test.alternative == "greater":
        return Estimate(value, low, None, absolute.p_value, se_rel, "", method)
    if test.alternative == "less":
        return Estimate(value, None, high, absolute.p_value, se_rel, "", method)
    return Estimate(value, low, high, absolute.p_value, se_rel, "", method)


@dataclass(frozen=True, slots=True)
class _Test:
    alpha: float
    alternative: Alternative
    sequential: bool
    tuning: float
    dof: float
    n: int

    def critical(self) -> float:
        """The multiple of the standard error that the interval's half-width is."""
        if self.sequential:
            nr2 = self.n * sequential_rho(self.alpha, self.tuning) ** 2
            return math.sqrt(2 * (nr2 + 1) * math.log(math.sqrt(nr2 + 1) / self.alpha) / nr2)
        level = self.alpha / 2 if self.alternative == "two-sided" else self.alpha
        return float(stats.t.ppf(1 - level, self.dof))

    def estimate(self, value: float, se: float) -> Estimate:
        """``se`` is finite and positive (``compare`` returns earlier otherwise)."""
        if self.sequential:
            return self._sequential(value, se)
        t = value / se
        q = self.critical()
        if self.alternative == "two-sided":
            p = float(2 * stats.t.sf(abs(t), self.dof))
            return Estimate(value, value - q * se, value + q * se, p, se, "", "welch")
        if self.alternative == "greater":
            return Estimate(value, value - q * se, None, float(stats.t.sf(t, self.dof)), se, "", "welch")
        return Estimate(value, None, value + q * se, float(stats.t.cdf(t, self.dof)), se, "", "welch")

    def _sequential(self, value: float, se: float) -> Estimate:
        """Eq. 9 (interval) and eq. 155 (p-value as 1 / e-value) of Waudby-Smith et al., with the
        per-unit variance ``se² · n`` over all ``n`` units of both arms."""
        nr2 = self.n * sequential_rho(self.alpha, self.tuning) ** 2
        halfwidth = se * self.critical()
        z2 = (value / se) ** 2
        log_e_value = nr2 * z2 / (2 * (nr2 + 1)) - 0.5 * math.log(nr2 + 1)
        p_value = 1.0 if log_e_value <= 0 else math.exp(-log_e_value)
        return Estimate(value, value - halfwidth, value + halfwidth, p_value, se, "", "sequential")
