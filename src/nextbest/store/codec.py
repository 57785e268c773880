"""How domain objects are stored: every row the SQL store writes, and every domain object it reads back,
is mapped here (the JSON documents inside rows are ``nextbest.store.documents``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from nextbest.domain import (
    ActionClass,
    BounceKind,
    Channel,
    Decision,
    Event,
    EventType,
    ReasonCode,
    Rejection,
)
from nextbest.experiments import Experiment
from nextbest.state import CustomerState, PastExposure
from nextbest.store.documents import (
    action_from_json,
    cancellation_from_json,
    channels_from_json,
    channels_to_json,
    decision_payload,
    engagement_hours_from_json,
    engagement_hours_to_json,
    exposure_from_json,
    exposure_json,
    last_events_from_json,
    last_events_to_json,
)

__all__ = [
    "EVENT_COLUMNS",
    "PAST_EXPOSURE_COLUMNS",
    "STATE_COLUMNS",
    "VERSION_GUARD_COLUMNS",
    "assignment_rows",
    "cancellation_rows",
    "decision_from_row",
    "decision_row",
    "empty_customer_row",
    "event_row",
    "event_values",
    "experiment_row",
    "exposure_rows",
    "inventory_row",
    "past_exposure",
    "state_from_row",
    "state_row",
    "state_values",
    "version_guard_row",
]

# -- decisions ----------------------------------------------------------------------------------------


def decision_row(decision: Decision, fingerprint: str, decided_at: datetime) -> dict[str, Any]:
    """The ``decisions`` row."""
    return {
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


def exposure_rows(decision: Decision) -> list[dict[str, Any]]:
    """An ``exposures`` row per chosen action (the id and the cancellation columns are set later)."""
    return [
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


def assignment_rows(decision: Decision) -> list[dict[str, Any]]:
    """An ``assignments`` row per experiment exposure (the id is generated)."""
    common = {
        "decision_id": decision.decision_id,
        "user_id": decision.user_id,
        "occurred_at": decision.occurred_at,
        "catalog_version": decision.catalog_version,
    }
    return [
        {**exposure_json(e), **common, "send_at": e.action.send_at, "features": e.action.features or None}
        for e in decision.exposures
    ]


def cancellation_rows(decision: Decision) -> list[dict[str, Any]]:
    """The decision's preemptions, as the parameters of the statement cancelling one exposure."""
    return [
        {
            "b_exposure_id": c.exposure_id,
            "cancelled_at": decision.occurred_at,
            "cancelled_by": decision.decision_id,
            "cancel_reason": c.reason[:512],
        }
        for c in decision.cancelled
    ]


def decision_from_row(row: Mapping[Any, Any]) -> Decision:
    """A stored decision, as replayed to a retried request."""
    payload = row["payload"]
    return Decision(
        decision_id=row["decision_id"],
        request_id=row["request_id"],
        user_id=row["user_id"],
        trigger=row["trigger"],
        occurred_at=row["occurred_at"],
        catalog_version=row["catalog_version"],
        actions=tuple(action_from_json(a) for a in payload["actions"]),
        rejected=tuple(
            Rejection(action_id, flow, Channel(channel), ActionClass(cls), ReasonCode(reason), detail)
            for action_id, flow, channel, cls, reason, detail in payload["rejected"]
        ),
        replayed=True,
        exposures=tuple(exposure_from_json(e) for e in payload.get("exposures", ())),
        cancelled=tuple(cancellation_from_json(c) for c in payload.get("cancelled", ())),
        models=payload.get("models", {}),
    )


# The columns of a contact-history read, in the order :func:`past_exposure` takes them.
PAST_EXPOSURE_COLUMNS = (
    "decision_id",
    "action_id",
    "flow",
    "channel",
    "action_class",
    "trigger",
    "occurred_at",
    "send_at",
    "exposure_id",
    "cancelled_at",
)


def past_exposure(values: Sequence[Any]) -> PastExposure:
    """A history row (the ``PAST_EXPOSURE_COLUMNS`` of ``exposures``, in order) as a :class:`PastExposure`."""
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


# -- customers, events, inventory ---------------------------------------------------------------------

# A customer row as it is created before anything is known (the key and ``updated_at`` aside).
_EMPTY_CUSTOMER: dict[str, Any] = {
    "channels": {},
    "last_events": {},
    "engagement_hours": {},
    "orders_count": 0,
    "refunds_count": 0,
    "revenue_total": 0.0,
}
VERSION_GUARD_COLUMNS = ("user_id", "updated_at", *_EMPTY_CUSTOMER, "version")


def empty_customer_row(user_id: str, updated_at: datetime) -> dict[str, Any]:
    """The ``customers`` row of a customer nothing is known about yet."""
    return {"user_id": user_id, "updated_at": updated_at, **_EMPTY_CUSTOMER}


def version_guard_row(user_id: str, updated_at: datetime, version: int) -> dict[str, Any]:
    """The customer at the version after ``version`` (the ``VERSION_GUARD_COLUMNS``): the row as it is
    created if there is none (version 0)."""
    return {"user_id": user_id, "updated_at": updated_at, **_EMPTY_CUSTOMER, "version": version + 1}


def state_row(state: CustomerState, now: datetime) -> dict[str, Any]:
    """The ``customers`` columns an event batch rewrites (``STATE_COLUMNS``); ``b_user_id`` is the key."""
    return {"b_user_id": state.user_id, **dict(zip(STATE_COLUMNS, state_values(state, now), strict=True))}


def state_values(state: CustomerState, now: datetime) -> tuple[Any, ...]:
    """``state_row``'s values as a tuple in ``STATE_COLUMNS`` order (the events' write path binds
    these directly: no dict per customer)."""
    return (
        state.first_seen_at,
        now,
        state.orders_count,
        state.refunds_count,
        state.revenue_total,
        state.last_order_at,
        state.last_engagement_at,
        channels_to_json(state.channels),
        last_events_to_json(state.last_events),
        engagement_hours_to_json(state.engagement_hours),
    )


STATE_COLUMNS = (
    "first_seen_at",
    "updated_at",
    "orders_count",
    "refunds_count",
    "revenue_total",
    "last_order_at",
    "last_engagement_at",
    "channels",
    "last_events",
    "engagement_hours",
)


def state_from_row(row: Mapping[Any, Any]) -> CustomerState:
    return CustomerState(
        user_id=row["user_id"],
        first_seen_at=row["first_seen_at"],
        orders_count=row["orders_count"],
        refunds_count=row["refunds_count"],
        revenue_total=row["revenue_total"],
        last_order_at=row["last_order_at"],
        last_engagement_at=row["last_engagement_at"],
        channels=channels_from_json(row["channels"]),
        last_events=last_events_from_json(row["last_events"]),
        engagement_hours=engagement_hours_from_json(row.get("engagement_hours")),
    )


def event_row(event: Event, received_at: datetime) -> dict[str, Any]:
    """The ``events`` row."""
    return dict(zip(EVENT_COLUMNS, event_values(event, received_at), strict=True))


# The ``events`` columns the store writes (``seq`` is generated), in ``event_values`` order.
EVENT_COLUMNS = (
    "event_id",
    "user_id",
    "type",
    "occurred_at",
    "received_at",
    "value",
    "channel",
    "decision_id",
    "order_id",
    "details",
)


# An event's enums as they are stored (their values; a dict look-up costs less than ``.value``).
_TEXT: dict[Any, str] = {kind: kind.value for enum in (EventType, Channel, BounceKind) for kind in enum}


def event_values(event: Event, received_at: datetime) -> tuple[Any, ...]:
    """``event_row``'s values as a tuple in ``EVENT_COLUMNS`` order."""
    return (
        event.event_id,
        event.user_id,
        _TEXT.get(event.type, ""),
        event.occurred_at,
        received_at,
        event.value,
        _TEXT.get(event.channel),
        event.decision_id or None,
        event.order_id or None,
        {
            "consent_granted": event.consent_granted,
            "bounce_kind": _TEXT.get(event.bounce_kind),
            "product_ids": list(event.product_ids),
            "items": [
                {"product_id": i.product_id, "quantity": i.quantity, "unit_price": i.unit_price}
                for i in event.items
            ],
            "properties": dict(event.properties),
        },
    )


def inventory_row(event: Event, product_id: str) -> dict[str, Any]:
    """The ``inventory`` row an out_of_stock or back_in_stock event sets for one of its products."""
    return {
        "product_id": product_id,
        "in_stock": event.type is EventType.BACK_IN_STOCK,
        "changed_at": event.occurred_at,
        "event_id": event.event_id,
    }


# -- the experiment registry --------------------------------------------------------------------------


def experiment_row(exp: Experiment, now: datetime) -> dict[str, Any]:
    """The ``experiments`` columns that follow the definition (the key and ``first_seen_at`` aside)."""
    return {
        "seed": exp.seed,
        "hash_version": exp.hash_version,
        "fingerprint": exp.fingerprint,
        "definition": {"arms": [[a.id, a.weight] for a in exp.arms], "coverage": exp.coverage},
        "updated_at": now,
    }
