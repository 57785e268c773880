"""Monthly partitions on PostgreSQL (migration 0007, ``nextbest.store.partitions``): a database with data
converts and keeps every row, in its month; replays, new decisions and event dedupe work after it; months
are created ahead and rows that landed in the default partition move into their month; retention drops
whole months. Each test has a database of its own (retention deletes by age alone)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from nextbest.catalog import Catalog
from nextbest.decision.engine import DecisionEngine
from nextbest.domain import Channel, DecisionRequest, Event, EventOutcome, EventType, RequestContext
from nextbest.store import Database, Store, upgrade
from nextbest.store import decisions as decisions_module
from nextbest.store.erasure import Erasure
from nextbest.store.migrate import current_revision, head_revision
from nextbest.store.partitions import (
    EVENT_IDS,
    PARTITIONED,
    SCHEMA,
    ensure_partitions,
    month_start,
    partitions,
)
from nextbest.store.schema import assignments, events, experiment_units
from nextbest.store.units import units_from
from tests.conftest import PG_URL, find_unit

pytestmark = [
    pytest.mark.slow,  # a database of its own each, migrated step by step: ~2-4 s
    pytest.mark.skipif(
        not PG_URL, reason="partitions are PostgreSQL's; NEXTBEST_TEST_DATABASE_URL is not set"
    ),
]

NOW = datetime(2026, 11, 20, 9, tzinfo=UTC)
TREATED = {"global_holdout": "treated", "cart_flow_holdout": "treatment"}
TABLES = ("decisions", *PARTITIONED)


@pytest.fixture
def url() -> Iterator[str]:
    name = f"nextbest_partitions_{uuid.uuid4().hex[:10]}"
    admin = create_engine(make_url(PG_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _customer(engine: DecisionEngine, user: str, at: datetime) -> None:
    """Events, state, a decision with exposures and experiment assignments, all at ``at``."""
    results = engine.record_events(
        [
            Event(f"{user}-e1", user, EventType.SUBSCRIBED, at - timedelta(days=3), channel=Channel.EMAIL),
            Event(f"{user}-e2", user, EventType.ORDER_PLACED, at - timedelta(days=2), value=40.0),
        ]
    )
    assert [r.outcome for r in results] == [EventOutcome.ACCEPTED] * 2
    assert engine.decide(_request(user, at)).actions


def _request(user: str, at: datetime) -> DecisionRequest:
    return DecisionRequest(
        f"{user}-cart", user, "cart_abandoned", at, RequestContext(cart_value=80.0, time_zone="UTC")
    )


def _counts(db: Database) -> dict[str, int]:
    with db.reader.connect() as conn:
        return {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES}


def _misplaced(db: Database) -> int:
    """Rows in the default partitions or in a month that is not theirs."""
    bad = 0
    with db.reader.connect() as conn:
        for table in PARTITIONED:
            for name, at in conn.execute(text(f"SELECT tableoid::regclass::text, occurred_at FROM {table}")):
                bad += name != f"{SCHEMA}.{table}_p{at.astimezone(UTC):%Y%m}"
    return bad


def test_a_database_with_data_converts_keeping_every_row_in_its_month(
    url: str, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(url)
    upgrade(db, "0006")
    # Written as the release at 0006 wrote: without each unit's first exposure (experiment_units, 0009).
    monkeypatch.setattr(decisions_module, "merge_exposures", lambda rows: [])
    store = Store(db)
    engine = DecisionEngine(catalog, store, clock=lambda: NOW)
    users = {
        at: find_unit(catalog, TREATED) for at in (NOW - timedelta(days=400), NOW - timedelta(days=40), NOW)
    }
    for at, user in users.items():
        _customer(engine, user, at)
    before = _counts(db)
    store.close()
    monkeypatch.undo()

    upgrade(db)

    assert current_revision(db) == head_revision()
    with db.reader.connect() as conn:  # 0009 filled experiment_units from the assignments
        backfilled = conn.execute(select(experiment_units)).all()
        assert sorted(backfilled) == sorted(conn.execute(units_from(assignments)).all())
    assert {row.user_id for row in backfilled} == set(users.values())
    assert _counts(db) == before and _misplaced(db) == 0
    with db.reader.connect() as conn:
        months = [p.start for p in partitions(conn, "exposures") if not p.is_default]
    assert months[0] == month_start(NOW - timedelta(days=403)) and len(months) >= 14 + 3
    store = Store(db)
    engine = DecisionEngine(catalog, store, clock=lambda: NOW)
    # A replay finds the converted decision; a new one writes after the old ids; the events' dedupe
    # holds across partitions (the same id at another time is a duplicate).
    old = users[NOW - timedelta(days=400)]
    assert engine.decide(_request(old, NOW - timedelta(days=400))).replayed
    assert _counts(db) == before
    _customer(engine, find_unit(catalog, TREATED), NOW + timedelta(hours=1))
    again = [Event(f"{old}-e2", old, EventType.ORDER_PLACED, NOW, value=40.0)]
    assert [r.outcome for r in engine.record_events(again)] == [EventOutcome.DUPLICATE]
    with db.reader.connect() as conn:
        assert conn.execute(select(func.count()).where(events.c.event_id == f"{old}-e2")).scalar_one() == 1
    store.close()
    db.dispose()


def test_an_event_id_stays_unique_across_partitions_under_concurrent_inserts(url: str) -> None:
    db = Database(url)
    upgrade(db)
    insert = text(
        "INSERT INTO events (event_id, user_id, type, occurred_at, received_at, value, details) "
        "VALUES ('e-1', 'u', 'order_placed', :at, :at, 1, '{}') ON CONFLICT DO NOTHING RETURNING event_id"
    )
    second: list[int] = []
    with db.writer.connect() as first:
        with first.begin():
            assert first.execute(insert, {"at": NOW}).all() == [("e-1",)]
            # Another month, while the first insert is not committed yet: it waits for it, then skips.
            thread = threading.Thread(
                target=lambda: second.append(_insert_alone(db, insert, NOW - timedelta(days=60)))
            )
            thread.start()
            thread.join(0.5)
            assert thread.is_alive()
        thread.join(10)
    assert second == [0]
    with db.reader.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM events WHERE event_id = 'e-1'")).scalar_one() == 1
    db.dispose()


def test_a_large_batch_of_events_in_one_transaction_is_stored(url: str) -> None:
    """Each new event id takes a row in the ids table, not a lock held in shared memory: 20,000 events in
    one transaction (0007's advisory locks ran the server out of lock slots at a few thousand)."""
    db = Database(url)
    upgrade(db)
    with db.writer.begin() as conn:
        stored = conn.execute(
            text(
                "INSERT INTO events (event_id, user_id, type, occurred_at, received_at, value, details) "
                "SELECT 'big-' || g, 'u', 'order_placed', :at, :at, 1, '{}' FROM generate_series(1, 20000) g "
                "ON CONFLICT DO NOTHING"
            ),
            {"at": NOW},
        ).rowcount
    assert stored == 20000
    with db.reader.connect() as conn:
        assert conn.execute(text(f"SELECT count(*) FROM {EVENT_IDS}")).scalar_one() == 20000
    db.dispose()


def test_an_erased_event_frees_its_id(url: str, catalog: Catalog) -> None:
    db = Database(url)
    upgrade(db)
    store = Store(db)
    engine = DecisionEngine(catalog, store, clock=lambda: NOW)
    user = find_unit(catalog, TREATED)
    _customer(engine, user, NOW)
    assert not Erasure(db).erase_customer(user, NOW, "tester").nothing_left
    with db.reader.connect() as conn:
        left = conn.execute(
            text(f"SELECT count(*) FROM {EVENT_IDS} WHERE event_id LIKE :u"), {"u": f"{user}-%"}
        )
        assert left.scalar_one() == 0
    again = [Event(f"{user}-e2", user, EventType.ORDER_PLACED, NOW, value=40.0)]
    assert [r.outcome for r in engine.record_events(again)] == [EventOutcome.ACCEPTED]
    store.close()
    db.dispose()


def _insert_alone(db: Database, insert: object, at: datetime) -> int:
    with db.writer.begin() as conn:
        return len(conn.execute(insert, {"at": at}).all())  # type: ignore[call-overload]


def test_months_are_created_ahead_and_default_rows_move_into_theirs(url: str) -> None:
    db = Database(url)
    upgrade(db)
    old = datetime(2019, 3, 5, tzinfo=UTC)
    with db.writer.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO events (event_id, user_id, type, occurred_at, received_at, value, details) "
                "VALUES ('late', 'u', 'order_placed', :at, :at, 1, '{}')"
            ),
            {"at": old},
        )
        assert conn.execute(text("SELECT tableoid::regclass::text FROM events")).scalar_one() == (
            f"{SCHEMA}.events_default"
        )
    with db.begin_write() as conn:
        created = ensure_partitions(conn, NOW + timedelta(days=200), ahead=2)
    assert f"{SCHEMA}.events_p201903" in created and f"{SCHEMA}.exposures_p201903" not in created
    assert f"{SCHEMA}.assignments_p{month_start(NOW + timedelta(days=200 + 62)):%Y%m}" in created
    assert _misplaced(db) == 0
    with db.begin_write() as conn:
        assert ensure_partitions(conn, NOW + timedelta(days=200), ahead=2) == []
    db.dispose()


def test_retention_drops_whole_months_and_deletes_only_the_rest(url: str, catalog: Catalog) -> None:
    db = Database(url)
    upgrade(db)
    with db.begin_write() as conn:
        ensure_partitions(conn, NOW, since=NOW - timedelta(days=800))
    store = Store(db)
    engine = DecisionEngine(catalog, store, clock=lambda: NOW)
    ages = (700, 500, 401, 399, 10)
    for days in ages:
        _customer(engine, find_unit(catalog, TREATED), NOW - timedelta(days=days))
    cut = NOW - timedelta(days=400)
    with db.reader.connect() as conn:
        months_before = {t: len(partitions(conn, t)) for t in PARTITIONED}
        expected = {
            t: conn.execute(text(f"SELECT count(*) FROM {t} WHERE occurred_at < :c"), {"c": cut}).scalar_one()
            for t in PARTITIONED
        }

    purged = Erasure(db).purge_before(cut, NOW, "tester", batch=1)

    whole = {t: [p for p in purged.partitions if p.startswith(f"{SCHEMA}.{t}_p")] for t in PARTITIONED}
    with db.reader.connect() as conn:
        for table in PARTITIONED:
            assert whole[table] and all(
                p.end is not None and p.end > cut for p in partitions(conn, table) if not p.is_default
            )
            assert len(partitions(conn, table)) == months_before[table] - len(whole[table])
            left = conn.execute(text(f"SELECT count(*) FROM {table} WHERE occurred_at < :c"), {"c": cut})
            assert left.scalar_one() == 0
    assert {t: purged.rows[t] for t in PARTITIONED} == expected
    with db.reader.connect() as conn:
        old_ids = conn.execute(text(f"SELECT count(*) FROM {EVENT_IDS} WHERE occurred_at < :c"), {"c": cut})
        assert old_ids.scalar_one() == 0
    # The customers decided 399 and 10 days ago are whole.
    assert _counts(db)["decisions"] == 2 and _misplaced(db) == 0
    store.close()
    db.dispose()
