"""How the simulated store talks to nextbest: over gRPC as a backend service would, or to the decision
engine in the same process (for training data and policy benchmarks, where the transport is not the
point). Both speak the simulator's small vocabulary below."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from nextbest.api.v1 import decision_service_pb2 as pb
from nextbest.client import NextbestClient, make_event
from nextbest.decision.engine import DecisionEngine
from nextbest.domain import (
    ActionClass,
    Channel,
    ChosenAction,
    DecisionRequest,
    Event,
    EventType,
    RequestContext,
)
from nextbest.simulate.world import Message

__all__ = ["Backend", "Decided", "EngineBackend", "GrpcBackend", "SimEvent", "SimRequest"]


@dataclass(frozen=True, slots=True)
class SimRequest:
    request_id: str
    user_id: str
    trigger: str
    at: datetime
    channels: tuple[Channel, ...]
    cart_value: float | None = None
    product_ids: tuple[str, ...] = ()
    time_zone: str = ""
    max_actions: int = 2


@dataclass(frozen=True, slots=True)
class SimEvent:
    event_id: str
    user_id: str
    type: EventType
    at: datetime
    value: float = 0.0
    channel: Channel | None = None
    consent_granted: bool = False
    product_ids: tuple[str, ...] = ()
    decision_id: str = ""
    order_id: str = ""


@dataclass(frozen=True, slots=True)
class Decided:
    decision_id: str
    actions: list[Message]
    # (experiment, arm, message): what a held-out unit would have received
    held: list[tuple[str, str, Message]] = field(default_factory=list)
    # (experiment, arm, action id): the experiments covering each delivered action
    scoped: list[tuple[str, str, str]] = field(default_factory=list)
    # (decision id, action id) of earlier pending actions this decision preempted
    cancelled: list[tuple[str, str]] = field(default_factory=list)
    # action id -> when it was due (the decision's moment plus the action's delay): a fixed hour's send
    due: dict[str, datetime] = field(default_factory=dict)


class Backend(Protocol):
    def decide(self, request: SimRequest) -> Decided: ...

    def record(self, events: Sequence[SimEvent]) -> list[tuple[str, str]]:
        """Stores the events; returns the (decision id, action id) of pending actions they cancelled."""
        ...


class EngineBackend:
    """The decision engine in this process."""

    def __init__(self, engine: DecisionEngine) -> None:
        self.engine = engine
        self.delays = {a.id: a.delay for a in engine.catalog.actions}

    def decide(self, request: SimRequest) -> Decided:
        decision = self.engine.decide(
            DecisionRequest(
                request_id=request.request_id,
                user_id=request.user_id,
                trigger=request.trigger,
                occurred_at=request.at,
                context=RequestContext(
                    cart_value=request.cart_value,
                    product_ids=request.product_ids,
                    time_zone=request.time_zone,
                ),
                channels=request.channels,
                max_actions=request.max_actions,
            )
        )

        def message(a: ChosenAction) -> Message:
            marketing = a.action_class is not ActionClass.TRANSACTIONAL
            return Message(a.action_id, a.flow, a.channel, a.send_at, dict(a.parameters), marketing)

        return Decided(
            decision.decision_id,
            [message(a) for a in decision.actions],
            [(e.experiment_id, e.arm_id, message(e.action)) for e in decision.exposures if e.held_out],
            [(e.experiment_id, e.arm_id, e.action.action_id) for e in decision.exposures if not e.held_out],
            [(c.decision_id, c.action_id) for c in decision.cancelled],
            _due(request.at, self.delays, [a.action_id for a in decision.actions], decision.exposures),
        )

    def record(self, events: Sequence[SimEvent]) -> list[tuple[str, str]]:
        results = self.engine.record_events(
            [
                Event(
                    e.event_id,
                    e.user_id,
                    e.type,
                    e.at,
                    value=e.value,
                    channel=e.channel,
                    consent_granted=e.consent_granted,
                    product_ids=e.product_ids,
                    decision_id=e.decision_id,
                    order_id=e.order_id,
                )
                for e in events
            ]
        )
        problems = [r for r in results if r.violations]
        if problems:
            raise RuntimeError(f"the simulator sent a bad event: {problems[0]}")
        return [(c.decision_id, c.action_id) for r in results for c in r.cancelled]


def _due(
    at: datetime, delays: Mapping[str, timedelta], action_ids: Sequence[str], exposures: Sequence[Any] = ()
) -> dict[str, datetime]:
    """When each action (sent or held out) was due: the decision's moment plus the action's delay."""
    ids = [*action_ids, *(e.action.action_id for e in exposures)]
    return {a: at + delays.get(a, timedelta(0)) for a in ids}


_CHANNEL_FROM = {pb.Channel.Value(f"CHANNEL_{c.name}"): c for c in Channel}
_TRANSACTIONAL = pb.ActionClass.Value("ACTION_CLASS_TRANSACTIONAL")


def _message(a: pb.ChosenAction | pb.ExperimentAssignment, flow: str, marketing: bool) -> Message:
    send_at = a.send_at.ToDatetime(tzinfo=UTC)
    return Message(a.action_id, flow, _CHANNEL_FROM[a.channel], send_at, dict(a.parameters), marketing)


class GrpcBackend:
    """A nextbest server over gRPC, through the typed client — the way a backend service calls it."""

    def __init__(
        self,
        client: NextbestClient,
        flows: Mapping[str, str] | None = None,
        delays: Mapping[str, timedelta] | None = None,
    ) -> None:
        self.client = client
        # action id -> flow, for held-out actions (the assignment names the action, not its flow)
        self.flows = dict(flows or {})
        # action id -> its declared delay, for when each action was due
        self.delays = dict(delays or {})

    def decide(self, request: SimRequest) -> Decided:
        reply = self.client.next_action(
            request.user_id,
            request.trigger,
            request_id=request.request_id,
            occurred_at=request.at,
            cart_value=request.cart_value,
            product_ids=request.product_ids,
            time_zone=request.time_zone,
            channels=[c.value for c in request.channels],
            max_actions=request.max_actions,
        )
        actions = [_message(a, a.flow, a.action_class != _TRANSACTIONAL) for a in reply.actions]
        flows = {a.action_id: a.flow for a in reply.actions}
        return Decided(
            reply.decision_id,
            actions,
            [
                (a.experiment_id, a.arm_id, _message(a, self.flows.get(a.action_id, ""), True))
                for a in reply.assignments
                if a.held_out
            ],
            [
                (a.experiment_id, a.arm_id, a.action_id)
                for a in reply.assignments
                if not a.held_out and a.action_id in flows
            ],
            [(c.decision_id, c.action_id) for c in reply.cancelled],
            _due(request.at, self.delays, [*flows, *(a.action_id for a in reply.assignments)]),
        )

    def record(self, events: Sequence[SimEvent]) -> list[tuple[str, str]]:
        batch = [
            make_event(
                e.type.value,
                e.user_id,
                e.at,
                event_id=e.event_id,
                channel=e.channel.value if e.channel is not None else None,
                value=e.value,
                consent_granted=e.consent_granted,
                product_ids=list(e.product_ids),
                decision_id=e.decision_id,
                order_id=e.order_id,
            )
            for e in events
        ]
        reply = self.client.record_events(batch)
        if reply.rejected:
            bad = next(r for r in reply.results if r.errors)
            raise RuntimeError(f"the server rejected a simulated event: {bad}")
        return [(c.decision_id, c.action_id) for r in reply.results for c in r.cancelled]
