"""Contact-policy invariants over the real engine (in-process, SQLite), driven by random sequences of
events and decisions for one customer, with the bundled catalog (its caps, quiet hours, engagement rule,
cart journey in steps) and 30 % holdouts so that held-out decisions are part of the mix.

After every sequence: no cap is exceeded in any window by what was actually sent; transactional actions
were never stopped by a cap; no marketing action went to a channel without consent or under suppression;
no capped-class action is due inside quiet hours; each response lists its actions by class, then score;
every cancellation concerned a pending action and was reported exactly once, and the store agrees."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from nextbest.decision.engine import DecisionEngine
from nextbest.domain import (
    ActionClass,
    Cancellation,
    Channel,
    DecisionRequest,
    Event,
    EventType,
    ReasonCode,
    RequestContext,
)
from nextbest.store.schema import exposures
from tests.conftest import heavy_holdout_catalog, sqlite_engine

T0 = datetime(2026, 11, 2, 6, tzinfo=UTC)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DecisionEngine]:
    yield from sqlite_engine(tmp_path_factory.mktemp("policy") / "p.db", heavy_holdout_catalog())


DECIDE = st.tuples(
    st.just("decide"),
    st.sampled_from(["scheduled", "cart_abandoned", "product_viewed", "order_placed", "order_shipped"]),
    st.sampled_from(["UTC", "America/New_York", "Asia/Tokyo"]),
    st.integers(1, 3),
)
EVENT = st.tuples(
    st.just("event"),
    st.sampled_from(["order", "opened", "unsubscribe_email", "sms_on", "sms_off", "complain_email"]),
    st.just(""),
    st.just(0),
)
STEPS = st.lists(st.tuples(st.floats(0, 30), st.one_of(DECIDE, DECIDE, EVENT)), min_size=1, max_size=14)


def _event(user: str, kind: str, at: datetime) -> Event:
    eid = uuid.uuid4().hex
    return {
        "order": Event(eid, user, EventType.ORDER_PLACED, at, value=50.0, order_id=eid),
        "opened": Event(eid, user, EventType.OPENED, at, channel=Channel.EMAIL),
        "unsubscribe_email": Event(eid, user, EventType.UNSUBSCRIBED, at, channel=Channel.EMAIL),
        "sms_on": Event(eid, user, EventType.CONSENT_CHANGED, at, channel=Channel.SMS, consent_granted=True),
        "sms_off": Event(
            eid, user, EventType.CONSENT_CHANGED, at, channel=Channel.SMS, consent_granted=False
        ),
        "complain_email": Event(eid, user, EventType.COMPLAINED, at, channel=Channel.EMAIL),
    }[kind]


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS, known_days=st.sampled_from([0, 120]), mobile=st.booleans())
def test_contact_policy_invariants(
    engine: DecisionEngine, steps: list, known_days: int, mobile: bool
) -> None:
    catalog = engine.catalog
    policy = catalog.policy
    user = uuid.uuid4().hex
    start = T0 - timedelta(days=known_days)
    history = [Event(uuid.uuid4().hex, user, EventType.SUBSCRIBED, start, channel=Channel.EMAIL)]
    if mobile:  # SMS and push consent and a past order: SMS promotions and quiet hours come into play
        history += [
            Event(uuid.uuid4().hex, user, EventType.CONSENT_CHANGED, start, channel=ch, consent_granted=True)
            for ch in (Channel.SMS, Channel.PUSH)
        ]
        history.append(Event(uuid.uuid4().hex, user, EventType.ORDER_PLACED, start, value=20.0, order_id="o"))
    engine.record_events(history)
    now = T0
    # What the customer allows, as the test's own model: channel -> allowed for marketing.
    allowed = {Channel.EMAIL: True, Channel.SMS: mobile, Channel.PUSH: mobile, Channel.ONSITE: True}
    dead = set()  # channels with a complaint: nothing at all
    reported: list[tuple[Cancellation, datetime]] = []
    for advance, (kind, what, zone, max_actions) in steps:
        now += timedelta(hours=advance)
        if kind == "event":
            event = _event(user, what, now)
            (result,) = engine.record_events([event])
            reported += [(c, now) for c in result.cancelled]
            if what == "unsubscribe_email":
                allowed[Channel.EMAIL] = False
            elif what in ("sms_on", "sms_off"):
                allowed[Channel.SMS] = what == "sms_on"
            elif what == "complain_email":
                dead.add(Channel.EMAIL)
                allowed[Channel.EMAIL] = False
            continue
        decision = engine.decide(
            DecisionRequest(
                uuid.uuid4().hex,
                user,
                what,
                now,
                RequestContext(cart_value=60.0, product_ids=("sku-1",), time_zone=zone),
                max_actions=max_actions,
                explain=True,
            )
        )
        reported += [(c, now) for c in decision.cancelled]
        for r in decision.rejected:
            if r.action_class is ActionClass.TRANSACTIONAL:
                assert r.reason is not ReasonCode.FREQUENCY_CAP
        ranks = [(a.action_class.rank, -a.score) for a in decision.actions]
        assert ranks == sorted(ranks), "actions are listed by class, then score"
        for a in decision.actions:
            assert a.channel not in dead, f"{a.action_id} sent to a channel with a complaint"
            if a.action_class.is_marketing:
                assert allowed[a.channel], f"{a.action_id} on {a.channel} without consent"
            quiet = policy.quiet_hours.get(a.channel)
            if quiet is not None and quiet.applies(a.action_class):
                local = a.send_at.astimezone(ZoneInfo(zone))
                assert quiet.end_of_quiet(local) is None, f"{a.action_id} due at {local} in quiet hours"

    with engine.store.db.reader.connect() as conn:
        rows = conn.execute(select(exposures).where(exposures.c.user_id == user)).mappings().all()
    sent = [r for r in rows if r["cancelled_at"] is None]
    for cap in policy.caps:
        times = sorted(
            r["send_at"] for r in sent if cap.applies(ActionClass(r["action_class"]), Channel(r["channel"]))
        )
        for t in times:  # the fullest window starts at a send
            assert sum(1 for s in times if t <= s < t + cap.window) <= cap.limit, (cap.id, times)
    ids = [c.exposure_id for c, _ in reported]
    assert len(ids) == len(set(ids)), "a cancellation was reported twice"
    for c, when in reported:
        assert c.send_at > when, f"{c.action_id} was cancelled at {when}, after it was due ({c.send_at})"
    assert set(ids) == {r["exposure_id"] for r in rows if r["cancelled_at"] is not None}
