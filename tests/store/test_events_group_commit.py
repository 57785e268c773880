"""Events through the group commit: concurrent ``record_events`` calls share a transaction; a poison
event fails alone (REJECTED), never its batch or the other callers; an event id sent by two callers at
once is accepted once."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence

import pytest
from sqlalchemy import func, select

from nextbest.catalog import bundled_catalog_path, load_catalog
from nextbest.decision.engine import DecisionEngine
from nextbest.domain import Cancellation, Channel, Event, EventOutcome, EventType
from nextbest.store import Store
from nextbest.store.schema import events
from tests.conftest import uid
from tests.store.test_poison import POISONS
from tests.store.test_store import T0

Outcomes = list[tuple[EventOutcome, tuple[Cancellation, ...]]]


def opened(user: str, event_id: str | None = None) -> Event:
    return Event(event_id or uid("ev"), user, EventType.OPENED, T0, channel=Channel.EMAIL)


def _concurrently(store: Store, calls: Sequence[Sequence[Event]]) -> list[Outcomes | BaseException]:
    """Each call from its own thread, all queued while the commit lock is held, so that they land in
    one group commit; returns each call's outcomes or exception."""
    results: list[Outcomes | BaseException] = [[] for _ in calls]

    def call(i: int) -> Callable[[], None]:
        def run() -> None:
            try:
                results[i] = store.record_events(calls[i], T0)
            except BaseException as exc:
                results[i] = exc

        return run

    writer = store.customers.writer
    expected = sum(len({e.event_id for e in c}) for c in calls)
    threads = [threading.Thread(target=call(i)) for i in range(len(calls))]
    with writer.commit_lock:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while len(writer._queue) < expected and time.monotonic() < deadline:
            time.sleep(0.005)
        assert len(writer._queue) == expected
    for t in threads:
        t.join(10)
    return results


def _stored(store: Store, event_ids: Sequence[str]) -> int:
    with store.db.reader.connect() as conn:
        return int(conn.execute(select(func.count()).where(events.c.event_id.in_(event_ids))).scalar_one())


def test_concurrent_calls_share_one_transaction(store: Store) -> None:
    calls = [[opened(uid()) for _ in range(5)] for _ in range(6)]
    batches = store.customers.writer.batches
    results = _concurrently(store, calls)
    assert store.customers.writer.batches == batches + 1
    assert all(r == [(EventOutcome.ACCEPTED, ())] * 5 for r in results), results
    assert _stored(store, [e.event_id for c in calls for e in c]) == 30
    # Folded into each customer: their version moved on once per call.
    assert all(store.load_snapshot(c[0].user_id, T0).version == 1 for c in calls)


def test_a_poison_event_fails_alone_and_its_batch_and_the_other_callers_are_stored(store: Store) -> None:
    poison = POISONS[store.db.dialect]
    calls = [[opened(uid()) for _ in range(4)] for _ in range(5)]
    bad = calls[2][1]
    calls[2][1] = Event(
        bad.event_id, bad.user_id, EventType.ORDER_PLACED, T0, value=5.0, order_id=f"o{poison}"
    )
    isolated = store.customers.writer.isolated
    results = _concurrently(store, calls)
    assert store.customers.writer.isolated == isolated + 1
    for i, outcomes in enumerate(results):
        assert not isinstance(outcomes, BaseException), outcomes
        expected = [EventOutcome.ACCEPTED] * 4
        if i == 2:
            expected[1] = EventOutcome.REJECTED
        assert [o for o, _ in outcomes] == expected
    good = [e.event_id for c in calls for e in c if e.event_id != bad.event_id]
    assert _stored(store, good) == 19 and _stored(store, [bad.event_id]) == 0
    assert not store.db.health.failing


def test_an_event_id_sent_by_two_callers_at_once_is_accepted_once(store: Store) -> None:
    user, event_id = uid(), f"ev-{uuid.uuid4().hex}"
    results = _concurrently(store, [[opened(user, event_id)], [opened(user, event_id), opened(uid())]])
    first, second = results
    assert not isinstance(first, BaseException) and not isinstance(second, BaseException)
    assert sorted(o for o, _ in first + second[:1]) == sorted([EventOutcome.ACCEPTED, EventOutcome.DUPLICATE])
    assert second[1][0] is EventOutcome.ACCEPTED
    assert _stored(store, [event_id]) == 1
    assert store.load_snapshot(user, T0).version == 1  # folded in once


def test_an_event_the_database_refuses_is_rejected_by_the_engine_naming_it(store: Store) -> None:
    """What validation lets through and the database refuses (SQLite cannot encode an unpaired
    surrogate) comes back REJECTED with a violation, the call's other events accepted."""
    if store.db.dialect != "sqlite":
        pytest.skip("PostgreSQL's poison (a NUL byte) is refused by validation first")
    catalog = load_catalog(bundled_catalog_path())
    engine = DecisionEngine(catalog, store)
    user = uid()
    bad = Event(uid("ev"), user, EventType.ORDER_PLACED, T0, value=5.0, order_id="o\ud800")
    good = opened(user)
    first, second = engine.record_events([bad, good])
    assert first.outcome is EventOutcome.REJECTED and [v.field for v in first.violations] == ["event"]
    assert second.outcome is EventOutcome.ACCEPTED and second.violations == ()
    assert _stored(store, [good.event_id]) == 1 and _stored(store, [bad.event_id]) == 0
