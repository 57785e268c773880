"""What the customer was sent before, and where they are in each flow's journey."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from nextbest.catalog import Flow
from nextbest.domain import ActionClass, Channel, EventType
from nextbest.state.customer import CustomerState

__all__ = ["CustomerSnapshot", "Journey", "PastExposure", "journey_in"]


@dataclass(frozen=True, slots=True)
class PastExposure:
    """One action chosen for the customer by an earlier decision. It is pending until ``send_at``; a
    cancelled one (preempted, or its flow exited) was never sent and counts for nothing."""

    decision_id: str
    action_id: str
    flow: str
    channel: Channel
    action_class: ActionClass
    trigger: str
    occurred_at: datetime
    send_at: datetime
    exposure_id: int = 0
    cancelled: bool = False

    def pending(self, now: datetime) -> bool:
        return not self.cancelled and self.send_at > now


@dataclass(frozen=True, slots=True)
class CustomerSnapshot:
    """Everything the pipeline knows about a customer at decision time. ``history`` is newest first."""

    state: CustomerState
    history: Sequence[PastExposure] = ()
    # Products the latest inventory events mark out of stock, among those the request names.
    out_of_stock: frozenset[str] = frozenset()
    # The customer row's version when it was read (0: no row yet); a decision that acts on this snapshot
    # commits only while the version is unchanged.
    version: int = 0


@dataclass(frozen=True, slots=True)
class Journey:
    """The customer's journey in one flow. ``new`` when this decision's trigger starts it; ``blocked_until``
    when an entry trigger came inside the re-entry window of a journey that has ended."""

    active: bool
    entered_at: datetime | None = None
    steps_sent: int = 0
    exit_event: EventType | None = None
    exited_at: datetime | None = None
    new: bool = False
    steps_done: frozenset[int] = frozenset()
    ends_at: datetime | None = None
    blocked_until: datetime | None = None

    def hours_since_entry(self, now: datetime) -> float:
        return (now - self.entered_at).total_seconds() / 3600 if self.entered_at else -1.0

    @property
    def last_step(self) -> int:
        return max(self.steps_done, default=-1)


def journey_in(
    flow: Flow,
    snapshot: CustomerSnapshot,
    trigger: str,
    now: datetime,
    history: Sequence[PastExposure] | None = None,
) -> Journey:
    """The customer's journey in ``flow`` as of ``now``.

    Entries are the decisions that sent something in the flow for one of its entry triggers and the latest
    entry-trigger event recorded for the customer. Walking them in time, an entry starts a new journey
    unless it falls inside the flow's re-entry window after the current journey's start. A journey is
    active from its start until an exit event, or until the flow's duration has passed. An entry trigger
    now starts a new journey under the same rule. ``history`` is the flow's share of the snapshot's, when
    the caller has grouped it already.
    """
    source = snapshot.history if history is None else history
    past = [p for p in source if p.flow == flow.id and not p.cancelled and p.occurred_at <= now]
    entries = [p.occurred_at for p in past if p.trigger in flow.entry_triggers]
    entries += [
        at
        for name in flow.entry_triggers
        if name in _EVENT_TYPES and (at := snapshot.state.last_events.get(EventType(name))) and at <= now
    ]
    start: datetime | None = None
    for at in sorted(entries):
        if start is None or at >= start + flow.reentry:
            start = at
    if trigger in flow.entry_triggers:
        if start is None or now >= start + flow.reentry:
            return Journey(active=True, entered_at=now, new=True, ends_at=now + flow.duration)
        ended = _ended(flow, snapshot, past, start, now)
        if ended is not None:  # inside the re-entry window of a finished journey: no new one yet
            return replace(ended, blocked_until=start + flow.reentry)
    if start is None:
        return Journey(active=False)
    ended = _ended(flow, snapshot, past, start, now)
    if ended is not None:
        return ended
    since = [p for p in past if p.occurred_at >= start]
    done = frozenset(s for p in since if (s := _step_of(flow, p.action_id)) is not None)
    return Journey(
        active=True,
        entered_at=start,
        steps_sent=len(since),
        steps_done=done,
        ends_at=start + flow.duration,
    )


def _ended(
    flow: Flow, snapshot: CustomerSnapshot, past: Sequence[PastExposure], start: datetime, now: datetime
) -> Journey | None:
    sent = sum(1 for p in past if p.occurred_at >= start)
    for kind in sorted(flow.exit_on):
        at = snapshot.state.last_events.get(kind)
        if at is not None and start < at <= now:
            return Journey(False, start, sent, exit_event=kind, exited_at=at, ends_at=at)
    if now >= start + flow.duration:
        return Journey(False, start, sent, ends_at=start + flow.duration)
    return None


def _step_of(flow: Flow, action_id: str) -> int | None:
    for step in flow.steps:
        if action_id in step.actions:
            return step.index
    return None


_EVENT_TYPES = frozenset(e.value for e in EventType)
