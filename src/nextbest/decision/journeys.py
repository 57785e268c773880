"""Where the customer is in each flow's journey, as the contact policy and the rules see it.

A journey is derived, never stored: from the decisions that sent something in the flow, the latest
entry-trigger and exit events in customer state, and the flow's duration and re-entry window.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from nextbest.catalog import Action, Catalog, Flow
from nextbest.domain import EventType
from nextbest.state import CustomerSnapshot, Journey, PastExposure

__all__ = ["FlowFacts", "JourneyBook", "journey_in", "journey_variables", "step_delay"]


class FlowFacts:
    """What journeys need of a catalog's flows, worked out once per catalog: each flow's entry triggers
    that are event types (looked up in the customer's latest events), and the journey flows that
    outrank it, most important first (the conflict check)."""

    def __init__(self, catalog: Catalog) -> None:
        self.flows = catalog.flows
        self.entry_events: dict[str, tuple[EventType, ...]] = {
            f.id: tuple(EventType(t) for t in f.entry_triggers if t in _EVENT_TYPES)
            for f in catalog.flows.values()
        }
        self.higher: dict[str, tuple[Flow, ...]] = {
            f.id: tuple(
                o for o in catalog.flows_by_rank if o.rank() < f.rank() and o.is_journey and o.id != f.id
            )
            for f in catalog.flows.values()
        }


class JourneyBook:
    """The customer's journey in every flow, computed on demand from history grouped by flow once."""

    def __init__(
        self,
        catalog: Catalog,
        snapshot: CustomerSnapshot,
        trigger: str,
        now: datetime,
        facts: FlowFacts | None = None,
    ) -> None:
        self._facts = facts if facts is not None else FlowFacts(catalog)
        self._snapshot, self._trigger, self._now = snapshot, trigger, now
        by_flow: dict[str, list[PastExposure]] = {}
        for p in snapshot.history:
            by_flow.setdefault(p.flow, []).append(p)
        self._by_flow = by_flow
        self._journeys: dict[str, Journey] = {}
        self._higher: dict[str, tuple[Flow, Journey] | None] = {}
        # The last journey entered now (``__getitem__``) and its flow's duration.
        self._entered: Journey | None = None
        self._entered_for = timedelta(0)
        # Nothing sent and no event recorded: no journey can have started before now (``journey_in``
        # finds no entry), so none is ongoing.
        self.none_ongoing = not snapshot.history and not snapshot.state.last_events

    def __getitem__(self, flow_id: str) -> Journey:
        journey = self._journeys.get(flow_id)
        if journey is None:
            facts = self._facts
            flow = facts.flows[flow_id]
            history = self._by_flow.get(flow_id)
            entry_events = facts.entry_events[flow_id]
            if history is None and not entry_events:
                # Nothing sent in the flow and no entry event to look up (most flows of most customers):
                # what ``journey_in`` answers then, without its walk.
                if self._trigger in flow.entry_triggers:
                    # Entered now: the same journey for every flow of the same duration (immutable, so
                    # shared; most flows of a catalog keep the default duration).
                    duration = flow.duration
                    journey = self._entered
                    if journey is None or self._entered_for != duration:
                        now = self._now
                        journey = Journey(active=True, entered_at=now, new=True, ends_at=now + duration)
                        self._entered, self._entered_for = journey, duration
                else:
                    journey = _NEVER
            else:
                journey = journey_in(
                    flow, self._snapshot, self._trigger, self._now, history or (), entry_events=entry_events
                )
            self._journeys[flow_id] = journey
        return journey

    def higher_journey(self, flow: Flow) -> tuple[Flow, Journey] | None:
        """An ongoing journey (entered before now, still active) in a flow that outranks ``flow``."""
        if self.none_ongoing:
            return None
        if flow.id not in self._higher:
            found = None
            for other in self._facts.higher[flow.id]:
                journey = self[other.id]
                if journey.active and not journey.new:
                    found = (other, journey)
                    break
            self._higher[flow.id] = found
        return self._higher[flow.id]


def step_delay(action: Action, flow: Flow, journey: Journey, now: datetime) -> timedelta:
    """How long after ``now`` a step's action is due (0 when due already); the action's delay otherwise."""
    if action.step is None or journey.entered_at is None:
        return action.delay
    due = journey.entered_at + flow.steps[action.step].after
    return max(due - now, timedelta(0))


def journey_in(
    flow: Flow,
    snapshot: CustomerSnapshot,
    trigger: str,
    now: datetime,
    history: Sequence[PastExposure] | None = None,
    *,
    entry_events: Sequence[EventType] | None = None,
) -> Journey:
    """The customer's journey in ``flow`` as of ``now``.

    Entries are the decisions that sent something in the flow for one of its entry triggers and the latest
    entry-trigger event recorded for the customer. Walking them in time, an entry starts a new journey
    unless it falls inside the flow's re-entry window after the current journey's start. A journey is
    active from its start until an exit event, or until the flow's duration has passed. An entry trigger
    now starts a new journey under the same rule. ``history`` is the flow's share of the snapshot's, when
    the caller has grouped it already, and ``entry_events`` its entry triggers that are event types
    (``FlowFacts``).
    """
    source = snapshot.history if history is None else history
    if entry_events is None:
        entry_events = [EventType(name) for name in flow.entry_triggers if name in _EVENT_TYPES]
    if source:
        # A send decided for a trigger that happened after ``now`` is in the history already when a call
        # for an earlier trigger arrives late (two calls for one customer decided out of their order, on
        # one replica or two): it was sent all the same, so it counts, as if it had happened at ``now``.
        # Left out, the earlier call would start the journey a second time.
        past = [p for p in source if p.flow == flow.id and not p.cancelled]
        entries = [min(p.occurred_at, now) for p in past if p.trigger in flow.entry_triggers]
    else:  # nothing sent in the flow: most flows of most customers
        past, entries = [], []
    if entry_events:
        last = snapshot.state.last_events
        entries += [at for kind in entry_events if (at := last.get(kind)) and at <= now]
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
        return _NEVER
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
# The journey of every flow a customer never entered: shared (it is frozen), most flows of most customers.
_NEVER = Journey(active=False)


def journey_variables(
    journey: Journey, state_events: Mapping[EventType, datetime], now: datetime
) -> dict[str, object]:
    """What CEL rules see as ``journey``."""
    entered = journey.entered_at

    def since_entry(kind: EventType) -> bool:
        at = state_events.get(kind)
        return entered is not None and at is not None and entered <= at <= now

    return {
        "active": journey.active,
        "hours_since_entry": journey.hours_since_entry(now),
        "steps_sent": journey.steps_sent,
        "opened": since_entry(EventType.OPENED),
        "clicked": since_entry(EventType.CLICKED),
    }
