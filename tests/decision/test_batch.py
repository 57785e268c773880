"""``DecisionEngine.decide_batch`` (``NextActionBatch``): one result per item, in order; a bad item fails
alone; each item keeps its request id and idempotency; a customer's items are decided in order, each
seeing the ones before it; the decisions are those N single calls would make. On the in-memory store,
SQLite and (when configured) PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from nextbest.catalog import parse_catalog
from nextbest.decision.engine import MAX_BATCH, DecisionEngine
from nextbest.domain import (
    Channel,
    Decision,
    DecisionRequest,
    Event,
    EventOutcome,
    EventType,
    ReasonCode,
    RequestContext,
)
from nextbest.errors import (
    AlreadyExistsError,
    ConflictError,
    DeadlineExceededError,
    InvalidArgumentError,
    NextbestError,
)
from nextbest.store import Database, DecisionStore, MemoryStore, SavedDecision, Store, ToSave, upgrade
from nextbest.store.schema import decisions
from tests.conftest import BACKENDS, uid

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # a Monday, 09:00 UTC
EMAIL, SMS, ONSITE = Channel.EMAIL, Channel.SMS, Channel.ONSITE

# Caps, a cooldown, a flow step's delay (pending sends) and a higher flow that preempts a lower one.
CATALOG = parse_catalog(
    """
version: 1
name: batch
channels:
  email: {requires_consent: true}
  sms: {requires_consent: true}
  onsite: {requires_consent: false}
policy:
  time_zone: UTC
  caps:
    - {id: promotional_daily, classes: [promotional], limit: 1, window: 1d}
  quiet_hours:
    sms: {start: "21:00", end: "08:00"}
flows:
  cart:
    priority: 80
    entry_triggers: [cart_abandoned]
    exit_on: [order_placed]
    reentry: 3d
    steps:
      - {after: 1h, actions: [cart_email]}
  browse:
    priority: 40
    entry_triggers: [product_viewed]
    exit_on: [order_placed]
  promo:
    priority: 10
    exit_on: [order_placed]
actions:
  - {id: cart_email, flow: cart, channel: email, class: triggered, triggers: [cart_abandoned],
     rule: context.cart_value > 0.0, value_from: cart_value, base_propensity: 0.1}
  - {id: browse_email, flow: browse, channel: email, class: triggered, triggers: [product_viewed],
     delay: 2h, cooldown: 3d, value: 50.0, base_propensity: 0.04}
  - {id: browse_onsite, flow: browse, channel: onsite, class: triggered, triggers: [product_viewed],
     value: 50.0, base_propensity: 0.02}
  - {id: promo_email, flow: promo, channel: email, class: promotional, triggers: [scheduled],
     value: 50.0, base_propensity: 0.01}
  - {id: promo_sms, flow: promo, channel: sms, class: promotional, triggers: [scheduled],
     value: 50.0, base_propensity: 0.008}
""",
    "batch.yaml",
)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


@pytest.fixture(params=["memory", *BACKENDS])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DecisionStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    url = (
        f"sqlite:///{tmp_path / 'batch.db'}"
        if request.param == "sqlite"
        else str(request.getfixturevalue("postgres_url"))
    )
    db = Database(url)
    upgrade(db)
    sql = Store(db)
    yield sql
    sql.close()


def engine(store: DecisionStore) -> DecisionEngine:
    return DecisionEngine(CATALOG, store, clock=lambda: T0)


def customer(engine: DecisionEngine, user: str, *channels: Channel) -> str:
    results = engine.record_events(
        [
            Event(
                f"consent-{user}-{ch.value}",
                user,
                EventType.CONSENT_CHANGED,
                at(-24),
                channel=ch,
                consent_granted=True,
            )
            for ch in channels
        ]
    )
    assert all(r.outcome is EventOutcome.ACCEPTED for r in results)
    return user


def ask(
    user: str, trigger: str, hours: float, *channels: Channel, request_id: str | None = None, **context: Any
) -> DecisionRequest:
    return DecisionRequest(
        request_id or uid("r"),
        user,
        trigger,
        at(hours),
        RequestContext(**context),
        channels=channels,
        max_actions=2,
        explain=True,
    )


def decided(result: Decision | NextbestError) -> Decision:
    assert isinstance(result, Decision), result
    return result


def chosen(result: Decision | NextbestError) -> list[str]:
    return [a.action_id for a in decided(result).actions]


def stored(store: DecisionStore, request_id: str) -> bool:
    return store.find_decision(request_id) is not None


def test_a_bad_item_fails_alone_naming_its_field_and_the_rest_are_answered(store: DecisionStore) -> None:
    e = engine(store)
    users = [customer(e, uid(), EMAIL) for _ in range(3)]
    requests = [
        ask(users[0], "scheduled", 0, EMAIL),
        replace(ask(users[1], "scheduled", 0, EMAIL), trigger="no_such_trigger"),
        ask(users[2], "scheduled", 0, EMAIL),
    ]
    results = e.decide_batch(requests)
    assert len(results) == 3
    assert chosen(results[0]) == chosen(results[2]) == ["promo_email"]
    bad = results[1]
    assert isinstance(bad, InvalidArgumentError)
    assert [v.field for v in bad.violations] == ["trigger"]  # relative to the item; the server adds its index
    assert [stored(store, r.request_id) for r in requests] == [True, False, True]


def test_each_result_carries_its_own_request_id_in_order(store: DecisionStore) -> None:
    e = engine(store)
    requests = [ask(customer(e, uid(), EMAIL), "scheduled", 0, EMAIL) for _ in range(7)]
    results = e.decide_batch(requests)
    assert [decided(r).request_id for r in results] == [r.request_id for r in requests]
    assert len({decided(r).decision_id for r in results}) == 7


def test_a_customer_twice_in_a_batch_sees_their_first_decision(store: DecisionStore) -> None:
    e = engine(store)
    user = customer(e, uid(), EMAIL)
    other = customer(e, uid(), EMAIL)
    first, between, second = e.decide_batch(
        [
            ask(user, "scheduled", 0, EMAIL),
            ask(other, "scheduled", 0, EMAIL),
            ask(user, "scheduled", 1, EMAIL),
        ]
    )
    assert chosen(first) == chosen(between) == ["promo_email"]
    assert chosen(second) == []
    (refusal,) = decided(second).rejected
    assert (refusal.action_id, refusal.reason) == ("promo_email", ReasonCode.FREQUENCY_CAP)


def test_a_later_item_preempts_an_earlier_pending_one_of_the_same_customer(store: DecisionStore) -> None:
    e = engine(store)
    user = customer(e, uid(), EMAIL)
    browse, cart = e.decide_batch(
        [
            ask(user, "product_viewed", 0, EMAIL, ONSITE),  # browse_email pending until +2h
            ask(user, "cart_abandoned", 0.5, EMAIL, cart_value=60.0),
        ]
    )
    assert chosen(browse) == ["browse_email", "browse_onsite"]
    assert chosen(cart) == ["cart_email"]
    (cancelled,) = decided(cart).cancelled
    assert (cancelled.decision_id, cancelled.action_id) == (decided(browse).decision_id, "browse_email")


def test_request_ids_replay_within_and_across_batches(store: DecisionStore) -> None:
    e = engine(store)
    user = customer(e, uid(), EMAIL)
    earlier = e.decide(ask(user, "scheduled", 0, EMAIL))
    again = ask(user, "cart_abandoned", 0.5, EMAIL, cart_value=60.0)
    results = e.decide_batch(
        [
            replace(ask(user, "scheduled", 0, EMAIL), request_id=earlier.request_id),  # the same question
            again,
            again,  # the same request twice in one batch: decided once, then replayed
            replace(again, context=RequestContext(cart_value=99.0)),  # its id, another question
        ]
    )
    replayed = decided(results[0])
    assert replayed.replayed and replayed.decision_id == earlier.decision_id
    assert replayed.actions == earlier.actions
    first, second = decided(results[1]), decided(results[2])
    assert not first.replayed and second.replayed and second.decision_id == first.decision_id
    assert second.actions == first.actions
    assert isinstance(results[3], AlreadyExistsError)
    if isinstance(store, Store):
        with store.db.reader.connect() as conn:
            count = select(func.count()).where(decisions.c.user_id == user)
            assert conn.execute(count).scalar_one() == 2


def _requests(users: Sequence[str]) -> list[DecisionRequest]:
    """A mixed batch: customers several times each, caps, cooldowns, journeys, preemptions, held
    requests for customers nothing is known of, and an item with several channels."""
    out = []
    for n, user in enumerate(users):
        out += [
            ask(user, "scheduled", 0, EMAIL, SMS),
            ask(user, "scheduled", 1, SMS, EMAIL),  # the daily promotional cap
            ask(user, "product_viewed", 2, EMAIL, ONSITE),  # browse_email pending until +4h
            ask(user, "product_viewed", 3, EMAIL, ONSITE),  # its cooldown
            ask(user, "cart_abandoned", 3.5 + n / 100, EMAIL, cart_value=10.0 + n),  # preempts it
            ask(f"{user}-new", "scheduled", 13, ONSITE, SMS, EMAIL),
        ]
    # Interleaved: one customer's items are not next to each other.
    return [out[i] for step in range(6) for i in range(step, len(out), 6)]


def _comparable(decision: Decision) -> Decision:
    """A decision without what differs between two runs: its ids, and the customer's (assignment
    hashes it, but the catalog runs no experiment)."""
    return replace(
        decision,
        decision_id="",
        request_id="",
        user_id="",
        cancelled=tuple(replace(c, decision_id="", exposure_id=0, reason="") for c in decision.cancelled),
    )


def test_a_batch_decides_what_single_calls_would(store: DecisionStore) -> None:
    e = engine(store)
    users = [uid() for _ in range(5)]
    twins = [f"{user}-single" for user in users]  # the same customers, decided one call at a time
    for n in range(5):
        for user in (users[n], twins[n]):
            customer(e, user, *[(EMAIL,), (EMAIL, SMS), (SMS,), (), (EMAIL, SMS)][n])
    requests = _requests(users)
    results = e.decide_batch(requests)
    singles = [e.decide(r) for r in _requests(twins)]
    assert [_comparable(decided(r)) for r in results] == [_comparable(d) for d in singles]
    # Not vacuous: sends, refusals by caps and cooldowns, and preemptions are all in there.
    reasons = {r.reason for d in singles for r in d.rejected}
    assert {ReasonCode.FREQUENCY_CAP, ReasonCode.COOLDOWN} <= reasons
    assert sum(len(d.actions) for d in singles) >= 10
    assert any(d.cancelled for d in singles)


def test_an_item_not_started_before_the_deadline_writes_nothing(store: DecisionStore) -> None:
    e = engine(store)
    requests = [ask(customer(e, uid(), EMAIL), "scheduled", 0, EMAIL) for _ in range(3)]
    results = e.decide_batch(requests, deadline=time.monotonic() - 0.001)
    assert all(isinstance(r, DeadlineExceededError) for r in results)
    assert not any(stored(store, r.request_id) for r in requests)
    assert all(isinstance(r, Decision) for r in e.decide_batch(requests, deadline=time.monotonic() + 60))


def test_too_many_items_are_refused_whole(store: DecisionStore) -> None:
    with pytest.raises(InvalidArgumentError, match=f"at most {MAX_BATCH}"):
        engine(store).decide_batch([ask(uid(), "scheduled", 0)] * (MAX_BATCH + 1))


class _Interfering(MemoryStore):
    """A store where, before a batch's first write, another process records an event for ``user``:
    their decision was made on a version that is no longer current."""

    def __init__(self, user: str, times: int) -> None:
        super().__init__()
        self.user, self.times = user, times

    def save_decisions(self, items: Sequence[ToSave]) -> list[SavedDecision | NextbestError]:
        if self.times:
            self.times -= 1
            self.record_events([Event(uid("e"), self.user, EventType.OPENED, at(-1), channel=EMAIL)], T0)
        return super().save_decisions(items)


def test_a_customer_changed_meanwhile_is_decided_again_and_the_others_are_written_once() -> None:
    user = uid()
    store = _Interfering(user, times=1)
    e = engine(store)
    customer(e, user, EMAIL)
    other = customer(e, uid(), EMAIL)
    mine, theirs = e.decide_batch([ask(user, "scheduled", 0, EMAIL), ask(other, "scheduled", 0, EMAIL)])
    assert chosen(mine) == chosen(theirs) == ["promo_email"]
    assert (
        len(store.load_snapshot(user, at(1)).history) == len(store.load_snapshot(other, at(1)).history) == 1
    )


def test_a_customer_who_keeps_changing_fails_alone_with_a_conflict() -> None:
    user = uid()
    store = _Interfering(user, times=100)
    e = engine(store)
    customer(e, user, EMAIL)
    other = customer(e, uid(), EMAIL)
    mine, theirs = e.decide_batch([ask(user, "scheduled", 0, EMAIL), ask(other, "scheduled", 0, EMAIL)])
    assert isinstance(mine, ConflictError)
    assert chosen(theirs) == ["promo_email"]
    assert store.load_snapshot(user, at(1)).history == ()


def test_concurrent_batches_for_the_same_customers_keep_their_caps(store: DecisionStore) -> None:
    """Batches take no per-customer locks (they would queue behind each other): the customer version
    checked at commit keeps caps exact, a loser deciding again on what the winner wrote."""
    e = engine(store)
    users = [customer(e, uid(), EMAIL) for _ in range(12)]
    start = threading.Barrier(3)
    results: list[list[Decision | NextbestError]] = []

    def run() -> None:
        start.wait()
        for _ in range(3):
            results.append(e.decide_batch([ask(u, "scheduled", 0, EMAIL) for u in users]))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 9
    decisions = [decided(r) for batch in results for r in batch]
    sends = Counter(d.user_id for d in decisions if d.actions)
    assert sends == dict.fromkeys(users, 1)  # the daily promotional cap, once per customer
    assert all(
        [(r.action_id, r.reason) for r in d.rejected] == [("promo_email", ReasonCode.FREQUENCY_CAP)]
        for d in decisions
        if not d.actions
    )
