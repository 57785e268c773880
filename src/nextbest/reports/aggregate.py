"""Sufficient statistics per experiment × arm × metric, computed by the engine that holds the data.

The report's one definition is :func:`report_query`: SQLAlchemy Core that compiles for SQLite, PostgreSQL,
DuckDB and Spark SQL alike (see :mod:`nextbest.reports.engines`). The unit is the customer; each unit
counts in the arm of its first exposure to the experiment, from that moment; units seen in more than one
arm are excluded and counted; each metric sums its events over the attribution window after the first
exposure, and its CUPED covariate over the lookback window before it; every metric comes out of one pass.
Only one row per arm comes back to Python — per-unit rows never leave the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from sqlalchemy import ColumnElement, Connection, FromClause, Select, and_, case, func, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement
from sqlalchemy.types import Float

from nextbest.domain import EventType
from nextbest.reports.engines import QueryRunner, runner_for
from nextbest.store.schema import assignments, erasures, events

__all__ = [
    "ArmAggregate",
    "Metric",
    "MetricDefinition",
    "ReportSource",
    "aggregate",
    "aggregate_many",
    "report_query",
]


# What one event adds to a metric: its value, minus its value, or one.
Term = Literal["value", "-value", "one"]


@dataclass(frozen=True, slots=True)
class MetricDefinition:
    """A metric as data, so that every engine computes it from the same definition: per unit, the sum of
    ``terms`` (event type → contribution) over the window; ``binary`` turns that into 0/1 (any positive);
    a ratio metric divides by the per-unit sum of ``denominator`` (delta method)."""

    name: str
    terms: tuple[tuple[str, Term], ...]
    binary: bool = False
    denominator: tuple[tuple[str, Term], ...] = ()

    @property
    def is_ratio(self) -> bool:
        return bool(self.denominator)


class Metric(StrEnum):
    """What a report on nextbest's own logs can measure. Conversion-type metrics are 0/1 per unit; the
    others sum per unit."""

    CONVERSION = "conversion"  # placed an order in the window
    REVENUE = "revenue"  # order revenue minus refunds per customer
    ORDERS = "orders"  # orders per customer
    VISIT = "visit"  # viewed a product in the window
    REVENUE_PER_ORDER = "revenue_per_order"  # a ratio metric (delta method)

    @property
    def is_binary(self) -> bool:
        return self in (Metric.CONVERSION, Metric.VISIT)

    @property
    def definition(self) -> MetricDefinition:
        orders: tuple[tuple[str, Term], ...] = ((EventType.ORDER_PLACED.value, "one"),)
        revenue: tuple[tuple[str, Term], ...] = (
            (EventType.ORDER_PLACED.value, "value"),
            (EventType.REFUNDED.value, "-value"),
        )
        if self is Metric.REVENUE:
            return MetricDefinition(self.value, revenue)
        if self is Metric.REVENUE_PER_ORDER:
            return MetricDefinition(self.value, revenue, denominator=orders)
        if self is Metric.VISIT:
            return MetricDefinition(self.value, ((EventType.PRODUCT_VIEWED.value, "one"),), binary=True)
        return MetricDefinition(self.value, orders, binary=self is Metric.CONVERSION)


@dataclass(frozen=True)
class ReportSource:
    """The relations a report reads, by the store's column names: ``assignments`` (user_id,
    experiment_id, arm_id, occurred_at; held_out and action_id for the cost per arm) and ``events``
    (user_id, type, occurred_at, value); ``erasures`` when the source keeps them. nextbest's own store
    and its Parquet export use the store's tables; external experiments name their own views."""

    assignments: FromClause = assignments
    events: FromClause = events
    erasures: FromClause | None = erasures


STORE = ReportSource()


class epoch_seconds(FunctionElement[float]):  # noqa: N801 - a SQL function, named like one
    """Seconds since 1970 of a timestamp column as a double, spelled for each engine (below)."""

    type = Float()
    inherit_cache = True


@compiles(epoch_seconds, "sqlite")
def _epoch_sqlite(element: Any, compiler: Any, **kw: Any) -> str:
    # SQLite stores text.
    return f"((julianday({compiler.process(element.clauses, **kw)}) - 2440587.5) * 86400.0)"


@compiles(epoch_seconds, "postgresql")
def _epoch_postgresql(element: Any, compiler: Any, **kw: Any) -> str:
    # PostgreSQL-specific (issue 22, partitions engineer): date_part is double precision, like the other
    # engines' spelling; EXTRACT returns numeric since PostgreSQL 14, and the report evaluates it some
    # thirty times per joined row (15 % of the report's CPU at 500 k exposures; benchmarks/RESULTS.md).
    return f"date_part('epoch', {compiler.process(element.clauses, **kw)})"


@compiles(epoch_seconds, "duckdb")
def _epoch_duckdb(element: Any, compiler: Any, **kw: Any) -> str:
    return f"(CAST(epoch_us({compiler.process(element.clauses, **kw)}) AS DOUBLE) / 1e6)"


@compiles(epoch_seconds, "spark")
def _epoch_spark(element: Any, compiler: Any, **kw: Any) -> str:
    return f"(CAST(unix_micros({compiler.process(element.clauses, **kw)}) AS DOUBLE) / 1e6)"


@compiles(epoch_seconds)
def _epoch_default(element: Any, compiler: Any, **kw: Any) -> str:
    # Standard SQL, for the engines SQLAlchemy speaks to that are not named above.
    return f"EXTRACT(EPOCH FROM {compiler.process(element.clauses, **kw)})"


@dataclass(frozen=True, slots=True)
class ArmAggregate:
    """One arm's sufficient statistics for one metric. ``pre_*`` is the CUPED covariate; ``d_*`` the
    denominator of a ratio metric."""

    arm: str
    n: int
    sum: float
    sum_squares: float
    pre_sum: float = 0.0
    pre_sum_squares: float = 0.0
    sum_of_products: float = 0.0
    d_sum: float = 0.0
    d_sum_squares: float = 0.0
    d_sum_of_products: float = 0.0


def _contribution(source: ReportSource, terms: tuple[tuple[str, Term], ...]) -> ColumnElement[Any]:
    """The per-event contribution of ``terms``: one CASE over the event type."""
    ev = source.events.c
    whens: list[tuple[ColumnElement[bool], Any]] = []
    for event_type, term in terms:
        amount: Any = 1.0 if term == "one" else (ev.value if term == "value" else -ev.value)
        whens.append((ev.type == event_type, amount))
    return case(*whens, else_=0.0)


def report_query(
    source: ReportSource,
    experiment_id: str,
    metrics: Sequence[MetricDefinition],
    *,
    as_of: datetime,
    window: timedelta,
    lookback: timedelta,
) -> Select[Any]:
    """The report as one query: a row per arm with ``n``, and for metric ``i`` ``sum{i}``,
    ``sum_squares{i}``, ``pre_sum{i}``, ``pre_sum_squares{i}``, ``sum_of_products{i}`` (and, for a ratio
    metric, ``d_sum{i}``, ``d_sum_squares{i}``, ``d_sum_of_products{i}``), and ``excluded``, the units seen
    in several arms. The one place the report's SQL is built: every engine runs what this returns."""
    a, ev = source.assignments.c, source.events.c
    units = (
        select(
            a.user_id,
            func.min(a.occurred_at).label("first_at"),
            func.min(a.arm_id).label("arm"),
            # min != max: seen in several arms (cheaper than COUNT(DISTINCT), which forces a sort)
            func.max(a.arm_id).label("last_arm"),
        )
        .where(a.experiment_id == experiment_id, a.occurred_at <= as_of)
        .group_by(a.user_id)
        .cte("units")
    )
    # Every unit goes into the join and the ones seen in several arms are dropped after it: filtering
    # first (arm = last_arm) makes PostgreSQL expect a few hundred units and probe the events index
    # once per unit instead of hashing the join.
    start = epoch_seconds(units.c.first_at)
    at = epoch_seconds(ev.occurred_at)
    as_of_s = as_of.timestamp()
    window_s, lookback_s = window.total_seconds(), lookback.total_seconds()
    in_window = and_(at >= start, at < start + window_s, at <= as_of_s)
    before = and_(at >= start - lookback_s, at < start)
    # last_arm as an aggregate, not a grouping column: the filter on it then stays after the join.
    columns: list[ColumnElement[Any]] = [units.c.arm, func.max(units.c.last_arm).label("last_arm")]
    for i, metric in enumerate(metrics):
        value = _contribution(source, metric.terms)
        post: ColumnElement[Any] = func.coalesce(func.sum(case((in_window, value), else_=0.0)), 0.0)
        pre: ColumnElement[Any] = func.coalesce(func.sum(case((before, value), else_=0.0)), 0.0)
        if metric.binary:
            post = case((post > 0, 1.0), else_=0.0)
            pre = case((pre > 0, 1.0), else_=0.0)
        columns += [post.label(f"y{i}"), pre.label(f"x{i}")]
        if metric.is_ratio:
            d = _contribution(source, metric.denominator)
            columns.append(func.coalesce(func.sum(case((in_window, d), else_=0.0)), 0.0).label(f"d{i}"))
    per_unit = (
        select(*columns)
        .select_from(units.outerjoin(source.events, ev.user_id == units.c.user_id))
        .group_by(units.c.user_id, units.c.arm)
        .subquery("per_unit")
    )
    sums: list[ColumnElement[Any]] = [per_unit.c.arm, func.count().label("n")]
    for i, metric in enumerate(metrics):
        y, x = per_unit.c[f"y{i}"], per_unit.c[f"x{i}"]
        sums += [
            func.sum(y).label(f"sum{i}"),
            func.sum(y * y).label(f"sum_squares{i}"),
            func.sum(x).label(f"pre_sum{i}"),
            func.sum(x * x).label(f"pre_sum_squares{i}"),
            func.sum(y * x).label(f"sum_of_products{i}"),
        ]
        if metric.is_ratio:
            d = per_unit.c[f"d{i}"]
            sums += [
                func.sum(d).label(f"d_sum{i}"),
                func.sum(d * d).label(f"d_sum_squares{i}"),
                func.sum(y * d).label(f"d_sum_of_products{i}"),
            ]
    sums.append(excluded_query(units).scalar_subquery().label("excluded"))
    return select(*sums).where(per_unit.c.arm == per_unit.c.last_arm).group_by(per_unit.c.arm)


def excluded_query(units: Any) -> Select[Any]:
    """How many of ``units`` (the CTE above) were seen in more than one arm."""
    return select(func.count()).select_from(units).where(units.c.arm != units.c.last_arm)


def aggregate(
    conn: Connection | QueryRunner,
    experiment_id: str,
    metric: Metric,
    *,
    as_of: datetime,
    window: timedelta = timedelta(days=14),
    lookback: timedelta = timedelta(days=14),
) -> tuple[dict[str, ArmAggregate], int]:
    """Per-arm statistics for ``metric`` and the number of units excluded for appearing in several arms."""
    rows, excluded = aggregate_many(
        conn, experiment_id, [metric], as_of=as_of, window=window, lookback=lookback
    )
    return rows[metric.value], excluded


def aggregate_many(
    conn: Connection | QueryRunner,
    experiment_id: str,
    metrics: Sequence[Metric | MetricDefinition],
    *,
    as_of: datetime,
    window: timedelta = timedelta(days=14),
    lookback: timedelta = timedelta(days=14),
    source: ReportSource = STORE,
) -> tuple[dict[str, dict[str, ArmAggregate]], int]:
    """Per-arm statistics for every metric (by name) in one pass over the units and their events, and the
    number of units excluded for appearing in several arms, computed on ``conn``'s engine."""
    runner = runner_for(conn)
    definitions = list(
        {d.name: d for d in (m.definition if isinstance(m, Metric) else m for m in metrics)}.values()
    )
    query = report_query(source, experiment_id, definitions, as_of=as_of, window=window, lookback=lookback)
    out: dict[str, dict[str, ArmAggregate]] = {d.name: {} for d in definitions}
    excluded_units = None
    for m in sorted(runner.rows(query), key=lambda row: str(row["arm"])):
        excluded_units = int(m["excluded"] or 0)
        for i, metric in enumerate(definitions):
            ratio = metric.is_ratio
            out[metric.name][m["arm"]] = ArmAggregate(
                arm=m["arm"],
                n=int(m["n"]),
                sum=_number(m[f"sum{i}"]),
                sum_squares=_number(m[f"sum_squares{i}"]),
                pre_sum=_number(m[f"pre_sum{i}"]),
                pre_sum_squares=_number(m[f"pre_sum_squares{i}"]),
                sum_of_products=_number(m[f"sum_of_products{i}"]),
                d_sum=_number(m[f"d_sum{i}"]) if ratio else 0.0,
                d_sum_squares=_number(m[f"d_sum_squares{i}"]) if ratio else 0.0,
                d_sum_of_products=_number(m[f"d_sum_of_products{i}"]) if ratio else 0.0,
            )
    if excluded_units is None:  # no clean unit at all: still say how many were excluded
        excluded_units = _excluded_alone(runner, source, experiment_id, as_of)
    return out, excluded_units


def _excluded_alone(runner: QueryRunner, source: ReportSource, experiment_id: str, as_of: datetime) -> int:
    a = source.assignments.c
    units = (
        select(a.user_id, func.min(a.arm_id).label("arm"), func.max(a.arm_id).label("last_arm"))
        .where(a.experiment_id == experiment_id, a.occurred_at <= as_of)
        .group_by(a.user_id)
        .cte("units")
    )
    return int(runner.scalar(excluded_query(units)) or 0)


def _number(value: Any) -> float:
    return 0.0 if value is None else float(value)
