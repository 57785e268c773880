"""SQLite's group commit of decisions in a fixed handful of statements.

The generic write (``DecisionLog._write_decisions``) runs, per decision, a statement for its version check
and one for its row (``INSERT ... RETURNING`` tells whether its request id was new), then the exposures
together: about 2n + 1 statements for n decisions, each a cursor, a bind and a step from Python. Under the
write lock (``BEGIN IMMEDIATE``: no other writer until the commit) what those statements would find can be
read first instead, for the whole batch, and the rest written with ``executemany``:

1. the batch's customers' versions, in one read; each guard is checked against them in user order, as the
   statements would have done one by one (a customer twice on one version moves once; one with no row is
   created at version 1, one erased meanwhile is not brought back), then the new versions written;
2. which request ids are stored already, in one read (a replay writes nothing, as ``ON CONFLICT DO
   NOTHING`` skipped it; a request id twice in the batch is written by its first decision);
3. the decisions, then their exposures, each table by one ``executemany``.

It takes the usual batch: decisions that preempt nothing and expose no experiment (``fits``); others go
through the generic write. What is written, and what each decision learns (inserted, conflict), is the
same; tested against the generic write (``tests/store/test_sqlite_writes.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Dialect

from nextbest.store import codec
from nextbest.store.database import _json_dumps as json_text
from nextbest.store.prepared import PreparedInsert
from nextbest.store.schema import customers, decisions, exposures
from nextbest.store.writer import PendingWrite

__all__ = ["SqliteDecisionWrite", "fits"]

_VERSIONS = "SELECT user_id, version FROM customers WHERE user_id IN (SELECT value FROM json_each(?))"
_STORED = "SELECT request_id FROM decisions WHERE request_id IN (SELECT value FROM json_each(?))"
_SET_VERSION = "UPDATE customers SET version = ? WHERE user_id = ?"


def fits(batch: Sequence[PendingWrite]) -> bool:
    """Whether every decision of ``batch`` is of the usual kind: no preemption, no experiment exposure."""
    return all(not item.cancellations and not item.assignment_rows for item in batch)


class SqliteDecisionWrite:
    """The statements of SQLite's usual group commit, built once for the writer's dialect."""

    def __init__(self, dialect: Dialect, exposure_columns: Sequence[str]) -> None:
        self._decisions = PreparedInsert(decisions.insert(), [c.name for c in decisions.columns], dialect)
        self._exposures = PreparedInsert(exposures.insert(), exposure_columns, dialect)
        self._customers = PreparedInsert(customers.insert(), codec.VERSION_GUARD_COLUMNS, dialect)

    def write(self, conn: Any, batch: Sequence[PendingWrite]) -> set[str]:
        """Writes ``batch`` (``fits``) on ``conn``, a raw sqlite3 connection in a write transaction;
        sets each item's ``conflict`` and returns the decision ids inserted."""
        cursor = conn.cursor()
        try:
            guarded = sorted((item for item in batch if item.guard is not None), key=_guarded_user)
            if guarded:
                self._check_versions(cursor, guarded)
                batch = [item for item in batch if not item.conflict]
                if not batch:
                    return set()
            rows = [item.decision_row for item in batch]
            stored = {r[0] for r in cursor.execute(_STORED, (json_text([r["request_id"] for r in rows]),))}
            fresh = []
            for row in rows:
                if row["request_id"] not in stored:
                    stored.add(row["request_id"])  # a second decision with it in the batch is a replay
                    fresh.append(row)
            if not fresh:
                return set()
            cursor.executemany(self._decisions.sql, self._decisions.params(fresh))
            inserted = {row["decision_id"] for row in fresh}
            exposure_rows = [
                r
                for item in batch
                if item.decision_row["decision_id"] in inserted
                for r in item.exposure_rows
            ]
            if exposure_rows:
                cursor.executemany(self._exposures.sql, self._exposures.params(exposure_rows))
            return inserted
        finally:
            cursor.close()

    def _check_versions(self, cursor: Any, guarded: Sequence[PendingWrite]) -> None:
        """Each guard checked in user order against the versions read, as one statement per guard would
        have (``_ADVANCE`` for a customer read at n - 1 > 0, ``_bump_version`` for one first seen);
        the versions moved are then written: rows created, then rows advanced."""
        users = sorted({item.guard["user_id"] for item in guarded if item.guard is not None})
        version: dict[str, int] = dict(cursor.execute(_VERSIONS, (json_text(users),)).fetchall())
        created: dict[str, dict[str, Any]] = {}
        moved: dict[str, int] = {}
        for item in guarded:
            guard = item.guard
            assert guard is not None  # only guarded items are checked
            user, n = guard["user_id"], guard["version"]
            have = version.get(user)
            if have is None:
                ok = n == 1  # created at version 1; a customer erased meanwhile is not brought back
                if ok:
                    created[user] = guard
            else:
                ok = have == n - 1
                if ok and user not in created:
                    moved[user] = n
            if ok:
                version[user] = n
                if user in created and n > 1:  # created, then moved on within the batch
                    moved[user] = n
            item.conflict = not ok
        if created:
            cursor.executemany(self._customers.sql, self._customers.params(list(created.values())))
        if moved:
            cursor.executemany(_SET_VERSION, [(n, user) for user, n in moved.items()])


def _guarded_user(item: PendingWrite) -> str:
    assert item.guard is not None
    return str(item.guard["user_id"])
