"""The events' write path on the raw driver: a group commit of events in a handful of statements.

Each statement is built once per dialect and binds values the way SQLAlchemy's column types would
(UTC times; JSON as orjson text), straight from the events and customer states, without a dict per row
or a bind processor per value. On PostgreSQL each table is written by one statement whose columns
arrive as arrays in the binary format (``INSERT ... SELECT FROM unnest(...)``): one round trip and a
few microseconds of client CPU per row, where a pipelined ``executemany`` with ``RETURNING`` costs tens.
On SQLite, in process, ``executemany`` of tuples is the fast path; sets of keys are passed as one JSON
array (``json_each``), so each statement's text is fixed and stays in sqlite3's statement cache.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ARRAY, Dialect, Select, String, any_, bindparam, column, func, select

from nextbest.domain import Event
from nextbest.state import CustomerState, PastExposure
from nextbest.store import codec
from nextbest.store.database import _json_dumps as json_text
from nextbest.store.prepared import PreparedSelect
from nextbest.store.schema import customers, exposures

__all__ = ["EventRows"]

# The SQL type of each written column on PostgreSQL (the unnest arrays are cast to them).
_PG_EVENT_TYPES = (
    "varchar",
    "varchar",
    "varchar",
    "timestamptz",
    "timestamptz",
    "float8",
    "varchar",
    "varchar",
    "varchar",
    "jsonb",
)
_PG_STATE_TYPES = (
    "timestamptz",
    "timestamptz",
    "integer",
    "integer",
    "float8",
    "timestamptz",
    "timestamptz",
    "jsonb",
    "jsonb",
    "jsonb",
)
_PAST_COLUMNS = [exposures.c[name] for name in codec.PAST_EXPOSURE_COLUMNS]


def _utc_text(value: datetime) -> str:
    """The text ``UTCDateTime`` stores on SQLite (``schema.UTCDateTime.bind_processor``)."""
    zone = value.tzinfo
    if zone is None:
        raise ValueError("naive datetime given to the store; use UTC-aware datetimes")
    # The same text as ``isoformat`` of the naive UTC time, without the "+00:00" it ends with here.
    return (value if zone is UTC else value.astimezone(UTC)).isoformat(" ", "microseconds")[:-6]


def _pg_time(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError("naive datetime given to the store; use UTC-aware datetimes")
    return value


def _keys_in(statement_column: Any, embedded: bool) -> Any:
    """``column IN (the keys)`` with the keys as one parameter ``keys``: a JSON array on SQLite, an
    array on PostgreSQL."""
    if embedded:
        return statement_column.in_(select(column("value")).select_from(func.json_each(bindparam("keys"))))
    return statement_column == any_(bindparam("keys", type_=ARRAY(String)))


class EventRows:
    """The statements of the events' group commit on one dialect, run on a raw DBAPI connection held
    in a write transaction."""

    def __init__(self, dialect: Dialect) -> None:
        self.embedded = dialect.name == "sqlite"
        self._texts: dict[datetime, str] = {}
        self._time: Callable[[datetime | None], Any] = self._sqlite_time if self.embedded else _pg_time
        event_columns = ", ".join(codec.EVENT_COLUMNS)
        state_columns = codec.STATE_COLUMNS
        customer_columns = ", ".join(["user_id", *state_columns, "version"])
        if self.embedded:
            self._insert_events = (
                f"INSERT INTO events ({event_columns}) VALUES ({', '.join('?' * len(codec.EVENT_COLUMNS))})"
            )
            self._known_events = (
                "SELECT event_id FROM events WHERE event_id IN (SELECT value FROM json_each(?))"
            )
            self._create_customers = (
                f"INSERT INTO customers ({customer_columns}) "
                f"VALUES ({', '.join('?' * (len(state_columns) + 2))})"
            )
            self._update_customers = (
                f"UPDATE customers SET {', '.join(f'{c} = ?' for c in state_columns)}, "
                "version = version + 1 WHERE user_id = ?"
            )
        else:
            self._insert_events = (
                f"INSERT INTO events ({event_columns}) SELECT * FROM unnest("
                f"{', '.join(f'%b::{t}[]' for t in _PG_EVENT_TYPES)}) "
                "ON CONFLICT DO NOTHING RETURNING event_id"
            )
            self._create_customers = (
                f"INSERT INTO customers ({customer_columns}) SELECT * FROM unnest(%b::varchar[], "
                f"{', '.join(f'%b::{t}[]' for t in _PG_STATE_TYPES)}, %b::bigint[]) "
                "ON CONFLICT DO NOTHING RETURNING user_id"
            )
            self._update_customers = (
                f"UPDATE customers SET {', '.join(f'{c} = u.{c}' for c in state_columns)}, "
                "version = customers.version + 1 FROM unnest(%b::varchar[], "
                f"{', '.join(f'%b::{t}[]' for t in _PG_STATE_TYPES)}) "
                f"AS u(user_id, {', '.join(state_columns)}) WHERE customers.user_id = u.user_id"
            )
        read: Select[Any] = select(customers).where(_keys_in(customers.c.user_id, self.embedded))
        if not self.embedded:  # a fixed lock order, so concurrent batches cannot deadlock
            read = read.order_by(customers.c.user_id).with_for_update()
        self._read_customers = _binary_keys(PreparedSelect(read, dialect))
        self._read_pending = _binary_keys(
            PreparedSelect(
                select(*_PAST_COLUMNS, exposures.c.user_id).where(
                    _keys_in(exposures.c.user_id, self.embedded),
                    exposures.c.cancelled_at.is_(None),
                    exposures.c.send_at > bindparam("earliest"),
                ),
                dialect,
            )
        )

    def _keys(self, keys: Sequence[str]) -> Any:
        return json_text(list(keys)) if self.embedded else list(keys)

    def start(self) -> None:
        """Called at the start of each group commit: forgets the times encoded for the last one."""
        self._texts.clear()

    def _sqlite_time(self, value: datetime | None) -> str | None:
        """``_utc_text``, remembered for the batch: its events share their received time, and a new
        customer's first-seen and engagement times are its event's time."""
        if value is None:
            return None
        text = self._texts.get(value)
        if text is None:
            text = self._texts[value] = _utc_text(value)
        return text

    def event_values(self, event: Event, received_at: datetime) -> tuple[Any, ...]:
        """The driver's values of an ``events`` row."""
        time = self._time
        event_id, user, kind, at, received, value, channel, decision, order, details = codec.event_values(
            event, received_at
        )
        return (
            event_id,
            user,
            kind,
            time(at),
            time(received),
            value,
            channel,
            decision,
            order,
            json_text(details),
        )

    def state_values(self, state: CustomerState, now: datetime) -> list[Any]:
        """The driver's values of the ``STATE_COLUMNS`` of a customer row."""
        time = self._time
        first, updated, orders, refunds, revenue, last_order, engaged, channels, kinds, hours = (
            codec.state_values(state, now)
        )
        return [
            time(first),
            time(updated),
            orders,
            refunds,
            revenue,
            time(last_order),
            time(engaged),
            json_text(channels),
            json_text(kinds),
            json_text(hours),
        ]

    def insert_events(self, raw: Any, rows: Sequence[tuple[Any, ...]]) -> set[str]:
        """Inserts the rows (distinct event ids) whose event id is not stored yet; returns their ids."""
        cursor = raw.cursor()
        try:
            if self.embedded:
                # The write lock is held (BEGIN IMMEDIATE): ids not stored now stay so until the commit,
                # so one read finds them and one executemany inserts the rest.
                cursor.execute(self._known_events, (json_text([r[0] for r in rows]),))
                known = {r[0] for r in cursor.fetchall()}
                fresh = [r for r in rows if r[0] not in known] if known else rows
                cursor.executemany(self._insert_events, fresh)
                return {r[0] for r in fresh}
            # Concurrent writers: the conflict clause (and the event-id table's trigger, migration 0008)
            # skips ids already stored, and RETURNING says which rows were new.
            cursor.execute(self._insert_events, [list(c) for c in zip(*rows, strict=True)])
            return {r[0] for r in cursor.fetchall()}
        finally:
            cursor.close()

    def read_customers(self, raw: Any, users: Sequence[str]) -> list[CustomerState]:
        """The stored states of those of ``users`` that have a row (locked until the commit on
        PostgreSQL, in user order)."""
        prepared = self._read_customers
        rows = prepared.fetch(raw, keys=self._keys(users))
        columns = prepared.columns
        return [codec.state_from_row(dict(zip(columns, row, strict=True))) for row in rows]

    def create_customers(self, raw: Any, rows: Sequence[list[Any]]) -> set[str]:
        """Creates customers at version 1 from ``[user_id, *state values]`` rows; returns the users
        created (one another writer created meanwhile is not)."""
        cursor = raw.cursor()
        try:
            if self.embedded:  # under the write lock: a customer missing now is still missing
                cursor.executemany(self._create_customers, [(*r, 1) for r in rows])
                return {r[0] for r in rows}
            cursor.execute(
                self._create_customers, [*(list(c) for c in zip(*rows, strict=True)), [1] * len(rows)]
            )
            return {r[0] for r in cursor.fetchall()}
        finally:
            cursor.close()

    def update_customers(self, raw: Any, rows: Sequence[list[Any]]) -> None:
        """Rewrites the state of existing customers from ``[user_id, *state values]`` rows and moves
        each to its next version."""
        cursor = raw.cursor()
        try:
            if self.embedded:
                cursor.executemany(self._update_customers, [(*r[1:], r[0]) for r in rows])
            else:
                cursor.execute(self._update_customers, [list(c) for c in zip(*rows, strict=True)])
        finally:
            cursor.close()

    def pending(self, raw: Any, users: Sequence[str], earliest: datetime) -> dict[str, list[PastExposure]]:
        """The users' exposures not cancelled and due after ``earliest``, per user."""
        out: dict[str, list[PastExposure]] = {}
        for *values, user in self._read_pending.fetch(raw, keys=self._keys(users), earliest=earliest):
            out.setdefault(user, []).append(codec.past_exposure(values))
        return out


def _binary_keys(prepared: PreparedSelect) -> PreparedSelect:
    """On PostgreSQL the keys array goes in psycopg's binary format (its text format escapes each
    element in Python)."""
    prepared.sql = prepared.sql.replace("%(keys)s", "%(keys)b")
    return prepared
