"""Sufficient statistics per experiment × arm × metric, computed by the database.

One query per metric, the same SQLAlchemy Core on SQLite and PostgreSQL (and any engine SQLAlchemy speaks
to): the unit is the customer; each unit counts in the arm of its first exposure to the experiment, from
that moment; units seen in more than one arm are excluded and counted; the outcome is summed over the
attribution window after the first exposure, the CUPED covariate over the lookback window before it.
Only one row per arm comes back to Python — per-unit rows never leave the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, case, func, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement
from sqlalchemy.types import Float

from nextbest.domain import EventType
from nextbest.store.schema import assignments, events

__all__ = ["ArmAggregate", "Metric", "aggregate", "aggregate_many"]


class Metric(StrEnum):
    """What a report can measure. Conversion-type metrics are 0/1 per unit; the others sum per unit."""

    CONVERSION = "conversion"  # placed an order in the window
    REVENUE = "revenue"  # order revenue minus refunds per customer
    ORDERS = "orders"  # orders per customer
    VISIT = "visit"  # viewed a product in the window
    REVENUE_PER_ORDER = "revenue_per_order"  # a ratio metric (delta method)

    @property
    def is_binary(self) -> bool:
        return self in (Metric.CONVERSION, Metric.VISIT)


class epoch_seconds(FunctionElement[float]):  # noqa: N801 - a SQL function, named like one
    """Seconds since 1970 of a timestamp column, portable: SQLite stores text, PostgreSQL timestamptz."""

    type = Float()
    inherit_cache = True


@compiles(epoch_seconds, "sqlite")
def _epoch_sqlite(element: Any, compiler: Any, **kw: Any) -> str:
    return f"((julianday({compiler.process(element.clauses, **kw)}) - 2440587.5) * 86400.0)"


@compiles(epoch_seconds)
def _epoch_default(element: Any, compiler: Any, **kw: Any) -> str:
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


def _value(metric: Metric) -> ColumnElement[Any]:
    """The per-event contribution to the metric."""
    orders = events.c.type == EventType.ORDER_PLACED.value
    if metric in (Metric.REVENUE, Metric.REVENUE_PER_ORDER):
        refunds = events.c.type == EventType.REFUNDED.value
        return case((orders, events.c.value), (refunds, -events.c.value), else_=0.0)
    if metric is Metric.VISIT:
        return case((events.c.type == EventType.PRODUCT_VIEWED.value, 1.0), else_=0.0)
    return case((orders, 1.0), else_=0.0)


def aggregate(
    conn: Connection,
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
    return rows[metric], excluded


def aggregate_many(
    conn: Connection,
    experiment_id: str,
    metrics: Sequence[Metric],
    *,
    as_of: datetime,
    window: timedelta = timedelta(days=14),
    lookback: timedelta = timedelta(days=14),
) -> tuple[dict[Metric, dict[str, ArmAggregate]], int]:
    """Per-arm statistics for every metric in one pass over the units and their events, and the number
    of units excluded for appearing in several arms."""
    metrics = list(dict.fromkeys(metrics))
    units = (
        select(
            assignments.c.user_id,
            func.min(assignments.c.occurred_at).label("first_at"),
            func.min(assignments.c.arm_id).label("arm"),
            # min != max: seen in several arms (cheaper than COUNT(DISTINCT), which forces a sort)
            func.max(assignments.c.arm_id).label("last_arm"),
        )
        .where(assignments.c.experiment_id == experiment_id, assignments.c.occurred_at <= as_of)
        .group_by(assignments.c.user_id)
        .cte("units")
    )
    # Every unit goes into the join and the ones seen in several arms are dropped after it: filtering
    # first (arm = last_arm) makes PostgreSQL expect a few hundred units and probe the events index
    # once per unit instead of hashing the join.
    clean = units
    start = epoch_seconds(clean.c.first_at)
    at = epoch_seconds(events.c.occurred_at)
    as_of_s = as_of.timestamp()
    window_s, lookback_s = window.total_seconds(), lookback.total_seconds()
    in_window = and_(at >= start, at < start + window_s, at <= as_of_s)
    before = and_(at >= start - lookback_s, at < start)
    # last_arm as an aggregate, not a grouping column: the filter on it then stays after the join.
    columns: list[ColumnElement[Any]] = [clean.c.arm, func.max(clean.c.last_arm).label("last_arm")]
    for i, metric in enumerate(metrics):
        value = _value(metric)
        post: ColumnElement[Any] = func.coalesce(func.sum(case((in_window, value), else_=0.0)), 0.0)
        pre: ColumnElement[Any] = func.coalesce(func.sum(case((before, value), else_=0.0)), 0.0)
        if metric.is_binary:
            post = case((post > 0, 1.0), else_=0.0)
            pre = case((pre > 0, 1.0), else_=0.0)
        columns += [post.label(f"y{i}"), pre.label(f"x{i}")]
    orders_in_window = and_(in_window, events.c.type == EventType.ORDER_PLACED.value)
    columns.append(func.coalesce(func.sum(case((orders_in_window, 1.0), else_=0.0)), 0.0).label("d"))
    per_unit = (
        select(*columns)
        .select_from(clean.outerjoin(events, events.c.user_id == clean.c.user_id))
        .group_by(clean.c.user_id, clean.c.arm)
        .subquery("per_unit")
    )
    d = per_unit.c.d
    sums: list[ColumnElement[Any]] = [per_unit.c.arm, func.count().label("n")]
    for i, _metric in enumerate(metrics):
        y, x = per_unit.c[f"y{i}"], per_unit.c[f"x{i}"]
        sums += [
            func.sum(y).label(f"sum{i}"),
            func.sum(y * y).label(f"sum_squares{i}"),
            func.sum(x).label(f"pre_sum{i}"),
            func.sum(x * x).label(f"pre_sum_squares{i}"),
            func.sum(y * x).label(f"sum_of_products{i}"),
            func.sum(y * d).label(f"d_sum_of_products{i}"),
        ]
    sums += [func.sum(d).label("d_sum"), func.sum(d * d).label("d_sum_squares")]
    several = select(func.count()).select_from(units).where(units.c.arm != units.c.last_arm)
    sums.append(several.scalar_subquery().label("excluded"))
    out: dict[Metric, dict[str, ArmAggregate]] = {m: {} for m in metrics}
    excluded_units = None
    query = select(*sums).where(per_unit.c.arm == per_unit.c.last_arm).group_by(per_unit.c.arm)
    for row in conn.execute(query):
        m = row._mapping
        excluded_units = int(m["excluded"] or 0)
        for i, metric in enumerate(metrics):
            ratio = metric is Metric.REVENUE_PER_ORDER
            out[metric][m["arm"]] = ArmAggregate(
                arm=m["arm"],
                n=int(m["n"]),
                sum=_number(m[f"sum{i}"]),
                sum_squares=_number(m[f"sum_squares{i}"]),
                pre_sum=_number(m[f"pre_sum{i}"]),
                pre_sum_squares=_number(m[f"pre_sum_squares{i}"]),
                sum_of_products=_number(m[f"sum_of_products{i}"]),
                d_sum=_number(m["d_sum"]) if ratio else 0.0,
                d_sum_squares=_number(m["d_sum_squares"]) if ratio else 0.0,
                d_sum_of_products=_number(m[f"d_sum_of_products{i}"]) if ratio else 0.0,
            )
    if excluded_units is None:  # no clean unit at all: still say how many were excluded
        excluded_units = int(conn.execute(several).scalar_one())
    return out, excluded_units


def _number(value: Any) -> Any:
    if value is None:
        return 0.0
    return value if isinstance(value, str | int) else float(value)
