"""Lift reports: the database aggregates, the stats engine analyses, and the report adds what a growth
team acts on — incremental conversions and revenue, return on the cost of sending."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, func, select

from nextbest.catalog import Catalog
from nextbest.errors import NotFoundError
from nextbest.experiments import Experiment
from nextbest.reports.aggregate import (
    STORE,
    ArmAggregate,
    Metric,
    MetricDefinition,
    ReportSource,
    aggregate_many,
)
from nextbest.reports.engines import QueryRunner, runner_for
from nextbest.reports.request import DEFAULT_ALPHA, ReportRequest
from nextbest.stats import CupedStat, MeanStat, ProportionStat, RatioStat, Statistic, srm_check
from nextbest.stats.analysis import Analysis, MetricAnalysis, analyze
from nextbest.stats.srm import SrmResult

__all__ = [
    "Design",
    "Incremental",
    "LiftReport",
    "analysis_history",
    "analyze_experiment",
    "build_report",
    "control_arm",
    "erased_units",
    "report_history",
]


@dataclass(frozen=True, slots=True)
class Incremental:
    """What an arm added over the control: lift per unit × its units, each with the interval of the
    headline comparison's absolute lift × units."""

    arm: str
    units: int
    extra_conversions: float | None
    extra_revenue: float | None
    extra_revenue_low: float | None
    extra_revenue_high: float | None
    # What sending cost: the arm's sends in the experiment's scope × each action's declared cost per send.
    cost: float = 0.0
    extra_conversions_low: float | None = None
    extra_conversions_high: float | None = None

    @property
    def return_on_cost(self) -> float | None:
        """Incremental revenue per unit of cost; None when nothing was spent or revenue is unknown."""
        return self._per_cost(self.extra_revenue)

    @property
    def return_on_cost_low(self) -> float | None:
        return self._per_cost(self.extra_revenue_low)

    @property
    def return_on_cost_high(self) -> float | None:
        return self._per_cost(self.extra_revenue_high)

    @property
    def revenue_conclusive(self) -> bool:
        """Whether the extra revenue's interval excludes zero; when it does not, neither the revenue nor
        the return on cost is a result to lead with, only their interval."""
        low, high = self.extra_revenue_low, self.extra_revenue_high
        return (low is not None and low > 0) or (high is not None and high < 0)

    def _per_cost(self, revenue: float | None) -> float | None:
        return revenue / self.cost if self.cost > 0 and revenue is not None else None


@dataclass(frozen=True)
class LiftReport:
    """An experiment's analysis as of a moment, with the units, the sample-ratio check and what each
    treatment arm added over the control."""

    experiment_id: str
    control: str
    as_of: datetime
    window: timedelta
    analysis: Analysis
    units: dict[str, int]
    excluded_units: int
    srm: SrmResult
    incremental: list[Incremental] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sequential: bool = False
    alpha: float = DEFAULT_ALPHA
    # Units erased since the experiment started (``nextbest erase``): left out of every figure above.
    erased_units: int = 0


def control_arm(experiment: Experiment) -> str:
    """The held-out arm if there is one (holdouts), otherwise the first arm (A/B tests)."""
    return next((a.id for a in experiment.arms if a.no_action), experiment.arms[0].id)


@dataclass(frozen=True, slots=True)
class Design:
    """What the statistics need to know of an experiment besides its data: its arms with their weights
    (for the sample-ratio check), the control arm, and each action's cost per send."""

    experiment_id: str
    arms: tuple[tuple[str, float], ...]
    control: str
    costs: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, catalog: Catalog, experiment_id: str) -> Design:
        """The catalog's experiment, or :class:`NotFoundError` listing the known ones."""
        experiment = catalog.experiment(experiment_id)
        if experiment is None:
            known = ", ".join(e.id for e in catalog.experiments) or "none"
            raise NotFoundError(f"no experiment {experiment_id!r} in the catalog (experiments: {known})")
        arms = tuple((a.id, a.weight) for a in experiment.arms)
        return cls(experiment.id, arms, control_arm(experiment), {a.id: a.cost for a in catalog.actions})


def _statistic(metric: MetricDefinition, a: ArmAggregate) -> Statistic:
    if metric.binary:
        return ProportionStat(a.n, a.sum)
    post = MeanStat(a.n, a.sum, a.sum_squares)
    if metric.is_ratio:
        return RatioStat(post, MeanStat(a.n, a.d_sum, a.d_sum_squares), a.d_sum_of_products)
    return CupedStat(post, MeanStat(a.n, a.pre_sum, a.pre_sum_squares), a.sum_of_products)


def build_report(
    conn: Connection | QueryRunner,
    catalog: Catalog,
    request: ReportRequest,
    *,
    source: ReportSource | None = None,
) -> LiftReport:
    """The experiment's lift report, aggregated by the engine behind ``conn`` (a read connection, or a
    Spark runner) from the exposure and event logs. The catalog gives the experiment's arms and each
    action's cost per send."""
    design = Design.of(catalog, request.experiment_id)
    return analyze_experiment(conn, design, [m.definition for m in request.metrics], request, source=source)


def analyze_experiment(
    conn: Connection | QueryRunner,
    design: Design,
    metrics: Sequence[MetricDefinition],
    request: ReportRequest,
    *,
    source: ReportSource | None = None,
) -> LiftReport:
    """The lift report of ``design`` for ``metrics``, whatever holds the data: the engine computes the
    per-arm sufficient statistics (:func:`~nextbest.reports.aggregate.report_query`), Python the rest.
    ``request.metrics`` is ignored for ``metrics``; its window, moment and alpha apply."""
    runner = runner_for(conn)
    source = source_of(runner, source)
    by_metric, excluded = aggregate_many(
        runner, design.experiment_id, metrics, as_of=request.as_of, window=request.window, source=source
    )
    per_metric: dict[str, dict[str, Statistic]] = {}
    units: dict[str, int] = {}
    for metric in metrics:
        rows = by_metric[metric.name]
        per_metric[metric.name] = {arm: _statistic(metric, row) for arm, row in rows.items()}
        # An arm without units yet (the control, early on) is compared as empty: "not enough units".
        for arm, _weight in design.arms:
            per_metric[metric.name].setdefault(arm, _statistic(metric, ArmAggregate(arm, 0, 0.0, 0.0)))
        units = {arm: row.n for arm, row in rows.items()}
    spent = _spent(runner, source, design, request.as_of) if design.costs else {}
    weights = dict(design.arms)
    analysis = analyze(
        per_metric,
        design.control,
        alpha=request.alpha,
        sequential=request.sequential,
        weights=weights,
        units=units,
    )
    srm = analysis.srm or srm_check(units, weights)
    warnings = list(analysis.warnings)
    if excluded:
        warnings.append(f"{excluded} unit(s) appeared in more than one arm and were excluded")
    return LiftReport(
        design.experiment_id,
        design.control,
        request.as_of,
        request.window,
        analysis,
        units,
        excluded,
        srm,
        _incremental(analysis, units, spent),
        warnings,
        request.sequential,
        request.alpha,
        erased_units(runner, design.experiment_id, source),
    )


def source_of(runner: QueryRunner, source: ReportSource | None = None) -> ReportSource:
    """``source`` when given, else the one ``runner``'s engine was opened on (the export's tables, on a
    DuckDB or Spark connection made by :mod:`nextbest.warehouse.engines`), else the store's tables."""
    if source is not None:
        return source
    opened = getattr(runner, "source", None)
    return opened if isinstance(opened, ReportSource) else STORE


def erased_units(conn: Connection | QueryRunner, experiment_id: str, source: ReportSource = STORE) -> int:
    """How many of the experiment's units were erased, whenever: their rows are gone from every
    report, past moments included. 0 for a source that keeps no erasures."""
    table = source.erasures
    if table is None:
        return 0
    total = runner_for(conn).scalar(
        select(func.sum(table.c.units)).where(table.c.experiment_id == experiment_id)
    )
    return int(total or 0)


def _spent(runner: QueryRunner, source: ReportSource, design: Design, as_of: datetime) -> dict[str, float]:
    """Per arm: the sends in the experiment's scope (not held out) × each action's cost per send. With a
    source that counts sends per day (the export's ``assignment_sends``), the days before ``as_of``'s
    UTC day come from those counts and only that day's exposures up to ``as_of`` are counted."""
    a = source.assignments.c
    scope = [a.experiment_id == design.experiment_id, a.occurred_at <= as_of, a.held_out.is_(False)]
    counted: dict[tuple[str, str], int] = {}
    if source.sends is not None:
        s = source.sends.c
        midnight = as_of.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        for row in runner.rows(
            select(s.arm_id, s.action_id, func.sum(s.sends).label("sends"))
            .where(s.experiment_id == design.experiment_id, s.day_start < midnight)
            .group_by(s.arm_id, s.action_id)
        ):
            counted[row["arm_id"], row["action_id"]] = int(row["sends"])
        scope.append(a.occurred_at >= midnight)
    for row in runner.rows(
        select(a.arm_id, a.action_id, func.count().label("sends"))
        .where(*scope)
        .group_by(a.arm_id, a.action_id)
    ):
        key = (row["arm_id"], row["action_id"])
        counted[key] = counted.get(key, 0) + int(row["sends"])
    spent: dict[str, float] = {}
    # In a fixed order, so that every engine adds the same floats in the same order.
    for (arm, action), sends in sorted(counted.items()):
        spent[arm] = spent.get(arm, 0.0) + design.costs.get(action, 0.0) * sends
    return spent


def _incremental(analysis: Analysis, units: dict[str, int], spent: dict[str, float]) -> list[Incremental]:
    conversion = analysis.metrics.get(Metric.CONVERSION.value)
    revenue = analysis.metrics.get(Metric.REVENUE.value)

    def scaled(metric: MetricAnalysis | None, arm: str, n: int) -> tuple[float | None, ...]:
        if metric is None or arm not in metric.headline or metric.headline[arm].absolute.value is None:
            return None, None, None
        e = metric.headline[arm].absolute
        return tuple(None if x is None else x * n for x in (e.value, e.ci_low, e.ci_high))

    out = []
    for arm, n in units.items():
        if arm == analysis.control:
            continue
        conversions, conversions_low, conversions_high = scaled(conversion, arm, n)
        extra, low, high = scaled(revenue, arm, n)
        cost = spent.get(arm, 0.0)
        out.append(
            Incremental(arm, n, conversions, extra, low, high, cost, conversions_low, conversions_high)
        )
    return out


def report_history(
    conn: Connection | QueryRunner,
    catalog: Catalog,
    request: ReportRequest,
    *,
    points: int = 30,
    source: ReportSource | None = None,
) -> list[tuple[datetime, LiftReport]]:
    """The report as of each day from the first exposure to ``request.as_of`` (at most ``points`` days,
    evenly spaced), for cumulative-lift charts."""
    design = Design.of(catalog, request.experiment_id)
    metrics = [m.definition for m in request.metrics]
    return analysis_history(conn, design, metrics, request, points=points, source=source)


def analysis_history(
    conn: Connection | QueryRunner,
    design: Design,
    metrics: Sequence[MetricDefinition],
    request: ReportRequest,
    *,
    points: int = 30,
    source: ReportSource | None = None,
) -> list[tuple[datetime, LiftReport]]:
    """:func:`report_history` for any design and metrics."""
    runner = runner_for(conn)
    source = source_of(runner, source)
    a = source.assignments.c
    first = runner.scalar(select(func.min(a.occurred_at)).where(a.experiment_id == design.experiment_id))
    if first is None or first >= request.as_of:
        return []
    days = max(1, math.ceil((request.as_of - first).total_seconds() / 86400))
    step = max(1, math.ceil(days / points))
    moments = [first + timedelta(days=d) for d in range(step, days, step)] + [request.as_of]
    return [
        (m, analyze_experiment(runner, design, metrics, replace(request, as_of=m), source=source))
        for m in moments
    ]
