"""Sufficient statistics per experiment × arm × metric, computed by the database.

One query per metric, the same SQLAlchemy Core on SQLite and PostgreSQL (and any engine SQLAlchemy speaks
to): the unit is the customer; each unit counts in the arm of its first exposure to the experiment, from
that moment; units seen in more than one arm are excluded and counted; the outcome is summed over the
attribution window after the first exposure, the CUPED covariate over the lookback window before it.
Only one row per arm comes back to Python — per-unit rows never leave the database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, case, func, literal, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement
from sqlalchemy.types import Float

from nextbest.domain import EventType
from nextbest.store.schema import assignments, events

__all__ = ["ArmAggregate", "Metric", "aggregate"]


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
    units = (
        select(
            assignments.c.user_id,
            func.min(assignments.c.occurred_at).label("first_at"),
            func.min(assignments.c.arm_id).label("arm"),
            func.count(func.distinct(assignments.c.arm_id)).label("arms"),
        )
        .where(assignments.c.experiment_id == experiment_id, assignments.c.occurred_at <= as_of)
        .group_by(assignments.c.user_id)
        .cte("units")
    )
    clean = select(units).where(units.c.arms == 1).cte("clean")
    start = epoch_seconds(clean.c.first_at)
    at = epoch_seconds(events.c.occurred_at)
    as_of_s = as_of.timestamp()
    window_s, lookback_s = window.total_seconds(), lookback.total_seconds()
    value = _value(metric)
    in_window = and_(at >= start, at < start + window_s, at <= as_of_s)
    before = and_(at >= start - lookback_s, at < start)
    post: ColumnElement[Any] = func.coalesce(func.sum(case((in_window, value), else_=0.0)), 0.0)
    pre: ColumnElement[Any] = func.coalesce(func.sum(case((before, value), else_=0.0)), 0.0)
    if metric.is_binary:
        post = case((post > 0, 1.0), else_=0.0)
        pre = case((pre > 0, 1.0), else_=0.0)
    denominator = func.coalesce(
        func.sum(case((and_(in_window, events.c.type == EventType.ORDER_PLACED.value), 1.0), else_=0.0)), 0.0
    )
    per_unit = (
        select(
            clean.c.arm,
            post.label("y"),
            pre.label("x"),
            (denominator if metric is Metric.REVENUE_PER_ORDER else literal(0.0)).label("d"),
        )
        .select_from(clean.outerjoin(events, events.c.user_id == clean.c.user_id))
        .group_by(clean.c.user_id, clean.c.arm)
        .subquery("per_unit")
    )
    y, x, d = per_unit.c.y, per_unit.c.x, per_unit.c.d
    query = select(
        per_unit.c.arm,
        func.count().label("n"),
        func.sum(y).label("sum"),
        func.sum(y * y).label("sum_squares"),
        func.sum(x).label("pre_sum"),
        func.sum(x * x).label("pre_sum_squares"),
        func.sum(y * x).label("sum_of_products"),
        func.sum(d).label("d_sum"),
        func.sum(d * d).label("d_sum_squares"),
        func.sum(y * d).label("d_sum_of_products"),
    ).group_by(per_unit.c.arm)
    arms = {
        row.arm: ArmAggregate(**{k: _number(v) for k, v in row._mapping.items()})
        for row in conn.execute(query)
    }
    excluded = conn.execute(select(func.count()).select_from(units).where(units.c.arms > 1)).scalar_one()
    return arms, int(excluded)


def _number(value: Any) -> Any:
    if value is None:
        return 0.0
    return value if isinstance(value, str | int) else float(value)


def as_mapping(rows: Mapping[str, ArmAggregate]) -> dict[str, dict[str, float]]:
    return {arm: {k: getattr(a, k) for k in a.__slots__ if k != "arm"} for arm, a in rows.items()}
