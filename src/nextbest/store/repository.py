"""The store the engine talks to: decisions and exposures, events and customer state."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, case, func, literal_column, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from nextbest.domain import ActionClass, Cancellation, Channel, Decision, Event, EventOutcome, EventType
from nextbest.errors import StoreUnavailableError
from nextbest.experiments import Experiment
from nextbest.state import CustomerSnapshot, CustomerState, PastExposure, apply_event
from nextbest.store.codec import (
    channels_to_json,
    decision_from_row,
    decision_payload,
    engagement_hours_to_json,
    exposure_row,
    last_events_to_json,
    state_from_row,
)
from nextbest.store.database import ConnectionStash, Database
from nextbest.store.prepared import PreparedInsert, PreparedSelect, PreparedUpdate
from nextbest.store.schema import assignments, customers, decisions, events, exposures, inventory
from nextbest.store.schema import experiments as experiment_registry
from nextbest.store.writer import GroupCommitWriter, PendingWrite

__all__ = ["CancelRule", "SavedDecision", "Store", "StoredDecision"]

# Given a new event and one of the customer's pending exposures, why the event cancels it (or None).
CancelRule = Callable[[Event, PastExposure], str | None]

logger = logging.getLogger(__name__)

HISTORY_WINDOW = timedelta(days=90)
HISTORY_LIMIT = 500

# The id is generated; the cancellation columns are set only when a pending exposure is cancelled.
_SET_LATER = {"exposure_id", "cancelled_at", "cancelled_by", "cancel_reason"}
_EXPOSURE_COLUMNS = [c.name for c in exposures.columns if c.name not in _SET_LATER]
_ASSIGNMENT_COLUMNS = [c.name for c in assignments.columns if c.name != "assignment_id"]

# Hot-path statements are built once: constructing a statement costs more than running it on SQLite.
_FIND_DECISION = select(decisions).where(decisions.c.request_id == bindparam("request_id"))
_CUSTOMER = select(customers).where(customers.c.user_id == bindparam("user_id"))
_HISTORY = (
    select(
        exposures.c.decision_id,
        exposures.c.action_id,
        exposures.c.flow,
        exposures.c.channel,
        exposures.c.action_class,
        exposures.c.trigger,
        exposures.c.occurred_at,
        exposures.c.send_at,
        exposures.c.exposure_id,
        exposures.c.cancelled_at,
    )
    .where(exposures.c.user_id == bindparam("user_id"), exposures.c.occurred_at >= bindparam("since"))
    .order_by(exposures.c.occurred_at.desc())
    .limit(HISTORY_LIMIT)
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
    .values(cancelled_at=None, cancelled_by=None, cancel_reason=None)
)


@dataclass(frozen=True, slots=True)
class SavedDecision:
    """``inserted`` is False when another decision already holds the request id (nothing was written);
    ``cancelled`` the exposure ids this decision's preemptions actually cancelled; ``conflict`` is True
    when the customer's state changed after the decision read it (nothing was written: decide again)."""

    inserted: bool
    cancelled: frozenset[int] = frozenset()
    conflict: bool = False

    def __bool__(self) -> bool:
        return self.inserted


@dataclass(frozen=True, slots=True)
class StoredDecision:
    decision: Decision
    fingerprint: str


class Store:
    """SQL persistence for the pipeline. Every method raises :class:`StoreUnavailableError` when the
    database fails, so callers never mistake a failed write for a success."""

    def __init__(self, db: Database, max_batch: int = 256) -> None:
        self.db = db
        self._insert = postgresql.insert if db.dialect == "postgresql" else sqlite.insert
        self.writer = GroupCommitWriter(self._raw_transaction, self._write_decisions, max_batch=max_batch)
        # Compiled on first use: a dialect only knows its server's version once it has connected.
        self._prepared: tuple[PreparedSelect, PreparedSelect] | None = None
        self._writes: tuple[PreparedInsert, PreparedInsert, PreparedInsert, PreparedInsert] | None = None
        self._cancels: tuple[PreparedUpdate, PreparedUpdate] | None = None
        self._driver_error: type[Exception] = db.reader.dialect.loaded_dbapi.Error
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
            .values({**{k: bindparam(k) for k in _STATE_COLUMNS}, "version": customers.c.version + 1})
        )
        self._checkpointer = db.checkpointer(writers=self.writer.commit_lock)
        # SQLite: the reads and the group commit use raw connections kept between calls (the commit's
        # one is used only by the commit lock's holder); PostgreSQL checks them out of its pool.
        embedded = db.dialect == "sqlite"
        self._readers = ConnectionStash(db.reader, keep=32) if embedded else None
        self._committers = ConnectionStash(db.writer, keep=1) if embedded else None

    def close(self) -> None:
        """Every acknowledged write has already committed; this folds the WAL in and releases the
        connections."""
        for stash in (self._readers, self._committers):
            if stash is not None:
                stash.close()
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self.db.dispose()

    # -- decisions ---------------------------------------------------------------------------------------

    def find_decision(self, request_id: str) -> StoredDecision | None:
        with _guard("read decision"), self.db.reader.connect() as conn:
            row = conn.execute(_FIND_DECISION, {"request_id": request_id}).mappings().first()
        if row is None:
            return None
        return StoredDecision(decision_from_row(row), row["fingerprint"])

    def save_decision(
        self, decision: Decision, fingerprint: str, decided_at: datetime, version: int | None = None
    ) -> SavedDecision:
        """Durably writes the decision, its exposures and its preemptions (group commit), atomically.
        A preemption whose exposure was cancelled meanwhile is dropped from the stored payload too.

        ``version`` is the customer version the decision was made on (``CustomerSnapshot.version``): a
        decision that logs exposures or cancels any is written only if the version is still that one,
        and bumps it; otherwise nothing is written and the result says ``conflict``."""
        row = {
            "decision_id": decision.decision_id,
            "request_id": decision.request_id,
            "user_id": decision.user_id,
            "trigger": decision.trigger,
            "occurred_at": decision.occurred_at,
            "decided_at": decided_at,
            "catalog_version": decision.catalog_version,
            "fingerprint": fingerprint,
            "payload": decision_payload(decision),
        }
        exposure_rows = [
            {
                "decision_id": decision.decision_id,
                "user_id": decision.user_id,
                "action_id": a.action_id,
                "flow": a.flow,
                "channel": a.channel.value,
                "action_class": a.action_class.value,
                "trigger": decision.trigger,
                "occurred_at": decision.occurred_at,
                "send_at": a.send_at,
                "score": a.score,
                "catalog_version": decision.catalog_version,
                "features": a.features or None,
            }
            for a in decision.actions
        ]
        common = {
            "decision_id": decision.decision_id,
            "user_id": decision.user_id,
            "occurred_at": decision.occurred_at,
            "catalog_version": decision.catalog_version,
        }
        assignment_rows = [
            {**exposure_row(e), **common, "send_at": e.action.send_at, "features": e.action.features or None}
            for e in decision.exposures
        ]
        cancellations = [
            {
                "b_exposure_id": c.exposure_id,
                "cancelled_at": decision.occurred_at,
                "cancelled_by": decision.decision_id,
                "cancel_reason": c.reason[:512],
            }
            for c in decision.cancelled
        ]
        guard = None
        if version is not None and (exposure_rows or assignment_rows or cancellations):
            guard = {
                "user_id": decision.user_id,
                "updated_at": decided_at,
                **_EMPTY_CUSTOMER,
                "version": version + 1,  # the row as it is created if there is none (version 0)
            }
        with _guard("write decision", self._driver_error):
            item = self.writer.write(row, exposure_rows, assignment_rows, cancellations, guard)
        return SavedDecision(item.inserted, frozenset(item.cancelled), item.conflict)

    @contextmanager
    def _raw_transaction(self) -> Iterator[Any]:
        """A write transaction on a raw DBAPI connection (the group commit's hot path)."""
        stash = self._committers
        with self.db.write_lock:
            conn = stash.take() if stash is not None else self.db.writer.raw_connection()
            try:
                if stash is not None:
                    conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.commit()
            except BaseException:
                if stash is not None:
                    stash = None  # a connection that failed is closed, not kept
                    with suppress(Exception):
                        conn.rollback()
                else:
                    conn.rollback()
                raise
            finally:
                if stash is not None:
                    stash.give(conn)
                else:
                    conn.close()

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
                PreparedInsert(_bump_version(self._insert), _GUARD_COLUMNS, dialect),
            )
            self._cancels = (PreparedUpdate(_CANCEL, dialect), PreparedUpdate(_UNCANCEL, dialect))
        assert self._cancels is not None  # compiled together with the inserts
        insert_decisions, insert_exposures, insert_assignments, bump_version = self._writes
        cancel, uncancel = self._cancels
        # Version guards first, in user order (a fixed lock order against concurrent batches and event
        # writes on PostgreSQL): a decision whose customer changed since it read them writes nothing.
        guards = sorted(
            ((item, item.guard) for item in batch if item.guard is not None), key=lambda g: g[1]["user_id"]
        )
        if guards:
            bumped = set(bump_version.returning_many(conn, [guard for _, guard in guards]))
            for item, guard in guards:
                item.conflict = guard["user_id"] not in bumped
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
        return inserted

    # -- experiments ----------------------------------------------------------------------------------------

    def register_experiments(
        self, running: Sequence[Experiment], now: datetime, *, write: bool = True
    ) -> list[str]:
        """Checks that no started experiment changed its arms, weights, coverage or namespace under the
        same seed and hash version, then records the current definitions (unless ``write`` is False).
        Returns the problems; nothing is recorded when there are any."""
        with _guard("register experiments"), self.db.begin_write() as conn:
            known = {
                r["experiment_id"]: r
                for r in conn.execute(select(experiment_registry).with_for_update()).mappings()
            }
            problems = []
            for exp in running:
                row = known.get(exp.id)
                same_seed = row is not None and (row["seed"], row["hash_version"]) == (
                    exp.seed,
                    exp.hash_version,
                )
                started = exp.start is None or exp.start <= now
                if same_seed and row is not None and row["fingerprint"] != exp.fingerprint and started:
                    problems.append(
                        f"experiment {exp.id!r} is running (seen since {row['first_seen_at']:%Y-%m-%d}): "
                        "its arms, weights, coverage or namespace changed; a running experiment is "
                        f"immutable. Restore it, or give it a new seed to restart it (e.g. seed: {exp.id}-v2)"
                    )
            if problems or not write:
                return problems
            for exp in running:
                values = {
                    "seed": exp.seed,
                    "hash_version": exp.hash_version,
                    "fingerprint": exp.fingerprint,
                    "definition": {"arms": [[a.id, a.weight] for a in exp.arms], "coverage": exp.coverage},
                    "updated_at": now,
                }
                row = known.get(exp.id)
                if row is None:
                    conn.execute(
                        experiment_registry.insert().values(experiment_id=exp.id, first_seen_at=now, **values)
                    )
                elif (row["seed"], row["hash_version"], row["fingerprint"]) != (
                    exp.seed,
                    exp.hash_version,
                    exp.fingerprint,
                ):
                    restarted = (row["seed"], row["hash_version"]) != (exp.seed, exp.hash_version)
                    conn.execute(
                        experiment_registry.update()
                        .where(experiment_registry.c.experiment_id == exp.id)
                        .values(**values, **({"first_seen_at": now} if restarted else {}))
                    )
            return []

    def arm_units(self, experiment_id: str) -> dict[str, int]:
        """Distinct units per arm; a unit seen in more than one arm (which assignment never does on its
        own) is counted once under ``"__multiple__"``, and reports exclude it."""
        first = (
            select(
                assignments.c.user_id,
                func.min(assignments.c.arm_id).label("arm"),
                func.count(func.distinct(assignments.c.arm_id)).label("arms"),
            )
            .where(assignments.c.experiment_id == experiment_id)
            .group_by(assignments.c.user_id)
            .subquery()
        )
        arm = case((first.c.arms > 1, "__multiple__"), else_=first.c.arm)
        query = select(arm.label("arm"), func.count().label("units")).group_by(arm)
        with _guard("count experiment units"), self.db.reader.connect() as conn:
            return {row.arm: int(row.units) for row in conn.execute(query)}

    # -- customer state -----------------------------------------------------------------------------------

    def load_snapshot(self, user_id: str, now: datetime, products: Sequence[str] = ()) -> CustomerSnapshot:
        """The customer's state, the actions chosen for them in the last 90 days (newest 500, cancelled
        ones marked) and which of ``products`` the latest inventory events mark out of stock."""
        with _guard("read customer", self._driver_error):
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
        state = state_from_row(row) if row is not None else CustomerState(user_id=user_id)
        past = tuple(_past(values) for values in history)
        # The version comes from the first read: a write between it and the history read moves it on.
        version = int(row["version"]) if row is not None else 0
        return CustomerSnapshot(state=state, history=past, out_of_stock=out_of_stock, version=version)

    def _out_of_stock(self, dbapi_conn: Any, products: Sequence[str]) -> frozenset[str]:
        cursor = dbapi_conn.cursor()
        try:
            marker = "?" if self.db.dialect == "sqlite" else "%s"
            cursor.execute(
                f"SELECT product_id FROM inventory WHERE NOT in_stock AND product_id IN "
                f"({', '.join([marker] * len(products))})",
                tuple(products),
            )
            return frozenset(r[0] for r in cursor.fetchall())
        finally:
            cursor.close()

    # -- events -------------------------------------------------------------------------------------------

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
        with _guard("record events"), self.db.begin_write() as conn:
            accepted = (
                set(conn.execute(self._event_insert, [_event_row(e, received_at) for e in unique]).scalars())
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
                row = {
                    "product_id": product,
                    "in_stock": event.type is EventType.BACK_IN_STOCK,
                    "changed_at": event.occurred_at,
                    "event_id": event.event_id,
                }
                insert = self._insert(inventory).values(row)
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
            pending.setdefault(user, []).append(_past(values))
        out: dict[str, tuple[Cancellation, ...]] = {}
        for event in sorted(new_events, key=lambda e: (e.occurred_at or now, e.event_id)):
            assert event.occurred_at is not None
            found = []
            for p in pending.get(event.user_id, ()):
                if p.cancelled or p.send_at <= event.occurred_at or p.occurred_at > event.occurred_at:
                    continue
                reason = rule(event, p)
                if reason is None:
                    continue
                done = conn.execute(
                    update(exposures)
                    .where(and_(exposures.c.exposure_id == p.exposure_id, exposures.c.cancelled_at.is_(None)))
                    .values(
                        cancelled_at=event.occurred_at,
                        cancelled_by=event.event_id,
                        cancel_reason=reason[:512],
                    )
                ).rowcount
                if done == 1:
                    found.append(
                        Cancellation(
                            p.decision_id,
                            p.action_id,
                            p.flow,
                            p.channel,
                            p.action_class,
                            p.send_at,
                            reason,
                            p.exposure_id,
                        )
                    )
            if found:
                out[event.event_id] = tuple(found)
                cancelled_ids = {c.exposure_id for c in found}
                pending[event.user_id] = [
                    p for p in pending[event.user_id] if p.exposure_id not in cancelled_ids
                ]
        return out

    def _fold_into_customers(self, conn: Connection, new_events: Iterable[Event], now: datetime) -> None:
        by_user: dict[str, list[Event]] = {}
        for event in new_events:
            by_user.setdefault(event.user_id, []).append(event)
        users = sorted(by_user)  # a fixed lock order, so concurrent batches cannot deadlock
        conn.execute(
            self._customer_insert, [{"user_id": u, "updated_at": now, **_EMPTY_CUSTOMER} for u in users]
        )
        rows = conn.execute(self._customer_select, {"users": users}).mappings()
        updates: list[dict[str, Any]] = []
        for row in rows:
            state = state_from_row(row)
            for event in sorted(by_user[row["user_id"]], key=lambda e: e.occurred_at or now):
                state = apply_event(state, event)
            updates.append(_state_row(state, now))
        conn.execute(self._customer_update, updates)


# A customer row as it is created before anything is known (the key and ``updated_at`` aside).
_EMPTY_CUSTOMER: dict[str, Any] = {
    "channels": {},
    "last_events": {},
    "engagement_hours": {},
    "orders_count": 0,
    "refunds_count": 0,
    "revenue_total": 0.0,
}
_GUARD_COLUMNS = ("user_id", "updated_at", *_EMPTY_CUSTOMER, "version")


def _bump_version(insert: Any) -> Any:
    """Moves a customer from version n - 1 to the row's version n, creating the customer (empty) when
    n is 1 and there is no row; returns the user id only when it did. Another write in between (an
    event folded in, another decision) has moved the version on, and then nothing is returned."""
    statement = insert(customers)
    return statement.on_conflict_do_update(
        index_elements=[customers.c.user_id],
        set_={"version": statement.excluded.version},
        where=customers.c.version + literal_column("1") == statement.excluded.version,
    ).returning(customers.c.user_id)


def _event_row(event: Event, received_at: datetime) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "user_id": event.user_id,
        "type": event.type.value if event.type else "",
        "occurred_at": event.occurred_at,
        "received_at": received_at,
        "value": event.value,
        "channel": event.channel.value if event.channel else None,
        "decision_id": event.decision_id or None,
        "order_id": event.order_id or None,
        "details": {
            "consent_granted": event.consent_granted,
            "bounce_kind": event.bounce_kind.value if event.bounce_kind else None,
            "product_ids": list(event.product_ids),
            "items": [
                {"product_id": i.product_id, "quantity": i.quantity, "unit_price": i.unit_price}
                for i in event.items
            ],
            "properties": dict(event.properties),
        },
    }


def _state_row(state: CustomerState, now: datetime) -> dict[str, Any]:
    return {
        "b_user_id": state.user_id,
        "first_seen_at": state.first_seen_at,
        "updated_at": now,
        "orders_count": state.orders_count,
        "refunds_count": state.refunds_count,
        "revenue_total": state.revenue_total,
        "last_order_at": state.last_order_at,
        "last_engagement_at": state.last_engagement_at,
        "channels": channels_to_json(state.channels),
        "last_events": last_events_to_json(state.last_events),
        "engagement_hours": engagement_hours_to_json(state.engagement_hours),
    }


# The customer columns an event batch rewrites: those of ``_state_row`` (``b_user_id`` is the key).
_STATE_COLUMNS = tuple(k for k in _state_row(CustomerState(""), datetime.min) if k != "b_user_id")


@contextmanager
def _guard(what: str, driver_error: type[Exception] = SQLAlchemyError) -> Iterator[None]:
    """Turns database failures (SQLAlchemy's, or the driver's on raw connections) into
    :class:`StoreUnavailableError`: nothing was acknowledged."""
    try:
        yield
    except (SQLAlchemyError, driver_error) as exc:
        logger.warning("store failure during %s: %s", what, type(exc).__name__)
        raise StoreUnavailableError(f"could not {what}: the database is unavailable") from exc


def _past(values: Sequence[Any]) -> PastExposure:
    """A history row (the columns of ``_HISTORY``, in order) as a :class:`PastExposure`."""
    decision_id, action_id, flow, channel, cls, trigger, at, send_at, exposure_id, cancelled_at = values
    return PastExposure(
        decision_id,
        action_id,
        flow,
        Channel(channel),
        ActionClass(cls),
        trigger,
        at,
        send_at,
        exposure_id,
        cancelled_at is not None,
    )
