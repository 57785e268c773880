"""Clean logs: tracebacks without exception messages, caller-triggered lines rate-limited, and — with
customer id hashing on — no raw customer id in the server's log or anywhere in its database after a
simulated store has run through it."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from nextbest.catalog import bundled_catalog_path, load_catalog
from nextbest.client import NextbestClient
from nextbest.server.logs import WITHHELD, RateLimit, SafeFormatter
from nextbest.server.process import server_process
from nextbest.simulate.backends import GrpcBackend
from nextbest.simulate.simulator import Simulator
from nextbest.simulate.world import population
from nextbest.store import Database
from nextbest.store.schema import metadata

SECRET = "customer-4711@example.com"


def _record(msg: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("nextbest.test", logging.WARNING, __file__, 1, msg, args, info)


def test_a_traceback_keeps_the_frames_and_types_but_not_the_messages() -> None:
    try:
        try:
            raise KeyError(SECRET)
        except KeyError as inner:
            raise RuntimeError(f"insert failed [parameters: ({SECRET!r},)]") from inner
    except RuntimeError as exc:
        text = SafeFormatter("%(message)s").format(_record("group commit failed", exc=exc))
    assert SECRET not in text
    assert "builtins.KeyError: " + WITHHELD in text and "builtins.RuntimeError: " + WITHHELD in text
    assert "test_a_traceback_keeps_the_frames" in text  # the frames stay


def test_lines_from_one_place_are_rate_limited_and_the_dropped_ones_counted() -> None:
    now = [0.0]
    limit = RateLimit(burst=3, period=60.0, clock=lambda: now[0])
    passed = [limit.filter(_record("rule of %s failed", "a")) for _ in range(10)]
    assert passed == [True] * 3 + [False] * 7
    assert limit.filter(_record("another line"))  # another template has its own budget
    startup = logging.LogRecord("alembic.runtime.migration", logging.INFO, "", 1, "Running upgrade", (), None)
    assert all(limit.filter(startup) for _ in range(10))  # no caller triggers these
    now[0] = 61.0
    record = _record("rule of %s failed", "a")
    assert limit.filter(record) and "7 similar line(s) dropped" in record.getMessage()


def _dump(url: str) -> str:
    """Every row of the database: SQLite's own dump; on PostgreSQL every table of the schema."""
    if url.startswith("sqlite"):
        database = make_url(url).database
        assert database is not None
        with sqlite3.connect(database) as conn:
            return "\n".join(conn.iterdump())
    db = Database(url)
    try:
        with db.reader.connect() as conn:
            return "\n".join(repr(tuple(r)) for t in metadata.sorted_tables for r in conn.execute(select(t)))
    finally:
        db.dispose()


@pytest.mark.slow
def test_with_hashing_no_raw_customer_id_in_the_log_or_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite only (a fresh file, dumped whole): the store tests check PostgreSQL's read and write
    paths with a key, and a second simulation would double this test's ~15 s."""
    monkeypatch.setenv("NEXTBEST_CUSTOMER_ID_KEY", "k3y-for-the-privacy-test-only")
    seed = 4711  # the simulated ids are sim-4711-NNNNNN: no other test writes them
    catalog = load_catalog(bundled_catalog_path())
    customers = population(40, seed)
    log = tmp_path / "server.log"
    url = f"sqlite:///{tmp_path}/hashed.db"
    args = ["--database-url", url, "--log-level", "DEBUG"]
    with server_process(args, log) as address, NextbestClient(address, timeout=30.0) as client:
        result = Simulator(
            GrpcBackend(client, {a.id: a.flow for a in catalog.actions}),
            customers,
            days=4,
            seed=seed,
            shards=4,
        ).run()
        report = client.lift_report("cart_incentive_discount", as_of=result.end)
    assert result.decisions > 20 and result.events > 100
    assert sum(a.units for a in report.metrics[0].arms) > 0  # reports work on the digests
    logged = log.read_text()
    assert "nextbest serving on" in logged  # the log was captured
    dump = _dump(url)
    assert "h1:" in dump
    leaks = [c.user_id for c in customers if c.user_id in logged or c.user_id in dump]
    assert leaks == []
