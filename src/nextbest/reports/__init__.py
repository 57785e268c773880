"""SQL aggregation of exposures and events, report assembly and rendering."""

from nextbest.reports.aggregate import ArmAggregate, Metric, aggregate
from nextbest.reports.report import Incremental, LiftReport, build_report, control_arm, report_history
from nextbest.reports.request import DEFAULT_METRICS, ReportRequest

__all__ = [
    "DEFAULT_METRICS",
    "ArmAggregate",
    "Incremental",
    "LiftReport",
    "Metric",
    "ReportRequest",
    "aggregate",
    "build_report",
    "control_arm",
    "report_history",
]
