"""The JSON documents inside rows: a decision's payload, a customer's channels, latest events and
engagement hours. ``nextbest.store.codec`` puts them in rows and takes them out."""

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
    SendTimeSource,
)
from nextbest.state import ChannelState

__all__ = [
    "action_from_json",
    "cancellation_from_json",
    "cancellation_json",
    "channels_from_json",
    "channels_to_json",
    "decision_payload",
    "engagement_hours_from_json",
    "engagement_hours_to_json",
    "exposure_from_json",
    "exposure_json",
    "last_events_from_json",
    "last_events_to_json",
]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def decision_payload(decision: Decision) -> dict[str, Any]:
    """What a decision chose, rejected, exposed and cancelled, and the models it used."""
    return {
        "actions": [_action_json(a) for a in decision.actions],
        # Rows, not objects: a decision rejects most candidates and this is encoded on every call. The
        # enums are StrEnums, which JSON encodes as their values (``.value`` would cost more here).
        "rejected": [
            [r.action_id, r.flow, r.channel, r.action_class, r.reason, r.detail] for r in decision.rejected
        ],
        "exposures": [exposure_json(e) for e in decision.exposures],
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


def action_from_json(a: Mapping[str, Any]) -> ChosenAction:
    """A chosen action as stored (its features are not: they are logged with its exposure)."""
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


def exposure_json(e: ExperimentExposure) -> dict[str, Any]:
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


def exposure_from_json(e: Mapping[str, Any]) -> ExperimentExposure:
    return ExperimentExposure(
        e["experiment_id"],
        e["arm_id"],
        e["bucket"],
        e["hash_version"],
        e["seed"],
        e["probability"],
        e["held_out"],
        action_from_json(e),
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


def channels_from_json(channels: Mapping[str, Any]) -> Mapping[Channel, ChannelState]:
    return MappingProxyType(
        {
            Channel(name): ChannelState(
                consent=s["consent"],
                consent_at=_time(s["consent_at"]),
                opted_in_at=_time(s["opted_in_at"]),
                unsubscribed_at=_time(s["unsubscribed_at"]),
                hard_bounced_at=_time(s["hard_bounced_at"]),
                complained_at=_time(s["complained_at"]),
            )
            for name, s in channels.items()
        }
    )


def last_events_to_json(last_events: Mapping[EventType, datetime]) -> dict[str, str]:
    return {kind.value: at.isoformat() for kind, at in last_events.items()}


def last_events_from_json(last_events: Mapping[str, str]) -> Mapping[EventType, datetime]:
    return MappingProxyType({EventType(k): datetime.fromisoformat(v) for k, v in last_events.items()})


def engagement_hours_to_json(hours: Mapping[int, int]) -> dict[str, int]:
    return {str(k): v for k, v in sorted(hours.items())}


def engagement_hours_from_json(hours: Mapping[str, Any] | None) -> Mapping[int, int]:
    return MappingProxyType({int(k): int(v) for k, v in (hours or {}).items()})
