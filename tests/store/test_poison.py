"""Poison isolation: a decision the database refuses fails alone; the rest of its group commit is stored.

Validation at the edge should keep such data out; these tests call the store directly, bypassing it, to
check the second line of defence on both databases."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from sqlalchemy import func, select

from nextbest.domain import Decision
from nextbest.errors import DeadlineExceededError, InvalidArgumentError, StoreUnavailableError
from nextbest.store import SavedDecision, Store, ToSave
from nextbest.store.schema import decisions, exposures
from tests.conftest import uid
from tests.store.test_store import T0, decision

# PostgreSQL refuses a NUL byte in text; SQLite stores it, but neither can encode an unpaired surrogate.
POISONS = {"postgresql": "\x00", "sqlite": "\ud800"}


def _save_as_one_batch(store: Store, items: list[tuple[object, int | None]]) -> list[object]:
    """Saves every decision from its own thread, queued while the commit lock is held, so that they all
    land in one group commit; returns each call's result or exception."""
    results: list[object] = [None] * len(items)

    def save(i: int) -> None:
        d, version = items[i]
        try:
            results[i] = store.save_decision(d, "fp", T0, version)  # type: ignore[arg-type]
        except Exception as exc:
            results[i] = exc

    writer = store.writer
    threads = [threading.Thread(target=save, args=(i,)) for i in range(len(items))]
    with writer.commit_lock:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while len(writer._queue) < len(items) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert len(writer._queue) == len(items)
    for t in threads:
        t.join(10)
    return results


def test_a_refused_decision_fails_alone_and_its_batch_is_stored(store: Store) -> None:
    poison = POISONS[store.db.dialect]
    good = [decision(uid()) for _ in range(6)]
    bad = decision(uid())
    object.__setattr__(bad, "request_id", f"req{poison}{uuid.uuid4().hex}")
    isolated = store.writer.isolated
    results = _save_as_one_batch(store, [(d, 0) for d in good[:3]] + [(bad, 0)] + [(d, 0) for d in good[3:]])

    failure = results[3]
    assert isinstance(failure, InvalidArgumentError), failure
    assert [v.field for v in failure.violations] == ["request_id"]
    assert "refused" in str(failure)
    assert all(r is not None and not isinstance(r, Exception) and r for r in results[:3] + results[4:])
    assert store.writer.isolated == isolated + 1
    with store.db.reader.connect() as conn:
        users = [d.user_id for d in good]
        assert conn.execute(select(func.count()).where(decisions.c.user_id.in_(users))).scalar_one() == 6
        assert conn.execute(select(func.count()).where(exposures.c.user_id.in_(users))).scalar_one() == 6
        assert conn.execute(select(func.count()).where(decisions.c.user_id == bad.user_id)).scalar_one() == 0
    # The version guards rolled back with the failed batch were taken again, once: a stale version conflicts.
    assert store.save_decision(decision(good[0].user_id), "fp", T0, 0).conflict
    assert store.save_decision(decision(good[0].user_id), "fp", T0, 1).inserted
    # A refusal says nothing about the database: health still sees writes succeed.
    assert not store.db.health.failing


def test_a_refused_decision_alone_is_invalid_argument(store: Store) -> None:
    bad = decision(uid())
    object.__setattr__(bad, "user_id", f"u{POISONS[store.db.dialect]}")
    with pytest.raises(InvalidArgumentError) as caught:
        store.save_decision(bad, "fp", T0)
    assert "user_id" in [v.field for v in caught.value.violations]
    assert store.find_decision(bad.request_id) is None


def test_a_broken_constraint_fails_alone_but_stays_unavailable(store: Store) -> None:
    """A constraint the code itself broke (NOT NULL) is not the caller's fault: UNAVAILABLE, but alone."""
    good = [decision(uid()) for _ in range(3)]
    bad = decision(uid())
    object.__setattr__(bad, "trigger", None)
    results = _save_as_one_batch(store, [(good[0], None), (bad, None), (good[1], None), (good[2], None)])
    assert isinstance(results[1], StoreUnavailableError)
    assert all(not isinstance(r, Exception) and r for r in results[:1] + results[2:])


def test_a_batch_of_decisions_saved_together_isolates_its_bad_members(store: Store) -> None:
    """``save_decisions`` (``decide_batch``'s write): one group commit; two refused members among 40
    fail alone, found in halves, and the 38 others are stored."""
    poison = POISONS[store.db.dialect]
    items = [ToSave(decision(uid()), "fp", T0, 0) for _ in range(40)]
    for bad in (7, 31):
        object.__setattr__(items[bad].decision, "request_id", f"req{poison}{uuid.uuid4().hex}")
    batches, isolated = store.writer.batches, store.writer.isolated
    results = store.save_decisions(items)
    assert [i for i, r in enumerate(results) if isinstance(r, InvalidArgumentError)] == [7, 31]
    assert all(isinstance(r, SavedDecision) and r.inserted for i, r in enumerate(results) if i not in (7, 31))
    assert store.writer.isolated == isolated + 1
    # Halves: far fewer transactions than one per member.
    assert store.writer.batches - batches <= 16
    with store.db.reader.connect() as conn:
        users = [item.decision.user_id for item in items]
        assert conn.execute(select(func.count()).where(decisions.c.user_id.in_(users))).scalar_one() == 38


def test_a_decision_whose_deadline_passed_behind_a_commit_is_not_written_and_fails_alone(
    store: Store,
) -> None:
    """A decision queued behind a commit that outlasts its caller's deadline is not written (an exposure
    for an answer nobody receives); the others in its group commit are."""
    late, on_time = decision(uid()), decision(uid())
    results: dict[str, object] = {}

    def save(d: Decision, deadline: float) -> None:
        try:
            results[d.user_id] = store.save_decision(d, "fp", T0, 0, deadline)
        except Exception as exc:
            results[d.user_id] = exc

    now = time.monotonic()
    threads = [
        threading.Thread(target=save, args=(late, now + 0.05)),
        threading.Thread(target=save, args=(on_time, now + 60)),
    ]
    with store.writer.commit_lock:
        for t in threads:
            t.start()
        while len(store.writer._queue) < 2 and time.monotonic() < now + 10:
            time.sleep(0.005)
        time.sleep(0.1)
    for t in threads:
        t.join(10)
    assert isinstance(results[late.user_id], DeadlineExceededError), results
    saved = results[on_time.user_id]
    assert isinstance(saved, SavedDecision) and saved.inserted
    assert store.find_decision(late.request_id) is None
    assert store.find_decision(on_time.request_id) is not None
    assert not store.db.health.failing  # a caller's deadline says nothing about the database
