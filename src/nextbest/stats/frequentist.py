"""Frequentist comparison of a treatment arm with its control, from sufficient statistics.

- Welch's t-test with Welch–Satterthwaite degrees of freedom (which becomes the z-test at scale); two-sided
  or one-sided, intervals at any level.
- Relative lift ``mean_t / mean_c - 1`` with its variance by the delta method,
  ``var_t/(n_t·m_c²) + var_c·m_t²/(n_c·m_c⁴)`` — not the absolute interval divided by the control mean,
  which ignores the control mean's own noise and is too narrow.
- CUPED (Deng, Xu, Kohavi & Walker, WSDM 2013): ``y - θ(x - x̄)`` with x the same metric before exposure and
  θ pooled within arms, which makes the adjusted difference equal to the treatment coefficient of an OLS
  fit ``y ~ treated + x``.
- Always-valid (sequential) intervals and p-values: the asymptotic confidence sequences of Waudby-Smith et
  al. 2023 (https://arxiv.org/abs/2103.06476, eq. 9 and 155), tuned for an expected sample size, as in
  GrowthBook's engine. Valid however often the results are looked at.

Degenerate inputs (too few units, no variance, a zero control mean) give an estimate with ``error`` set;
never an exception, never a NaN passed off as a number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from scipy import stats

from nextbest.stats.statistics import CupedStat, Statistic

__all__ = ["Alternative", "Comparison", "Estimate", "compare", "cuped_theta", "sequential_rho"]

Alternative = Literal["two-sided", "greater", "less"]


@dataclass(frozen=True, slots=True)
class Estimate:
    """A lift with its interval (a side is None when the test is one-sided) and p-value."""

    value: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    standard_error: float | None
    error: str = ""


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


def sequential_rho(alpha: float, tuning: float, two_sided: bool = True) -> float:
    """The mixing parameter that makes the confidence sequence tightest near ``tuning`` units."""
    a = alpha if two_sided else 2 * alpha
    return math.sqrt((-2 * math.log(a) + math.log(-2 * math.log(a) + 1)) / tuning)


def cuped_theta(control: CupedStat, treatment: CupedStat) -> float | None:
    """θ pooled within arms: Σ(y - ȳ)(x - x̄) / Σ(x - x̄)², each sum taken within its arm. None when the
    covariate has no variance."""
    denominator = control.centered_pre_squares + treatment.centered_pre_squares
    if denominator <= 0:
        return None
    return (control.centered_cross + treatment.centered_cross) / denominator


def _moments(
    control: Statistic, treatment: Statistic, use_cuped: bool
) -> tuple[float, float, float, float, float | None, list[str]]:
    """(mean_c, var_c, mean_t, var_t, θ, warnings) with per-unit variances, CUPED-adjusted on request."""
    if use_cuped and isinstance(control, CupedStat) and isinstance(treatment, CupedStat):
        theta = cuped_theta(control, treatment)
        if theta is None:
            return (
                control.mean,
                control.variance,
                treatment.mean,
                treatment.variance,
                None,
                ["the pre-exposure covariate has no variance: CUPED cannot reduce variance"],
            )
        pooled_pre = (control.pre.sum + treatment.pre.sum) / (control.n + treatment.n)

        def adjusted(s: CupedStat) -> tuple[float, float]:
            n = s.n
            cov = s.centered_cross / (n - 1) if n >= 2 else 0.0
            var = s.post.variance + theta**2 * s.pre.variance - 2 * theta * cov
            return s.post.mean - theta * (s.pre.mean - pooled_pre), max(var, 0.0)

        mc, vc = adjusted(control)
        mt, vt = adjusted(treatment)
        return mc, vc, mt, vt, theta, []
    return control.mean, control.variance, treatment.mean, treatment.variance, None, []


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
    mc, vc, mt, vt, theta, warnings = _moments(control, treatment, cuped)

    def result(absolute: Estimate, relative: Estimate, dof: float | None = None) -> Comparison:
        return Comparison(
            mc, mt, absolute, relative, dof, alpha, alternative, sequential, theta, tuple(warnings)
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
    if sc + st <= 0:
        error = "no variance in either arm: every unit has the same value"
        return result(
            Estimate(mt - mc, None, None, None, 0.0, error), Estimate(None, None, None, None, None, error)
        )
    dof = (sc + st) ** 2 / (sc**2 / (nc - 1) + st**2 / (nt - 1))
    test = _Test(alpha, alternative, sequential, tuning, dof, nc + nt)
    absolute = test.estimate(mt - mc, math.sqrt(sc + st))
    if mc == 0:
        relative = Estimate(
            None, None, None, None, None, "the control mean is zero: relative lift is undefined"
        )
    else:
        se_rel = math.sqrt(vt / (nt * mc**2) + vc * mt**2 / (nc * mc**4))
        relative = test.estimate(mt / mc - 1, se_rel)
    return result(absolute, relative, dof)


@dataclass(frozen=True, slots=True)
class _Test:
    alpha: float
    alternative: Alternative
    sequential: bool
    tuning: float
    dof: float
    n: int

    def estimate(self, value: float, se: float) -> Estimate:
        if se <= 0 or not math.isfinite(se):
            return Estimate(
                value, None, None, None, se if math.isfinite(se) else None, "zero or undefined standard error"
            )
        if self.sequential:
            return self._sequential(value, se)
        t = value / se
        if self.alternative == "two-sided":
            q = float(stats.t.ppf(1 - self.alpha / 2, self.dof))
            p = float(2 * stats.t.sf(abs(t), self.dof))
            return Estimate(value, value - q * se, value + q * se, p, se)
        q = float(stats.t.ppf(1 - self.alpha, self.dof))
        if self.alternative == "greater":
            return Estimate(value, value - q * se, None, float(stats.t.sf(t, self.dof)), se)
        return Estimate(value, None, value + q * se, float(stats.t.cdf(t, self.dof)), se)

    def _sequential(self, value: float, se: float) -> Estimate:
        """Eq. 9 (interval) and eq. 155 (p-value as 1 / e-value) of Waudby-Smith et al., with the
        per-unit variance ``se² · n`` over all ``n`` units of both arms."""
        n, rho = self.n, sequential_rho(self.alpha, self.tuning)
        nr2 = n * rho**2
        halfwidth = se * math.sqrt(2 * (nr2 + 1) * math.log(math.sqrt(nr2 + 1) / self.alpha) / nr2)
        z2 = (value / se) ** 2
        log_e_value = nr2 * z2 / (2 * (nr2 + 1)) - 0.5 * math.log(nr2 + 1)
        p_value = 1.0 if log_e_value <= 0 else math.exp(-log_e_value)
        return Estimate(value, value - halfwidth, value + halfwidth, p_value, se)
