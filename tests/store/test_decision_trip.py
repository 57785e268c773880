"""The decisions' group commit in one round trip on PostgreSQL (``store.decision_trip``), and the hot
path's kept connections (``database.KeptConnections``): the same outcomes as the general write, per
decision, on both databases."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from nextbest.domain import ActionClass, Cancellation, Channel, ChosenAction, Decision
from nextbest.store import Store, ToSave, decision_trip
from nextbest.store.database import Database, KeptConnections
from tests.conftest import uid
from tests.store.test_store import saved_only

T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)


def decision(user: str, request_id: str | None = None, actions: int = 1, score: float = 0.1) -> Decision:
    chosen = tuple(
        ChosenAction(f"a{i}", "flow", Channel.EMAIL, ActionClass.TRIGGERED, T0, {}, score + i)
        for i in range(actions)
    )
    return Decision(uuid.uuid4().hex, request_id or uid("req"), user, "cart_abandoned", T0, "cat", chosen, ())


def test_a_customer_twice_on_one_version_in_one_group_commit_is_written_once(store: Store) -> None:
    for first_version in (0, 1):  # first seen (the row created), then known (the version advanced)
        user = uid()
        if first_version:
            assert store.save_decision(decision(user), "fp", T0, 0).inserted
        version = store.load_snapshot(user, T0).version
        assert version == first_version
        a, b = decision(user), decision(user)
        saved = store.save_decisions([ToSave(a, "fp", T0, version), ToSave(b, "fp", T0, version)])
        assert [(s.inserted, s.conflict) for s in saved_only(saved)] == [(True, False), (False, True)]
        assert store.find_decision(a.request_id) is not None
        assert store.find_decision(b.request_id) is None
        assert len(store.load_snapshot(user, T0).history) == first_version + 1
        assert store.load_snapshot(user, T0).version == version + 1


def test_one_group_commit_of_stale_replayed_unchecked_and_fresh_decisions(store: Store) -> None:
    stale_user, replay_user, fresh_user, unchecked_user = uid(), uid(), uid(), uid()
    assert store.save_decision(decision(stale_user), "fp", T0, 0).inserted  # now at version 1
    taken = decision(replay_user)
    assert store.save_decision(taken, "fp", T0, 0).inserted
    replayed = decision(replay_user, request_id=taken.request_id)
    fresh, unchecked = decision(fresh_user, actions=2, score=0.25), decision(unchecked_user)
    stale = decision(stale_user)
    saved = store.save_decisions(
        [
            ToSave(stale, "fp", T0, 0),  # read before the first decision: moved on since
            ToSave(replayed, "fp", T0, 1),
            ToSave(fresh, "fp", T0, 0),
            ToSave(unchecked, "fp", T0, None),
        ]
    )
    outcomes = [(s.inserted, s.conflict) for s in saved_only(saved)]
    assert outcomes == [(False, True), (False, False), (True, False), (True, False)]
    assert store.find_decision(stale.request_id) is None
    assert len(store.load_snapshot(stale_user, T0).history) == 1
    stored = store.find_decision(taken.request_id)
    assert stored is not None and stored.decision.decision_id == taken.decision_id
    assert len(store.load_snapshot(replay_user, T0).history) == 1  # the replay wrote no exposure
    history = store.load_snapshot(fresh_user, T0).history
    assert sorted(p.action_id for p in history) == ["a0", "a1"]
    assert len(store.load_snapshot(unchecked_user, T0).history) == 1
    assert store.load_snapshot(unchecked_user, T0).version == 0  # unchecked: no version moved


def test_the_usual_batch_goes_in_one_trip_and_a_preemption_the_general_way(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    if store.db.dialect != "postgresql":
        pytest.skip("the one-trip write is PostgreSQL's")
    trips: list[int] = []
    write = decision_trip.OneTrip.write

    def counted(self: decision_trip.OneTrip, conn: Any, batch: Any) -> set[str]:
        trips.append(len(batch))
        return write(self, conn, batch)

    monkeypatch.setattr(decision_trip.OneTrip, "write", counted)
    user = uid()
    first = decision(user)
    assert store.save_decision(first, "fp", T0, 0).inserted
    assert trips == [1]
    (pending,) = store.load_snapshot(user, T0).history
    preempting = Decision(
        uuid.uuid4().hex,
        uid("req"),
        user,
        "cart_abandoned",
        T0,
        "cat",
        (),
        (),
        cancelled=(
            Cancellation(
                first.decision_id,
                pending.action_id,
                pending.flow,
                pending.channel,
                pending.action_class,
                pending.send_at,
                "replaced",
                pending.exposure_id,
            ),
        ),
    )
    saved = store.save_decision(preempting, "fp", T0, 1)
    assert saved.inserted and saved.cancelled == {pending.exposure_id}
    assert trips == [1]  # the general way: the preemption is not in the one-trip statement


def _admin(url: str) -> Any:
    return psycopg.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False))


def test_a_kept_connection_the_server_closed_is_replaced_after_idling(migrated: str) -> None:
    if not migrated.startswith("postgresql"):
        pytest.skip("kept connections are PostgreSQL's")
    db = Database(migrated)
    kept = KeptConnections(db.reader, keep=2, autocommit=True, idle=0.0, setup=("SET enable_seqscan = off",))
    try:
        conn = kept.take()
        assert conn.execute("SHOW enable_seqscan").fetchone() == ("off",)
        pid = conn.info.backend_pid
        kept.give(conn)
        with _admin(migrated) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        again = kept.take()  # idle longer than 0 s: checked, found closed, replaced
        assert again.info.backend_pid != pid
        assert again.execute("SELECT 1").fetchone() == (1,)
        assert again.execute("SHOW enable_seqscan").fetchone() == ("off",)
        kept.give(again)
    finally:
        kept.close()
        db.dispose()


def test_kept_connections_are_bounded_and_closed(migrated: str) -> None:
    if not migrated.startswith("postgresql"):
        pytest.skip("kept connections are PostgreSQL's")
    db = Database(migrated)
    kept = KeptConnections(db.writer, keep=1, autocommit=False)
    try:
        a, b = kept.take(), kept.take()
        assert a is not b and not a.autocommit
        kept.give(a)
        kept.give(b)  # one too many: closed
        assert b.closed and not a.closed
        assert kept.take() is a  # reused, not checked (just given back)
        kept.give(a)
    finally:
        kept.close()
        db.dispose()
    assert a.closed


def test_reads_survive_the_server_closing_every_kept_connection(migrated: str) -> None:
    """A restarted server closed every connection: the next read is made again on a new connection (as
    the pool's pre-ping did), and the other kept readers are dropped with the failed one."""
    if not migrated.startswith("postgresql"):
        pytest.skip("kept connections are PostgreSQL's")
    store = Store(Database(migrated))
    try:
        user = uid()
        assert store.save_decision(decision(user), "fp", T0, 0).inserted
        kept = store._backend.kept_readers
        assert kept is not None
        held = [kept.take() for _ in range(3)]
        for conn in held:
            kept.give(conn)
        with _admin(migrated) as admin:
            for conn in held:
                admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
        assert len(store.load_snapshot(user, T0).history) == 1  # kept ones are checked only after 1 s idle
        assert all(conn.closed for conn in held)
        assert len(store.load_snapshot(user, T0).history) == 1
    finally:
        store.close()


def test_batch_reads_on_a_kept_connection_are_the_single_reads_and_survive_a_closed_one(
    migrated: str,
) -> None:
    """``load_snapshots`` on PostgreSQL reads on a kept connection, its three statements in one round
    trip: the same snapshots as the single call's reads (state, version, history, stock), and a kept
    connection the server closed is replaced by a second attempt."""
    if not migrated.startswith("postgresql"):
        pytest.skip("kept connections are PostgreSQL's")
    from nextbest.domain import Event, EventType
    from nextbest.store import SnapshotWanted

    store = Store(Database(migrated))
    try:
        users = [uid() for _ in range(3)]
        for n, user in enumerate(users[:2]):
            for _ in range(n + 1):
                assert store.save_decision(decision(user, actions=2), "fp", T0, None).inserted
        sku = uid("sku")
        store.record_events([Event(uid("ev"), "", EventType.OUT_OF_STOCK, T0, product_ids=(sku,))], T0)
        wanted = [SnapshotWanted(u, T0, (sku, uid("sku"))) for u in users]
        kept = store._backend.kept_readers
        assert kept is not None
        customers = store.customers
        batch = customers.load_snapshots(wanted)
        assert batch == [customers.load_snapshot(*w) for w in wanted]  # the single call's one statement
        assert [len(s.history) for s in batch] == [2, 4, 0] and batch[0].out_of_stock == {sku}
        held = kept.take()
        kept.give(held)
        with _admin(migrated) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (held.info.backend_pid,))
        assert customers.load_snapshots(wanted) == batch
    finally:
        store.close()
