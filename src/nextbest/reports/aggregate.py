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

from sqlalchemy import ColumnElement, Connection, FromClause, Select, case, func, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement
from sqlalchemy.sql.visitors import InternalTraversal

from nextbest.domain import EventType
from nextbest.reports.engines import QueryRunner, runner_for
from nextbest.store.schema import assignments, erasures, events, experiment_units

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
    and its Parquet export use the store's tables; external experiments name their own views.

    ``units``, when the source keeps it, is each unit's first exposure (experiment_id, user_id, arm_id,
    first_at, mixed_at: ``nextbest.store.units``); the report then reads one row per unit from it
    instead of grouping the unit's exposures, with the same result.

    ``sends``, when the source keeps it, is the count of assignments not held out per UTC day
    (experiment_id, arm_id, action_id, day_start, sends: the export's ``assignment_sends``); the cost
    per arm then reads the days before the report's moment from it, and only the moment's own day from
    ``assignments``, with the same result.

    ``unit_events``, when the source keeps it (with ``units``), is ``units`` joined to ``events`` by
    customer: for every unit, each of its events (experiment_id, user_id, unit: a number for the unit,
    unique in its experiment, arm_id, first_at, mixed_at, type, occurred_at, value: the export's
    ``unit_events``, made from the same units and events). The per-unit sums then read it instead of
    joining the units to their events, and group by the unit's number, with the same result; it must
    hold every event of every unit of ``units`` (any type, any time), which the export's does."""

    assignments: FromClause = assignments
    events: FromClause = events
    erasures: FromClause | None = erasures
    units: FromClause | None = None
    sends: FromClause | None = None
    unit_events: FromClause | None = None


STORE = ReportSource(units=experiment_units)


class moment(FunctionElement[Any]):  # noqa: N801 - a SQL function, named like one
    """A timestamp column as the report compares it: the timestamp itself; on SQLite, which stores
    text, its seconds since 1970 as a double; on DuckDB its microseconds since 1970 (``epoch_us``), because
    DuckDB adds an interval to a ``TIMESTAMPTZ`` through ICU's calendar in the session's time zone, per
    joined row, while the same comparison on integers is exact and nearly free."""

    inherit_cache = True


class shifted(FunctionElement[Any]):  # noqa: N801
    """``moment(column)`` moved by a fixed duration, spelled for each engine (below). The duration is
    part of the statement's cache key: it is spelled into the SQL, so a statement cached for one window
    must not be reused for another."""

    inherit_cache = True
    _traverse_internals = [
        *FunctionElement._traverse_internals,
        ("micros", InternalTraversal.dp_plain_obj),
    ]

    def __init__(self, column: ColumnElement[Any], by: timedelta) -> None:
        self.micros = round(by / timedelta(microseconds=1))
        super().__init__(column)


def _inner(element: Any, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.clauses, **kw))


def _epoch(column: str) -> str:
    return f"((julianday({column}) - 2440587.5) * 86400.0)"


@compiles(moment)
def _moment(element: Any, compiler: Any, **kw: Any) -> str:
    return _inner(element, compiler, **kw)


@compiles(moment, "sqlite")
def _moment_sqlite(element: Any, compiler: Any, **kw: Any) -> str:
    return _epoch(_inner(element, compiler, **kw))


@compiles(shifted, "sqlite")
def _shifted_sqlite(element: Any, compiler: Any, **kw: Any) -> str:
    return f"({_epoch(_inner(element, compiler, **kw))} + {element.micros / 1e6!r})"


@compiles(moment, "duckdb")
def _moment_duckdb(element: Any, compiler: Any, **kw: Any) -> str:
    return f"epoch_us({_inner(element, compiler, **kw)})"


@compiles(shifted, "duckdb")
def _shifted_duckdb(element: Any, compiler: Any, **kw: Any) -> str:
    return f"(epoch_us({_inner(element, compiler, **kw)}) + {element.micros})"


@compiles(shifted, "spark")
def _shifted_spark(element: Any, compiler: Any, **kw: Any) -> str:
    return f"timestamp_micros(unix_micros({_inner(element, compiler, **kw)}) + {element.micros})"


@compiles(shifted)
def _shifted_default(element: Any, compiler: Any, **kw: Any) -> str:
    # PostgreSQL, and standard SQL for the engines SQLAlchemy speaks to that are not named above.
    return f"({_inner(element, compiler, **kw)} + INTERVAL '{element.micros} microseconds')"


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


def _contribution(
    kind: ColumnElement[Any], value: ColumnElement[Any], terms: tuple[tuple[str, Term], ...]
) -> ColumnElement[Any]:
    """The per-event contribution of ``terms`` (an event's ``kind`` being its type): one CASE over it."""
    whens: list[tuple[ColumnElement[bool], Any]] = []
    for event_type, term in terms:
        amount: Any = 1.0 if term == "one" else (value if term == "value" else -value)
        whens.append((kind == event_type, amount))
    return case(*whens, else_=0.0)


def _units(source: ReportSource, experiment_id: str, as_of: datetime) -> Select[Any]:
    """The experiment's units as of ``as_of``, one row each: user_id, arm, first_at, and ``mixed`` (1
    when seen in several arms by then, else 0)."""
    if source.units is not None:
        u = source.units.c
        return select(
            u.user_id,
            u.arm_id.label("arm"),
            u.first_at,
            case((u.mixed_at <= as_of, 1), else_=0).label("mixed"),
        ).where(u.experiment_id == experiment_id, u.first_at <= as_of)
    return _grouped_units(source, experiment_id, as_of)


def _clean_units(source: ReportSource, experiment_id: str, as_of: datetime) -> Select[Any]:
    """The units of :func:`_units` seen in one arm by ``as_of``: user_id, arm, first_at."""
    if source.units is not None:
        u = source.units.c
        return select(u.user_id, u.arm_id.label("arm"), u.first_at).where(
            u.experiment_id == experiment_id,
            u.first_at <= as_of,
            or_(u.mixed_at.is_(None), u.mixed_at > as_of),
        )
    units = _grouped_units(source, experiment_id, as_of).subquery("grouped")
    return select(units.c.user_id, units.c.arm, units.c.first_at).where(units.c.mixed == 0)


def _grouped_units(source: ReportSource, experiment_id: str, as_of: datetime) -> Select[Any]:
    """:func:`_units` for a source without first exposures: the unit's assignments grouped."""
    a = source.assignments.c
    return (
        select(
            a.user_id,
            func.min(a.arm_id).label("arm"),
            func.min(a.occurred_at).label("first_at"),
            # min != max: seen in several arms (cheaper than COUNT(DISTINCT), which forces a sort)
            case((func.min(a.arm_id) != func.max(a.arm_id), 1), else_=0).label("mixed"),
        )
        .where(a.experiment_id == experiment_id, a.occurred_at <= as_of)
        .group_by(a.user_id)
    )


def report_query(
    source: ReportSource,
    experiment_id: str,
    metrics: Sequence[MetricDefinition],
    *,
    as_of: datetime,
    window: timedelta,
    lookback: timedelta,
) -> Select[Any]:
    """The report as one query: a row per arm with ``n`` (its units, 0 when all were seen in several
    arms), ``excluded`` (its units seen in several arms, counted under the arm of their first exposure),
    and for metric ``i`` ``sum{i}``, ``sum_squares{i}``, ``pre_sum{i}``, ``pre_sum_squares{i}``,
    ``sum_of_products{i}`` (and, for a ratio metric, ``d_sum{i}``, ``d_sum_squares{i}``,
    ``d_sum_of_products{i}``). The one place the report's SQL is built: every engine runs what this
    returns.

    Units are counted from the units alone; the per-unit sums join only the events that can count (of a
    metric's types, between the lookback before the first exposure and the window after it, not after
    ``as_of``): a unit with none has every per-unit value 0, and adds 0 to every sum."""
    units = _units(source, experiment_id, as_of).subquery("units")
    # Each clean unit with each of its events: from the source's units joined to their events by
    # customer, or read as such from ``unit_events`` when the source keeps it (the export).
    joined: FromClause
    scope: list[ColumnElement[bool]] = []
    if source.unit_events is not None and source.units is not None:
        ue = source.unit_events.c
        joined, user, arm, first_at = source.unit_events, ue.unit, ue.arm_id, ue.first_at
        kind, value, occurred_at = ue.type, ue.value, ue.occurred_at
        scope = [
            ue.experiment_id == experiment_id,
            ue.first_at <= as_of,
            or_(ue.mixed_at.is_(None), ue.mixed_at > as_of),
        ]
    else:
        ev = source.events.c
        clean = _clean_units(source, experiment_id, as_of).subquery("clean")
        joined = clean.join(source.events, ev.user_id == clean.c.user_id)
        user, arm, first_at = clean.c.user_id, clean.c.arm, clean.c.first_at
        kind, value, occurred_at = ev.type, ev.value, ev.occurred_at
    # Timestamps compared with timestamps (the window's edges computed once per unit and joined row);
    # SQLite, which stores text, compares epoch seconds (see ``moment`` below).
    at, start = moment(occurred_at), moment(first_at)
    window_end, lookback_start = shifted(first_at, window), shifted(first_at, -lookback)
    in_window = at >= start
    types = sorted({t for metric in metrics for t, _ in (*metric.terms, *metric.denominator)})
    columns: list[ColumnElement[Any]] = [arm.label("arm")]
    for i, metric in enumerate(metrics):
        contribution = _contribution(kind, value, metric.terms)
        post: ColumnElement[Any] = func.sum(case((in_window, contribution), else_=0.0))
        pre: ColumnElement[Any] = func.sum(case((in_window, 0.0), else_=contribution))
        if metric.binary:
            post = case((post > 0, 1.0), else_=0.0)
            pre = case((pre > 0, 1.0), else_=0.0)
        columns += [post.label(f"y{i}"), pre.label(f"x{i}")]
        if metric.is_ratio:
            d = _contribution(kind, value, metric.denominator)
            columns.append(func.sum(case((in_window, d), else_=0.0)).label(f"d{i}"))
    per_unit = (
        select(*columns)
        .select_from(joined)
        .where(
            *scope,
            kind.in_(types),
            at >= lookback_start,
            at < window_end,
            occurred_at <= as_of,
        )
        .group_by(user, arm)
        .subquery("per_unit")
    )
    sums: list[ColumnElement[Any]] = [per_unit.c.arm]
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
    by_arm = select(*sums).group_by(per_unit.c.arm).subquery("by_arm")
    counts = (
        select(
            units.c.arm,
            func.sum(1 - units.c.mixed).label("n"),
            func.sum(units.c.mixed).label("excluded"),
        )
        .group_by(units.c.arm)
        .subquery("counts")
    )
    return select(
        counts.c.arm,
        counts.c.n,
        counts.c.excluded,
        *[c for c in by_arm.c if c.name != "arm"],
    ).select_from(counts.outerjoin(by_arm, by_arm.c.arm == counts.c.arm))


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
    excluded_units = 0
    for m in sorted(runner.rows(query), key=lambda row: str(row["arm"])):
        excluded_units += int(m["excluded"] or 0)
        if not m["n"]:  # every unit of this arm was seen in several arms
            continue
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
    return out, excluded_units


def _number(value: Any) -> float:
    return 0.0 if value is None else float(value)
