"""Database.check: what health reports about the database — a hang within the timeout, and failing
writes until a write succeeds again."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from nextbest.errors import StoreUnavailableError
from nextbest.store import Database, Store
from nextbest.store.migrate import upgrade
from tests.conftest import uid
from tests.store.test_store import T0, decision


def test_check_passes_on_a_healthy_database(migrated: str) -> None:
    db = Database(migrated, connect_timeout=3, statement_timeout=5)
    try:
        db.check(5)
        assert not db.health.failing
    finally:
        db.dispose()


def test_failing_writes_stay_unhealthy_until_a_write_succeeds_and_none_fails_for_a_while(
    migrated: str,
) -> None:
    store = Store(Database(migrated))
    health = store.db.health
    health.hold = 0.3
    try:
        health.failed()
        assert health.failing
        time.sleep(0.4)
        assert health.failing  # no write has succeeded since
        store.db.check(5)  # the probe commits a write of its own
        assert not health.failing
        health.failed()
        assert store.save_decision(decision(uid()), "fp", T0)  # as does any decision...
        assert health.failing  # ...but a full disk fails some writes and not others: hold on
        time.sleep(0.4)
        assert not health.failing
    finally:
        store.close()


def test_a_hung_database_is_unhealthy_within_the_timeout_and_recovers(tmp_path: Path) -> None:
    """Another program holds SQLite's write lock: the probe write waits on it, the check does not."""
    db = Database(f"sqlite:///{tmp_path}/h.db")
    db.health.hold = 0
    upgrade(db)
    blocker = sqlite3.connect(tmp_path / "h.db", isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        db.health.failed()
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError, match="did not answer within"):
            db.check(0.3)
        assert time.monotonic() - started < 1
        with pytest.raises(StoreUnavailableError, match="has not answered"):
            db.check(0.3)  # the probe is still stuck: no second one piles up
        blocker.execute("ROLLBACK")
        deadline = time.monotonic() + 5
        while True:
            try:
                db.check(0.3)
                break
            except StoreUnavailableError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert not db.health.failing
    finally:
        blocker.close()
        db.dispose()


def test_cutting_connections_fails_a_call_stuck_on_postgresql_at_once(migrated: str) -> None:
    """What health does when PostgreSQL hangs: the calls waiting on it fail now, not at their deadline.
    (A hung server is simulated by a long pg_sleep; the harness freezes a real one.)"""
    db = Database(migrated)
    if db.dialect != "postgresql":
        db.dispose()
        pytest.skip("SQLite calls do not wait on a server")
    outcome: list[BaseException | None] = []

    def stuck() -> None:
        try:
            with db.reader.connect() as conn:
                conn.execute(text("SELECT pg_sleep(20)"))
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    try:
        thread = threading.Thread(target=stuck)
        thread.start()
        time.sleep(0.5)
        started = time.monotonic()
        db._cut_connections()
        thread.join(5)
        assert not thread.is_alive() and time.monotonic() - started < 5
        assert isinstance(outcome[0], OperationalError), outcome
        db.ping()  # the pool replaces the cut connection
        # While health finds the server hung, no call waits out a connect timeout on it...
        db.hung = True
        db.reader.dispose()
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            db.ping()
        assert time.monotonic() - started < 1
        db.check(5)  # ...until a probe (on a connection of its own) gets an answer again
        assert not db.hung
        db.ping()
    finally:
        db.dispose()
