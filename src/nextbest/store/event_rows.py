"""The events' write path on the raw driver: a group commit of events in a handful of statements.

Each statement is built once per dialect and binds values the way SQLAlchemy's column types would
(UTC times; JSON documents as orjson writes them), straight from the events and customer states, without
a dict per row or a bind processor per value. On PostgreSQL each table is written by one statement that
takes the batch's rows as one JSON array of arrays, written by orjson in C and taken apart by the server
(``INSERT ... SELECT ... FROM json_array_elements(...)``): one round trip and about a microsecond of
client CPU per row, where a pipelined ``executemany`` with ``RETURNING`` costs tens and binary arrays
(``unnest``) several. On SQLite, in process, ``executemany`` of tuples is the fast path; sets of keys
are passed as one JSON array (``json_each``), so each statement's text is fixed and stays in sqlite3's
statement cache."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Dialect, Select, String, any_, bindparam, cast, column, func, select

from nextbest.domain import Event, EventType
from nextbest.state import CustomerState, PastExposure
from nextbest.store import codec
from nextbest.store.database import _json_dumps as json_text
from nextbest.store.documents import channels_to_json, engagement_hours_to_json, last_events_to_json
from nextbest.store.prepared import PreparedSelect
from nextbest.store.schema import customers, exposures

__all__ = ["EventRows"]

# The SQL type of each written column on PostgreSQL (a JSON array's element i is cast to the type of
# column i; JSON documents are taken as they are).
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
_PG_CUSTOMER_TYPES = (
    "varchar",  # user_id
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


def _from_json(types: Sequence[str]) -> list[str]:
    """The expressions taking the values of a row ``r`` (a JSON array) as the given SQL types."""
    return [f"(r->{i})::jsonb" if t == "jsonb" else f"(r->>{i})::{t}" for i, t in enumerate(types)]


_PAST_COLUMNS = [exposures.c[name] for name in codec.PAST_EXPOSURE_COLUMNS]


def _utc_text(value: datetime) -> str:
    """The text ``UTCDateTime`` stores on SQLite (``schema.UTCDateTime.bind_processor``)."""
    zone = value.tzinfo
    if zone is None:
        raise ValueError("naive datetime given to the store; use UTC-aware datetimes")
    # The same text as ``isoformat`` of the naive UTC time, without the "+00:00" it ends with here.
    return (value if zone is UTC else value.astimezone(UTC)).isoformat(" ", "microseconds")[:-6]


def _last_events_document(last_events: Mapping[EventType, datetime]) -> Any:
    """``last_events_to_json``, or the same document orjson writes from the times themselves (the
    same text as ``isoformat`` in one call) when they are in UTC, as events carry them; orjson would
    round an offset with seconds, which ``isoformat`` keeps."""
    for at in last_events.values():
        if at.tzinfo is not UTC:
            return last_events_to_json(last_events)
    return dict(last_events)


def _last_events_text(last_events: Mapping[EventType, datetime]) -> str:
    return json_text(_last_events_document(last_events)) if last_events else "{}"


def _pg_time(value: datetime | None) -> datetime | None:
    """A time as orjson writes it into a PostgreSQL batch: in UTC (an offset with seconds would be
    rounded)."""
    if value is None:
        return None
    zone = value.tzinfo
    if zone is None:
        raise ValueError("naive datetime given to the store; use UTC-aware datetimes")
    return value if zone is UTC else value.astimezone(UTC)


def _keys_in(statement_column: Any, embedded: bool) -> Any:
    """``column IN (the keys)`` with the keys as one parameter ``keys``, a JSON array (on PostgreSQL
    made an array once, so that the index is searched for each key as with ``= ANY(array)``)."""
    if embedded:
        return statement_column.in_(select(column("value")).select_from(func.json_each(bindparam("keys"))))
    keys = select(func.json_array_elements_text(cast(bindparam("keys", type_=String), JSON)))
    return statement_column == any_(func.array(keys.scalar_subquery()))


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
                f"INSERT INTO events ({event_columns}) SELECT {', '.join(_from_json(_PG_EVENT_TYPES))} "
                "FROM json_array_elements(%s::json) AS r ON CONFLICT DO NOTHING RETURNING event_id"
            )
            self._create_customers = (
                f"INSERT INTO customers ({customer_columns}) "
                f"SELECT {', '.join(_from_json(_PG_CUSTOMER_TYPES))}, 1 "
                "FROM json_array_elements(%s::json) AS r ON CONFLICT DO NOTHING RETURNING user_id"
            )
            user, *values = _from_json(_PG_CUSTOMER_TYPES)
            assignments = ", ".join(f"{c} = {v}" for c, v in zip(state_columns, values, strict=True))
            self._update_customers = (
                f"UPDATE customers SET {assignments}, "
                "version = customers.version + 1 FROM json_array_elements(%s::json) AS r "
                f"WHERE customers.user_id = {user}"
            )
        mark = "?" if self.embedded else "%s"
        self._set_stock = (
            f"INSERT INTO inventory (product_id, in_stock, changed_at, event_id) VALUES ({mark}, {mark}, "
            f"{mark}, {mark}) ON CONFLICT (product_id) DO UPDATE SET in_stock = excluded.in_stock, "
            "changed_at = excluded.changed_at, event_id = excluded.event_id "
            "WHERE inventory.changed_at < excluded.changed_at"
        )
        self._cancel = (
            f"UPDATE exposures SET cancelled_at = {mark}, cancelled_by = {mark}, cancel_reason = {mark} "
            f"WHERE exposure_id = {mark} AND cancelled_at IS NULL"
        )
        read: Select[Any] = select(customers).where(_keys_in(customers.c.user_id, self.embedded))
        if not self.embedded:  # a fixed lock order, so concurrent batches cannot deadlock
            read = read.order_by(customers.c.user_id).with_for_update()
        self._read_customers = PreparedSelect(read, dialect)
        self._read_pending = PreparedSelect(
            select(*_PAST_COLUMNS, exposures.c.user_id).where(
                _keys_in(exposures.c.user_id, self.embedded),
                exposures.c.cancelled_at.is_(None),
                exposures.c.send_at > bindparam("earliest"),
            ),
            dialect,
        )

    def _keys(self, keys: Sequence[str]) -> str:
        return json_text(list(keys))

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
        """The driver's values of an ``events`` row (on PostgreSQL, as they go into the batch's JSON)."""
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
            json_text(details) if self.embedded else details,
        )

    def customer_values(self, state: CustomerState, now: datetime) -> list[Any]:
        """The driver's values of a customer row: the user id, then the ``STATE_COLUMNS``
        (``codec.state_values``, encoded; on PostgreSQL, as they go into the batch's JSON)."""
        time = self._time
        channels, kinds, hours = state.channels, state.last_events, state.engagement_hours
        if self.embedded:
            documents: tuple[Any, Any, Any] = (
                json_text(channels_to_json(channels)) if channels else "{}",
                _last_events_text(kinds),
                json_text(engagement_hours_to_json(hours)) if hours else "{}",
            )
        else:
            documents = (
                channels_to_json(channels),
                _last_events_document(kinds),
                engagement_hours_to_json(hours),
            )
        return [
            state.user_id,
            time(state.first_seen_at),
            time(now),
            state.orders_count,
            state.refunds_count,
            state.revenue_total,
            time(state.last_order_at),
            time(state.last_engagement_at),
            *documents,
        ]

    def write_and_read(
        self,
        raw: Any,
        rows: Sequence[tuple[Any, ...]],
        users: Sequence[str],
        pending_since: datetime | None,
    ) -> tuple[set[str], list[CustomerState], dict[str, list[PastExposure]] | None]:
        """``insert_events``, then ``read_customers`` of ``users`` (sorted) and, with a
        ``pending_since``, their ``pending`` exposures: on PostgreSQL the three statements in one
        round trip (psycopg's pipeline mode)."""
        if self.embedded or not users:
            inserted = self.insert_events(raw, rows)
            states = self.read_customers(raw, users) if users else []
            pending = self.pending(raw, users, pending_since) if users and pending_since else None
            return inserted, states, pending
        keys = self._keys(users)
        insert, read, since = raw.cursor(), raw.cursor(), raw.cursor()
        try:
            # Not prepared: prepared and pipelined, these statements took time growing with the
            # tables (180 ms a batch at 24,000 customers against 25 ms run one by one, measured).
            once = {"prepare": False}
            with getattr(raw, "driver_connection", raw).pipeline():  # a pool's proxy, or psycopg's own
                insert.execute(self._insert_events, (json_text(rows),), prepare=False)
                self._read_customers.execute(read, once, keys=keys)
                if pending_since is not None:
                    self._read_pending.execute(since, once, keys=keys, earliest=pending_since)
            inserted = {r[0] for r in insert.fetchall()}
            states = self._states(self._read_customers.rows(read))
            pending = self._pending(self._read_pending.rows(since)) if pending_since is not None else None
        finally:
            for cursor in (insert, read, since):
                cursor.close()
        return inserted, states, pending

    def _states(self, rows: Sequence[tuple[Any, ...]]) -> list[CustomerState]:
        columns = self._read_customers.columns
        return [codec.state_from_row(dict(zip(columns, row, strict=True))) for row in rows]

    @staticmethod
    def _pending(rows: Sequence[tuple[Any, ...]]) -> dict[str, list[PastExposure]]:
        out: dict[str, list[PastExposure]] = {}
        for *values, user in rows:
            out.setdefault(user, []).append(codec.past_exposure(values))
        return out

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
            cursor.execute(self._insert_events, (json_text(rows),))
            return {r[0] for r in cursor.fetchall()}
        finally:
            cursor.close()

    def read_customers(self, raw: Any, users: Sequence[str]) -> list[CustomerState]:
        """The stored states of those of ``users`` that have a row (locked until the commit on
        PostgreSQL, in user order)."""
        return self._states(self._read_customers.fetch(raw, keys=self._keys(users)))

    def create_customers(self, raw: Any, rows: Sequence[list[Any]]) -> set[str]:
        """Creates customers at version 1 from ``customer_values`` rows; returns the users
        created (one another writer created meanwhile is not)."""
        cursor = raw.cursor()
        try:
            if self.embedded:  # under the write lock: a customer missing now is still missing
                cursor.executemany(self._create_customers, [(*r, 1) for r in rows])
                return {r[0] for r in rows}
            cursor.execute(self._create_customers, (json_text(rows),))
            return {r[0] for r in cursor.fetchall()}
        finally:
            cursor.close()

    def update_customers(self, raw: Any, rows: Sequence[list[Any]]) -> None:
        """Rewrites the state of existing customers from ``customer_values`` rows and moves
        each to its next version."""
        cursor = raw.cursor()
        try:
            if self.embedded:
                cursor.executemany(self._update_customers, [(*r[1:], r[0]) for r in rows])
            else:
                cursor.execute(self._update_customers, (json_text(rows),))
        finally:
            cursor.close()

    def pending(self, raw: Any, users: Sequence[str], earliest: datetime) -> dict[str, list[PastExposure]]:
        """The users' exposures not cancelled and due after ``earliest``, per user."""
        return self._pending(self._read_pending.fetch(raw, keys=self._keys(users), earliest=earliest))

    def set_stock(self, raw: Any, event: Event, product: str) -> None:
        """The product's stock as ``event`` (out_of_stock or back_in_stock) says, unless a later event
        already set it (``codec.inventory_row``'s columns)."""
        row = codec.inventory_row(event, product)
        cursor = raw.cursor()
        try:
            cursor.execute(
                self._set_stock,
                (row["product_id"], row["in_stock"], self._time(row["changed_at"]), row["event_id"]),
            )
        finally:
            cursor.close()

    def cancel(self, raw: Any, exposure_id: int, event: Event, reason: str) -> bool:
        """Cancels a pending exposure for ``event``; False when it was cancelled meanwhile."""
        cursor = raw.cursor()
        try:
            cursor.execute(
                self._cancel, (self._time(event.occurred_at), event.event_id, reason[:512], exposure_id)
            )
            return bool(cursor.rowcount == 1)
        finally:
            cursor.close()
