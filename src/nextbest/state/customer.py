"""Customer state as a fold over events: consent and suppression per channel, purchase aggregates and
the last time each event type happened.

Events can arrive late or out of order; consent and suppression changes only apply when they are newer
than what the state already holds, and aggregates are sums, so the fold's result does not depend on the
order events are recorded in. Deduplication by ``event_id`` happens before the fold (in the store).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType

from nextbest.domain import BounceKind, Channel, Event, EventType

__all__ = [
    "MESSAGING_CHANNELS",
    "ChannelState",
    "CustomerState",
    "Suppression",
    "apply_event",
    "fold_events",
    "hour_of_week",
]

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
    """What the customer said and what happened on one channel. Only latest times are kept, so the
    result of folding a set of events is the same in any order."""

    consent: bool | None = None
    consent_at: datetime | None = None
    opted_in_at: datetime | None = None
    unsubscribed_at: datetime | None = None
    hard_bounced_at: datetime | None = None
    complained_at: datetime | None = None

    @property
    def suppression(self) -> Suppression | None:
        if self.complained_at is not None:
            return Suppression.COMPLAINT
        if self.hard_bounced_at is not None:
            return Suppression.HARD_BOUNCE
        if self.unsubscribed_at is not None and (
            self.opted_in_at is None or self.opted_in_at < self.unsubscribed_at
        ):
            return Suppression.UNSUBSCRIBED  # not lifted by a later opt-in
        return None

    @property
    def suppressed_at(self) -> datetime | None:
        return {
            Suppression.COMPLAINT: self.complained_at,
            Suppression.HARD_BOUNCE: self.hard_bounced_at,
            Suppression.UNSUBSCRIBED: self.unsubscribed_at,
            None: None,
        }[self.suppression]


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
    # Opens and clicks by hour of the week in UTC (Monday 00:00 = 0 ... Sunday 23:00 = 167): what the
    # send-time model personalizes from.
    engagement_hours: Mapping[int, int] = field(default_factory=lambda: MappingProxyType({}))

    def channel(self, channel: Channel) -> ChannelState:
        return self.channels.get(channel, _NO_CHANNEL_STATE)


_NO_CHANNEL_STATE = ChannelState()


_BLANK = CustomerState("")


def apply_event(state: CustomerState, event: Event) -> CustomerState:
    """Returns the state after ``event``; ``event`` must be valid (see ``nextbest.decision.validate``)."""
    return fold_events(state, (event,))


def fold_events(state: CustomerState | str, events: Iterable[Event]) -> CustomerState:
    """The state after ``events``, applied in the order given: the same as ``apply_event`` on each in
    turn, with one new state at the end instead of one per event (the store folds a batch's events per
    customer). ``state`` may be the user id of a customer nothing is known about yet (the same as
    ``CustomerState(user_id)``, one object fewer). Each event must be valid (see
    ``nextbest.decision.validate``)."""
    user_id = state if isinstance(state, str) else state.user_id
    if isinstance(state, str):
        state = _BLANK
    first_seen_at = state.first_seen_at
    orders_count, refunds_count, revenue_total = state.orders_count, state.refunds_count, state.revenue_total
    last_order_at, last_engagement_at = state.last_order_at, state.last_engagement_at
    last_events = dict(state.last_events)
    channels: dict[Channel, ChannelState] | None = None  # copied when an event changes one
    hours: dict[int, int] | None = None
    for event in events:
        at = event.occurred_at
        kind = event.type
        if kind is None or at is None:
            raise ValueError("apply_event needs a validated event (type and occurred_at set)")
        if first_seen_at is None or at < first_seen_at:
            first_seen_at = at
        seen = last_events.get(kind)
        if seen is None or at > seen:
            last_events[kind] = at
        if kind is EventType.ORDER_PLACED:
            orders_count += 1
            revenue_total += event.value
            last_order_at = _max(last_order_at, at)
        elif kind is EventType.REFUNDED:
            refunds_count += 1
            revenue_total -= event.value
        elif kind is EventType.OPENED or kind is EventType.CLICKED:
            last_engagement_at = _max(last_engagement_at, at)
            if hours is None:
                hours = dict(state.engagement_hours)
            slot = hour_of_week(at)
            hours[slot] = hours.get(slot, 0) + 1
        elif kind in _CHANNEL_EVENTS:
            if channels is None:
                channels = dict(state.channels)
            _apply_channel_event(channels, event, kind, at)
    # Every field is set here (a field added to CustomerState must be carried over here too).
    return CustomerState(
        user_id=user_id,
        first_seen_at=first_seen_at,
        orders_count=orders_count,
        refunds_count=refunds_count,
        revenue_total=revenue_total,
        last_order_at=last_order_at,
        last_engagement_at=last_engagement_at,
        channels=MappingProxyType(channels if channels is not None else dict(state.channels)),
        last_events=MappingProxyType(last_events),
        engagement_hours=MappingProxyType(hours) if hours is not None else state.engagement_hours,
    )


_CHANNEL_EVENTS = frozenset(
    {
        EventType.SUBSCRIBED,
        EventType.CONSENT_CHANGED,
        EventType.UNSUBSCRIBED,
        EventType.BOUNCED,
        EventType.COMPLAINED,
    }
)


def _apply_channel_event(
    channels: dict[Channel, ChannelState], event: Event, kind: EventType, at: datetime
) -> None:
    """What a consent, subscription, unsubscribe, bounce or complaint event does to the channels."""
    no_state = _NO_CHANNEL_STATE
    if kind is EventType.SUBSCRIBED:
        ch = event.channel or Channel.EMAIL
        channels[ch] = _opt_in(_consent(channels.get(ch, no_state), True, at), at)
    elif kind is EventType.CONSENT_CHANGED and event.channel is not None:
        ch_state = _consent(channels.get(event.channel, no_state), event.consent_granted, at)
        channels[event.channel] = _opt_in(ch_state, at) if event.consent_granted else ch_state
    elif kind is EventType.UNSUBSCRIBED:
        for ch in (event.channel,) if event.channel else MESSAGING_CHANNELS:
            ch_state = _consent(channels.get(ch, no_state), False, at)
            channels[ch] = replace(ch_state, unsubscribed_at=_max(ch_state.unsubscribed_at, at))
    elif kind is EventType.BOUNCED and event.bounce_kind is BounceKind.HARD and event.channel is not None:
        ch_state = channels.get(event.channel, no_state)
        channels[event.channel] = replace(ch_state, hard_bounced_at=_max(ch_state.hard_bounced_at, at))
    elif kind is EventType.COMPLAINED and event.channel is not None:
        ch_state = _consent(channels.get(event.channel, no_state), False, at)
        channels[event.channel] = replace(ch_state, complained_at=_max(ch_state.complained_at, at))


def hour_of_week(at: datetime) -> int:
    """0 for Monday 00:00-00:59 UTC ... 167 for Sunday 23:00-23:59 UTC."""
    utc = at.astimezone(UTC)
    return utc.weekday() * 24 + utc.hour


def _consent(ch: ChannelState, granted: bool, at: datetime) -> ChannelState:
    """The latest consent decision stands; at the same instant, a refusal wins."""
    if ch.consent_at is None or at > ch.consent_at or (at == ch.consent_at and not granted):
        return replace(ch, consent=granted, consent_at=at)
    return ch


def _opt_in(ch: ChannelState, at: datetime) -> ChannelState:
    return replace(ch, opted_in_at=_max(ch.opted_in_at, at))


def _max(current: datetime | None, new: datetime) -> datetime:
    return new if current is None or new > current else current


def _min(current: datetime | None, new: datetime) -> datetime:
    return new if current is None or new < current else current
