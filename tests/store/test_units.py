"""Each unit's first exposure (``experiment_units``, ``nextbest.store.units``): the merged row is what the
unit's exposures define, whatever the order they arrive in, however often they are replayed, whoever
writes them concurrently; reports read from it equal reports that group the assignments, at every
``as_of``; retention that drops months leaves the rows the remaining assignments define."""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.engine import make_url

from nextbest.catalog import Catalog
from nextbest.decision.engine import DecisionEngine
from nextbest.domain import Channel, DecisionRequest, Event, EventType, RequestContext
from nextbest.reports.aggregate import STORE, Metric, ReportSource, aggregate_many
from nextbest.store import Database, Store, upgrade
from nextbest.store.erasure import Erasure
from nextbest.store.partitions import ensure_partitions
from nextbest.store.schema import assignments, decisions, events, experiment_units
from nextbest.store.units import merge_exposures, units_from, upsert_units
from tests.conftest import PG_URL

T0 = datetime(2026, 9, 1, tzinfo=UTC)
ARMS = ("a", "b", "c")

Exposure = tuple[str, str, int]  # user, arm, minutes after T0


def truth(exposures: Sequence[Exposure], experiment: str) -> dict[tuple[str, str], tuple[str, datetime, Any]]:
    """The definition, computed the slow way: first time, the smallest arm at it, the first time in
    another arm."""
    out = {}
    for user in {u for u, _, _ in exposures}:
        mine = [(T0 + timedelta(minutes=m), arm) for u, arm, m in exposures if u == user]
        first = min(t for t, _ in mine)
        arm = min(a for t, a in mine if t == first)
        others = [t for t, a in mine if a != arm]
        out[(experiment, user)] = (arm, first, min(others) if others else None)
    return out


def rows_of(exposures: Sequence[Exposure], experiment: str) -> list[dict[str, Any]]:
    return [
        {
            "experiment_id": experiment,
            "user_id": u,
            "arm_id": arm,
            "occurred_at": T0 + timedelta(minutes=m),
        }
        for u, arm, m in exposures
    ]


exposure_lists = st.lists(
    st.tuples(st.sampled_from(["u1", "u2", "u3"]), st.sampled_from(ARMS), st.integers(0, 5)),
    min_size=1,
    max_size=12,
)


@given(exposure_lists, st.randoms(use_true_random=False))
@settings(max_examples=300, deadline=None)
def test_merging_in_any_order_with_replays_gives_the_definition(
    exposures: list[Exposure], rnd: random.Random
) -> None:
    shuffled = exposures + rnd.sample(exposures, k=len(exposures) // 2)  # some replayed
    rnd.shuffle(shuffled)
    merged = merge_exposures(rows_of(shuffled, "e"))
    assert [(r["experiment_id"], r["user_id"]) for r in merged] == sorted(truth(exposures, "e"))
    assert {
        (r["experiment_id"], r["user_id"]): (r["arm_id"], r["first_at"], r["mixed_at"]) for r in merged
    } == (truth(exposures, "e"))


@given(exposure_lists, st.integers(-1, 7))
@settings(max_examples=300, deadline=None)
def test_as_of_any_moment_the_row_says_what_grouping_the_exposures_says(
    exposures: list[Exposure], minutes: int
) -> None:
    as_of = T0 + timedelta(minutes=minutes)
    for (_, user), (arm, first, mixed) in truth(exposures, "e").items():
        seen = {a for u, a, m in exposures if u == user and T0 + timedelta(minutes=m) <= as_of}
        assert (first <= as_of) == bool(seen)
        assert (mixed is not None and mixed <= as_of) == (len(seen) > 1)
        if len(seen) == 1:
            assert seen == {arm}


def _exposure_rows(db: Database, experiment: str, exposures: Sequence[Exposure]) -> list[dict[str, Any]]:
    """Decision and assignment rows for ``exposures`` (one decision each)."""
    out = []
    with db.writer.begin() as conn:
        for i, (u, arm, m) in enumerate(exposures):
            at = T0 + timedelta(minutes=m)
            decision_id = uuid.uuid4().hex
            conn.execute(
                insert(decisions),
                {
                    "decision_id": decision_id,
                    "request_id": f"{experiment}-{i}-{decision_id}",
                    "user_id": u,
                    "trigger": "cart_abandoned",
                    "occurred_at": at,
                    "decided_at": at,
                    "catalog_version": "v",
                    "fingerprint": "f",
                    "payload": {},
                },
            )
            out.append(
                {
                    "decision_id": decision_id,
                    "user_id": u,
                    "experiment_id": experiment,
                    "arm_id": arm,
                    "bucket": 0.5,
                    "hash_version": 2,
                    "seed": experiment,
                    "probability": 0.5,
                    "held_out": arm == "a",
                    "action_id": "cart_reminder_email",
                    "flow": "cart_abandonment",
                    "channel": "email",
                    "send_at": at,
                    "parameters": {},
                    "score": 0.1,
                    "occurred_at": at,
                    "catalog_version": "v",
                }
            )
    return out


def _write(db: Database, rows: Sequence[dict[str, Any]]) -> None:
    """What the group commit does with a batch: the assignments, then their units merged in."""
    with db.writer.begin() as conn:
        conn.execute(insert(assignments), list(rows))
        conn.execute(upsert_units(db.dialect), merge_exposures(rows))


def _stored(db: Database, experiment: str) -> dict[tuple[str, str], tuple[str, datetime, Any]]:
    u = experiment_units.c
    with db.reader.connect() as conn:
        rows = conn.execute(select(experiment_units).where(u.experiment_id == experiment)).all()
        derived = conn.execute(units_from(assignments, assignments.c.experiment_id == experiment)).all()
    stored = {(r.experiment_id, r.user_id): (r.arm_id, r.first_at, r.mixed_at) for r in rows}
    assert stored == {(r.experiment_id, r.user_id): (r.arm_id, r.first_at, r.mixed_at) for r in derived}
    return stored


def _reports_agree(db: Database, experiment: str, moments: Sequence[datetime]) -> None:
    """The report from experiment_units equals the report that groups the assignments, at each moment."""
    with db.reader.connect() as conn:
        for as_of in moments:
            fast = aggregate_many(conn, experiment, list(Metric), as_of=as_of, source=STORE)
            slow = aggregate_many(conn, experiment, list(Metric), as_of=as_of, source=ReportSource())
            assert fast == slow, as_of


def _events(db: Database, users: Sequence[str], rnd: random.Random) -> None:
    with db.writer.begin() as conn:
        for u in users:
            for k in range(3):
                at = T0 + timedelta(minutes=rnd.randint(-60, 600))
                conn.execute(
                    insert(events),
                    {
                        "event_id": uuid.uuid4().hex,
                        "user_id": u,
                        "type": rnd.choice(["order_placed", "product_viewed", "refunded"]),
                        "occurred_at": at,
                        "received_at": at,
                        "value": float(10 + k),
                        "details": {},
                    },
                )


def test_out_of_order_batches_and_replays_store_the_true_first_exposure(migrated: str) -> None:
    db = Database(migrated)
    rnd = random.Random(7)
    experiment = f"exp-{uuid.uuid4().hex[:8]}"
    users = [f"{experiment}-u{i}" for i in range(30)]
    exposures = [(rnd.choice(users), rnd.choice(ARMS[:2]), rnd.randint(0, 300)) for _ in range(150)]
    # Most units stay in one arm: a unit is one arm's unless a second arm is drawn for it.
    exposures = [(u, "b" if int(u.rsplit("u", 1)[1]) % 3 else arm, m) for u, arm, m in exposures]
    rows = _exposure_rows(db, experiment, exposures)
    order = list(range(len(rows)))
    rnd.shuffle(order)  # written latest first, earliest first, any order
    batches = [[rows[i] for i in order[k : k + 7]] for k in range(0, len(order), 7)]
    for batch in batches:
        _write(db, batch)
    with db.writer.begin() as conn:  # replays: the same units merged again change nothing
        for batch in batches[:5]:
            conn.execute(upsert_units(db.dialect), merge_exposures(batch))
    assert _stored(db, experiment) == truth(exposures, experiment)
    _events(db, users, rnd)
    firsts = sorted(t for _, t, _ in truth(exposures, experiment).values())
    moments = [T0 - timedelta(minutes=1), firsts[0], firsts[len(firsts) // 2], T0 + timedelta(days=1)]
    _reports_agree(db, experiment, moments)
    with db.reader.connect() as conn:  # before any unit's first exposure: none is counted
        before = aggregate_many(conn, experiment, list(Metric), as_of=T0 - timedelta(minutes=1))
    assert before == ({m.value: {} for m in Metric}, 0)
    db.dispose()


def test_the_group_commit_keeps_units_of_decisions_and_a_replay_changes_nothing(
    store: Store, catalog: Catalog
) -> None:
    engine = DecisionEngine(catalog, store, clock=lambda: T0)
    users = [f"gc-{uuid.uuid4().hex[:8]}-{i}" for i in range(6)]
    context = RequestContext(cart_value=80.0, time_zone="UTC")
    requests = [
        # The latest decision first: a stored first exposure must move back to an earlier one.
        DecisionRequest(f"{u}-{k}", u, "cart_abandoned", T0 + timedelta(hours=5 - k), context)
        for u in users
        for k in range(3)
    ]
    engine.record_events(
        [
            Event(f"{u}-s", u, EventType.SUBSCRIBED, T0 - timedelta(days=3), channel=Channel.EMAIL)
            for u in users
        ]
    )
    for r in requests:
        engine.decide(r)
    u = experiment_units.c
    with store.db.reader.connect() as conn:
        experiments = set(conn.execute(select(u.experiment_id).where(u.user_id.in_(users))).scalars())
    assert experiments, "the bundled catalog's experiments expose cart abandoners"
    before = {e: _stored(store.db, e) for e in experiments}  # each equal to its assignments grouped
    for r in requests[:4]:  # replayed requests write nothing new
        engine.decide(r)
    assert {e: _stored(store.db, e) for e in experiments} == before


@pytest.fixture
def own_postgres() -> Iterator[str]:
    if not PG_URL:
        pytest.skip("NEXTBEST_TEST_DATABASE_URL is not set")
    name = f"nextbest_units_{uuid.uuid4().hex[:10]}"
    admin = create_engine(make_url(PG_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    db = Database(url)
    upgrade(db)
    db.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_concurrent_writers_end_with_the_true_first_exposure(own_postgres: str) -> None:
    db = Database(own_postgres, pool_size=4)
    rnd = random.Random(11)
    experiment = "concurrent"
    users = [f"c{i}" for i in range(40)]
    exposures = [(rnd.choice(users), rnd.choice(ARMS), rnd.randint(0, 1000)) for _ in range(400)]
    rows = _exposure_rows(db, experiment, exposures)
    rnd.shuffle(rows)
    errors: list[BaseException] = []

    def writer(part: list[dict[str, Any]]) -> None:
        try:
            for k in range(0, len(part), 5):
                _write(db, part[k : k + 5])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(rows[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert _stored(db, experiment) == truth(exposures, experiment)
    db.dispose()


def test_retention_dropping_months_leaves_the_units_the_remaining_exposures_define(
    own_postgres: str,
) -> None:
    db = Database(own_postgres)
    with db.begin_write() as conn:
        ensure_partitions(conn, T0 + timedelta(days=90), since=T0 - timedelta(days=10))
    rnd = random.Random(3)
    experiment = "retention"
    users = [f"r{i}" for i in range(20)]
    # Minutes across three months: September, October, November.
    exposures = [(rnd.choice(users), rnd.choice(ARMS[:2]), rnd.randint(0, 80 * 24 * 60)) for _ in range(120)]
    _write(db, _exposure_rows(db, experiment, exposures))
    _events(db, users, rnd)
    cut = datetime(2026, 10, 1, tzinfo=UTC)
    purged = Erasure(db).purge_before(cut, T0 + timedelta(days=90), "tester")
    assert any("assignments_p202609" in p for p in purged.partitions)
    left = [(u, arm, m) for u, arm, m in exposures if T0 + timedelta(minutes=m) >= cut]
    assert _stored(db, experiment) == truth(left, experiment)
    _reports_agree(db, experiment, [cut, cut + timedelta(days=20), T0 + timedelta(days=90)])
    db.dispose()
