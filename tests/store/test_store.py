"""The store on SQLite and PostgreSQL: schema, idempotent writes, group commit, event dedupe."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import DateTime, func, select
from sqlalchemy.dialects import sqlite

from nextbest.domain import ActionClass, Channel, ChosenAction, Decision, Event, EventOutcome, EventType
from nextbest.errors import NextbestError, StoreUnavailableError
from nextbest.store import Database, SavedDecision, Store
from nextbest.store.database import ConnectionStash
from nextbest.store.migrate import current_revision, head_revision, upgrade
from nextbest.store.partitions import compared
from nextbest.store.schema import UTCDateTime, decisions, exposures, metadata
from tests.conftest import uid

T0 = datetime(2026, 11, 1, 12, tzinfo=UTC)


def saved_only(results: Sequence[SavedDecision | NextbestError]) -> list[SavedDecision]:
    """``save_decisions``' results, each checked to be a saved decision (no item failed alone)."""
    assert all(isinstance(r, SavedDecision) for r in results), results
    return [r for r in results if isinstance(r, SavedDecision)]


def decision(user: str, request_id: str | None = None, actions: int = 1) -> Decision:
    chosen = tuple(
        ChosenAction(
            f"a{i}", "flow", list(Channel)[i], ActionClass.TRIGGERED, T0 + timedelta(hours=1), {"k": "v"}, 1.5
        )
        for i in range(actions)
    )
    return Decision(uuid.uuid4().hex, request_id or uid("req"), user, "cart_abandoned", T0, "cat", chosen, ())


def test_migrations_match_the_schema_module(migrated: str) -> None:
    db = Database(migrated)
    with db.reader.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "include_object": compared})
        diff = compare_metadata(context, metadata)
    assert current_revision(db) == head_revision()
    upgrade(db)  # idempotent
    db.dispose()
    assert diff == []


def test_decision_round_trip_and_history(store: Store) -> None:
    user = uid()
    d = decision(user, actions=2)
    assert store.save_decision(d, "fp", T0)
    stored = store.find_decision(d.request_id)
    assert stored is not None and stored.fingerprint == "fp"
    assert stored.decision.actions == d.actions and stored.decision.replayed
    snapshot = store.load_snapshot(user, T0 + timedelta(days=1))
    assert sorted(p.action_id for p in snapshot.history) == ["a0", "a1"]
    assert snapshot.history[0].occurred_at == T0 and snapshot.history[0].occurred_at.tzinfo is not None
    assert store.load_snapshot(user, T0 + timedelta(days=91)).history == ()


def test_a_taken_request_id_writes_nothing(store: Store) -> None:
    user, request_id = uid(), uid("req")
    assert store.save_decision(decision(user, request_id), "fp", T0)
    assert not store.save_decision(decision(user, request_id, actions=3), "fp", T0)
    with store.db.reader.connect() as conn:
        assert conn.execute(select(func.count()).where(exposures.c.user_id == user)).scalar_one() == 1


def test_group_commit_durably_writes_every_concurrent_decision(store: Store) -> None:
    user = uid()
    batches_before, writes_before = store.writer.batches, store.writer.writes
    results: list[bool] = []

    def save() -> None:
        for _ in range(25):
            results.append(bool(store.save_decision(decision(user), "fp", T0)))

    threads = [threading.Thread(target=save) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 200
    assert store.writer.writes - writes_before == 200
    with store.db.reader.connect() as conn:
        assert conn.execute(select(func.count()).where(decisions.c.user_id == user)).scalar_one() == 200
    # Batching happened: fewer transactions than decisions (8 threads contend for the commit lock).
    assert store.writer.batches - batches_before < 200


def test_events_dedupe_within_and_across_batches(store: Store) -> None:
    user = uid()
    order = Event(uid("e"), user, EventType.ORDER_PLACED, T0, value=30.0)
    outcomes = [o for o, _ in store.record_events([order, order], T0)]
    assert outcomes == [EventOutcome.ACCEPTED, EventOutcome.DUPLICATE]
    assert store.record_events([order], T0) == [(EventOutcome.DUPLICATE, ())]
    state = store.load_snapshot(user, T0).state
    assert state.orders_count == 1 and state.revenue_total == 30.0


def test_concurrent_batches_for_one_customer_lose_nothing(store: Store) -> None:
    user = uid()

    def record(worker: int) -> None:
        for i in range(10):
            store.record_events(
                [Event(f"{user}-{worker}-{i}", user, EventType.ORDER_PLACED, T0, value=1.0)], T0
            )

    threads = [threading.Thread(target=record, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.load_snapshot(user, T0).state.orders_count == 40


def test_a_failed_write_is_an_error_not_a_success(store: Store) -> None:
    """The database refuses the row (NOT NULL): every waiter gets an error and nothing is stored."""
    bad = decision(uid())
    object.__setattr__(bad, "trigger", None)
    with pytest.raises(StoreUnavailableError):
        store.save_decision(bad, "fp", T0)
    assert store.find_decision(bad.request_id) is None
    good = decision(uid())
    assert store.save_decision(good, "fp", T0)  # the writer thread survived the failure


def test_sqlite_flushes_every_commit_unless_the_store_is_scratch(tmp_path: Path) -> None:
    for durable, level in ((True, 2), (False, 0)):  # FULL: a committed decision survives a power loss
        db = Database(f"sqlite:///{tmp_path}/{durable}.db", durable=durable)
        for engine in (db.reader, db.writer):
            with engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == level
        db.dispose()


def test_sqlite_wal_is_checkpointed_off_the_request_path(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = Database(f"sqlite:///{tmp_path}/w.db")
    upgrade(db)
    store = Store(db)
    with db.writer.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0  # never inside a commit
    for _ in range(50):
        store.save_decision(decision(uid()), "fp", T0)
    wal = tmp_path / "w.db-wal"
    assert wal.stat().st_size > 0
    checkpointer = db.checkpointer()
    assert checkpointer is not None
    assert checkpointer.checkpoint() > 0  # frames copied, and still in the WAL until it restarts
    assert checkpointer.checkpoint("RESTART") > 0
    store.save_decision(decision(uid()), "fp", T0)
    assert checkpointer.checkpoint() < 10  # the commit after the restart started the WAL over
    checkpointer.stop()
    store.close()  # stops the store's own checkpointer with a TRUNCATE checkpoint
    assert not wal.exists() or wal.stat().st_size == 0
    reopened = Store(Database(f"sqlite:///{tmp_path}/w.db"))
    with reopened.db.reader.connect() as conn:
        assert conn.execute(select(func.count()).select_from(decisions)).scalar_one() == 51
    reopened.close()


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 11, 1, 12, tzinfo=UTC),
        datetime(2026, 11, 1, 12, 0, 0, 1, tzinfo=UTC),
        datetime(2026, 3, 29, 1, 30, 15, 999999, tzinfo=ZoneInfo("Europe/Paris")),
        datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC),
        None,
    ],
    ids=["whole-second", "microsecond", "other-zone", "year-999", "none"],
)
def test_sqlite_datetimes_are_written_as_sqlalchemy_writes_them(moment: datetime | None) -> None:
    """The store's own SQLite datetime binding must produce SQLAlchemy's text exactly: history reads
    compare those strings."""
    dialect = sqlite.dialect()
    ours = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    theirs = DateTime(timezone=True).dialect_impl(dialect).bind_processor(dialect)
    assert ours is not None and theirs is not None
    assert ours(moment) == theirs(UTCDateTime().process_bind_param(moment, dialect))


def test_sqlite_datetimes_refuse_naive_values() -> None:
    dialect = sqlite.dialect()
    ours = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    with pytest.raises(ValueError, match="naive"):
        ours(datetime(2026, 11, 1, 12))


def test_stashed_sqlite_connections_are_reused_set_up_and_bounded(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = Database(f"sqlite:///{tmp_path}/s.db")
    stash = ConnectionStash(db.reader, keep=1)
    first, second = stash.take(), stash.take()
    assert first is not second
    assert first.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # the engine's connect hook ran
    assert first.isolation_level is None  # no BEGIN issued by the driver
    stash.give(first)
    stash.give(second)  # one too many: closed
    with pytest.raises(sqlite3.ProgrammingError):
        second.execute("SELECT 1")
    assert stash.take() is first
    stash.give(first)
    stash.close()
    with pytest.raises(sqlite3.ProgrammingError):
        first.execute("SELECT 1")
    db.dispose()
