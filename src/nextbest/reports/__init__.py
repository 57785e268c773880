"""SQL aggregation of exposures and events, report assembly and rendering."""

from nextbest.reports.aggregate import ArmAggregate, Metric, aggregate
from nextbest.reports.report import DEFAULT_METRICS, Incremental, LiftReport, build_report, control_arm

__all__ = [
    "DEFAULT_METRICS",
    "ArmAggregate",
    "Incremental",
    "LiftReport",
    "Metric",
    "aggregate",
    "build_report",
    "control_arm",
]
