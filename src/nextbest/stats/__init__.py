"""Statistics on sufficient statistics only: no database, no gRPC.

Tests, lift (absolute and relative by the delta method), CUPED, always-valid sequential intervals,
sample-ratio mismatch, multiple-comparison corrections, power and minimum detectable effect.
"""

from nextbest.stats.corrections import benjamini_hochberg, holm
from nextbest.stats.frequentist import Comparison, Estimate, compare, cuped_theta, sequential_rho
from nextbest.stats.power import PowerResult, minimum_detectable_effect, power
from nextbest.stats.srm import SRM_ALARM_P, SrmResult, srm_check
from nextbest.stats.statistics import CupedStat, MeanStat, ProportionStat, RatioStat, Statistic

__all__ = [
    "SRM_ALARM_P",
    "Comparison",
    "CupedStat",
    "Estimate",
    "MeanStat",
    "PowerResult",
    "ProportionStat",
    "RatioStat",
    "SrmResult",
    "Statistic",
    "benjamini_hochberg",
    "compare",
    "cuped_theta",
    "holm",
    "minimum_detectable_effect",
    "power",
    "sequential_rho",
    "srm_check",
]
