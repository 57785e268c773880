"""SQLite's hot-path reads of decisions: the contact history decoded straight into ``PastExposure``, and
a batch's snapshots in three statements.

A decision reads its customer's row and contact history (``CustomerLog.load_snapshot``). On SQLite, in
process, the two queries cost ~28 µs of CPU and their decoding through ``PreparedSelect`` (SQLAlchemy's
result processors, a tuple per row, then ``codec.past_exposure``) about as much again per history of five
rows, and a history grows by a row per action chosen. Here each history row becomes its ``PastExposure``
in one step: the times as SQLAlchemy reads them on SQLite (``datetime.fromisoformat``, what its DATETIME
type calls) made UTC as ``schema.UTCDateTime`` makes them, the enums by a dictionary look-up. Tested equal
to the generic decoding (``tests/store/test_sqlite_reads.py``).

A batch of decisions (``NextActionBatch``, campaigns) reads its customers in one statement, their
histories in one and the products' stock in one (``SnapshotReads``), the keys passed as one JSON array
(``json_each``) so that each statement's text is fixed and stays in sqlite3's statement cache; one by one,
a batch of 100 ran 200 statements. Each snapshot is what ``CustomerLog.load_snapshot`` reads for it alone
(tested equal).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Dialect, bindparam, column, func, select

from nextbest.domain import ActionClass, Channel
from nextbest.state import CustomerSnapshot, CustomerState, PastExposure
from nextbest.store import codec
from nextbest.store.contract import HISTORY_LIMIT, HISTORY_WINDOW, SnapshotWanted
from nextbest.store.database import _json_dumps as json_text
from nextbest.store.prepared import PreparedSelect
from nextbest.store.schema import customers, exposures

__all__ = ["SnapshotReads", "past_exposures", "utc_time"]

_CHANNELS = {member.value: member for member in Channel}
_CLASSES = {member.value: member for member in ActionClass}
_fromisoformat = datetime.fromisoformat


def utc_time(text: str) -> datetime:
    """A time column's text as ``UTCDateTime`` returns it on SQLite: aware, in UTC."""
    moment = _fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def past_exposures(rows: Iterable[tuple[Any, ...]]) -> tuple[PastExposure, ...]:
    """The raw rows of the history query (``codec.PAST_EXPOSURE_COLUMNS``, in order) as the snapshot's
    history, as ``codec.past_exposure`` of SQLAlchemy's decoded rows would give it."""
    channels, classes, time = _CHANNELS, _CLASSES, utc_time
    out = []
    for decision_id, action_id, flow, channel, cls, trigger, at, send_at, exposure_id, cancelled_at in rows:
        out.append(
            PastExposure(
                decision_id,
                action_id,
                flow,
                channels.get(channel) or Channel(channel),  # an unknown value raises as Channel() does
                classes.get(cls) or ActionClass(cls),
                trigger,
                time(at),
                time(send_at),
                exposure_id,
                cancelled_at is not None,
            )
        )
    return tuple(out)


def _in_keys(key: Any) -> Any:
    """``key IN`` the values of the JSON array bound as ``keys``."""
    return key.in_(select(column("value")).select_from(func.json_each(bindparam("keys"))))


class SnapshotReads:
    """A batch's snapshots on a raw SQLite connection, in three statements."""

    def __init__(self, dialect: Dialect) -> None:
        self._customers = PreparedSelect(select(customers).where(_in_keys(customers.c.user_id)), dialect)
        self._histories = PreparedSelect(
            select(*(exposures.c[name] for name in codec.PAST_EXPOSURE_COLUMNS), exposures.c.user_id)
            .where(_in_keys(exposures.c.user_id), exposures.c.occurred_at >= bindparam("since"))
            .order_by(exposures.c.user_id, exposures.c.occurred_at.desc(), exposures.c.exposure_id.desc()),
            dialect,
        )
        self._stock = (
            "SELECT product_id FROM inventory WHERE NOT in_stock "
            "AND product_id IN (SELECT value FROM json_each(?))"
        )

    def load(self, conn: Any, wanted: Sequence[SnapshotWanted]) -> list[CustomerSnapshot]:
        """The snapshot of each item (distinct customers), in order; the versions come from the first
        read, as in ``load_snapshot``."""
        if not wanted:
            return []
        users = json_text(sorted({w.user_id for w in wanted}))
        columns = self._customers.columns
        rows = {
            row[0]: dict(zip(columns, row, strict=True)) for row in self._customers.fetch(conn, keys=users)
        }
        since = {w.user_id: w.now - HISTORY_WINDOW for w in wanted}
        cursor = conn.cursor()
        try:
            self._histories.execute(cursor, keys=users, since=min(since.values()))
            raw: dict[str, list[tuple[Any, ...]]] = {}
            for *values, user in cursor.fetchall():
                raw.setdefault(user, []).append(values)
            products = sorted({p for w in wanted for p in w.products})
            out_of_stock = (
                frozenset(r[0] for r in cursor.execute(self._stock, (json_text(products),)).fetchall())
                if products
                else frozenset()
            )
        finally:
            cursor.close()
        snapshots = []
        for w in wanted:
            row = rows.get(w.user_id)
            history = past_exposures(raw.get(w.user_id, ()))
            start = since[w.user_id]
            if history and history[-1].occurred_at < start:  # read from an earlier item's window
                history = tuple(p for p in history if p.occurred_at >= start)
            snapshots.append(
                CustomerSnapshot(
                    state=codec.state_from_row(row) if row is not None else CustomerState(user_id=w.user_id),
                    history=history[:HISTORY_LIMIT],
                    out_of_stock=out_of_stock.intersection(w.products),
                    version=int(row["version"]) if row is not None else 0,
                )
            )
        return snapshots
