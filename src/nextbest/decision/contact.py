"""Contact-policy checks that depend on the candidate alone (before experiments and arbitration):
engagement suppression, the conflict check between journeys, flow steps, cooldowns and inventory.
Caps and quiet hours depend on the send time and on what else is chosen: they run in arbitration."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from nextbest.catalog import Action, Catalog, Flow
from nextbest.domain import DecisionRequest, EventType, ReasonCode
from nextbest.eligibility.gates import GateFailure
from nextbest.state import CustomerSnapshot, Journey, PastExposure, journey_in

__all__ = ["JourneyBook", "contact_failure", "step_delay"]


def _at(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else "never"


class JourneyBook:
    """The customer's journey in every flow, computed on demand from history grouped by flow once."""

    def __init__(self, catalog: Catalog, snapshot: CustomerSnapshot, trigger: str, now: datetime) -> None:
        self._catalog, self._snapshot, self._trigger, self._now = catalog, snapshot, trigger, now
        by_flow: dict[str, list[PastExposure]] = {}
        for p in snapshot.history:
            by_flow.setdefault(p.flow, []).append(p)
        self._by_flow = by_flow
        self._journeys: dict[str, Journey] = {}
        self._higher: dict[str, tuple[Flow, Journey] | None] = {}

    def __getitem__(self, flow_id: str) -> Journey:
        journey = self._journeys.get(flow_id)
        if journey is None:
            flow = self._catalog.flows[flow_id]
            journey = journey_in(
                flow, self._snapshot, self._trigger, self._now, self._by_flow.get(flow_id, ())
            )
            self._journeys[flow_id] = journey
        return journey

    def higher_journey(self, flow: Flow) -> tuple[Flow, Journey] | None:
        """An ongoing journey (entered before now, still active) in a flow that outranks ``flow``."""
        if flow.id not in self._higher:
            found = None
            for other in self._catalog.flows_by_rank:
                if other.rank() >= flow.rank():
                    break
                if not other.is_journey or other.id == flow.id:
                    continue
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


def contact_failure(
    action: Action,
    flow: Flow,
    journey: Journey,
    *,
    book: JourneyBook,
    catalog: Catalog,
    snapshot: CustomerSnapshot,
    request: DecisionRequest,
    now: datetime,
) -> GateFailure | None:
    """The first contact-policy check ``action`` fails, or None."""
    state = snapshot.state
    engagement = catalog.policy.engagement
    if engagement is not None and action.action_class in engagement.classes:
        since = now - engagement.window
        known = state.first_seen_at is not None and state.first_seen_at <= since
        if known and (state.last_engagement_at is None or state.last_engagement_at < since):
            days = engagement.window.total_seconds() / 86400
            return GateFailure(
                ReasonCode.UNENGAGED,
                f"no opens or clicks in the last {days:g} days (last engagement: "
                f"{_at(state.last_engagement_at)}); {action.action_class.value} actions stop",
            )
    if flow.is_journey and journey.new:
        higher = book.higher_journey(flow)
        if higher is not None:
            other, theirs = higher
            return GateFailure(
                ReasonCode.IN_HIGHER_JOURNEY,
                f"mid-journey in {other.id} ({other.action_class.value}, priority {other.priority}, "
                f"entered at {_at(theirs.entered_at)}); not entered into {flow.id} "
                f"({flow.action_class.value}, priority {flow.priority})",
            )
    if action.step is not None:
        failure = _step_failure(action, flow, journey, now)
        if failure is not None:
            return failure
    if action.cooldown:
        at = now + step_delay(action, flow, journey, now)
        for p in snapshot.history:
            if p.action_id == action.id and not p.cancelled and abs(p.send_at - at) < action.cooldown:
                return GateFailure(
                    ReasonCode.COOLDOWN,
                    f"{action.id} was sent for {_at(p.send_at)}; cooldown "
                    f"{action.cooldown.total_seconds() / 86400:g} days",
                )
    if action.inventory == "in_stock" and request.context.product_ids:
        told = set(request.context.out_of_stock_product_ids)
        out = [p for p in request.context.product_ids if p in told or p in snapshot.out_of_stock]
        if out:
            return GateFailure(ReasonCode.OUT_OF_STOCK, f"out of stock: {', '.join(sorted(set(out)))}")
    return None


def _step_failure(action: Action, flow: Flow, journey: Journey, now: datetime) -> GateFailure | None:
    index = action.step
    assert index is not None and journey.entered_at is not None
    if index in journey.steps_done:
        return GateFailure(
            ReasonCode.NOT_DUE, f"step {index + 1} of {flow.id} was already sent in this journey"
        )
    if journey.last_step > index:
        return GateFailure(
            ReasonCode.NOT_DUE,
            f"step {index + 1} of {flow.id} was passed: step {journey.last_step + 1} was sent",
        )
    due = journey.entered_at + flow.steps[index].after
    if index > 0 and now < due:
        return GateFailure(ReasonCode.NOT_DUE, f"step {index + 1} of {flow.id} is due at {_at(due)}")
    later = [s for s in flow.steps[index + 1 :] if journey.entered_at + s.after <= now]
    if later:
        return GateFailure(
            ReasonCode.NOT_DUE, f"step {index + 1} of {flow.id} was passed: step {later[-1].index + 1} is due"
        )
    return None


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
