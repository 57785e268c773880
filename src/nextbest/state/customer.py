"""Customer state as a fold over events: consent and suppression per channel, purchase aggregates and
the last time each event type happened.

Events can arrive late or out of order; consent and suppression changes only apply when they are newer
than what the state already holds, and aggregates are sums, so the fold's result does not depend on the
order events are recorded in. Deduplication by ``event_id`` happens before the fold (in the store).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType

from nextbest.domain import BounceKind, Channel, Event, EventType

__all__ = ["MESSAGING_CHANNELS", "ChannelState", "CustomerState", "Suppression", "apply_event"]

# Channels an unsubscribe without a channel applies to: the ones that send messages.
MESSAGING_CHANNELS = (Channel.EMAIL, Channel.SMS, Channel.PUSH)


class Suppression(StrEnum):
    UNSUBSCRIBED = "unsubscribed"
    HARD_BOUNCE = "hard_bounce"
    COMPLAINT = "complaint"

    @property
    def blocks_transactional(self) -> bool:
        """An unsubscribe ends marketing; an address that bounces hard or complains gets nothing at all."""
        return self is not Suppression.UNSUBSCRIBED


@dataclass(frozen=True, slots=True)
class ChannelState:
    consent: bool | None = None
    consent_at: datetime | None = None
    suppression: Suppression | None = None
    suppressed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CustomerState:
    user_id: str
    first_seen_at: datetime | None = None
    orders_count: int = 0
    refunds_count: int = 0
    revenue_total: float = 0.0
    last_order_at: datetime | None = None
    last_engagement_at: datetime | None = None
    channels: Mapping[Channel, ChannelState] = field(default_factory=lambda: MappingProxyType({}))
    last_events: Mapping[EventType, datetime] = field(default_factory=lambda: MappingProxyType({}))

    def channel(self, channel: Channel) -> ChannelState:
        return self.channels.get(channel, _NO_CHANNEL_STATE)


_NO_CHANNEL_STATE = ChannelState()


def apply_event(state: CustomerState, event: Event) -> CustomerState:
    """Returns the state after ``event``; ``event`` must be valid (see ``nextbest.validation``)."""
    if event.type is None or event.occurred_at is None:
        raise ValueError("apply_event needs a validated event (type and occurred_at set)")
    at = event.occurred_at
    kind = event.type
    changes: dict[str, object] = {
        "first_seen_at": _min(state.first_seen_at, at),
        "last_events": MappingProxyType({**state.last_events, kind: _max(state.last_events.get(kind), at)}),
    }
    channels = dict(state.channels)
    if kind is EventType.ORDER_PLACED:
        changes["orders_count"] = state.orders_count + 1
        changes["revenue_total"] = state.revenue_total + event.value
        changes["last_order_at"] = _max(state.last_order_at, at)
    elif kind is EventType.REFUNDED:
        changes["refunds_count"] = state.refunds_count + 1
        changes["revenue_total"] = state.revenue_total - event.value
    elif kind in (EventType.OPENED, EventType.CLICKED):
        changes["last_engagement_at"] = _max(state.last_engagement_at, at)
    elif kind is EventType.SUBSCRIBED:
        ch = event.channel or Channel.EMAIL
        channels[ch] = _set_consent(state.channel(ch), True, at)
    elif kind is EventType.CONSENT_CHANGED and event.channel is not None:
        channels[event.channel] = _set_consent(state.channel(event.channel), event.consent_granted, at)
    elif kind is EventType.UNSUBSCRIBED:
        for ch in (event.channel,) if event.channel else MESSAGING_CHANNELS:
            channels[ch] = _suppress(_set_consent(state.channel(ch), False, at), Suppression.UNSUBSCRIBED, at)
    elif kind is EventType.BOUNCED and event.bounce_kind is BounceKind.HARD and event.channel is not None:
        channels[event.channel] = _suppress(state.channel(event.channel), Suppression.HARD_BOUNCE, at)
    elif kind is EventType.COMPLAINED and event.channel is not None:
        ch_state = _set_consent(state.channel(event.channel), False, at)
        channels[event.channel] = _suppress(ch_state, Suppression.COMPLAINT, at)
    changes["channels"] = MappingProxyType(channels)
    return replace(state, **changes)  # type: ignore[arg-type]


def _set_consent(ch: ChannelState, granted: bool, at: datetime) -> ChannelState:
    if ch.consent_at is not None and at < ch.consent_at:
        return ch  # a newer consent decision already stands
    ch = replace(ch, consent=granted, consent_at=at)
    if granted and ch.suppression is Suppression.UNSUBSCRIBED and ch.suppressed_at and at >= ch.suppressed_at:
        # Opting in again lifts an earlier unsubscribe; bounces and complaints stay.
        ch = replace(ch, suppression=None, suppressed_at=None)
    return ch


def _suppress(ch: ChannelState, reason: Suppression, at: datetime) -> ChannelState:
    if ch.suppression is not None and ch.suppression.blocks_transactional and ch.suppressed_at:
        # Keep the stronger suppression; an unsubscribe never downgrades a hard bounce or complaint.
        if not reason.blocks_transactional or at < ch.suppressed_at:
            return ch
    if reason is Suppression.UNSUBSCRIBED and ch.consent_at is not None and ch.consent_at > at:
        return ch  # the customer opted in again after this (late) unsubscribe
    return replace(ch, suppression=reason, suppressed_at=at)


def _max(current: datetime | None, new: datetime) -> datetime:
    return new if current is None or new > current else current


def _min(current: datetime | None, new: datetime) -> datetime:
    return new if current is None or new < current else current
