"""SQLite's WAL restart pauses the writers only briefly: with a reader still on the WAL it is put off
(the writers resume, the decisions still commit), and done once the reader has gone."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from nextbest.store import Database, Store, upgrade
from nextbest.store.database import Checkpointer
from tests.conftest import uid
from tests.store.test_store import T0, decision


def _store_with_a_wal(tmp_path: Path) -> tuple[Store, Checkpointer]:
    """A SQLite store with 20 decisions in its WAL, and its checkpointer (run by hand here)."""
    db = Database(f"sqlite:///{tmp_path}/w.db")
    upgrade(db)
    store = Store(db)
    checkpointer = db.checkpointer(interval=3600)
    assert checkpointer is not None
    for _ in range(20):
        store.save_decision(decision(uid()), "fp", T0)
    return store, checkpointer


def test_a_reader_on_the_wal_puts_the_restart_off_without_holding_the_writers(tmp_path: Path) -> None:
    store, checkpointer = _store_with_a_wal(tmp_path)
    try:
        reader = sqlite3.connect(tmp_path / "w.db", isolation_level=None)
        rows = reader.execute("SELECT decision_id FROM decisions")
        assert rows.fetchone() is not None  # a statement under way: a read transaction on the WAL
        store.save_decision(decision(uid()), "fp", T0)  # the reader's snapshot is now an old one
        assert checkpointer.restart() is False  # put off: the reader is still on the WAL
        assert checkpointer.checkpoint() > 10  # and the WAL was not started over
        # The writers were let go: a decision commits, from another thread, while the reader stays.
        saved = []
        writer = threading.Thread(target=lambda: saved.append(store.save_decision(decision(uid()), "fp", T0)))
        writer.start()
        writer.join(10)
        assert saved and saved[0].inserted
        rows.close()
        reader.close()
        assert checkpointer.restart() is True
        store.save_decision(decision(uid()), "fp", T0)
        assert checkpointer.checkpoint() < 10  # the commit after the restart started the WAL over
    finally:
        checkpointer.stop()
        store.close()


def test_a_restart_that_must_wait_waits_for_the_reader_and_then_restarts(tmp_path: Path) -> None:
    # A WAL past twice its restart size waits (``wait=True``) for the readers still on it, and restarts
    # once the last one has gone: it does not give up as a restart that may be put off does.
    store, checkpointer = _store_with_a_wal(tmp_path)
    try:
        reader = sqlite3.connect(tmp_path / "w.db", isolation_level=None, check_same_thread=False)
        rows = reader.execute("SELECT decision_id FROM decisions")
        assert rows.fetchone() is not None
        store.save_decision(decision(uid()), "fp", T0)

        def leave() -> None:
            rows.close()
            reader.close()

        timer = threading.Timer(0.2, leave)
        timer.start()
        assert checkpointer.restart(wait=True) is True  # waited for the reader, did not give up
        timer.join()
        store.save_decision(decision(uid()), "fp", T0)
        assert checkpointer.checkpoint() < 10  # the WAL started over
    finally:
        checkpointer.stop()
        store.close()
