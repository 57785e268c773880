"""Each experiment unit's first exposure (``experiment_units``), kept by the group commit.

A unit's row is the merge of its exposures (arm, time): ``first_at`` the earliest, ``arm_id`` that
exposure's arm (the smallest arm on a tie), ``mixed_at`` the earliest exposure in another arm (NULL while
there is none). The merge is commutative, associative and idempotent, so rows can be merged in any order,
any number of times: a replayed decision, exposures written out of order, concurrent group commits and a
backfill that overlaps live writes all end with the row the unit's exposures define. As of any moment T
the unit counts when ``first_at <= T``, in ``arm_id`` from ``first_at``, and is excluded (seen in several
arms) when ``mixed_at <= T`` — exactly what grouping its exposures up to T gives.

Why ``mixed_at`` is enough: merging exposure (t, b) into (f, a, m) — if b = a nothing but the minima
move; if b differs and t >= f, m becomes min(m, t); if t < f the unit's first arm becomes b and every
earlier exposure (the old first one at f among them) is in another arm, so m becomes min(m', f) where m'
is what we knew of b's rivals: min(m, f) when a != b (m >= f), and m when a = b.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    FromClause,
    Select,
    and_,
    case,
    delete,
    func,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite

from nextbest.store.schema import assignments, experiment_units

__all__ = ["merge_exposures", "rebuild_units", "units_from", "upsert_units"]

_Key = tuple[str, str]
_State = tuple[str, datetime, datetime | None]  # arm, first_at, mixed_at


def _merge(old: _State, new: _State) -> _State:
    (a1, f1, m1), (a2, f2, m2) = old, new
    if f2 < f1 or (f2 == f1 and a2 < a1):
        arm, first = a2, f2
    else:
        arm, first = a1, f1
    candidates = [m for m in (m1, m2) if m is not None]
    if a1 != a2:
        candidates.append(max(f1, f2))
    return arm, first, min(candidates) if candidates else None


def merge_exposures(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """``experiment_units`` rows for assignment rows (experiment_id, user_id, arm_id, occurred_at): one
    per unit, in key order (the order concurrent writers lock them in)."""
    states: dict[_Key, _State] = {}
    for row in rows:
        key = (row["experiment_id"], row["user_id"])
        state: _State = (row["arm_id"], row["occurred_at"], None)
        old = states.get(key)
        states[key] = state if old is None else _merge(old, state)
    return [
        {"experiment_id": e, "user_id": u, "arm_id": arm, "first_at": first, "mixed_at": mixed}
        for (e, u), (arm, first, mixed) in sorted(states.items())
    ]


def _least(x: ColumnElement[Any], y: ColumnElement[Any]) -> ColumnElement[Any]:
    """The earlier of two nullable times (NULL only when both are)."""
    return case((x.is_(None), y), (y.is_(None), x), (x <= y, x), else_=y)


def upsert_units(dialect: str) -> Any:
    """``INSERT`` of ``experiment_units`` rows that merges each into the stored row (see the module)."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(experiment_units)
    old, new = experiment_units.c, statement.excluded
    takes_new = (new.first_at < old.first_at) | and_(new.first_at == old.first_at, new.arm_id < old.arm_id)
    later_first = case((new.first_at > old.first_at, new.first_at), else_=old.first_at)
    mixed = _least(old.mixed_at, new.mixed_at)
    return statement.on_conflict_do_update(
        index_elements=[old.experiment_id, old.user_id],
        set_={
            "arm_id": case((takes_new, new.arm_id), else_=old.arm_id),
            "first_at": case((takes_new, new.first_at), else_=old.first_at),
            "mixed_at": case((old.arm_id == new.arm_id, mixed), else_=_least(mixed, later_first)),
        },
    )


def units_from(source: FromClause, *conditions: ColumnElement[bool]) -> Select[Any]:
    """The ``experiment_units`` rows that the assignments in ``source`` (with the store's column names)
    define, computed in SQL: the backfill, the rebuild after retention, and the fallback of an export
    made before the table existed."""
    a = source.c
    where = and_(True, *conditions)
    first = (
        select(a.experiment_id, a.user_id, func.min(a.occurred_at).label("first_at"))
        .where(where)
        .group_by(a.experiment_id, a.user_id)
        .subquery("first")
    )
    at_first = (
        select(first.c.experiment_id, first.c.user_id, first.c.first_at, func.min(a.arm_id).label("arm_id"))
        .join_from(
            first,
            source,
            and_(
                a.experiment_id == first.c.experiment_id,
                a.user_id == first.c.user_id,
                a.occurred_at == first.c.first_at,
            ),
        )
        .where(where)
        .group_by(first.c.experiment_id, first.c.user_id, first.c.first_at)
        .subquery("at_first")
    )
    return (
        select(
            at_first.c.experiment_id,
            at_first.c.user_id,
            at_first.c.arm_id,
            at_first.c.first_at,
            func.min(case((a.arm_id != at_first.c.arm_id, a.occurred_at))).label("mixed_at"),
        )
        .join_from(
            at_first,
            source,
            and_(a.experiment_id == at_first.c.experiment_id, a.user_id == at_first.c.user_id),
        )
        .where(where)
        .group_by(at_first.c.experiment_id, at_first.c.user_id, at_first.c.arm_id, at_first.c.first_at)
    )


_COLUMNS = ["experiment_id", "user_id", "arm_id", "first_at", "mixed_at"]


def rebuild_units(conn: Connection, *, before: datetime | None = None) -> int:
    """Recomputes ``experiment_units`` from the stored assignments: every row (``before`` None: the
    backfill, or after a bulk load that bypassed the store), or the rows of units first exposed before
    ``before`` (after retention deleted assignments older than it). On PostgreSQL the table is locked
    against writers meanwhile (a unit's exposure written between the delete and the insert would
    otherwise be lost); group commits wait for it. Returns the rows written."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.execute(text("LOCK TABLE experiment_units IN SHARE ROW EXCLUSIVE MODE"))
    u = experiment_units.c
    if before is None:
        conn.execute(delete(experiment_units))
        rows = units_from(assignments)
    else:
        if not conn.execute(select(func.count()).where(u.first_at < before)).scalar():
            return 0
        conn.execute(delete(experiment_units).where(u.first_at < before))
        # Every unit without a row now (those just deleted, and any a bulk load left out), recomputed
        # from the assignments that are left; writers wait on the lock meanwhile, so none is missed.
        a = assignments.c
        has_row = select(u.user_id).where(u.experiment_id == a.experiment_id, u.user_id == a.user_id)
        rows = units_from(assignments, ~has_row.exists())
    statement = upsert_units(dialect).from_select(_COLUMNS, rows)
    return int(conn.execute(statement).rowcount or 0)
