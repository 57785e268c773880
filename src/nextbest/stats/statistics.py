"""Sufficient statistics per arm: small frozen values that add together (two days' counts sum to the
counts of both days), from which every test below is computed. No per-unit rows are needed.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CupedStat", "MeanStat", "ProportionStat", "RatioStat", "Statistic"]


@dataclass(frozen=True, slots=True)
class MeanStat:
    """A metric with one value per unit (revenue per customer, orders per customer): n, Σy, Σy²."""

    n: int
    sum: float
    sum_squares: float

    def __add__(self, other: MeanStat) -> MeanStat:
        return MeanStat(self.n + other.n, self.sum + other.sum, self.sum_squares + other.sum_squares)

    @property
    def mean(self) -> float:
        return self.sum / self.n if self.n else 0.0

    @property
    def variance(self) -> float:
        """Unbiased sample variance (n - 1), floored at 0 against rounding."""
        if self.n < 2:
            return 0.0
        return max((self.sum_squares - self.sum * self.sum / self.n) / (self.n - 1), 0.0)


@dataclass(frozen=True, slots=True)
class ProportionStat:
    """A conversion metric: n units, ``sum`` of them converted. Variance p(1 - p) (binomial)."""

    n: int
    sum: float

    def __add__(self, other: ProportionStat) -> ProportionStat:
        return ProportionStat(self.n + other.n, self.sum + other.sum)

    @property
    def mean(self) -> float:
        return self.sum / self.n if self.n else 0.0

    @property
    def variance(self) -> float:
        p = self.mean
        return p * (1.0 - p)


@dataclass(frozen=True, slots=True)
class RatioStat:
    """A ratio of two per-unit metrics (revenue per order = Σrevenue / Σorders over units), with the
    cross-product Σ(m·d) for the delta method's covariance term."""

    m: MeanStat
    d: MeanStat
    m_d_sum_of_products: float

    def __add__(self, other: RatioStat) -> RatioStat:
        return RatioStat(
            self.m + other.m, self.d + other.d, self.m_d_sum_of_products + other.m_d_sum_of_products
        )

    @property
    def n(self) -> int:
        return self.m.n

    @property
    def covariance(self) -> float:
        n = self.n
        return (self.m_d_sum_of_products - self.m.sum * self.d.sum / n) / (n - 1) if n >= 2 else 0.0

    @property
    def mean(self) -> float:
        return self.m.sum / self.d.sum if self.d.sum else 0.0

    @property
    def variance(self) -> float:
        """Per-unit variance of the ratio by the delta method (first-order Taylor expansion around the
        means): var(m)/d² - 2 cov(m, d)·m/d³ + var(d)·m²/d⁴ (Deng et al., KDD 2018)."""
        m, d = self.m.mean, self.d.mean
        if d == 0:
            return 0.0
        v = self.m.variance / d**2 - 2 * self.covariance * m / d**3 + self.d.variance * m**2 / d**4
        return max(v, 0.0)


@dataclass(frozen=True, slots=True)
class CupedStat:
    """A per-unit metric after exposure with the same metric before it (the CUPED covariate)."""

    post: MeanStat
    pre: MeanStat
    post_pre_sum_of_products: float

    def __add__(self, other: CupedStat) -> CupedStat:
        return CupedStat(
            self.post + other.post,
            self.pre + other.pre,
            self.post_pre_sum_of_products + other.post_pre_sum_of_products,
        )

    @property
    def n(self) -> int:
        return self.post.n

    @property
    def mean(self) -> float:
        return self.post.mean

    @property
    def variance(self) -> float:
        return self.post.variance

    @property
    def centered_cross(self) -> float:
        """Σ(y - ȳ)(x - x̄) within this arm."""
        n = self.n
        return self.post_pre_sum_of_products - self.post.sum * self.pre.sum / n if n else 0.0

    @property
    def centered_pre_squares(self) -> float:
        """Σ(x - x̄)² within this arm."""
        n = self.n
        return self.pre.sum_squares - self.pre.sum**2 / n if n else 0.0


Statistic = MeanStat | ProportionStat | RatioStat | CupedStat
