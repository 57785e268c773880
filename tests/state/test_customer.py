from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nextbest.domain import BounceKind, Channel, Event, EventType
from nextbest.state import CustomerState, Suppression, apply_event, fold_events

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def ev(kind: EventType, hours: float, channel: Channel | None = None, **kw: object) -> Event:
    return Event(f"e{hours}", "u", kind, T0 + timedelta(hours=hours), channel=channel, **kw)  # type: ignore[arg-type]


def fold(*events: Event) -> CustomerState:
    state = CustomerState("u")
    for e in events:
        state = apply_event(state, e)
    return state


def test_orders_and_refunds_aggregate() -> None:
    state = fold(
        ev(EventType.ORDER_PLACED, 1, value=40.0),
        ev(EventType.ORDER_PLACED, 5, value=60.0),
        ev(EventType.REFUNDED, 6, value=10.0),
    )
    assert (state.orders_count, state.refunds_count, state.revenue_total) == (2, 1, 90.0)
    assert state.last_order_at == T0 + timedelta(hours=5)
    assert state.first_seen_at == T0 + timedelta(hours=1)
    assert state.last_events[EventType.REFUNDED] == T0 + timedelta(hours=6)


def test_unsubscribe_without_channel_covers_messaging_channels_only() -> None:
    state = fold(ev(EventType.SUBSCRIBED, 1), ev(EventType.UNSUBSCRIBED, 2))
    for ch in (Channel.EMAIL, Channel.SMS, Channel.PUSH):
        assert state.channel(ch).suppression is Suppression.UNSUBSCRIBED
        assert state.channel(ch).consent is False
    assert state.channel(Channel.ONSITE).suppression is None


def test_resubscribing_lifts_an_unsubscribe_but_not_a_hard_bounce() -> None:
    state = fold(ev(EventType.UNSUBSCRIBED, 1, Channel.EMAIL), ev(EventType.SUBSCRIBED, 2, Channel.EMAIL))
    assert state.channel(Channel.EMAIL).suppression is None and state.channel(Channel.EMAIL).consent
    bounced = fold(
        ev(EventType.BOUNCED, 1, Channel.EMAIL, bounce_kind=BounceKind.HARD),
        ev(EventType.SUBSCRIBED, 2, Channel.EMAIL),
    )
    assert bounced.channel(Channel.EMAIL).suppression is Suppression.HARD_BOUNCE


def test_a_late_unsubscribe_does_not_undo_a_newer_opt_in() -> None:
    state = fold(ev(EventType.SUBSCRIBED, 5, Channel.EMAIL), ev(EventType.UNSUBSCRIBED, 1, Channel.EMAIL))
    assert state.channel(Channel.EMAIL).consent is True
    assert state.channel(Channel.EMAIL).suppression is None


def test_engagement_is_tracked() -> None:
    state = fold(ev(EventType.CLICKED, 3, Channel.EMAIL), ev(EventType.OPENED, 2, Channel.EMAIL))
    assert state.last_engagement_at == T0 + timedelta(hours=3)


_KINDS = [
    EventType.SUBSCRIBED,
    EventType.UNSUBSCRIBED,
    EventType.CONSENT_CHANGED,
    EventType.BOUNCED,
    EventType.COMPLAINED,
    EventType.ORDER_PLACED,
    EventType.REFUNDED,
    EventType.OPENED,
]


@st.composite
def event_sets(draw: st.DrawFn) -> list[Event]:
    hours = draw(st.lists(st.integers(0, 10_000), min_size=1, max_size=25, unique=True))
    events = []
    for h in hours:
        kind = draw(st.sampled_from(_KINDS))
        channel = draw(st.sampled_from([Channel.EMAIL, Channel.SMS]))
        if kind is EventType.UNSUBSCRIBED and draw(st.booleans()):
            channel = None  # type: ignore[assignment]
        events.append(
            Event(
                f"e{h}",
                "u",
                kind,
                T0 + timedelta(hours=h),
                channel=channel,
                value=float(draw(st.integers(0, 500)))
                if kind in (EventType.ORDER_PLACED, EventType.REFUNDED)
                else 0.0,
                consent_granted=draw(st.booleans()),
                bounce_kind=draw(st.sampled_from(list(BounceKind))) if kind is EventType.BOUNCED else None,
            )
        )
    return events


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(event_sets(), st.randoms(use_true_random=False))
def test_the_fold_does_not_depend_on_arrival_order(events: list[Event], rnd) -> None:  # type: ignore[no-untyped-def]
    """Events arrive late and out of order; the state must be the same as in time order."""
    shuffled = list(events)
    rnd.shuffle(shuffled)
    in_order = fold(*sorted(events, key=lambda e: e.occurred_at))  # type: ignore[arg-type, return-value]
    assert fold(*shuffled) == in_order


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(event_sets())
def test_a_complaint_or_hard_bounce_is_never_lifted(events: list[Event]) -> None:
    state = fold(*sorted(events, key=lambda e: e.occurred_at))  # type: ignore[arg-type, return-value]
    for ch in (Channel.EMAIL, Channel.SMS):
        strong = [
            e
            for e in events
            if e.channel == ch
            and (
                e.type is EventType.COMPLAINED
                or (e.type is EventType.BOUNCED and e.bounce_kind is BounceKind.HARD)
            )
        ]
        if strong:
            assert state.channel(ch).suppression in (Suppression.COMPLAINT, Suppression.HARD_BOUNCE)


def test_a_late_unsubscribe_after_a_newer_revocation_still_suppresses() -> None:
    """Found by the arrival-order property: a newer refusal is not an opt-in."""
    events = (
        ev(EventType.CONSENT_CHANGED, 1, Channel.EMAIL, consent_granted=False),
        ev(EventType.UNSUBSCRIBED, 0, Channel.EMAIL),
    )
    assert fold(*events).channel(Channel.EMAIL).suppression is Suppression.UNSUBSCRIBED
    assert fold(*events) == fold(*reversed(events))


@settings(max_examples=150, deadline=None)
@given(event_sets(), st.integers(0, 25))
def test_folding_a_batch_equals_applying_its_events_one_by_one(events: list[Event], split: int) -> None:
    """The store folds each customer's events of a batch in one pass (``fold_events``) onto the state it
    already has: the result must be the state after each event in turn."""
    ordered = sorted(events, key=lambda e: e.occurred_at)  # type: ignore[arg-type, return-value]
    before = fold(*ordered[:split])
    one_by_one = before
    for e in ordered[split:]:
        one_by_one = apply_event(one_by_one, e)
    assert fold_events(before, ordered[split:]) == one_by_one
    assert fold_events(CustomerState("u"), ordered) == fold(*ordered)


def test_the_one_pass_fold_knows_every_field_of_the_state() -> None:
    """``fold_events`` builds the new state field by field (cheaper than ``dataclasses.replace``): a
    field added to CustomerState must be carried over there, and this list updated with it."""
    assert [f.name for f in fields(CustomerState)] == [
        "user_id",
        "first_seen_at",
        "orders_count",
        "refunds_count",
        "revenue_total",
        "last_order_at",
        "last_engagement_at",
        "channels",
        "last_events",
        "engagement_hours",
    ]
