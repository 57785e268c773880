"""Customers in SQL: the snapshot a decision reads (state, contact history, inventory) and the events
that change it, deduplicated, folded into customer state and inventory, cancelling what they end."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, select, update

from nextbest.domain import Cancellation, Event, EventOutcome
from nextbest.state import CancelRule, CustomerSnapshot, CustomerState, PastExposure, apply_event
from nextbest.store import codec
from nextbest.store.backend import Backend, guard
from nextbest.store.contract import HISTORY_LIMIT, HISTORY_WINDOW, cancellations
from nextbest.store.prepared import PreparedSelect
from nextbest.store.schema import customers, events, exposures, inventory

__all__ = ["CustomerLog"]

# Hot-path statements are built once: constructing a statement costs more than running it on SQLite.
_CUSTOMER = select(customers).where(customers.c.user_id == bindparam("user_id"))
_HISTORY = (
    select(*(exposures.c[name] for name in codec.PAST_EXPOSURE_COLUMNS))
    .where(exposures.c.user_id == bindparam("user_id"), exposures.c.occurred_at >= bindparam("since"))
    .order_by(exposures.c.occurred_at.desc())
    .limit(HISTORY_LIMIT)
)


class CustomerLog:
    """The customers, events and inventory tables, and the cancellation of pending exposures."""

    def __init__(self, backend: Backend) -> None:
        self.db = backend.db
        self._insert = backend.insert
        self._marker = backend.marker
        self._driver_error = backend.driver_error
        self._readers = backend.readers
        # Compiled on first use: a dialect only knows its server's version once it has connected.
        self._prepared: tuple[PreparedSelect, PreparedSelect] | None = None
        # The event path's statements, built once (building them per call costs more than running them).
        self._event_insert = self._insert(events).on_conflict_do_nothing().returning(events.c.event_id)
        self._customer_insert = self._insert(customers).on_conflict_do_nothing()
        self._customer_select = (
            select(customers)
            .where(customers.c.user_id.in_(bindparam("users", expanding=True)))
            .order_by(customers.c.user_id)
            .with_for_update()
        )
        self._pending_select = (
            select(*_HISTORY.selected_columns)
            .where(
                exposures.c.user_id.in_(bindparam("users", expanding=True)),
                exposures.c.cancelled_at.is_(None),
                exposures.c.send_at > bindparam("earliest"),
            )
            .add_columns(exposures.c.user_id)
        )
        self._customer_update = (
            update(customers)
            .where(customers.c.user_id == bindparam("b_user_id"))
            .values({**{k: bindparam(k) for k in codec.STATE_COLUMNS}, "version": customers.c.version + 1})
        )

    def load_snapshot(self, user_id: str, now: datetime, products: Sequence[str] = ()) -> CustomerSnapshot:
        """The customer's state, the actions chosen for them in the last 90 days (newest 500, cancelled
        ones marked) and which of ``products`` the latest inventory events mark out of stock."""
        with guard("read customer", self._driver_error):
            stash = self._readers
            if stash is not None:  # SQLite: reads run outside a transaction, nothing to roll back
                conn = stash.take()
            else:
                conn = self.db.reader.raw_connection()
                # PostgreSQL: the reads run as single statements; in a transaction they would cost a
                # BEGIN and a ROLLBACK round trip more, for the same READ COMMITTED view.
                driver: Any = conn.driver_connection
                driver.autocommit = True
            try:
                if self._prepared is None:
                    dialect = self.db.reader.dialect
                    self._prepared = (PreparedSelect(_CUSTOMER, dialect), PreparedSelect(_HISTORY, dialect))
                customer_query, history_query = self._prepared
                rows = customer_query.fetch(conn, user_id=user_id)
                history = history_query.fetch(conn, user_id=user_id, since=now - HISTORY_WINDOW)
                out_of_stock = self._out_of_stock(conn, products) if products else frozenset()
            except BaseException:
                if stash is not None:
                    conn.close()  # a connection that failed is closed, not kept
                    stash = None
                raise
            finally:
                if stash is not None:
                    stash.give(conn)
                elif self._readers is None:
                    if not driver.closed:
                        driver.autocommit = False  # the pool's writers expect transactions
                    conn.close()  # back to the pool, rolled back
        row = dict(zip(customer_query.columns, rows[0], strict=True)) if rows else None
        state = codec.state_from_row(row) if row is not None else CustomerState(user_id=user_id)
        past = tuple(codec.past_exposure(values) for values in history)
        # The version comes from the first read: a write between it and the history read moves it on.
        version = int(row["version"]) if row is not None else 0
        return CustomerSnapshot(state=state, history=past, out_of_stock=out_of_stock, version=version)

    def _out_of_stock(self, dbapi_conn: Any, products: Sequence[str]) -> frozenset[str]:
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(
                f"SELECT product_id FROM inventory WHERE NOT in_stock AND product_id IN "
                f"({', '.join([self._marker] * len(products))})",
                tuple(products),
            )
            return frozenset(r[0] for r in cursor.fetchall())
        finally:
            cursor.close()

    def record_events(
        self, batch: Sequence[Event], received_at: datetime, cancel_rule: CancelRule | None = None
    ) -> list[tuple[EventOutcome, tuple[Cancellation, ...]]]:
        """Stores valid events, deduplicated by ``event_id``, folds the new ones into customer state and
        inventory, and cancels the pending exposures ``cancel_rule`` says they end — all in one
        transaction. Returns ACCEPTED or DUPLICATE per event, with what it cancelled (a duplicate
        cancels nothing: its first delivery did)."""
        first_index: dict[str, int] = {}
        for index, event in enumerate(batch):
            first_index.setdefault(event.event_id, index)
        unique = [batch[i] for i in first_index.values()]
        cancelled: dict[str, tuple[Cancellation, ...]] = {}
        with guard("record events"), self.db.begin_write() as conn:
            accepted = (
                set(
                    conn.execute(
                        self._event_insert, [codec.event_row(e, received_at) for e in unique]
                    ).scalars()
                )
                if unique
                else set()
            )
            new_events = [e for e in unique if e.event_id in accepted]
            customer_events = [e for e in new_events if e.user_id and not (e.type and e.type.is_inventory)]
            if customer_events:
                self._fold_into_customers(conn, customer_events, received_at)
            stock = [e for e in new_events if e.type and e.type.is_inventory]
            if stock:
                self._fold_into_inventory(conn, stock)
            if cancel_rule is not None and customer_events:
                cancelled = self._cancel_pending(conn, customer_events, cancel_rule, received_at)
        return [
            (EventOutcome.ACCEPTED, cancelled.get(e.event_id, ()))
            if e.event_id in accepted and first_index[e.event_id] == i
            else (EventOutcome.DUPLICATE, ())
            for i, e in enumerate(batch)
        ]

    def _fold_into_inventory(self, conn: Connection, stock: Sequence[Event]) -> None:
        """The latest event per product wins, whatever order they arrive in."""
        for event in sorted(stock, key=lambda e: (e.occurred_at or datetime.min, e.event_id)):
            for product in dict.fromkeys(event.product_ids):
                insert = self._insert(inventory).values(codec.inventory_row(event, product))
                conn.execute(
                    insert.on_conflict_do_update(
                        index_elements=[inventory.c.product_id],
                        set_={
                            "in_stock": insert.excluded.in_stock,
                            "changed_at": insert.excluded.changed_at,
                            "event_id": insert.excluded.event_id,
                        },
                        where=inventory.c.changed_at < insert.excluded.changed_at,
                    )
                )

    def _cancel_pending(
        self, conn: Connection, new_events: Sequence[Event], rule: CancelRule, now: datetime
    ) -> dict[str, tuple[Cancellation, ...]]:
        users = sorted({e.user_id for e in new_events})
        earliest = min(e.occurred_at for e in new_events if e.occurred_at is not None)
        rows = conn.execute(self._pending_select, {"users": users, "earliest": earliest}).all()
        pending: dict[str, list[PastExposure]] = {}
        for *values, user in rows:
            pending.setdefault(user, []).append(codec.past_exposure(values))

        def cancel(event: Event, p: PastExposure, reason: str) -> bool:
            done = conn.execute(
                update(exposures)
                .where(and_(exposures.c.exposure_id == p.exposure_id, exposures.c.cancelled_at.is_(None)))
                .values(
                    cancelled_at=event.occurred_at,
                    cancelled_by=event.event_id,
                    cancel_reason=reason[:512],
                )
            ).rowcount
            return bool(done == 1)

        return cancellations(new_events, pending, rule, now, cancel)

    def _fold_into_customers(self, conn: Connection, new_events: Iterable[Event], now: datetime) -> None:
        by_user: dict[str, list[Event]] = {}
        for event in new_events:
            by_user.setdefault(event.user_id, []).append(event)
        users = sorted(by_user)  # a fixed lock order, so concurrent batches cannot deadlock
        conn.execute(self._customer_insert, [codec.empty_customer_row(u, now) for u in users])
        rows = conn.execute(self._customer_select, {"users": users}).mappings()
        updates: list[dict[str, Any]] = []
        for row in rows:
            state = codec.state_from_row(row)
            for event in sorted(by_user[row["user_id"]], key=lambda e: e.occurred_at or now):
                state = apply_event(state, event)
            updates.append(codec.state_row(state, now))
        conn.execute(self._customer_update, updates)
