"""Erasure of one customer, and retention: deleting what the store holds of a customer, or everything
older than a moment.

An erasure removes the customer's decisions, exposures (pending actions included), experiment
assignments, events and state in one transaction, counts the experiment units it took out (per
experiment and arm, without whom: ``erasures``) so lift reports can say how many were erased, and
appends its audit entry in the same transaction. Erasing again finds nothing and says so.

Retention deletes in batches, each its own short transaction, so a serving process's group commit and
event writes wait at most one batch. On PostgreSQL, where exposures, assignments and events are
partitioned by month (``nextbest.store.partitions``), it first drops every month that ends before the
cut-off whole, and deletes row by row only what is left: the month the cut-off falls in, rows in the
default partition, and decisions (not partitioned).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Table, delete, exists, func, insert, select

from nextbest.errors import FieldViolation, InvalidArgumentError
from nextbest.store.audit import AuditEntry, append_in
from nextbest.store.backend import guard
from nextbest.store.database import Database
from nextbest.store.partitions import drop_partitions_before, forget_event_ids_before
from nextbest.store.pseudonyms import PREFIX, CustomerIds
from nextbest.store.schema import (
    assignments,
    customers,
    decisions,
    erasures,
    events,
    experiment_units,
    exposures,
)
from nextbest.store.units import rebuild_units

__all__ = ["MAX_REASON", "MULTIPLE_ARMS", "Erased", "Erasure", "Purged", "check_erasure"]

# The arm an erased unit is counted under when it had been assigned to several arms of an experiment.
MULTIPLE_ARMS = "__multiple__"
MAX_REASON = 512
_MAX_ID = 128
# In the order they are deleted: rows that refer to a decision before the decision.
_CUSTOMER_TABLES: tuple[Table, ...] = (experiment_units, assignments, exposures, decisions, events, customers)


def check_erasure(user_id: str, reason: str) -> None:
    """Raises ``InvalidArgumentError`` naming each bad field of an erasure request."""
    problems = []
    if not user_id or not user_id.strip():
        problems.append(FieldViolation("user_id", "required"))
    elif len(user_id) > _MAX_ID or "\x00" in user_id:
        problems.append(FieldViolation("user_id", f"at most {_MAX_ID} characters, no NUL"))
    if len(reason) > MAX_REASON or "\x00" in reason:
        problems.append(FieldViolation("reason", f"at most {MAX_REASON} characters, no NUL"))
    if problems:
        raise InvalidArgumentError(problems)


@dataclass(frozen=True, slots=True)
class Erased:
    """Rows removed per table, and the experiment units taken out, by experiment."""

    rows: Mapping[str, int]
    experiment_units: Mapping[str, int]

    @property
    def nothing_left(self) -> bool:
        """True when there was nothing of the customer to erase (a repeated erasure)."""
        return not any(self.rows.values())


@dataclass(frozen=True, slots=True)
class Purged:
    """Rows deleted per table by a retention run (with those of dropped partitions), the moment they were
    older than, and the partitions dropped whole (PostgreSQL)."""

    before: datetime
    rows: Mapping[str, int]
    partitions: tuple[str, ...] = field(default=())


class Erasure:
    """Erasure and retention on ``db``; ``ids`` is how customer ids are stored (see ``pseudonyms``)."""

    def __init__(self, db: Database, ids: CustomerIds | None = None) -> None:
        self.db = db
        self.ids = ids or CustomerIds()

    def erase_customer(self, user_id: str, now: datetime, principal: str, reason: str = "") -> Erased:
        """Deletes everything held of ``user_id`` (a raw id) and appends the audit entry, atomically.
        ``reason`` (a ticket number, say) goes into the audit entry; the customer id does not."""
        check_erasure(user_id, reason)
        stored = self.ids.stored(user_id)
        with guard("erase customer"), self.db.begin_write() as conn:
            # The customer's row first: on PostgreSQL, decisions and events for them wait until the
            # erasure commits (they lock the same row), so nothing is half erased.
            conn.execute(select(customers.c.user_id).where(customers.c.user_id == stored).with_for_update())
            units = self._units(conn, stored)
            rows = {
                table.name: conn.execute(delete(table).where(table.c.user_id == stored)).rowcount
                for table in _CUSTOMER_TABLES
            }
            if units:
                conn.execute(
                    insert(erasures),
                    [
                        {"experiment_id": e, "arm_id": arm, "units": 1, "erased_at": now}
                        for e, arm in sorted(units.items())
                    ],
                )
            erased = Erased(rows, {e: 1 for e in units})
            detail: dict[str, Any] = {"rows": rows, "experiments": sorted(units), "reason": reason}
            append_in(conn, AuditEntry(now, principal, "erase_customer", detail))
        return erased

    def stores_other_ids(self) -> bool:
        """True when the customers table holds ids of the other kind than ``ids`` writes (digests without
        a key, raw ids with one): an erasure by this store would miss them. Looks at one row."""
        is_digest = customers.c.user_id.startswith(PREFIX, autoescape=True)
        other = ~is_digest if self.ids.hashing else is_digest
        with guard("read customers"), self.db.reader.connect() as conn:
            return conn.execute(select(customers.c.user_id).where(other).limit(1)).first() is not None

    @staticmethod
    def _units(conn: Connection, stored: str) -> dict[str, str]:
        """The experiments the customer was a unit of, with the arm they count under."""
        arms = conn.execute(
            select(
                assignments.c.experiment_id, func.min(assignments.c.arm_id), func.max(assignments.c.arm_id)
            )
            .where(assignments.c.user_id == stored)
            .group_by(assignments.c.experiment_id)
        ).all()
        return {e: first if first == last else MULTIPLE_ARMS for e, first, last in arms}

    def purge_before(self, before: datetime, now: datetime, principal: str, *, batch: int = 1000) -> Purged:
        """Deletes events, decisions, their exposures and assignments that occurred before ``before``,
        ``batch`` rows per transaction, and appends the audit entry. Customer state (folded from
        events) and the audit log are kept."""
        if batch < 1:
            raise ValueError("batch must be at least 1")
        # Exposures and assignments first: the decisions they refer to go after them.
        dropped, in_partitions = self._drop_partitions((assignments, exposures, events), before)
        rows = {
            "assignments": self._purge(assignments, assignments.c.assignment_id, before, batch),
            "exposures": self._purge(exposures, exposures.c.exposure_id, before, batch),
            # A decision still referred to (one written meanwhile with an old occurred_at) stays.
            "decisions": self._purge(
                decisions,
                decisions.c.decision_id,
                before,
                batch,
                ~exists().where(exposures.c.decision_id == decisions.c.decision_id),
                ~exists().where(assignments.c.decision_id == decisions.c.decision_id),
            ),
            "events": self._purge(events, events.c.seq, before, batch),
        }
        rows = {table: n + in_partitions.get(table, 0) for table, n in rows.items()}
        if rows["assignments"]:
            # Units first exposed before the cut-off: their first exposure is gone, so their row is what
            # the assignments left define (a report reads the same as from the assignments themselves).
            with guard("rebuild experiment units"), self.db.begin_write() as conn:
                rebuild_units(conn, before=before)
        if dropped:
            self._forget_event_ids(before, batch)
        detail: dict[str, Any] = {"before": before.isoformat(), "rows": rows}
        if dropped:
            detail["partitions_dropped"] = list(dropped)
        with guard("write the audit log"), self.db.begin_write() as conn:
            append_in(conn, AuditEntry(now, principal, "retention", detail))
        return Purged(before, rows, dropped)

    def _forget_event_ids(self, before: datetime, batch: int) -> None:
        while True:
            with guard("purge event ids"), self.db.begin_write() as conn:
                if forget_event_ids_before(conn, before, batch) < batch:
                    return

    def _drop_partitions(
        self, tables: tuple[Table, ...], before: datetime
    ) -> tuple[tuple[str, ...], dict[str, int]]:
        """Drops the monthly partitions of ``tables`` that end before ``before``, a table per short
        transaction; nothing on SQLite. Returns the partitions dropped and the rows they held per table."""
        dropped: list[str] = []
        rows: dict[str, int] = {}
        if self.db.dialect != "postgresql":
            return (), rows
        for table in tables:
            with guard(f"drop partitions of {table.name}"), self.db.begin_write() as conn:
                rows[table.name], names = drop_partitions_before(conn, table.name, before)
            dropped += names
        return tuple(dropped), rows

    def _purge(self, table: Table, key: Any, before: datetime, batch: int, *also: ColumnElement[bool]) -> int:
        # No ORDER BY: old rows come first in insertion order, and sorting would read the whole table.
        chosen = select(key).where(table.c.occurred_at < before, *also).limit(batch).scalar_subquery()
        total = 0
        while True:
            with guard(f"purge {table.name}"), self.db.begin_write() as conn:
                done = int(conn.execute(delete(table).where(key.in_(chosen))).rowcount)
            total += done
            if done < batch:
                return total
