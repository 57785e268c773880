"""Erasure, retention and the audit log on SQLite and PostgreSQL: after an erasure no table holds
anything of the customer, the audit row is there, and the lift report counts one unit fewer and one
erased; with a customer id key no table holds a raw id and decisions, replays and caps still work."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from nextbest.catalog import Catalog
from nextbest.decision.engine import DecisionEngine
from nextbest.domain import Channel, Decision, DecisionRequest, Event, EventOutcome, EventType, RequestContext
from nextbest.errors import InvalidArgumentError
from nextbest.experiments import assign
from nextbest.reports import ReportRequest, build_report
from nextbest.store import Database, Store, upgrade
from nextbest.store.audit import AuditLog
from nextbest.store.erasure import Erasure
from nextbest.store.pseudonyms import CustomerIds, load_key
from nextbest.store.schema import decisions, metadata
from tests.conftest import find_unit, uid

T0 = datetime(2026, 11, 20, 9, tzinfo=UTC)
# Units that get the cart reminder (treated by both holdouts that cover it), so they have exposures.
TREATED = {"global_holdout": "treated", "cart_flow_holdout": "treatment"}
KEY = b"test-key-0123456789abcdef"


@pytest.fixture
def db(migrated: str) -> Iterator[Database]:
    database = Database(migrated)
    yield database
    database.dispose()


@pytest.fixture
def own_db(database_url: str, tmp_path: Path) -> Iterator[Database]:
    """A database of this test's own, on the same backend: retention deletes by age alone and must not
    take other tests' rows (the Hillstrom tests' are from 2008) out of the session's database."""
    if database_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path}/own.db"
    else:
        name = f"nextbest_retention_{uuid.uuid4().hex[:10]}"
        admin = create_engine(make_url(database_url), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
    database = Database(url)
    upgrade(database)
    yield database
    database.dispose()
    if not database_url.startswith("sqlite"):
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _engine(catalog: Catalog, db: Database, ids: CustomerIds | None = None) -> tuple[DecisionEngine, Store]:
    store = Store(db, ids=ids)
    return DecisionEngine(catalog, store, clock=lambda: T0), store


def _customer(engine: DecisionEngine, user: str, at: datetime = T0) -> Decision:
    """A subscriber who placed an order and abandoned a cart: events, state, a decision with exposures
    (a pending e-mail) and experiment assignments."""
    results = engine.record_events(
        [
            Event(f"{user}-e1", user, EventType.SUBSCRIBED, at - timedelta(days=3), channel=Channel.EMAIL),
            Event(
                f"{user}-e2",
                user,
                EventType.ORDER_PLACED,
                at - timedelta(days=2),
                value=40.0,
                order_id=f"{user}-o1",
            ),
        ]
    )
    assert [r.outcome for r in results] == [EventOutcome.ACCEPTED] * 2
    return engine.decide(
        DecisionRequest(
            f"{user}-cart-1", user, "cart_abandoned", at, RequestContext(cart_value=80.0, time_zone="UTC")
        )
    )


def _rows_mentioning(db: Database, needle: str) -> dict[str, int]:
    """Per table of the schema, the rows whose any column (JSON documents included) holds ``needle``."""
    found = {}
    with db.reader.connect() as conn:
        for table in metadata.sorted_tables:
            n = sum(needle in repr(tuple(row)) for row in conn.execute(select(table)))
            if n:
                found[table.name] = n
    return found


def _report(db: Database, catalog: Catalog) -> tuple[int, int]:
    request = ReportRequest.validated("global_holdout", (), as_of=T0 + timedelta(days=1))
    with db.reader.connect() as conn:
        report = build_report(conn, catalog, request)
    return sum(report.units.values()), report.erased_units


def test_erasure_leaves_nothing_of_the_customer_and_the_report_counts_it(
    db: Database, catalog: Catalog
) -> None:
    engine, store = _engine(catalog, db)
    # The target is treated; a held-out unit makes the report's control.
    users = [
        find_unit(catalog, TREATED),
        find_unit(catalog, TREATED),
        find_unit(catalog, {"global_holdout": "holdout"}),
    ]
    for user in users:
        decision = _customer(engine, user)
        assert any(e.experiment_id == "global_holdout" for e in decision.exposures)
    target = users[0]
    assert set(_rows_mentioning(db, target)) >= {
        "assignments",
        "customers",
        "decisions",
        "events",
        "exposures",
    }
    units, erased_before = _report(db, catalog)

    erased = Erasure(db).erase_customer(target, T0 + timedelta(hours=1), "tester", "ticket 7")

    assert erased.rows["events"] == 2 and erased.rows["customers"] == 1 and erased.rows["decisions"] == 1
    assert erased.rows["exposures"] >= 1 and erased.rows["assignments"] >= 1
    assert "global_holdout" in erased.experiment_units and not erased.nothing_left
    assert _rows_mentioning(db, target) == {}
    assert "exposures" in _rows_mentioning(db, users[1])  # the others are untouched
    assert _report(db, catalog) == (units - 1, erased_before + 1)
    entry = AuditLog(db).read(limit=1)[-1]
    assert (entry.principal, entry.action, entry.detail["reason"]) == ("tester", "erase_customer", "ticket 7")
    assert entry.detail["rows"] == dict(erased.rows) and "global_holdout" in entry.detail["experiments"]

    again = Erasure(db).erase_customer(target, T0 + timedelta(hours=2), "tester")
    assert again.nothing_left and not any(again.rows.values()) and not again.experiment_units
    assert _report(db, catalog) == (units - 1, erased_before + 1)
    assert AuditLog(db).read(limit=1)[-1].detail["rows"] == dict(again.rows)
    store.close()


def test_an_erased_customer_decides_again_from_nothing(db: Database, catalog: Catalog) -> None:
    engine, store = _engine(catalog, db)
    user = uid("again")
    first = _customer(engine, user)
    Erasure(db).erase_customer(user, T0, "tester")
    snapshot = store.load_snapshot(user, T0)
    assert snapshot.version == 0 and snapshot.history == () and snapshot.state.orders_count == 0
    # The request id is free again: the same request is a new decision, not a replay.
    replay = engine.decide(DecisionRequest(f"{user}-cart-1", user, "cart_abandoned", T0, RequestContext()))
    assert not replay.replayed and replay.decision_id != first.decision_id
    store.close()


@pytest.mark.parametrize(
    ("user_id", "reason", "field"),
    [("", "", "user_id"), ("x" * 129, "", "user_id"), ("u", "r" * 513, "reason"), ("u\x00", "", "user_id")],
    ids=["empty", "long-id", "long-reason", "nul"],
)
def test_a_bad_erasure_request_names_the_field(db: Database, user_id: str, reason: str, field: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        Erasure(db).erase_customer(user_id, T0, "tester", reason)
    assert [v.field for v in caught.value.violations] == [field]


def test_with_a_key_no_table_holds_the_raw_id_and_the_pipeline_still_works(
    db: Database, catalog: Catalog
) -> None:
    ids = CustomerIds(KEY)
    engine, store = _engine(catalog, db, ids)
    user = find_unit(catalog, TREATED)
    decision = _customer(engine, user)
    assert decision.actions
    for exposure in decision.exposures:  # assignment still hashes the raw id
        assert exposure.arm_id == assign(catalog.experiment(exposure.experiment_id), user).arm_id  # type: ignore[arg-type]
    # Replays, deduplication and the customer's state and history work on the digests.
    replay = engine.decide(
        DecisionRequest(
            f"{user}-cart-1", user, "cart_abandoned", T0, RequestContext(cart_value=80.0, time_zone="UTC")
        )
    )
    assert (
        replay.replayed
        and replay.decision_id == decision.decision_id
        and replay.request_id == f"{user}-cart-1"
    )
    again = engine.record_events([Event(f"{user}-e1", user, EventType.SUBSCRIBED, T0, channel=Channel.EMAIL)])
    assert again[0].outcome is EventOutcome.DUPLICATE and again[0].event_id == f"{user}-e1"
    snapshot = store.load_snapshot(user, T0 + timedelta(minutes=1))
    assert snapshot.state.user_id == user and snapshot.state.orders_count == 1
    assert {p.decision_id for p in snapshot.history} == {decision.decision_id}

    assert _rows_mentioning(db, user) == {}
    digest = ids.stored(user)
    assert set(_rows_mentioning(db, digest)) >= {
        "assignments",
        "customers",
        "decisions",
        "events",
        "exposures",
    }
    erased = Erasure(db, ids).erase_customer(user, T0, "tester")
    assert erased.rows["decisions"] == 1 and _rows_mentioning(db, digest) == {}
    store.close()


def test_a_key_is_checked_when_it_is_loaded(tmp_path: object) -> None:
    assert load_key(None, None) is None
    assert load_key(" " + KEY.decode() + "\n", None) == KEY
    with pytest.raises(ValueError, match="at least 16 bytes"):
        load_key("short", None)
    with pytest.raises(ValueError, match="not both"):
        load_key(KEY.decode(), tmp_path)  # type: ignore[arg-type]
    assert (
        CustomerIds(KEY).stored("c-1")
        == CustomerIds(KEY).stored("c-1")
        != CustomerIds(KEY + b"x").stored("c-1")
    )
    assert CustomerIds().stored("c-1") == "c-1" and CustomerIds(KEY).stored("") == ""


@pytest.mark.slow  # a database of its own: ~2 s on PostgreSQL
def test_retention_deletes_what_is_older_in_short_batches(own_db: Database, catalog: Catalog) -> None:
    db = own_db
    engine, store = _engine(catalog, db)
    old, recent = find_unit(catalog, TREATED), find_unit(catalog, TREATED)
    _customer(engine, old, T0 - timedelta(days=500))
    _customer(engine, recent, T0)

    purged = Erasure(db).purge_before(T0 - timedelta(days=400), T0, "tester", batch=1)

    assert purged.rows["decisions"] >= 1 and purged.rows["events"] >= 2 and purged.rows["exposures"] >= 1
    left_old = _rows_mentioning(db, old)
    assert left_old == {"customers": 1}  # state folded from events stays
    assert set(_rows_mentioning(db, recent)) >= {"assignments", "decisions", "events", "exposures"}
    entry = AuditLog(db).read(limit=1)[-1]
    assert entry.action == "retention" and entry.detail["rows"] == dict(purged.rows)
    store.close()


def test_the_audit_log_refuses_changes(db: Database) -> None:
    Erasure(db).erase_customer(uid("nobody"), T0, "tester")
    for statement in ("UPDATE audit_log SET principal = 'someone else'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"), db.writer.begin() as conn:
            conn.execute(text(statement))
    assert AuditLog(db).read(limit=1)[-1].principal == "tester"


@pytest.mark.slow  # a database of its own: ~2 s on PostgreSQL
def test_retention_while_decisions_are_written_loses_nothing(own_db: Database, catalog: Catalog) -> None:
    """Retention's short transactions interleave with the group commit: every decision acknowledged
    meanwhile is still there, and only old rows went."""
    db = own_db
    engine, store = _engine(catalog, db)
    old = [find_unit(catalog, TREATED) for _ in range(3)]
    for user in old:
        _customer(engine, user, T0 - timedelta(days=800))
    saved: list[Decision] = []
    failures: list[BaseException] = []

    def decide() -> None:
        try:
            for _ in range(15):
                saved.append(_customer(engine, uid("live")))
        except BaseException as exc:  # pragma: no cover - the assertion below reports it
            failures.append(exc)

    writer = threading.Thread(target=decide)
    writer.start()
    purged = Erasure(db).purge_before(T0 - timedelta(days=700), T0, "tester", batch=1)
    writer.join()
    assert failures == [] and len(saved) == 15
    assert purged.rows["decisions"] >= 3 and all(_rows_mentioning(db, u) == {"customers": 1} for u in old)
    with db.reader.connect() as conn:
        stored = set(conn.execute(select(decisions.c.decision_id)).scalars())
    assert {d.decision_id for d in saved} <= stored
    store.close()


def test_a_decision_made_before_an_erasure_does_not_bring_the_customer_back(
    db: Database, catalog: Catalog
) -> None:
    """The decision read the customer (version n), the erasure committed, then the decision's write came:
    it writes nothing (a conflict: the engine decides again, from nothing) instead of recreating rows."""
    engine, store = _engine(catalog, db)
    user = uid("race")
    first = _customer(engine, user)
    snapshot = store.load_snapshot(user, T0 + timedelta(minutes=5))
    assert snapshot.version > 0
    late = Decision(
        "0" * 31 + "1",
        f"{user}-late",
        user,
        "cart_abandoned",
        T0 + timedelta(minutes=5),
        first.catalog_version,
        first.actions,
        (),
        exposures=first.exposures,
    )
    Erasure(db).erase_customer(user, T0 + timedelta(minutes=5), "tester")
    saved = store.save_decision(late, "fp", T0 + timedelta(minutes=5), snapshot.version)
    assert saved.conflict and not saved
    assert _rows_mentioning(db, user) == {}
    store.close()
