"""What the customer was sent before, and where they are in each flow's journey."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from nextbest.catalog import Flow
from nextbest.domain import ActionClass, Channel, EventType
from nextbest.state.customer import CustomerState

__all__ = ["CustomerSnapshot", "Journey", "PastExposure", "journey_in"]


@dataclass(frozen=True, slots=True)
class PastExposure:
    """One action chosen for the customer by an earlier decision."""

    decision_id: str
    action_id: str
    flow: str
    channel: Channel
    action_class: ActionClass
    trigger: str
    occurred_at: datetime
    send_at: datetime


@dataclass(frozen=True, slots=True)
class CustomerSnapshot:
    """Everything the pipeline knows about a customer at decision time."""

    state: CustomerState
    history: Sequence[PastExposure] = ()


@dataclass(frozen=True, slots=True)
class Journey:
    active: bool
    entered_at: datetime | None = None
    steps_sent: int = 0
    exit_event: EventType | None = None
    exited_at: datetime | None = None

    def hours_since_entry(self, now: datetime) -> float:
        return (now - self.entered_at).total_seconds() / 3600 if self.entered_at else -1.0


def journey_in(flow: Flow, snapshot: CustomerSnapshot, trigger: str, now: datetime) -> Journey:
    """The customer's journey in ``flow`` as of ``now``.

    An entry trigger starts a new journey now. Otherwise the journey started at the latest entry: an
    entry-trigger event recorded for the customer, or an earlier decision in this flow made for an entry
    trigger. It has exited when one of the flow's exit events happened after it started.
    """
    if trigger in flow.entry_triggers:
        return Journey(active=True, entered_at=now)
    entries = [
        at
        for name in flow.entry_triggers
        if name in _EVENT_TYPES and (at := snapshot.state.last_events.get(EventType(name))) and at <= now
    ]
    entries += [
        p.occurred_at
        for p in snapshot.history
        if p.flow == flow.id and p.trigger in flow.entry_triggers and p.occurred_at <= now
    ]
    if not entries:
        return Journey(active=False)
    entered_at = max(entries)
    steps = sum(1 for p in snapshot.history if p.flow == flow.id and entered_at <= p.occurred_at <= now)
    for kind in sorted(flow.exit_on):
        at = snapshot.state.last_events.get(kind)
        if at is not None and entered_at < at <= now:
            return Journey(False, entered_at, steps, exit_event=kind, exited_at=at)
    return Journey(active=True, entered_at=entered_at, steps_sent=steps)


_EVENT_TYPES = frozenset(e.value for e in EventType)
