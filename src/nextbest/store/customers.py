"""Customers in SQL: the snapshot a decision reads (state, contact history, inventory) and the events
that change it, deduplicated, folded into customer state and inventory, cancelling what they end."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Integer, any_, bindparam, cast, literal, null, select, union_all
from sqlalchemy.dialects.postgresql import ARRAY

from nextbest.domain import Cancellation, Event, EventOutcome, EventType
from nextbest.state import (
    CancelRule,
    CustomerSnapshot,
    CustomerState,
    PastExposure,
    fold_events,
)
from nextbest.store import codec
from nextbest.store.backend import Backend, guard
from nextbest.store.contract import HISTORY_LIMIT, HISTORY_WINDOW, SnapshotWanted, cancellations
from nextbest.store.database import ConnectionStash, KeptConnections
from nextbest.store.event_rows import EventRows
from nextbest.store.prepared import PreparedSelect
from nextbest.store.schema import customers, exposures, inventory
from nextbest.store.sqlite_reads import SnapshotReads, past_exposures
from nextbest.store.writer import GroupCommit

__all__ = ["CustomerLog", "PendingEvent"]

logger = logging.getLogger(__name__)

# Hot-path statements are built once: constructing a statement costs more than running it on SQLite.
_CUSTOMER = select(customers).where(customers.c.user_id == bindparam("user_id"))
_HISTORY = (
    select(*(exposures.c[name] for name in codec.PAST_EXPOSURE_COLUMNS))
    .where(exposures.c.user_id == bindparam("user_id"), exposures.c.occurred_at >= bindparam("since"))
    .order_by(exposures.c.occurred_at.desc(), exposures.c.exposure_id.desc())
    .limit(HISTORY_LIMIT)
)

# PostgreSQL: the customer and their history in one statement, each row tagged (0: the customer, 1: an
# exposure) and padded with typed NULLs for the other part's columns.
_CUSTOMER_COLUMNS = [c.name for c in customers.columns]
_HISTORY_AT = 1 + len(_CUSTOMER_COLUMNS)  # where a row's history columns start
_SNAPSHOT = union_all(
    select(
        literal(0, Integer).label("part"),
        *customers.columns,
        *(cast(null(), c.type).label(f"h_{c.name}") for c in _HISTORY.selected_columns),
    ).where(customers.c.user_id == bindparam("user_id")),
    select(
        literal(1, Integer).label("part"),
        *(cast(null(), c.type) for c in customers.columns),
        *_HISTORY.subquery("h").columns,
    ),
)
# PostgreSQL's batch reads (``load_snapshots``), compiled once with array parameters (``= ANY``) instead
# of expanding IN lists, so that they run as prepared on a kept connection, the three in one round trip.
_PG_USERS = bindparam("users", type_=ARRAY(customers.c.user_id.type))
_PG_CUSTOMERS = select(customers).where(customers.c.user_id == any_(_PG_USERS))
_PG_HISTORIES = (
    select(*_HISTORY.selected_columns, exposures.c.user_id)
    .where(exposures.c.user_id == any_(_PG_USERS), exposures.c.occurred_at >= bindparam("since"))
    .order_by(exposures.c.user_id, exposures.c.occurred_at.desc(), exposures.c.exposure_id.desc())
)
_PG_STOCK = select(inventory.c.product_id).where(
    inventory.c.product_id == any_(bindparam("products", type_=ARRAY(inventory.c.product_id.type))),
    ~inventory.c.in_stock,
)
_T = TypeVar("_T")
_AT = codec.PAST_EXPOSURE_COLUMNS.index("occurred_at")
_ID = codec.PAST_EXPOSURE_COLUMNS.index("exposure_id")


def _newest_first(values: Sequence[Any]) -> tuple[Any, Any]:
    return values[_AT], values[_ID]


# The most events one group commit writes: a RecordEvents call's most. (Migration 0007's dedupe trigger
# took an advisory lock per event until the commit, and transactions of thousands exhausted PostgreSQL's
# shared lock table; 0008 replaced it, and this bound still keeps one commit's work in proportion.)
_MAX_EVENTS_PER_COMMIT = 1000
# What a transaction of the events' group commit did: the members that inserted their event, and what
# each new event cancelled.
_EventsWritten = tuple[set[int], dict[str, tuple[Cancellation, ...]]]
_INVENTORY = frozenset(kind for kind in EventType if kind.is_inventory)


@dataclass(slots=True)
class PendingEvent:
    """One event in the group commit, with its call's arrival time and cancellation rule. ``outcome``
    is DUPLICATE unless this member inserted the event."""

    event: Event
    received_at: datetime
    rule: CancelRule | None
    outcome: EventOutcome = EventOutcome.DUPLICATE
    cancelled: tuple[Cancellation, ...] = ()
    done: bool = False
    error: BaseException | None = None
    deadline: float | None = None  # events are idempotent: a late acknowledgement is retried harmlessly


def _settle(batch: Sequence[PendingEvent], written: _EventsWritten) -> None:
    inserted, cancelled = written
    for member in batch:
        if id(member) in inserted:
            member.outcome = EventOutcome.ACCEPTED
            member.cancelled = cancelled.get(member.event.event_id, ())


def _forget(member: PendingEvent) -> None:
    member.outcome, member.cancelled = EventOutcome.DUPLICATE, ()


class CustomerLog:
    """The customers, events and inventory tables, and the cancellation of pending exposures."""

    def __init__(self, backend: Backend) -> None:
        self.db = backend.db
        self._insert = backend.insert
        self._marker = backend.marker
        self._driver_error = backend.driver_error
        self._readers = backend.readers
        self._kept_readers = backend.kept_readers
        # Compiled on first use: a dialect only knows its server's version once it has connected.
        self._prepared: tuple[PreparedSelect, PreparedSelect] | None = None
        self._snapshot: PreparedSelect | None = None  # PostgreSQL's ``_SNAPSHOT``
        self._batch_reads: tuple[PreparedSelect, PreparedSelect, PreparedSelect] | None = None  # ``_PG_*``
        self._snapshot_reads: SnapshotReads | None = None  # SQLite's batch reads, built on first use
        # The event path's statements, built on first use for the writer's dialect.
        self._event_rows: EventRows | None = None
        self._refusals = backend.refusals
        self._outages = backend.outages
        # SQLAlchemy's ``Engine.begin`` and the pool's check-out and reset cost ~10 % of a batch of events
        # on SQLite (py-spy): the group commit takes a raw connection, as the decisions' one does.
        self._raw_transaction = backend.raw_transaction
        self.writer: GroupCommit[PendingEvent, _EventsWritten] = GroupCommit(
            self._raw_transaction,
            self._write_events,
            _settle,
            what="events",
            max_batch=_MAX_EVENTS_PER_COMMIT,
            isolate=lambda exc: isinstance(exc, backend.row_failures),
            forget=_forget,
        )

    def load_snapshot(self, user_id: str, now: datetime, products: Sequence[str] = ()) -> CustomerSnapshot:
        """The customer's state, the actions chosen for them in the last 90 days (newest 500, cancelled
        ones marked) and which of ``products`` the latest inventory events mark out of stock."""
        if self._kept_readers is not None:
            return self._load_snapshot_kept(self._kept_readers, user_id, now, products)
        stash = self._readers  # SQLite: reads run outside a transaction, nothing to roll back
        assert stash is not None  # a backend has kept readers (PostgreSQL) or a stash (SQLite)
        with guard("read customer", self._driver_error):
            conn = stash.take()
            try:
                if self._prepared is None:
                    dialect = self.db.reader.dialect
                    self._prepared = (PreparedSelect(_CUSTOMER, dialect), PreparedSelect(_HISTORY, dialect))
                customer_query, history_query = self._prepared
                rows = customer_query.fetch(conn, user_id=user_id)
                cursor = conn.cursor()  # the raw rows, decoded in one step (``sqlite_reads``)
                try:
                    history_query.execute(cursor, user_id=user_id, since=now - HISTORY_WINDOW)
                    past = past_exposures(cursor.fetchall())
                finally:
                    cursor.close()
                out_of_stock = self._out_of_stock(conn, products) if products else frozenset()
            except BaseException:
                conn.close()  # a connection that failed is closed, not kept
                raise
            stash.give(conn)
        row = dict(zip(customer_query.columns, rows[0], strict=True)) if rows else None
        state = codec.state_from_row(row) if row is not None else CustomerState(user_id=user_id)
        # The version comes from the first read: a write between it and the history read moves it on.
        version = int(row["version"]) if row is not None else 0
        return CustomerSnapshot(state=state, history=past, out_of_stock=out_of_stock, version=version)

    def _read_on_kept(self, kept: KeptConnections, read: Callable[[Any], _T]) -> _T:
        """``read(connection)`` on a kept PostgreSQL connection. One the server closed (restarted, or cut
        its connections) is replaced and the read, which changes nothing, made once more, as the pool's
        pre-ping would have; a connection that failed otherwise is dropped and the error raised."""
        for attempt in (1, 2):
            conn = kept.take()
            try:
                result = read(conn)
            except self._driver_error:
                broken = conn.broken
                kept.discard(conn)
                if broken and attempt == 1:
                    continue
                raise
            except BaseException:
                kept.discard(conn)
                raise
            kept.give(conn)
            return result
        raise AssertionError("unreachable: the second attempt returns or raises")  # pragma: no cover

    def _load_snapshot_kept(
        self, kept: KeptConnections, user_id: str, now: datetime, products: Sequence[str]
    ) -> CustomerSnapshot:
        """``load_snapshot`` on PostgreSQL: on a kept connection (no pool check-out and its ping), the
        customer and their history in one statement (``_SNAPSHOT``: one round trip, one statement for
        the server, and both read from one snapshot), in autocommit as before; the stock, when the
        trigger needs it, in a second."""
        if self._snapshot is None:
            self._snapshot = PreparedSelect(_SNAPSHOT, self.db.reader.dialect)
        snapshot = self._snapshot

        def read(conn: Any) -> tuple[list[tuple[Any, ...]], frozenset[str]]:
            rows = snapshot.fetch(conn, user_id=user_id, since=now - HISTORY_WINDOW)
            return rows, self._out_of_stock(conn, products) if products else frozenset()

        with guard("read customer", self._driver_error):
            rows, out_of_stock = self._read_on_kept(kept, read)
        row = None
        history = []
        for values in rows:
            if values[0] == 0:  # the customer's row
                row = dict(zip(_CUSTOMER_COLUMNS, values[1:_HISTORY_AT], strict=True))
            else:
                history.append(values[_HISTORY_AT:])
        # Newest first, as ``_HISTORY`` orders them (a union's order is the server's to choose).
        history.sort(key=_newest_first, reverse=True)
        state = codec.state_from_row(row) if row is not None else CustomerState(user_id=user_id)
        past = tuple(codec.past_exposure(values) for values in history)
        version = int(row["version"]) if row is not None else 0
        return CustomerSnapshot(state=state, history=past, out_of_stock=out_of_stock, version=version)

    def load_snapshots(self, wanted: Sequence[SnapshotWanted]) -> list[CustomerSnapshot]:
        """``load_snapshot`` for each item (distinct customers), in order: the customers in one read,
        then their contact histories in one, then the products' stock in one (a batch of decisions
        reads three times, not three times per decision). As in ``load_snapshot``, the versions come
        from the first read. On SQLite the three reads run on the raw driver (``sqlite_reads``), on
        PostgreSQL on a kept connection in one round trip: through SQLAlchemy they had cost more (on
        SQLite more than the one-by-one reads: 547-653 against 456-592 µs of CPU per decision in batches
        of 100; on PostgreSQL 49-53 against 33-35 µs per customer with three past decisions)."""
        if self._readers is not None:
            return self._load_snapshots_sqlite(self._readers, wanted)
        if not wanted:
            return []
        assert self._kept_readers is not None  # a backend has kept readers (PostgreSQL) or a stash (SQLite)
        return self._load_snapshots_kept(self._kept_readers, wanted)

    def _load_snapshots_kept(
        self, kept: KeptConnections, wanted: Sequence[SnapshotWanted]
    ) -> list[CustomerSnapshot]:
        """``load_snapshots`` on PostgreSQL: the customers, their histories and the stock read on a kept
        connection, the three statements in one round trip (psycopg's pipeline), their rows decoded
        without SQLAlchemy's result objects. Read in autocommit, each statement sees its own snapshot;
        the versions come from the first."""
        if self._batch_reads is None:
            dialect = self.db.reader.dialect
            self._batch_reads = (
                PreparedSelect(_PG_CUSTOMERS, dialect),
                PreparedSelect(_PG_HISTORIES, dialect),
                PreparedSelect(_PG_STOCK, dialect),
            )
        customers_read, histories_read, stock_read = self._batch_reads
        users = sorted({w.user_id for w in wanted})
        since = {w.user_id: w.now - HISTORY_WINDOW for w in wanted}
        products = sorted({p for w in wanted for p in w.products})

        def read(conn: Any) -> tuple[list[tuple[Any, ...]], ...]:
            cursors = [conn.cursor() for _ in range(3 if products else 2)]
            try:
                with conn.pipeline():
                    customers_read.execute(cursors[0], users=users)
                    histories_read.execute(cursors[1], users=users, since=min(since.values()))
                    if products:
                        stock_read.execute(cursors[2], products=products)
                return (
                    customers_read.rows(cursors[0]),
                    histories_read.rows(cursors[1]),
                    stock_read.rows(cursors[2]) if products else [],
                )
            finally:
                for cursor in cursors:
                    cursor.close()

        with guard("read customers", self._driver_error):
            rows, history_rows, stock = self._read_on_kept(kept, read)
        columns = customers_read.columns
        by_user = {r["user_id"]: r for r in (dict(zip(columns, row, strict=True)) for row in rows)}
        past: dict[str, list[PastExposure]] = {}
        for *values, user in history_rows:
            kept_history = past.setdefault(user, [])
            if len(kept_history) < HISTORY_LIMIT and values[_AT] >= since[user]:
                kept_history.append(codec.past_exposure(values))
        out_of_stock = frozenset(product for (product,) in stock)
        snapshots = []
        for w in wanted:
            row = by_user.get(w.user_id)
            snapshots.append(
                CustomerSnapshot(
                    state=codec.state_from_row(row) if row is not None else CustomerState(user_id=w.user_id),
                    history=tuple(past.get(w.user_id, ())),
                    out_of_stock=out_of_stock.intersection(w.products),
                    version=int(row["version"]) if row is not None else 0,
                )
            )
        return snapshots

    def _load_snapshots_sqlite(
        self, stash: ConnectionStash, wanted: Sequence[SnapshotWanted]
    ) -> list[CustomerSnapshot]:
        with guard("read customers", self._driver_error):
            conn = stash.take()
            try:
                if self._snapshot_reads is None:
                    self._snapshot_reads = SnapshotReads(self.db.reader.dialect)
                snapshots = self._snapshot_reads.load(conn, wanted)
            except BaseException:
                conn.close()  # a connection that failed is closed, not kept
                raise
            stash.give(conn)
        return snapshots

    def _out_of_stock(self, dbapi_conn: Any, products: Sequence[str]) -> frozenset[str]:
        cursor = dbapi_conn.cursor()
        try:
            self._out_of_stock_query(cursor, products)
            return frozenset(r[0] for r in cursor.fetchall())
        finally:
            cursor.close()

    def _out_of_stock_query(self, cursor: Any, products: Sequence[str]) -> None:
        cursor.execute(
            f"SELECT product_id FROM inventory WHERE NOT in_stock AND product_id IN "
            f"({', '.join([self._marker] * len(products))})",
            tuple(products),
        )

    def record_events(
        self, batch: Sequence[Event], received_at: datetime, cancel_rule: CancelRule | None = None
    ) -> list[tuple[EventOutcome, tuple[Cancellation, ...]]]:
        """Stores valid events, deduplicated by ``event_id``, folds the new ones into customer state and
        inventory, and cancels the pending exposures ``cancel_rule`` says they end, through the group
        commit: concurrent calls share a transaction (usually a call's events commit together). Returns
        ACCEPTED or DUPLICATE per event, with what it cancelled (a duplicate cancels nothing: its first
        delivery did), or REJECTED for an event whose data the database refused (it alone fails).
        Raises ``StoreUnavailableError`` when the database failed (nothing of the call is acknowledged;
        a retry is deduplicated)."""
        first_index: dict[str, int] = {}
        for index, event in enumerate(batch):
            first_index.setdefault(event.event_id, index)
        members = {i: PendingEvent(batch[i], received_at, cancel_rule) for i in first_index.values()}
        self.writer.write_many(list(members.values()))
        failed = next(
            (
                m.error
                for m in members.values()
                if m.error is not None and not isinstance(m.error, self._refusals)
            ),
            None,
        )
        if failed is not None:
            if isinstance(failed, self._outages):
                self.db.health.failed()
            # A database failure becomes StoreUnavailableError; anything else (a bug) is raised as it is.
            with guard("record events", self._driver_error):
                raise failed
        if members:
            self.db.health.succeeded()
        out: list[tuple[EventOutcome, tuple[Cancellation, ...]]] = []
        for i in range(len(batch)):
            member = members.get(i)
            if member is None:  # a repeat within the call
                out.append((EventOutcome.DUPLICATE, ()))
            elif member.error is not None:
                logger.warning("the database refused the data of one event: %s", type(member.error).__name__)
                out.append((EventOutcome.REJECTED, ()))
            else:
                out.append((member.outcome, member.cancelled))
        return out

    def _write_events(self, raw: Any, batch: Sequence[PendingEvent]) -> _EventsWritten:
        """One transaction of the events' group commit: the calls' events deduplicated (the first
        member with an id stands for it), inserted, folded into customers and inventory, and their
        cancellations made, in a few statements on the raw driver (``event_rows``)."""
        if self._event_rows is None:
            self._event_rows = EventRows(self.db.writer.dialect)
        rows = self._event_rows
        rows.start()
        unique: dict[str, PendingEvent] = {}
        for member in batch:
            unique.setdefault(member.event.event_id, member)
        # The customers and pending exposures of every customer event, read (and the customers locked)
        # with the insert, in one round trip on PostgreSQL: a superset of what the new events need.
        maybe = [m for m in unique.values() if m.event.type not in _INVENTORY and m.event.user_id]
        ruled = [m.event.occurred_at for m in maybe if m.rule is not None and m.event.occurred_at]
        inserted, stored, pending = rows.write_and_read(
            raw,
            [rows.event_values(m.event, m.received_at) for m in unique.values()],
            sorted({m.event.user_id for m in maybe}),  # a fixed lock order
            min(ruled) if ruled else None,
        )
        new = [m for m in unique.values() if m.event.event_id in inserted]
        now = max(m.received_at for m in batch)
        customer_events: list[PendingEvent] = []
        stock: list[Event] = []
        for m in new:
            if m.event.type in _INVENTORY:
                stock.append(m.event)
            elif m.event.user_id:
                customer_events.append(m)
        if customer_events:
            self._fold_into_customers(raw, [m.event for m in customer_events], now, stored)
        if stock:
            self._fold_into_inventory(raw, stock)
        cancelled: dict[str, tuple[Cancellation, ...]] = {}
        by_rule: dict[int, tuple[CancelRule, list[Event]]] = {}
        for m in customer_events:
            if m.rule is not None:
                by_rule.setdefault(id(m.rule), (m.rule, []))[1].append(m.event)
        for rule, rule_events in by_rule.values():
            # Several rules (calls of different catalogs) each read what the others left pending.
            read = pending if len(by_rule) == 1 else None
            cancelled.update(self._cancel_pending(raw, rule_events, rule, now, read))
        return {id(m) for m in new}, cancelled

    def _fold_into_inventory(self, raw: Any, stock: Sequence[Event]) -> None:
        """The latest event per product wins, whatever order they arrive in."""
        assert self._event_rows is not None  # built by ``_write_events``
        for event in sorted(stock, key=lambda e: (e.occurred_at or datetime.min, e.event_id)):
            for product in dict.fromkeys(event.product_ids):
                self._event_rows.set_stock(raw, event, product)

    def _cancel_pending(
        self,
        raw: Any,
        new_events: Sequence[Event],
        rule: CancelRule,
        now: datetime,
        pending: dict[str, list[PastExposure]] | None = None,
    ) -> dict[str, tuple[Cancellation, ...]]:
        """Cancels what ``rule`` says the new events end. ``pending``: the customers' pending
        exposures when already read in this transaction (those of more customers, or due earlier,
        may be in it: each event only looks at its customer's, due after it)."""
        if pending is None:
            users = sorted({e.user_id for e in new_events})
            earliest = min(e.occurred_at for e in new_events if e.occurred_at is not None)
            assert self._event_rows is not None  # built by ``_write_events``
            pending = self._event_rows.pending(raw, users, earliest)
        if not pending:  # nothing pending for these customers: nothing to cancel
            return {}

        rows = self._event_rows
        assert rows is not None

        def cancel(event: Event, p: PastExposure, reason: str) -> bool:
            return rows.cancel(raw, p.exposure_id, event, reason)

        return cancellations(new_events, pending, rule, now, cancel)

    def _fold_into_customers(
        self, raw: Any, new_events: Iterable[Event], now: datetime, stored: Sequence[CustomerState]
    ) -> None:
        """Each customer's new events folded into their state in one pass (``stored``: the states read,
        and locked, with the insert), those first seen created (folded, at version 1) in one statement,
        the others rewritten in one."""
        by_user: dict[str, list[Event]] = {}
        for event in new_events:
            by_user.setdefault(event.user_id, []).append(event)
        users = sorted(by_user)  # a fixed lock order, so concurrent batches cannot deadlock
        assert self._event_rows is not None  # built by ``_write_events``
        rows = self._event_rows

        def folded(state: CustomerState | str) -> list[Any]:
            user_events = by_user[state if isinstance(state, str) else state.user_id]
            if len(user_events) > 1:
                user_events.sort(key=lambda e: e.occurred_at or now)
            return rows.customer_values(fold_events(state, user_events), now)

        updates = [folded(state) for state in stored if state.user_id in by_user]
        seen = {u[0] for u in updates}
        missing = [u for u in users if u not in seen]
        if missing:
            # Customers first seen: created folded, at version 1, in one statement instead of an empty
            # row, a read and an update. One created meanwhile by another writer is updated.
            created = rows.create_customers(raw, [folded(u) for u in missing])
            raced = [u for u in missing if u not in created]
            if raced:
                updates += [folded(state) for state in rows.read_customers(raw, raced)]
        if updates:
            rows.update_customers(raw, updates)
