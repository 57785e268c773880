"""The SQL store (SQLite, PostgreSQL): decisions, customers and events, and the experiment registry.

:class:`Store` is what the server, the CLI and the simulator open; it composes one part per thing it
stores, sharing one :class:`~nextbest.store.backend.Backend`:

- ``decisions`` (``nextbest.store.decisions``): decisions, exposures, assignments, through the group
  commit;
- ``customers`` (``nextbest.store.customers``): snapshots, and events folded into customers and
  inventory;
- ``experiments`` (``nextbest.store.registry``): the experiment registry and units per arm.

With ``ids`` hashing (``nextbest.store.pseudonyms``), customer, request, event and order ids are stored
as keyed digests: this facade maps them on the way in and gives callers back the ids they sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from nextbest.domain import Cancellation, Decision, Event, EventOutcome
from nextbest.errors import NextbestError
from nextbest.experiments import Experiment
from nextbest.state import CancelRule, CustomerSnapshot
from nextbest.store.backend import Backend
from nextbest.store.contract import DecisionStore, SavedDecision, SnapshotWanted, StoredDecision, ToSave
from nextbest.store.customers import CustomerLog
from nextbest.store.database import Database
from nextbest.store.decisions import DecisionLog
from nextbest.store.pseudonyms import CustomerIds
from nextbest.store.registry import ExperimentRegistry

__all__ = ["Store"]


class Store:
    """SQL persistence for the pipeline. Every method raises :class:`StoreUnavailableError` when the
    database fails, so callers never mistake a failed write for a success.

    ``writer`` is the group commit decisions go through; ``max_batch`` the most decisions it writes in
    one transaction; ``ids`` how customer ids are stored (raw by default)."""

    def __init__(self, db: Database, max_batch: int = 256, ids: CustomerIds | None = None) -> None:
        self.db = db
        self.ids = ids or CustomerIds()
        self._backend = Backend.of(db)
        self.decisions = DecisionLog(self._backend, max_batch)
        self.customers = CustomerLog(self._backend)
        self.experiments = ExperimentRegistry(self._backend)
        self.writer = self.decisions.writer
        self._checkpointer = db.checkpointer(writers=self.writer.commit_lock)

    def close(self) -> None:
        """Every acknowledged write has already committed; this folds the WAL in and releases the
        connections."""
        self._backend.close()
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self.db.dispose()

    def load_snapshot(self, user_id: str, now: datetime, products: Sequence[str] = ()) -> CustomerSnapshot:
        """The customer's state, the actions chosen for them in the last 90 days (newest 500, cancelled
        ones marked) and which of ``products`` the latest inventory events mark out of stock."""
        if not self.ids.hashing:
            return self.customers.load_snapshot(user_id, now, products)
        snapshot = self.customers.load_snapshot(self.ids.stored(user_id), now, products)
        # Assignment hashes the raw id: the stored digest must not reach the pipeline.
        return replace(snapshot, state=replace(snapshot.state, user_id=user_id))

    def load_snapshots(self, wanted: Sequence[SnapshotWanted]) -> list[CustomerSnapshot]:
        """``load_snapshot`` for each item (distinct customers), in order, in three reads in all."""
        if not self.ids.hashing:
            return self.customers.load_snapshots(wanted)
        snapshots = self.customers.load_snapshots(
            [w._replace(user_id=self.ids.stored(w.user_id)) for w in wanted]
        )
        # Assignment hashes the raw id: the stored digest must not reach the pipeline.
        return [
            replace(s, state=replace(s.state, user_id=w.user_id))
            for w, s in zip(wanted, snapshots, strict=True)
        ]

    def save_decision(
        self,
        decision: Decision,
        fingerprint: str,
        decided_at: datetime,
        version: int | None = None,
        deadline: float | None = None,
    ) -> SavedDecision:
        """Durably writes the decision, its exposures and its preemptions (group commit), atomically,
        while the customer's version is still ``version`` (see ``DecisionLog.save_decision``)."""
        return self.decisions.save_decision(
            self.ids.decision(decision), fingerprint, decided_at, version, deadline
        )

    def save_decisions(self, items: Sequence[ToSave]) -> list[SavedDecision | NextbestError]:
        """Writes each decision as ``save_decision`` does, all queued at once in the group commit; one
        result per item, an item's failure its own."""
        decision = self.ids.decision
        return self.decisions.save_decisions(
            [item._replace(decision=decision(item.decision)) for item in items]
        )

    def find_decision(self, request_id: str) -> StoredDecision | None:
        """The decision stored for ``request_id``, if any."""
        found = self.decisions.find_decision(self.ids.stored(request_id))
        if found is None or not self.ids.hashing:
            return found
        # The caller's request id back; the stored customer digest stays (a replay never reads it).
        return replace(found, decision=replace(found.decision, request_id=request_id))

    def find_decisions(self, request_ids: Sequence[str]) -> dict[str, StoredDecision]:
        """The decisions stored for those of ``request_ids`` that have one, by (the caller's) request
        id, in one read."""
        if not self.ids.hashing:
            return self.decisions.find_decisions(request_ids)
        stored = {self.ids.stored(r): r for r in request_ids}
        return {
            stored[key]: replace(found, decision=replace(found.decision, request_id=stored[key]))
            for key, found in self.decisions.find_decisions(list(stored)).items()
        }

    def record_events(
        self, batch: Sequence[Event], received_at: datetime, cancel_rule: CancelRule | None = None
    ) -> list[tuple[EventOutcome, tuple[Cancellation, ...]]]:
        """Stores the events (deduplicated by ``event_id``), folds new ones into customer state and
        inventory and cancels what ``cancel_rule`` says they end, in one transaction."""
        if self.ids.hashing:
            batch = [self.ids.event(e) for e in batch]
        return self.customers.record_events(batch, received_at, cancel_rule)

    def register_experiments(
        self, running: Sequence[Experiment], now: datetime, *, write: bool = True
    ) -> list[str]:
        """Refuses a started experiment changed under the same seed, else records the definitions
        (unless ``write`` is False); returns the problems."""
        return self.experiments.register_experiments(running, now, write=write)

    def arm_units(self, experiment_id: str) -> dict[str, int]:
        """Distinct units per arm (a unit seen in several arms is counted under ``"__multiple__"``)."""
        return self.experiments.arm_units(experiment_id)


_satisfies_the_contract: type[DecisionStore] = Store
