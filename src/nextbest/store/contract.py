"""The store contract: what the decision engine needs from persistence, and nothing more.

``nextbest.store.Store`` (SQLite, PostgreSQL) satisfies it, and so do ``MemoryStore`` and ``FrozenStore``
(``nextbest.store.memory``), which tests and benchmarks use instead of stores of their own: mypy checks
each against this Protocol, so none can drift.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple, Protocol

from nextbest.domain import Cancellation, Decision, Event, EventOutcome
from nextbest.errors import NextbestError
from nextbest.state import CancelRule, CustomerSnapshot, PastExposure

__all__ = [
    "HISTORY_LIMIT",
    "HISTORY_WINDOW",
    "DecisionStore",
    "SavedDecision",
    "SnapshotWanted",
    "StoredDecision",
    "ToSave",
    "cancellations",
]

# The contact history a snapshot holds: the actions chosen in this window before ``now``, newest first,
# at most this many.
HISTORY_WINDOW = timedelta(days=90)
HISTORY_LIMIT = 500


@dataclass(frozen=True, slots=True)
class SavedDecision:
    """What writing a decision did. ``inserted`` is False when another decision already holds the
    request id (nothing was written); ``cancelled`` the exposure ids this decision's preemptions actually
    cancelled; ``conflict`` is True when the customer's state changed after the decision read it (nothing
    was written: decide again)."""

    inserted: bool
    cancelled: frozenset[int] = frozenset()
    conflict: bool = False

    def __bool__(self) -> bool:
        return self.inserted


@dataclass(frozen=True, slots=True)
class StoredDecision:
    """A decision as stored, with the fingerprint of the request that made it (for replays)."""

    decision: Decision
    fingerprint: str


class SnapshotWanted(NamedTuple):
    """One customer for ``DecisionStore.load_snapshots``: ``load_snapshot``'s arguments."""

    user_id: str
    now: datetime
    products: Sequence[str] = ()


class ToSave(NamedTuple):
    """One decision for ``DecisionStore.save_decisions``: ``save_decision``'s arguments."""

    decision: Decision
    fingerprint: str
    decided_at: datetime
    version: int | None = None
    deadline: float | None = None


class DecisionStore(Protocol):
    """Every method raises ``StoreUnavailableError`` when the database fails: a failed write is never
    mistaken for a success."""

    def load_snapshot(self, user_id: str, now: datetime, products: Sequence[str] = ()) -> CustomerSnapshot:
        """The customer's state, contact history (``HISTORY_WINDOW``, newest first, at most
        ``HISTORY_LIMIT``, cancelled exposures marked) and which of ``products`` the latest inventory
        events mark out of stock, with the customer's version (0 when nothing is known of them)."""
        ...

    def load_snapshots(self, wanted: Sequence[SnapshotWanted]) -> list[CustomerSnapshot]:
        """``load_snapshot`` for each item (distinct customers), in order, read together where the
        store can (a batch of decisions)."""
        ...

    def save_decision(
        self,
        decision: Decision,
        fingerprint: str,
        decided_at: datetime,
        version: int | None = None,
        deadline: float | None = None,
    ) -> SavedDecision:
        """Durably writes the decision, its exposures and its preemptions, atomically; written only while
        the customer's version is still ``version`` (else ``conflict``), and not at all when the request
        id is taken (``inserted`` False). A store that queues writes raises ``DeadlineExceededError``,
        nothing written, when the caller's ``deadline`` (``time.monotonic()``) leaves too little time
        to commit once the write's turn comes."""
        ...

    def save_decisions(self, items: Sequence[ToSave]) -> list[SavedDecision | NextbestError]:
        """Writes each decision as ``save_decision`` does, together (a batch of decisions for distinct
        customers: one group commit where the store has one); one result per item, in order, an item
        the database refuses or fails failing alone with its error instead of raising."""
        ...

    def find_decision(self, request_id: str) -> StoredDecision | None:
        """The decision stored for ``request_id``, if any."""
        ...

    def find_decisions(self, request_ids: Sequence[str]) -> dict[str, StoredDecision]:
        """The decisions stored for those of ``request_ids`` that have one, by request id, in one read
        where the store can (a campaign run started again finds what it already decided)."""
        ...

    def record_events(
        self, batch: Sequence[Event], received_at: datetime, cancel_rule: CancelRule | None = None
    ) -> list[tuple[EventOutcome, tuple[Cancellation, ...]]]:
        """Stores the events (deduplicated by ``event_id``), folds new ones into customer state and
        inventory and cancels what ``cancel_rule`` says they end, in one transaction; ACCEPTED or
        DUPLICATE per event, with what it cancelled."""
        ...


def cancellations(
    new_events: Sequence[Event],
    pending: dict[str, list[PastExposure]],
    rule: CancelRule,
    now: datetime,
    cancel: Callable[[Event, PastExposure, str], bool],
) -> dict[str, tuple[Cancellation, ...]]:
    """What each new event cancels, for every store: walking the events in time, an event ends the
    customer's pending actions decided before it and not yet due that ``rule`` says it ends; ``cancel``
    records one (False when it was cancelled meanwhile). ``pending`` (user id -> exposures) is consumed."""
    out: dict[str, tuple[Cancellation, ...]] = {}
    for event in sorted(new_events, key=lambda e: (e.occurred_at or now, e.event_id)):
        at = event.occurred_at
        assert at is not None  # validated
        found = []
        for p in pending.get(event.user_id, ()):
            if p.cancelled or p.send_at <= at or p.occurred_at > at:
                continue
            reason = rule(event, p)
            if reason is not None and cancel(event, p, reason):
                found.append(p.cancellation(reason))
        if found:
            out[event.event_id] = tuple(found)
            done = {c.exposure_id for c in found}
            pending[event.user_id] = [p for p in pending[event.user_id] if p.exposure_id not in done]
    return out
