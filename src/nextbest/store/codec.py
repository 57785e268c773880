"""How domain objects are stored: JSON payloads for decisions and customer state columns."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any

from nextbest.domain import (
    ActionClass,
    Cancellation,
    Channel,
    ChosenAction,
    Decision,
    EventType,
    ExperimentExposure,
    ReasonCode,
    Rejection,
    SendTimeSource,
)
from nextbest.state import ChannelState, CustomerState

__all__ = [
    "cancellation_from_json",
    "cancellation_json",
    "channels_to_json",
    "decision_from_row",
    "decision_payload",
    "engagement_hours_to_json",
    "last_events_to_json",
    "state_from_row",
]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def decision_payload(decision: Decision) -> dict[str, Any]:
    return {
        "actions": [_action_json(a) for a in decision.actions],
        # Rows, not objects: a decision rejects most candidates and this is encoded on every call. The
        # enums are StrEnums, which JSON encodes as their values (``.value`` would cost more here).
        "rejected": [
            [r.action_id, r.flow, r.channel, r.action_class, r.reason, r.detail] for r in decision.rejected
        ],
        "exposures": [exposure_row(e) for e in decision.exposures],
        **({"cancelled": [cancellation_json(c) for c in decision.cancelled]} if decision.cancelled else {}),
        **({"models": dict(decision.models)} if decision.models else {}),
    }


def cancellation_json(c: Cancellation) -> dict[str, Any]:
    return {
        "exposure_id": c.exposure_id,
        "decision_id": c.decision_id,
        "action_id": c.action_id,
        "flow": c.flow,
        "channel": str(c.channel),
        "action_class": str(c.action_class),
        "send_at": c.send_at.isoformat(),
        "reason": c.reason,
    }


def cancellation_from_json(c: Mapping[str, Any]) -> Cancellation:
    return Cancellation(
        c["decision_id"],
        c["action_id"],
        c["flow"],
        Channel(c["channel"]),
        ActionClass(c["action_class"]),
        datetime.fromisoformat(c["send_at"]),
        c["reason"],
        c["exposure_id"],
    )


def _action_json(a: ChosenAction) -> dict[str, Any]:
    return {
        "action_id": a.action_id,
        "flow": a.flow,
        "channel": str(a.channel),
        "action_class": str(a.action_class),
        "send_at": a.send_at.isoformat(),
        "parameters": dict(a.parameters),
        "score": a.score,
        **({"send_time": a.send_time.value} if a.send_time is not SendTimeSource.FIXED else {}),
    }


def _action_from_json(a: Mapping[str, Any]) -> ChosenAction:
    return ChosenAction(
        action_id=a["action_id"],
        flow=a["flow"],
        channel=Channel(a["channel"]),
        action_class=ActionClass(a["action_class"]),
        send_at=datetime.fromisoformat(a["send_at"]),
        parameters=a["parameters"],
        score=a["score"],
        send_time=SendTimeSource(a.get("send_time", "fixed")),
    )


def exposure_row(e: ExperimentExposure) -> dict[str, Any]:
    """An experiment exposure, flat, as stored (in the ``assignments`` table and the decision payload)."""
    return {
        "experiment_id": e.experiment_id,
        "arm_id": e.arm_id,
        "bucket": e.bucket,
        "hash_version": e.hash_version,
        "seed": e.seed,
        "probability": e.probability,
        "held_out": e.held_out,
        **_action_json(e.action),
    }


def decision_from_row(row: Mapping[Any, Any]) -> Decision:
    payload = row["payload"]
    return Decision(
        decision_id=row["decision_id"],
        request_id=row["request_id"],
        user_id=row["user_id"],
        trigger=row["trigger"],
        occurred_at=row["occurred_at"],
        catalog_version=row["catalog_version"],
        actions=tuple(_action_from_json(a) for a in payload["actions"]),
        rejected=tuple(
            Rejection(action_id, flow, Channel(channel), ActionClass(cls), ReasonCode(reason), detail)
            for action_id, flow, channel, cls, reason, detail in payload["rejected"]
        ),
        replayed=True,
        exposures=tuple(
            ExperimentExposure(
                e["experiment_id"],
                e["arm_id"],
                e["bucket"],
                e["hash_version"],
                e["seed"],
                e["probability"],
                e["held_out"],
                _action_from_json(e),
            )
            for e in payload.get("exposures", ())
        ),
        cancelled=tuple(cancellation_from_json(c) for c in payload.get("cancelled", ())),
        models=payload.get("models", {}),
    )


def channels_to_json(channels: Mapping[Channel, ChannelState]) -> dict[str, Any]:
    return {
        ch.value: {
            "consent": s.consent,
            "consent_at": _iso(s.consent_at),
            "opted_in_at": _iso(s.opted_in_at),
            "unsubscribed_at": _iso(s.unsubscribed_at),
            "hard_bounced_at": _iso(s.hard_bounced_at),
            "complained_at": _iso(s.complained_at),
        }
        for ch, s in channels.items()
    }


def last_events_to_json(last_events: Mapping[EventType, datetime]) -> dict[str, str]:
    return {kind.value: at.isoformat() for kind, at in last_events.items()}


def engagement_hours_to_json(hours: Mapping[int, int]) -> dict[str, int]:
    return {str(k): v for k, v in sorted(hours.items())}


def state_from_row(row: Mapping[Any, Any]) -> CustomerState:
    channels = {
        Channel(name): ChannelState(
            consent=s["consent"],
            consent_at=_time(s["consent_at"]),
            opted_in_at=_time(s["opted_in_at"]),
            unsubscribed_at=_time(s["unsubscribed_at"]),
            hard_bounced_at=_time(s["hard_bounced_at"]),
            complained_at=_time(s["complained_at"]),
        )
        for name, s in row["channels"].items()
    }
    return CustomerState(
        user_id=row["user_id"],
        first_seen_at=row["first_seen_at"],
        orders_count=row["orders_count"],
        refunds_count=row["refunds_count"],
        revenue_total=row["revenue_total"],
        last_order_at=row["last_order_at"],
        last_engagement_at=row["last_engagement_at"],
        channels=MappingProxyType(channels),
        last_events=MappingProxyType(
            {EventType(k): datetime.fromisoformat(v) for k, v in row["last_events"].items()}
        ),
        engagement_hours=MappingProxyType(
            {int(k): int(v) for k, v in (row.get("engagement_hours") or {}).items()}
        ),
    )
