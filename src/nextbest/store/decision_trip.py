"""The decisions' group commit on PostgreSQL in one round trip.

The general write (``DecisionLog._write_decisions``) makes a batch's round trips one after the other:
the customers' version checks, the decisions' insert (which says which request ids were new), their
exposures, then the commit: four waits on the server per group commit, each with the statements the
server runs, and the caller's own Python around each. When no decision of the batch preempts anything
or exposes an experiment (no cancellation, no assignment: the usual decision), each decision is instead
one statement whose parts depend on each other inside the server:

    WITH g AS (<the version check: UPDATE customers ... RETURNING, or the first-seen INSERT>),
         d AS (INSERT INTO decisions SELECT <the row> WHERE EXISTS (SELECT FROM g)
               ON CONFLICT DO NOTHING RETURNING decision_id),
         e AS (INSERT INTO exposures SELECT <each row> WHERE EXISTS (SELECT FROM d))
    SELECT EXISTS (SELECT FROM g), (SELECT decision_id FROM d)

so a decision whose customer moved on writes nothing (``g`` is empty), a replayed request id writes no
exposures (``d`` is empty) and the result row says which. The batch's statements and the ``COMMIT`` go
in one pipeline (psycopg's pipeline mode): one round trip per group commit, and the caller is answered
only once the commit's result (after the WAL flush: ``synchronous_commit`` stays on) has come back. The
statements run in user order, as the general write's version checks do, so concurrent batches lock
customers in the same order. The check is per decision (two decisions of one customer in a batch: the
first moves the version, the second conflicts); a batch naming a customer twice still goes the general
way, which checks by customer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import (
    Column,
    Dialect,
    bindparam,
    cast,
    exists,
    insert,
    literal_column,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.sql import ClauseElement

from nextbest.store import codec
from nextbest.store.schema import customers, decisions, exposures
from nextbest.store.writer import PendingWrite

__all__ = ["OneTrip"]

_DECISION_COLUMNS = [c.name for c in decisions.columns]
_SET_LATER = {"exposure_id", "cancelled_at", "cancelled_by", "cancel_reason"}
_EXPOSURE_COLUMNS = [c.name for c in exposures.columns if c.name not in _SET_LATER]
_NONE, _ADVANCE, _CREATE = "none", "advance", "create"


def fits(batch: Sequence[PendingWrite]) -> bool:
    """Whether one round trip can write ``batch``: nothing to cancel, no experiment exposure, and each
    customer checked at most once."""
    users = set()
    for item in batch:
        if item.cancellations or item.assignment_rows:
            return False
        if item.guard is not None:
            user = item.guard["user_id"]
            if user in users:
                return False
            users.add(user)
    return True


def _typed(name: str, column: Column[Any]) -> Any:
    """A parameter for ``column`` (its type's bind processor), cast to the column's type in the SQL: in a
    SELECT list an untyped parameter (a float, bytes, a NULL) would be taken as text."""
    return cast(bindparam(name, type_=column.type), column.type)


def _statement(kind: str, exposures_count: int) -> ClauseElement:
    row = select(*(_typed(f"d_{c}", decisions.c[c]) for c in _DECISION_COLUMNS))
    if kind == _ADVANCE:
        g = (
            update(customers)
            .where(customers.c.user_id == bindparam("g_user_id"), customers.c.version == bindparam("g_from"))
            .values(version=bindparam("g_to"))
            .returning(customers.c.user_id)
            .cte("g")
        )
    elif kind == _CREATE:
        # ``decisions._bump_version``: a customer first seen is created (empty) at version 1, or an
        # existing row moved from version 0; another write in between moved it on, and then nothing.
        created = pg_insert(customers).values(
            {c: bindparam(f"g_{c}", type_=customers.c[c].type) for c in codec.VERSION_GUARD_COLUMNS}
        )
        g = (
            created.on_conflict_do_update(
                index_elements=[customers.c.user_id],
                set_={"version": created.excluded.version},
                where=customers.c.version + literal_column("1") == created.excluded.version,
            )
            .returning(customers.c.user_id)
            .cte("g")
        )
    if kind != _NONE:
        row = row.where(exists(select(g.c.user_id)))
    d = (
        pg_insert(decisions)
        .from_select(_DECISION_COLUMNS, row)
        .on_conflict_do_nothing()
        .returning(decisions.c.decision_id)
        .cte("d")
    )
    final = select(
        exists(select(g.c.user_id)) if kind != _NONE else true(),
        select(d.c.decision_id).scalar_subquery(),
    )
    if exposures_count:
        rows = [
            select(*(_typed(f"e{j}_{c}", exposures.c[c]) for c in _EXPOSURE_COLUMNS)).where(
                exists(select(d.c.decision_id))
            )
            for j in range(exposures_count)
        ]
        source = rows[0] if exposures_count == 1 else union_all(*rows)
        final = final.add_cte(insert(exposures).from_select(_EXPOSURE_COLUMNS, source).cte("e"))
    return final


class _Compiled:
    """One variant, compiled once: its SQL with positional parameters and, for each parameter in order,
    where its value comes from (the decision row, exposure row j, or the guard) and its type's bind
    processor: a decision's parameters are a tuple built in one pass."""

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled: Any = statement.compile(dialect=dialect)  # a SQLCompiler: its binds
        names: list[str] = []

        def positional(match: re.Match[str]) -> str:
            names.append(match.group(1))
            return "%s"

        self.sql = _NAMED.sub(positional, str(compiled))
        self.sources: list[tuple[int, str, Callable[[Any], Any] | None]] = []
        for name in names:
            process = compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            prefix, column = name.split("_", 1)
            source = 0 if prefix == "d" else _GUARD if prefix == "g" else 1 + int(prefix[1:])
            self.sources.append((source, column, process))


_NAMED = re.compile(r"%\((\w+)\)s")
_GUARD = -1


class OneTrip:
    """The one-round-trip write of a batch that ``fits``, on one dialect (PostgreSQL's)."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._variants: dict[tuple[str, int], _Compiled] = {}

    def _variant(self, kind: str, exposures_count: int) -> _Compiled:
        key = (kind, exposures_count)
        compiled = self._variants.get(key)
        if compiled is None:
            compiled = self._variants[key] = _Compiled(_statement(kind, exposures_count), self._dialect)
        return compiled

    @staticmethod
    def _params(item: PendingWrite, kind: str, compiled: _Compiled) -> tuple[Any, ...]:
        guard = item.guard
        if kind == _ADVANCE:
            assert guard is not None
            n = guard["version"]
            guard = {"user_id": guard["user_id"], "from": n - 1, "to": n}
        rows: list[Any] = [item.decision_row, *item.exposure_rows, guard]  # [-1]: the guard
        return tuple(
            rows[source][column] if process is None else process(rows[source][column])
            for source, column, process in compiled.sources
        )

    def write(self, conn: Any, batch: Sequence[PendingWrite]) -> set[str]:
        """Writes and commits ``batch`` (which ``fits``) on psycopg connection ``conn``, in a
        transaction it begins; marks each guarded item's ``conflict``; returns the decision ids
        inserted. Raises what the server refused (nothing of the batch committed)."""
        guards = sorted(((i.guard["user_id"], n) for n, i in enumerate(batch) if i.guard is not None))
        guarded = [batch[n] for _, n in guards]  # in user order (a fixed lock order)
        ordered = [*guarded, *(i for i in batch if i.guard is None)]
        sent = []
        try:
            with conn.pipeline():
                for item in ordered:
                    guard = item.guard
                    kind = _NONE if guard is None else _ADVANCE if guard["version"] > 1 else _CREATE
                    compiled = self._variant(kind, len(item.exposure_rows))
                    cursor = conn.cursor()
                    sent.append((item, cursor))
                    cursor.execute(compiled.sql, self._params(item, kind, compiled))
                conn.commit()
            inserted = set()
            for item, cursor in sent:
                moved, decision_id = cursor.fetchone()
                item.conflict = not moved
                if decision_id is not None:
                    inserted.add(decision_id)
            return inserted
        finally:
            for _, cursor in sent:
                cursor.close()
