"""The store contract, one specification for every store: the SQL store (SQLite, and PostgreSQL when
NEXTBEST_TEST_DATABASE_URL is set) and the in-memory ``MemoryStore`` pass the same tests, and the engine
decides alike on either."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nextbest.catalog import Catalog
from nextbest.decision.engine import DecisionEngine
from nextbest.domain import (
    ActionClass,
    Cancellation,
    Channel,
    ChosenAction,
    Decision,
    DecisionRequest,
    Event,
    EventOutcome,
    EventType,
    RequestContext,
)
from nextbest.state import PastExposure
from nextbest.store import Database, DecisionStore, FrozenStore, MemoryStore, SnapshotWanted, Store, upgrade
from tests.conftest import BACKENDS, uid

T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
ACCEPTED, DUPLICATE = EventOutcome.ACCEPTED, EventOutcome.DUPLICATE


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _migrated(f"sqlite:///{tmp_path_factory.mktemp('contract') / 'nextbest.db'}")


@pytest.fixture(scope="module")
def postgresql_url(postgres_url: str) -> str:
    return _migrated(postgres_url)


def _migrated(url: str) -> str:
    db = Database(url)
    upgrade(db)
    db.dispose()
    return url


@pytest.fixture(params=["memory", *BACKENDS])
def store(request: pytest.FixtureRequest) -> Iterator[DecisionStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    sql = Store(Database(request.getfixturevalue(f"{request.param}_url")))
    yield sql
    sql.close()


def decision(
    user: str,
    request_id: str | None = None,
    *,
    sends: int = 1,
    at: datetime = T0,
    send_at: datetime = T0 + timedelta(hours=1),
    cancelled: tuple[Cancellation, ...] = (),
) -> Decision:
    actions = tuple(
        ChosenAction(f"a{i}", "cart", Channel.EMAIL, ActionClass.TRIGGERED, send_at, {"k": "v"}, 1.5)
        for i in range(sends)
    )
    return Decision(
        uuid.uuid4().hex, request_id or uid("req"), user, "cart_abandoned", at, "cat", actions, (),
        cancelled=cancelled,
    )  # fmt: skip


def exits_cart(event: Event, pending: PastExposure) -> str | None:
    if event.type is EventType.ORDER_PLACED and pending.flow == "cart":
        return f"order at {event.occurred_at:%H:%M} exits cart"
    return None


def test_a_retried_request_id_writes_nothing_and_finds_the_first_decision(store: DecisionStore) -> None:
    user, request_id = uid(), uid("req")
    first = decision(user, request_id)
    assert store.save_decision(first, "fp", T0, version=0).inserted
    again = store.save_decision(decision(user, request_id, sends=3), "other", T0)
    assert (again.inserted, again.conflict, again.cancelled) == (False, False, frozenset())
    stored = store.find_decision(request_id)
    assert stored is not None and stored.fingerprint == "fp"
    assert stored.decision.decision_id == first.decision_id and stored.decision.replayed
    assert stored.decision.actions == first.actions
    assert [p.action_id for p in store.load_snapshot(user, T0).history] == ["a0"]
    assert store.find_decision(uid("req")) is None


def test_a_decision_on_a_stale_version_is_a_conflict_and_writes_nothing(store: DecisionStore) -> None:
    user = uid()
    assert store.load_snapshot(user, T0).version == 0
    assert store.save_decision(decision(user), "fp", T0, version=0).inserted
    assert store.load_snapshot(user, T0).version == 1
    stale = decision(user)
    saved = store.save_decision(stale, "fp", T0, version=0)
    assert (saved.inserted, saved.conflict) == (False, True)
    assert store.find_decision(stale.request_id) is None
    snapshot = store.load_snapshot(user, T0)
    assert (len(snapshot.history), snapshot.version) == (1, 1)
    # A decision that sends and cancels nothing is neither checked nor moves the version.
    assert store.save_decision(decision(user, sends=0), "fp", T0, version=0).inserted
    assert store.load_snapshot(user, T0).version == 1


def test_events_are_deduplicated_by_id_folded_into_state_and_move_the_version(store: DecisionStore) -> None:
    user = uid()
    order = Event(uid("ev"), user, EventType.ORDER_PLACED, T0, value=30.0)
    subscribed = Event(uid("ev"), user, EventType.SUBSCRIBED, T0, channel=Channel.EMAIL)
    assert store.record_events([order, subscribed, order], T0) == [
        (ACCEPTED, ()),
        (ACCEPTED, ()),
        (DUPLICATE, ()),
    ]
    assert store.record_events([order], T0) == [(DUPLICATE, ())]
    snapshot = store.load_snapshot(user, T0)
    assert (snapshot.state.orders_count, snapshot.state.revenue_total) == (1, 30.0)
    assert snapshot.state.channels[Channel.EMAIL].consent
    assert snapshot.version == 1  # one batch, one version
    store.record_events([Event(uid("ev"), user, EventType.OPENED, T0, channel=Channel.EMAIL)], T0)
    assert store.load_snapshot(user, T0).version == 2


def test_an_exit_event_cancels_the_pending_action_once(store: DecisionStore) -> None:
    user = uid()
    store.save_decision(decision(user, send_at=T0 + timedelta(hours=2)), "fp", T0, version=0)
    (pending,) = store.load_snapshot(user, T0).history
    assert not pending.cancelled
    earlier = Event(uid("ev"), user, EventType.ORDER_PLACED, T0 - timedelta(minutes=5), value=1.0)
    assert store.record_events([earlier], T0, exits_cart) == [(ACCEPTED, ())]  # before the decision
    order = Event(uid("ev"), user, EventType.ORDER_PLACED, T0 + timedelta(minutes=30), value=10.0)
    assert store.record_events([order], T0, exits_cart) == [
        (ACCEPTED, (pending.cancellation("order at 09:30 exits cart"),))
    ]
    (cancelled,) = store.load_snapshot(user, T0 + timedelta(hours=1)).history
    assert cancelled.cancelled and cancelled.exposure_id == pending.exposure_id
    assert store.record_events([order], T0, exits_cart) == [(DUPLICATE, ())]
    again = Event(uid("ev"), user, EventType.ORDER_PLACED, T0 + timedelta(minutes=40), value=10.0)
    assert store.record_events([again], T0, exits_cart) == [(ACCEPTED, ())]


def test_an_event_after_the_send_cancels_nothing(store: DecisionStore) -> None:
    user = uid()
    store.save_decision(decision(user, send_at=T0 + timedelta(hours=1)), "fp", T0, version=0)
    late = Event(uid("ev"), user, EventType.ORDER_PLACED, T0 + timedelta(hours=2), value=10.0)
    assert store.record_events([late], T0, exits_cart) == [(ACCEPTED, ())]
    assert not store.load_snapshot(user, T0).history[0].cancelled


def test_a_preemption_takes_effect_once_and_not_on_a_replay(store: DecisionStore) -> None:
    user = uid()
    store.save_decision(decision(user, send_at=T0 + timedelta(hours=2)), "fp", T0, version=0)
    (pending,) = store.load_snapshot(user, T0).history
    preempt = pending.cancellation("preempted")
    first = decision(user, sends=0, cancelled=(preempt,))
    assert store.save_decision(first, "fp", T0, version=1).cancelled == {pending.exposure_id}
    stored = store.find_decision(first.request_id)
    assert stored is not None and stored.decision.cancelled == (preempt,)
    second = decision(user, sends=0, cancelled=(preempt,))
    saved = store.save_decision(second, "fp", T0, version=2)
    assert saved.inserted and saved.cancelled == frozenset()
    stored = store.find_decision(second.request_id)
    assert stored is not None and stored.decision.cancelled == ()  # only what it really cancelled
    # A retried request id writes nothing, its preemptions included.
    store.save_decision(decision(user, send_at=T0 + timedelta(hours=3)), "fp", T0, version=3)
    newest = store.load_snapshot(user, T0).history[0]
    retry = decision(user, first.request_id, sends=0, cancelled=(newest.cancellation("preempted"),))
    assert not store.save_decision(retry, "fp", T0, version=4).inserted
    assert not store.load_snapshot(user, T0).history[0].cancelled


def test_history_is_newest_first_within_90_days(store: DecisionStore) -> None:
    user = uid()
    for days in (100, 30, 1, 10):
        store.save_decision(decision(user, at=T0 - timedelta(days=days)), "fp", T0)
    history = store.load_snapshot(user, T0).history
    assert [p.occurred_at for p in history] == [T0 - timedelta(days=d) for d in (1, 10, 30)]
    assert len({p.exposure_id for p in history}) == 3
    assert store.load_snapshot(uid(), T0).history == ()


def test_inventory_follows_the_latest_event_whatever_the_arrival_order(store: DecisionStore) -> None:
    sku, other = uid("sku"), uid("sku")

    def stock(kind: EventType, minutes: int) -> Event:
        return Event(uid("ev"), "", kind, T0 + timedelta(minutes=minutes), product_ids=(sku, other))

    def out_of_stock() -> frozenset[str]:
        return store.load_snapshot(uid(), T0, [sku, other, uid("sku")]).out_of_stock

    store.record_events([stock(EventType.BACK_IN_STOCK, 60), stock(EventType.OUT_OF_STOCK, 0)], T0)
    assert out_of_stock() == frozenset()
    store.record_events([stock(EventType.OUT_OF_STOCK, 120)], T0)
    assert out_of_stock() == {sku, other}
    store.record_events([stock(EventType.BACK_IN_STOCK, 90)], T0)  # older: changes nothing
    assert out_of_stock() == {sku, other}


def test_the_frozen_store_reads_a_customer_once_and_keeps_no_decision() -> None:
    reads: list[str] = []

    def source(user_id: str, now: datetime, products: Any) -> Any:
        reads.append(user_id)
        return MemoryStore().load_snapshot(user_id, now, products)

    store = FrozenStore(source)
    first = store.load_snapshot("u", T0)
    assert store.load_snapshot("u", T0 + timedelta(days=1)) is first and reads == ["u"]
    pending = PastExposure("d", "a", "cart", Channel.EMAIL, ActionClass.TRIGGERED, "t", T0, T0, 7)
    saved = store.save_decision(decision("u", cancelled=(pending.cancellation("x"),)), "fp", T0, 0)
    assert saved.inserted and saved.cancelled == {7}
    assert store.load_snapshot("u", T0).history == ()


# -- the engine on either store -----------------------------------------------------------------------


@pytest.fixture(scope="module", params=BACKENDS)
def engines(
    request: pytest.FixtureRequest, catalog: Catalog
) -> Iterator[tuple[DecisionEngine, DecisionEngine]]:
    sql = Store(Database(request.getfixturevalue(f"{request.param}_url")))
    yield DecisionEngine(catalog, MemoryStore()), DecisionEngine(catalog, sql)
    sql.close()


TRIGGERS = ["scheduled", "cart_abandoned", "product_viewed", "order_placed"]
EVENTS = ["order", "opened", "unsubscribe_email", "sms_off", "out_of_stock", "back_in_stock", "again"]
STEPS = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.1, 0.5, 2.0, 12.0, 30.0]), st.sampled_from([*TRIGGERS, *EVENTS, "retry"])
    ),
    min_size=1,
    max_size=12,
)


def _event(user: str, sku: str, kind: str, at: datetime) -> Event:
    eid = uid("ev")
    return {
        "order": Event(eid, user, EventType.ORDER_PLACED, at, value=50.0, order_id=eid),
        "opened": Event(eid, user, EventType.OPENED, at, channel=Channel.EMAIL),
        "unsubscribe_email": Event(eid, user, EventType.UNSUBSCRIBED, at, channel=Channel.EMAIL),
        "sms_off": Event(
            eid, user, EventType.CONSENT_CHANGED, at, channel=Channel.SMS, consent_granted=False
        ),
        "out_of_stock": Event(eid, "", EventType.OUT_OF_STOCK, at, product_ids=(sku,)),
        "back_in_stock": Event(eid, "", EventType.BACK_IN_STOCK, at, product_ids=(sku,)),
    }[kind]


def _cancelled(cancellations: tuple[Cancellation, ...]) -> list[tuple[Any, ...]]:
    """What was cancelled, without the stores' own ids."""
    return sorted((c.action_id, c.send_at, re.sub("[0-9a-f]{32}", "<id>", c.reason)) for c in cancellations)


def _transcript(d: Decision) -> tuple[Any, ...]:
    """What a decision says, without its random ids."""
    return (
        d.replayed,
        [(a.action_id, a.channel, a.send_at, a.score, a.send_time) for a in d.actions],
        sorted((r.action_id, r.channel, r.reason, r.detail) for r in d.rejected),
        sorted((e.experiment_id, e.arm_id, e.held_out, e.action.action_id) for e in d.exposures),
        _cancelled(d.cancelled),
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS)
def test_the_engine_decides_alike_on_memory_and_sql(
    engines: tuple[DecisionEngine, DecisionEngine], steps: list[tuple[float, str]]
) -> None:
    """A customer abandons a cart (a reminder is pending, unless they are held out), then random calls and
    events follow: every answer, replay and cancellation is the same on both stores."""
    user, sku = uid(), uid("sku")
    consent = [
        Event(uid("ev"), user, EventType.SUBSCRIBED, T0 - timedelta(days=30), channel=Channel.EMAIL),
        Event(uid("ev"), user, EventType.CONSENT_CHANGED, T0 - timedelta(days=30), channel=Channel.SMS,
              consent_granted=True),
    ]  # fmt: skip
    for engine in engines:
        engine.record_events(consent)
    now, request, event = T0, None, None
    for advance, step in [(0.0, "cart_abandoned"), *steps]:
        now += timedelta(hours=advance)
        if step in TRIGGERS or (step == "retry" and request is not None):
            if step != "retry":
                context = RequestContext(cart_value=60.0, product_ids=(sku,), time_zone="Europe/Paris")
                request = DecisionRequest(uid("req"), user, step, now, context, max_actions=2, explain=True)
            assert request is not None
            memory, sql = (engine.decide(request) for engine in engines)
            assert _transcript(memory) == _transcript(sql)
        elif step in EVENTS and (step != "again" or event is not None):
            event = event if step == "again" else _event(user, sku, step, now)
            assert event is not None
            memory_results, sql_results = (
                [(r.outcome, _cancelled(r.cancelled)) for r in engine.record_events([event])]
                for engine in engines
            )
            assert memory_results == sql_results


def test_snapshots_read_together_are_those_read_one_by_one(store: DecisionStore) -> None:
    """``load_snapshots`` (a batch of decisions) gives each customer what ``load_snapshot`` gives:
    state, version, history in its own window (newest first, ties by exposure id, cancelled marked)
    and the stock of its own products."""
    users = [uid() for _ in range(4)]
    store.record_events([Event(uid("ev"), users[0], EventType.OPENED, T0, channel=Channel.EMAIL)], T0)
    for days in (100, 30, 1, 1):
        store.save_decision(decision(users[1], at=T0 - timedelta(days=days), sends=2), "fp", T0)
    store.save_decision(decision(users[2], send_at=T0 + timedelta(hours=3)), "fp", T0)
    order = Event(uid("ev"), users[2], EventType.ORDER_PLACED, T0 + timedelta(minutes=5), value=5.0)
    store.record_events([order], T0, exits_cart)  # cancels users[2]'s pending action
    sku = uid("sku")
    store.record_events([Event(uid("ev"), "", EventType.OUT_OF_STOCK, T0, product_ids=(sku,))], T0)
    wanted = [
        SnapshotWanted(users[0], T0),
        SnapshotWanted(users[1], T0 + timedelta(days=45), (sku, uid("sku"))),
        SnapshotWanted(users[2], T0 + timedelta(hours=1)),
        SnapshotWanted(users[3], T0, (sku,)),
    ]
    together = store.load_snapshots(wanted)
    assert together == [store.load_snapshot(*w) for w in wanted]
    assert [len(s.history) for s in together] == [0, 6, 1, 0]  # the decision 100 days back is out
    assert together[2].history[0].cancelled and together[0].version == 1
    assert [s.out_of_stock for s in together] == [frozenset(), {sku}, frozenset(), {sku}]
