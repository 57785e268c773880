"""SQL aggregation of exposures and events on any engine, report assembly and rendering."""

from nextbest.reports.aggregate import (
    ArmAggregate,
    Metric,
    MetricDefinition,
    ReportSource,
    aggregate,
    report_query,
)
from nextbest.reports.engines import QueryRunner, SparkRunner, SqlRunner
from nextbest.reports.report import (
    Design,
    Incremental,
    LiftReport,
    analysis_history,
    analyze_experiment,
    build_report,
    control_arm,
    report_history,
)
from nextbest.reports.request import DEFAULT_METRICS, ReportRequest

__all__ = [
    "DEFAULT_METRICS",
    "ArmAggregate",
    "Design",
    "Incremental",
    "LiftReport",
    "Metric",
    "MetricDefinition",
    "QueryRunner",
    "ReportRequest",
    "ReportSource",
    "SparkRunner",
    "SqlRunner",
    "aggregate",
    "analysis_history",
    "analyze_experiment",
    "build_report",
    "control_arm",
    "report_history",
    "report_query",
]
