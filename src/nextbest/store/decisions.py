"""Decisions in SQL: a decision, its exposures, its experiment assignments and its preemptions, written
atomically through the group commit (``nextbest.store.writer``), and found again by request id."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, literal_column, null, select, update
from sqlalchemy.exc import SQLAlchemyError

from nextbest.domain import Decision
from nextbest.errors import DeadlineExceededError, NextbestError, StoreUnavailableError
from nextbest.store import codec, decision_trip, sqlite_writes
from nextbest.store.backend import Backend, guard, refused
from nextbest.store.contract import SavedDecision, StoredDecision, ToSave
from nextbest.store.prepared import PreparedInsert, PreparedUpdate
from nextbest.store.schema import assignments, customers, decisions, exposures
from nextbest.store.units import merge_exposures, upsert_units
from nextbest.store.writer import GroupCommitWriter, PendingWrite

__all__ = ["DecisionLog"]

logger = logging.getLogger(__name__)

# The id is generated; the cancellation columns are set only when a pending exposure is cancelled.
_SET_LATER = {"exposure_id", "cancelled_at", "cancelled_by", "cancel_reason"}
_EXPOSURE_COLUMNS = [c.name for c in exposures.columns if c.name not in _SET_LATER]
_ASSIGNMENT_COLUMNS = [c.name for c in assignments.columns if c.name != "assignment_id"]
_UNIT_COLUMNS = ["experiment_id", "user_id", "arm_id", "first_at", "mixed_at"]

_FIND_DECISION = select(decisions).where(decisions.c.request_id == bindparam("request_id"))
_FIND_DECISIONS = select(decisions).where(
    decisions.c.request_id.in_(bindparam("request_ids", expanding=True))
)
_CANCEL = (
    update(exposures)
    .where(exposures.c.exposure_id == bindparam("b_exposure_id"), exposures.c.cancelled_at.is_(None))
    .values(
        cancelled_at=bindparam("cancelled_at"),
        cancelled_by=bindparam("cancelled_by"),
        cancel_reason=bindparam("cancel_reason"),
    )
)
_UNCANCEL = (
    update(exposures)
    .where(
        exposures.c.exposure_id == bindparam("b_exposure_id"),
        exposures.c.cancelled_by == bindparam("b_cancelled_by"),
    )
    # NULL literals: ``None`` would compile to bind parameters that ``PreparedUpdate`` is never given.
    .values(cancelled_at=null(), cancelled_by=null(), cancel_reason=null())
)


class DecisionLog:
    """The decisions, exposures and assignments tables. ``writer`` is the group commit every decision
    goes through."""

    def __init__(self, backend: Backend, max_batch: int = 256) -> None:
        self.db = backend.db
        self._insert = backend.insert
        self._driver_error = backend.driver_error
        self._embedded = backend.db.dialect == "sqlite"
        self._raw_transaction = backend.raw_transaction
        self._refusals = backend.refusals
        self._outages = backend.outages
        self.writer = GroupCommitWriter(
            self._raw_transaction,
            self._write_decisions,
            max_batch=max_batch,
            isolate=lambda exc: isinstance(exc, backend.row_failures),
        )
        # Compiled on first use: a dialect only knows its server's version once it has connected.
        self._writes: tuple[PreparedInsert, ...] | None = None
        self._cancels: tuple[PreparedUpdate, PreparedUpdate, PreparedUpdate] | None = None
        # PostgreSQL: a batch without preemptions or experiment exposures in one round trip.
        self._one_trip = None if self._embedded else decision_trip.OneTrip(backend.db.writer.dialect)
        # SQLite: the usual batch in a fixed handful of statements (built on first use).
        self._sqlite_write: sqlite_writes.SqliteDecisionWrite | None = None

    def find_decision(self, request_id: str) -> StoredDecision | None:
        """The decision stored for ``request_id``, if any."""
        with guard("read decision"), self.db.reader.connect() as conn:
            row = conn.execute(_FIND_DECISION, {"request_id": request_id}).mappings().first()
        if row is None:
            return None
        return StoredDecision(codec.decision_from_row(row), row["fingerprint"])

    def find_decisions(self, request_ids: Sequence[str]) -> dict[str, StoredDecision]:
        """The decisions stored for those of ``request_ids`` that have one, by request id: one indexed
        read (the unique request id) for the lot."""
        if not request_ids:
            return {}
        with guard("read decisions"), self.db.reader.connect() as conn:
            rows = conn.execute(_FIND_DECISIONS, {"request_ids": list(request_ids)}).mappings().all()
        return {r["request_id"]: StoredDecision(codec.decision_from_row(r), r["fingerprint"]) for r in rows}

    def save_decision(
        self,
        decision: Decision,
        fingerprint: str,
        decided_at: datetime,
        version: int | None = None,
        deadline: float | None = None,
    ) -> SavedDecision:
        """Durably writes the decision, its exposures and its preemptions (group commit), atomically.
        A preemption whose exposure was cancelled meanwhile is dropped from the stored payload too.

        ``version`` is the customer version the decision was made on (``CustomerSnapshot.version``): a
        decision that logs exposures or cancels any is written only if the version is still that one,
        and bumps it; otherwise nothing is written and the result says ``conflict``. A ``deadline``
        (``time.monotonic()``) that leaves less than a commit takes when the write's turn comes in the
        group commit raises ``DeadlineExceededError``, nothing written."""
        result = self.save_decisions([ToSave(decision, fingerprint, decided_at, version, deadline)])[0]
        if isinstance(result, NextbestError):
            raise result
        return result

    def save_decisions(self, items: Sequence[ToSave]) -> list[SavedDecision | NextbestError]:
        """Writes every decision as ``save_decision`` does, all queued at once so that they share the
        group commit's transactions; one result per item, in order: what was saved, or the error that
        item alone met (``InvalidArgumentError`` for data the database refused, else
        ``StoreUnavailableError``)."""
        pending = []
        for d, fingerprint, decided_at, version, deadline in items:
            exposure_rows = codec.exposure_rows(d)
            assignment_rows = codec.assignment_rows(d)
            cancellations = codec.cancellation_rows(d)
            version_guard = None
            if version is not None and (exposure_rows or assignment_rows or cancellations):
                version_guard = codec.version_guard_row(d.user_id, decided_at, version)
            pending.append(
                PendingWrite(
                    codec.decision_row(d, fingerprint, decided_at),
                    exposure_rows,
                    assignment_rows,
                    cancellations,
                    version_guard,
                    deadline,
                )
            )
        self.writer.write_many(pending)
        results: list[SavedDecision | NextbestError] = []
        failed: BaseException | None = None
        for item in pending:
            exc = item.error
            if exc is None:
                results.append(SavedDecision(item.inserted, frozenset(item.cancelled), item.conflict))
            elif isinstance(exc, DeadlineExceededError):  # its turn came too late: nothing written
                results.append(exc)
            elif isinstance(exc, self._refusals):  # alone in its transaction by now: its own fault
                results.append(refused("decision", item.decision_row, exc))
            elif isinstance(exc, (SQLAlchemyError, self._driver_error)):
                failed = exc
                error = StoreUnavailableError("could not write decision: the database is unavailable")
                error.__cause__ = exc
                results.append(error)
            else:  # not the database's doing: a bug, raised as it is
                raise exc
        if failed is not None:
            logger.warning("store failure during write decision: %s", type(failed).__name__)
            if isinstance(failed, self._outages):
                self.db.health.failed()
        elif any(isinstance(r, SavedDecision) for r in results):
            self.db.health.succeeded()
        return results

    def _check_versions(
        self, conn: Any, rows: Sequence[dict[str, Any]], advance: PreparedUpdate, bump: PreparedInsert
    ) -> list[bool]:
        """Moves each customer of ``rows`` (in this order) to its guard's version if it is still the
        one before; says for each row whether it did (a customer twice on one version moves once)."""
        moved = []
        if self._embedded:  # SQLite: in-process, a statement per row costs microseconds
            for row in rows:
                n = row["version"]
                if n > 1:
                    moved.append(advance.execute(conn, b_user_id=row["user_id"], b_from=n - 1, b_to=n) == 1)
                else:
                    moved.append(bool(bump.returning_many(conn, [row])))
            return moved
        # PostgreSQL: the statements are pipelined (one round trip for the batch, not one per decision),
        # still one per customer in user order, so concurrent batches lock customers in the same order.
        driver = getattr(conn, "driver_connection", conn)  # a pool's proxy, or psycopg's own
        sent = []
        with driver.pipeline():
            for row in rows:
                n = row["version"]
                cursor = driver.cursor()
                if n > 1:
                    cursor.execute(
                        advance.sql, advance.values({"b_user_id": row["user_id"], "b_from": n - 1, "b_to": n})
                    )
                else:
                    cursor.execute(bump.sql, bump.params([row])[0])
                sent.append((row, n, cursor))
        for _row, n, cursor in sent:
            moved.append((cursor.rowcount == 1) if n > 1 else bool(cursor.fetchall()))
            cursor.close()
        return moved

    def _write_decisions(self, conn: Any, batch: Sequence[PendingWrite]) -> set[str]:
        if self._writes is None:
            dialect = self.db.writer.dialect
            self._writes = (
                PreparedInsert(
                    self._insert(decisions).on_conflict_do_nothing().returning(decisions.c.decision_id),
                    [c.name for c in decisions.columns],
                    dialect,
                ),
                PreparedInsert(exposures.insert(), _EXPOSURE_COLUMNS, dialect),
                PreparedInsert(assignments.insert(), _ASSIGNMENT_COLUMNS, dialect),
                PreparedInsert(_bump_version(self._insert), codec.VERSION_GUARD_COLUMNS, dialect),
                PreparedInsert(upsert_units(dialect.name), _UNIT_COLUMNS, dialect),
            )
            self._cancels = (
                PreparedUpdate(_CANCEL, dialect),
                PreparedUpdate(_UNCANCEL, dialect),
                PreparedUpdate(_ADVANCE, dialect),
            )
        assert self._cancels is not None  # compiled together with the inserts
        if self._one_trip is not None and decision_trip.fits(batch):  # PostgreSQL, the usual batch
            return self._one_trip.write(conn, batch)
        if self._embedded and sqlite_writes.fits(batch):  # SQLite, the usual batch
            if self._sqlite_write is None:
                self._sqlite_write = sqlite_writes.SqliteDecisionWrite(
                    self.db.writer.dialect, _EXPOSURE_COLUMNS
                )
            return self._sqlite_write.write(conn, batch)
        insert_decisions, insert_exposures, insert_assignments, bump_version, merge_units = self._writes
        cancel, uncancel, advance = self._cancels
        # Version guards first, in user order (a fixed lock order against concurrent batches and event
        # writes on PostgreSQL): a decision whose customer changed since it read them writes nothing.
        guards = sorted(
            ((item, item.guard) for item in batch if item.guard is not None), key=lambda g: g[1]["user_id"]
        )
        if guards:
            # A customer known at version n - 1 moves to n only while their row is there: one erased
            # meanwhile is not brought back by a decision made before the erasure (it decides again).
            moved = self._check_versions(conn, [row for _, row in guards], advance, bump_version)
            for (item, _row), ok in zip(guards, moved, strict=True):
                item.conflict = not ok
            batch = [item for item in batch if not item.conflict]
            if not batch:
                return set()
        # Preemptions first, so the stored payload names only what this decision really cancelled.
        for item in batch:
            if item.cancellations:
                item.cancelled = {
                    c["b_exposure_id"] for c in item.cancellations if cancel.execute(conn, **c) == 1
                }
                payload = item.decision_row["payload"]
                payload["cancelled"] = [c for c in payload["cancelled"] if c["exposure_id"] in item.cancelled]
        inserted = set(insert_decisions.returning_many(conn, [item.decision_row for item in batch]))
        for item in batch:  # a replayed request_id writes nothing: undo its preemptions
            if item.cancelled and item.decision_row["decision_id"] not in inserted:
                for exposure_id in item.cancelled:
                    uncancel.execute(
                        conn, b_exposure_id=exposure_id, b_cancelled_by=item.decision_row["decision_id"]
                    )
                item.cancelled = set()
        rows = [
            r for item in batch if item.decision_row["decision_id"] in inserted for r in item.exposure_rows
        ]
        if rows:
            insert_exposures.execute_many(conn, rows)
        rows = [
            r for item in batch if item.decision_row["decision_id"] in inserted for r in item.assignment_rows
        ]
        if rows:
            insert_assignments.execute_many(conn, rows)
            # Each unit's first exposure, in the same transaction: one merged row per unit of the batch,
            # in key order (concurrent batches lock units in the same order).
            merge_units.execute_many(conn, merge_exposures(rows))
        return inserted


_ADVANCE = (
    update(customers)
    .where(customers.c.user_id == bindparam("b_user_id"), customers.c.version == bindparam("b_from"))
    .values(version=bindparam("b_to"))
)


def _bump_version(insert: Any) -> Any:
    """For a customer first seen by this decision (n = 1): creates the customer (empty) at version 1, or
    moves an existing row from version 0; returns the user id only when it did. Another write in between
    (an event folded in, another decision) has moved the version on, and then nothing is returned.
    Customers read at version n - 1 > 0 move with ``_ADVANCE`` instead, which never creates a row."""
    statement = insert(customers)
    return statement.on_conflict_do_update(
        index_elements=[customers.c.user_id],
        set_={"version": statement.excluded.version},
        where=customers.c.version + literal_column("1") == statement.excluded.version,
    ).returning(customers.c.user_id)
