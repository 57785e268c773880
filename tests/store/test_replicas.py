"""Several processes or replicas deciding for the same customer on one database: a decision commits only
on the customer version it read (optimistic concurrency), so caps and journeys hold across processes
exactly as they do inside one, where calls for a customer are serialized by a lock."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from nextbest.catalog import Catalog
from nextbest.decision.engine import MAX_ATTEMPTS, DecisionEngine
from nextbest.domain import (
    ActionClass,
    Channel,
    ChosenAction,
    Decision,
    DecisionRequest,
    Event,
    EventType,
    ReasonCode,
    RequestContext,
)
from nextbest.errors import ConflictError
from nextbest.store import Database, Store
from tests.conftest import find_unit, uid

T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)


def decision(user: str, actions: int = 1) -> Decision:
    chosen = tuple(
        ChosenAction("a", "flow", Channel.EMAIL, ActionClass.TRIGGERED, T0, {}, 1.0) for _ in range(actions)
    )
    return Decision(uuid.uuid4().hex, uid("req"), user, "cart_abandoned", T0, "cat", chosen, ())


def subscribed(user: str, at: datetime = T0) -> Event:
    return Event(uid("ev"), user, EventType.SUBSCRIBED, at, channel=Channel.EMAIL)


def test_a_decision_made_on_a_stale_version_writes_nothing(store: Store) -> None:
    user = uid()
    first, second = store.load_snapshot(user, T0), store.load_snapshot(user, T0)
    assert first.version == second.version == 0  # no customer row yet
    assert store.save_decision(decision(user), "fp", T0, first.version)
    stale = decision(user)
    saved = store.save_decision(stale, "fp", T0, second.version)
    assert saved.conflict and not saved.inserted
    assert store.find_decision(stale.request_id) is None
    assert len(store.load_snapshot(user, T0).history) == 1
    fresh = store.load_snapshot(user, T0)
    assert fresh.version == 1
    again = store.save_decision(decision(user), "fp", T0, fresh.version)
    assert again.inserted and not again.conflict
    assert store.load_snapshot(user, T0).version == 2


def test_events_move_the_version_on(store: Store) -> None:
    user = uid()
    before = store.load_snapshot(user, T0)
    store.record_events([subscribed(user)], T0)
    assert store.load_snapshot(user, T0).version > before.version
    assert store.save_decision(decision(user), "fp", T0, before.version).conflict


def test_a_decision_that_sends_nothing_neither_checks_nor_moves_the_version(store: Store) -> None:
    user = uid()
    store.record_events([subscribed(user)], T0)
    snapshot = store.load_snapshot(user, T0)
    store.record_events([subscribed(user, T0 + timedelta(minutes=1))], T0)
    saved = store.save_decision(decision(user, actions=0), "fp", T0, snapshot.version)
    assert saved.inserted and not saved.conflict


@pytest.fixture
def replicas(migrated: str, catalog: Catalog) -> Iterator[tuple[DecisionEngine, DecisionEngine]]:
    """Two engines with their own connections and locks on one database, as two processes have."""
    stores = [Store(Database(migrated)) for _ in range(2)]
    yield DecisionEngine(catalog, stores[0]), DecisionEngine(catalog, stores[1])
    for s in stores:
        s.close()


def promo(user: str, minutes: float) -> DecisionRequest:
    return DecisionRequest(
        uid("req"),
        user,
        "scheduled",
        T0 + timedelta(minutes=minutes),
        RequestContext(),
        (Channel.EMAIL,),
        explain=True,
    )


def test_two_replicas_racing_for_one_customer_respect_the_cap(
    replicas: tuple[DecisionEngine, DecisionEngine], catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replica b sends the day's promotion between replica a reading the customer and a committing: a's
    decision does not commit, a decides again and sees the cap (one promotion a day) that b used."""
    a, b = replicas
    user = find_unit(catalog, {"global_holdout": "treated"})
    a.record_events([subscribed(user, T0 - timedelta(days=10))])
    reads = 0
    load = a.store.load_snapshot

    def load_then_race(*args: Any, **kwargs: Any) -> Any:
        nonlocal reads
        reads += 1
        snapshot = load(*args, **kwargs)
        if reads == 1:
            assert [x.action_id for x in b.decide(promo(user, 1)).actions] == ["promo_black_friday_email"]
        return snapshot

    monkeypatch.setattr(a.store, "load_snapshot", load_then_race)
    late = a.decide(promo(user, 2))
    assert reads == 2  # decided again on the fresh state
    assert late.actions == ()
    assert {r.action_id: r.reason for r in late.rejected}[
        "promo_black_friday_email"
    ] is ReasonCode.FREQUENCY_CAP
    history = a.store.load_snapshot(user, T0 + timedelta(hours=1)).history
    assert [p.action_id for p in history] == ["promo_black_friday_email"]


def test_a_customer_that_never_stops_changing_gets_aborted_not_a_stale_decision(
    replicas: tuple[DecisionEngine, DecisionEngine], catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = replicas
    user = find_unit(catalog, {"global_holdout": "treated"})
    a.record_events([subscribed(user, T0 - timedelta(days=10))])
    load = a.store.load_snapshot
    events = 0

    def load_then_event(*args: Any, **kwargs: Any) -> Any:
        nonlocal events
        snapshot = load(*args, **kwargs)
        events += 1
        b.record_events([subscribed(user, T0 - timedelta(days=10, minutes=events))])
        return snapshot

    monkeypatch.setattr(a.store, "load_snapshot", load_then_event)
    request = promo(user, 2)
    with pytest.raises(ConflictError, match="retry with the same request_id"):
        a.decide(request)
    assert events == MAX_ATTEMPTS
    assert a.store.find_decision(request.request_id) is None
