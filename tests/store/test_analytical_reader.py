"""Lift reports read through ``Database.analytical_reader``: the decision path's statement timeout does
not cancel them; the caller's deadline does."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from nextbest.store import Database


def test_a_long_report_query_outlives_the_decision_paths_statement_timeout(migrated: str) -> None:
    if not migrated.startswith("postgresql"):
        pytest.skip("statement timeouts are PostgreSQL's")
    db = Database(migrated, statement_timeout=0.05)
    try:
        with pytest.raises(OperationalError), db.reader.connect() as conn:
            conn.execute(text("SELECT pg_sleep(0.3)"))
        with db.analytical_reader() as conn:
            conn.execute(text("SELECT pg_sleep(0.3)"))
        with pytest.raises(OperationalError), db.analytical_reader(timeout=0.05) as conn:
            conn.execute(text("SELECT pg_sleep(0.3)"))
        # The lifted limit was the transaction's only: the pool's next connection has the setting again.
        with pytest.raises(OperationalError), db.reader.connect() as conn:
            conn.execute(text("SELECT pg_sleep(0.3)"))
    finally:
        db.dispose()


def test_the_analytical_reader_reads_on_sqlite_too(migrated: str) -> None:
    db = Database(migrated)
    try:
        with db.analytical_reader(timeout=1.0) as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
    finally:
        db.dispose()
