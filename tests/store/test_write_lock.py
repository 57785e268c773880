"""SQLite writers in several processes (``nextbest serve --processes``) wait for each other on a kernel
lock beside the database, not in SQLite's sleeping busy handler."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from nextbest.domain import Channel, Decision, Event, EventType
from nextbest.store import Database, Store, upgrade
from nextbest.store.database import WriteLock
from tests.conftest import uid

T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)


def _hold(path: str, held: Any, release: Any) -> None:
    with WriteLock(Path(path)):
        held.set()
        release.wait(30)


def _taken(path: Path) -> bool:
    """Whether some other open file description holds the lock (checked without waiting)."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the lock if this check took it
    return False


def test_the_lock_excludes_another_process(tmp_path: Path) -> None:
    path = tmp_path / "db-lock"
    context = multiprocessing.get_context("spawn")
    held, release = context.Event(), context.Event()
    child = context.Process(target=_hold, args=(str(path), held, release))
    child.start()
    try:
        assert held.wait(60), "the child process never took the lock"
        assert _taken(path)
    finally:
        release.set()
        child.join(30)
    assert child.exitcode == 0
    assert not _taken(path)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    db = Database(f"sqlite:///{tmp_path / 'nextbest.db'}")
    upgrade(db)
    store = Store(db)
    yield store
    store.close()


def _blocked_while_held(path: Path, write: Callable[[], object]) -> None:
    """Runs ``write`` in a thread while another descriptor holds the lock: it must wait for the lock,
    then complete once it is released."""
    fd = os.open(path, os.O_RDWR)
    done = threading.Event()

    def run() -> None:
        write()
        done.set()

    fcntl.flock(fd, fcntl.LOCK_EX)
    thread = threading.Thread(target=run)
    try:
        thread.start()
        assert not done.wait(0.5), "the write went ahead while another process held the write lock"
    finally:
        os.close(fd)
        thread.join(30)
    assert done.is_set()


def test_decisions_and_events_wait_for_the_lock(sqlite_store: Store, tmp_path: Path) -> None:
    assert sqlite_store.db.write_lock.path == tmp_path / "nextbest.db-lock"  # type: ignore[attr-defined]
    lock = tmp_path / "nextbest.db-lock"
    user = uid()
    event = Event(uid("ev"), user, EventType.SUBSCRIBED, T0, channel=Channel.EMAIL)
    _blocked_while_held(lock, lambda: sqlite_store.record_events([event], T0))
    decision = Decision(uid("d"), uid("req"), user, "cart_abandoned", T0, "cat", (), ())
    _blocked_while_held(lock, lambda: sqlite_store.save_decision(decision, "fp", T0))
    assert sqlite_store.find_decision(decision.request_id) is not None
    assert sqlite_store.load_snapshot(user, T0).state.channels[Channel.EMAIL].consent


def test_postgresql_takes_no_lock() -> None:
    db = Database("postgresql+psycopg://postgres@127.0.0.1:5432/test")  # engines connect lazily
    assert not isinstance(db.write_lock, WriteLock)
    db.dispose()


def test_without_a_lock_file_writers_fall_back_on_sqlite_locking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> int:
        raise PermissionError("read-only directory")

    monkeypatch.setattr("nextbest.store.database.os.open", refuse)
    db = Database(f"sqlite:///{tmp_path / 'nextbest.db'}")
    monkeypatch.undo()
    assert not isinstance(db.write_lock, WriteLock)
    assert "no write lock beside" in caplog.text
    upgrade(db)
    with db.begin_write() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM decisions").scalar() == 0
    db.dispose()
