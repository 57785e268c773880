"""Stores in memory, for tests, examples and benchmarks: nothing persists.

:class:`MemoryStore` behaves as the SQL store does for the engine: customers' state folded from their
events, contact history newest first with pending and cancelled exposures, replays of a request id,
version conflicts, events deduplicated by id, cancellation by events, inventory. Decisions are stored as
the SQL store stores them (``nextbest.store.codec``), so a replay is the same.

:class:`FrozenStore` measures the pipeline alone: customers stay as first read, decisions are answered
but not kept.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime

from nextbest.domain import Cancellation, Decision, Event, EventOutcome, EventType
from nextbest.errors import NextbestError
from nextbest.state import CancelRule, CustomerSnapshot, CustomerState, PastExposure, apply_event
from nextbest.store import codec
from nextbest.store.contract import (
    HISTORY_LIMIT,
    HISTORY_WINDOW,
    DecisionStore,
    SavedDecision,
    SnapshotWanted,
    StoredDecision,
    ToSave,
    cancellations,
)

__all__ = ["FrozenStore", "MemoryStore", "SnapshotSource"]

# A customer's snapshot from elsewhere, as ``DecisionStore.load_snapshot`` gives it.
SnapshotSource = Callable[[str, datetime, Sequence[str]], CustomerSnapshot]


class MemoryStore:
    """The store contract in memory, thread-safe (one lock; each call is atomic, as a transaction)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._customers: dict[str, CustomerState] = {}
        # A customer has a version once something was written about them (no entry: version 0, no row).
        self._versions: dict[str, int] = {}
        self._decisions: dict[str, StoredDecision] = {}
        self._exposures: dict[int, PastExposure] = {}
        self._history: dict[str, list[int]] = {}
        self._event_ids: set[str] = set()
        # product id -> (in stock, as of when)
        self._stock: dict[str, tuple[bool, datetime]] = {}

    def load_snapshot(self, user_id: str, now: datetime, products: Sequence[str] = ()) -> CustomerSnapshot:
        """The customer's state, the actions chosen for them in the last 90 days (newest 500, cancelled
        ones marked) and which of ``products`` the latest inventory events mark out of stock."""
        since = now - HISTORY_WINDOW
        with self._lock:
            state = self._customers.get(user_id) or CustomerState(user_id=user_id)
            past = [self._exposures[i] for i in self._history.get(user_id, ())]
            out_of_stock = frozenset(p for p in products if not self._stock.get(p, (True,))[0])
            version = self._versions.get(user_id, 0)
        recent = sorted(
            (p for p in past if p.occurred_at >= since),
            key=lambda p: (p.occurred_at, p.exposure_id),
            reverse=True,
        )
        return CustomerSnapshot(state, tuple(recent[:HISTORY_LIMIT]), out_of_stock, version)

    def save_decision(
        self,
        decision: Decision,
        fingerprint: str,
        decided_at: datetime,
        version: int | None = None,
        deadline: float | None = None,  # nothing queues here: a write is done at once
    ) -> SavedDecision:
        """Writes the decision, its exposures and its preemptions at once, as the SQL store does: a
        decision that logs exposures or cancels any moves the customer's version on, and is refused
        (``conflict``) when the version is no longer ``version``; a taken request id writes nothing."""
        user = decision.user_id
        with self._lock:
            # The version check comes first, as in the SQL store's group commit: a retried request id
            # that passes it moves the version on although it writes nothing else.
            if version is not None and (decision.actions or decision.exposures or decision.cancelled):
                current = self._versions.get(user)
                if current is not None and current != version:
                    return SavedDecision(False, conflict=True)
                self._versions[user] = version + 1
            if decision.request_id in self._decisions:
                return SavedDecision(False)
            cancelled = frozenset(self._cancel(c.exposure_id for c in decision.cancelled))
            row = codec.decision_row(decision, fingerprint, decided_at)
            if decision.cancelled:
                payload = row["payload"]
                payload["cancelled"] = [c for c in payload["cancelled"] if c["exposure_id"] in cancelled]
            self._decisions[decision.request_id] = StoredDecision(codec.decision_from_row(row), fingerprint)
            history = self._history.setdefault(user, [])
            for a in decision.actions:
                exposure_id = len(self._exposures) + 1
                self._exposures[exposure_id] = PastExposure(
                    decision.decision_id,
                    a.action_id,
                    a.flow,
                    a.channel,
                    a.action_class,
                    decision.trigger,
                    decision.occurred_at,
                    a.send_at,
                    exposure_id,
                )
                history.append(exposure_id)
        return SavedDecision(True, cancelled)

    def load_snapshots(self, wanted: Sequence[SnapshotWanted]) -> list[CustomerSnapshot]:
        """``load_snapshot`` for each item, in order."""
        return [self.load_snapshot(*w) for w in wanted]

    def save_decisions(self, items: Sequence[ToSave]) -> list[SavedDecision | NextbestError]:
        """``save_decision`` for each item in turn; an item's error is its own."""
        results: list[SavedDecision | NextbestError] = []
        for item in items:
            try:
                results.append(self.save_decision(*item))
            except NextbestError as exc:
                results.append(exc)
        return results

    def find_decision(self, request_id: str) -> StoredDecision | None:
        """The decision stored for ``request_id``, if any."""
        with self._lock:
            return self._decisions.get(request_id)

    def find_decisions(self, request_ids: Sequence[str]) -> dict[str, StoredDecision]:
        """The decisions stored for those of ``request_ids`` that have one, by request id."""
        with self._lock:
            return {r: self._decisions[r] for r in request_ids if r in self._decisions}

    def record_events(
        self, batch: Sequence[Event], received_at: datetime, cancel_rule: CancelRule | None = None
    ) -> list[tuple[EventOutcome, tuple[Cancellation, ...]]]:
        """Keeps the events' ids (deduplicating by them), folds new events into customer state and
        inventory and cancels the pending exposures ``cancel_rule`` says they end, at once. Returns
        ACCEPTED or DUPLICATE per event, with what it cancelled."""
        first_index: dict[str, int] = {}
        for index, event in enumerate(batch):
            first_index.setdefault(event.event_id, index)
        cancelled: dict[str, tuple[Cancellation, ...]] = {}
        with self._lock:
            new_events = [batch[i] for i in first_index.values() if batch[i].event_id not in self._event_ids]
            self._event_ids.update(e.event_id for e in new_events)
            customer_events = [e for e in new_events if e.user_id and not (e.type and e.type.is_inventory)]
            self._fold_into_customers(customer_events, received_at)
            self._fold_into_inventory([e for e in new_events if e.type and e.type.is_inventory])
            if cancel_rule is not None and customer_events:
                cancelled = self._cancel_pending(customer_events, cancel_rule, received_at)
        accepted = {e.event_id for e in new_events}
        return [
            (EventOutcome.ACCEPTED, cancelled.get(e.event_id, ()))
            if e.event_id in accepted and first_index[e.event_id] == i
            else (EventOutcome.DUPLICATE, ())
            for i, e in enumerate(batch)
        ]

    def _cancel(self, exposure_ids: Iterable[int]) -> list[int]:
        """Cancels the exposures not cancelled yet; returns their ids."""
        done = []
        for exposure_id in exposure_ids:
            past = self._exposures.get(exposure_id)
            if past is not None and not past.cancelled:
                self._exposures[exposure_id] = replace(past, cancelled=True)
                done.append(exposure_id)
        return done

    def _fold_into_customers(self, new_events: Sequence[Event], now: datetime) -> None:
        by_user: dict[str, list[Event]] = {}
        for event in new_events:
            by_user.setdefault(event.user_id, []).append(event)
        for user, user_events in by_user.items():
            state = self._customers.get(user) or CustomerState(user_id=user)
            for event in sorted(user_events, key=lambda e: e.occurred_at or now):
                state = apply_event(state, event)
            self._customers[user] = state
            self._versions[user] = self._versions.get(user, 0) + 1

    def _fold_into_inventory(self, stock: Sequence[Event]) -> None:
        """The latest event per product wins, whatever order they arrive in."""
        for event in sorted(stock, key=lambda e: (e.occurred_at or datetime.min, e.event_id)):
            assert event.occurred_at is not None
            for product in dict.fromkeys(event.product_ids):
                known = self._stock.get(product)
                if known is None or known[1] < event.occurred_at:
                    self._stock[product] = (event.type is EventType.BACK_IN_STOCK, event.occurred_at)

    def _cancel_pending(
        self, new_events: Sequence[Event], rule: CancelRule, now: datetime
    ) -> dict[str, tuple[Cancellation, ...]]:
        earliest = min(e.occurred_at for e in new_events if e.occurred_at is not None)
        pending: dict[str, list[PastExposure]] = {}
        for user in {e.user_id for e in new_events}:
            exposures = (self._exposures[i] for i in self._history.get(user, ()))
            pending[user] = [p for p in exposures if not p.cancelled and p.send_at > earliest]
        return cancellations(
            new_events, pending, rule, now, lambda _event, p, _reason: bool(self._cancel([p.exposure_id]))
        )


class FrozenStore(MemoryStore):
    """The pipeline without its store's work, for benchmarks: a customer's snapshot is read once from
    ``source`` (another store's ``load_snapshot``, or a function returning a prepared one) and returned
    as is from then on; a decision is answered as written, every preemption taking effect, and not kept,
    so histories do not grow with the decisions made. Events are kept as ``MemoryStore`` keeps them, and
    snapshots already read do not see them."""

    def __init__(self, source: SnapshotSource) -> None:
        super().__init__()
        self._source = source
        self._snapshots: dict[str, CustomerSnapshot] = {}

    def load_snapshot(self, user_id: str, now: datetime, products: Sequence[str] = ()) -> CustomerSnapshot:
        """The customer as ``source`` gave them the first time they were asked for."""
        snapshot = self._snapshots.get(user_id)
        if snapshot is None:
            snapshot = self._snapshots[user_id] = self._source(user_id, now, products)
        return snapshot

    def save_decision(
        self,
        decision: Decision,
        fingerprint: str,
        decided_at: datetime,
        version: int | None = None,
        deadline: float | None = None,  # nothing queues here: a write is done at once
    ) -> SavedDecision:
        """Inserted, with all its preemptions, and forgotten."""
        return SavedDecision(True, frozenset(c.exposure_id for c in decision.cancelled))


_memory_satisfies_the_contract: type[DecisionStore] = MemoryStore
_frozen_satisfies_the_contract: type[DecisionStore] = FrozenStore
