"""SQLite's history decoding (``sqlite_reads``) gives what SQLAlchemy's types and ``codec`` give for the
same rows: times aware and in UTC, enums, cancellation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from nextbest.store import Database, Store, codec, upgrade
from nextbest.store.contract import HISTORY_WINDOW
from nextbest.store.customers import _HISTORY
from nextbest.store.prepared import PreparedSelect
from nextbest.store.schema import exposures
from nextbest.store.sqlite_reads import past_exposures, utc_time
from tests.conftest import uid
from tests.store.test_store import T0, decision


def test_the_history_decodes_as_sqlalchemy_and_codec_decode_it(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/r.db")
    upgrade(db)
    store = Store(db)
    try:
        user = uid()
        for _ in range(3):
            assert store.save_decision(decision(user, actions=3), "fp", T0)
        with db.writer.begin() as conn:  # one of them cancelled
            conn.execute(
                update(exposures)
                .where(exposures.c.user_id == user, exposures.c.action_id == "a1")
                .values(cancelled_at=T0 + timedelta(minutes=5), cancelled_by="e1", cancel_reason="r")
            )
        now = T0 + timedelta(days=1)
        history = PreparedSelect(_HISTORY, db.reader.dialect)
        raw = db.reader.raw_connection()
        try:
            cursor = raw.cursor()
            history.execute(cursor, user_id=user, since=now - HISTORY_WINDOW)
            rows = cursor.fetchall()
            cursor.close()
            generic = tuple(
                codec.past_exposure(v) for v in history.fetch(raw, user_id=user, since=now - HISTORY_WINDOW)
            )
        finally:
            raw.close()
        assert len(rows) == 9 and sum(p.cancelled for p in generic) == 3
        fast = past_exposures(rows)
        assert fast == generic
        assert all(p.occurred_at.tzinfo is UTC and p.send_at.tzinfo is UTC for p in fast)
        assert store.load_snapshot(user, now).history == generic  # the store reads through it
    finally:
        store.close()


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-01 12:00:00.000000",
        "2026-11-01 12:00:00",
        "2026-11-01 12:00:00.000001",
        "2026-11-01 13:00:00+01:00",
    ],
)
def test_times_read_as_utc_datetime_reads_them(text: str) -> None:
    from sqlalchemy.dialects import sqlite

    from nextbest.store.schema import UTCDateTime

    dialect = sqlite.dialect()
    decode = UTCDateTime().dialect_impl(dialect).result_processor(dialect, None)
    assert decode is not None
    expected = decode(text)
    assert utc_time(text) == expected and utc_time(text).tzinfo == expected.tzinfo
    assert isinstance(expected, datetime)


def test_an_unknown_channel_is_refused_as_before() -> None:
    row = (
        "d",
        "a",
        "f",
        "carrier-pigeon",
        "triggered",
        "t",
        "2026-11-01 12:00:00",
        "2026-11-01 12:00:00",
        1,
        None,
    )
    with pytest.raises(ValueError):
        past_exposures([row])


def test_a_batch_reads_each_snapshot_as_load_snapshot_reads_it_alone(tmp_path: Path) -> None:
    from nextbest.domain import Event, EventType
    from nextbest.store import SnapshotWanted

    db = Database(f"sqlite:///{tmp_path}/b.db")
    upgrade(db)
    store = Store(db)
    try:
        users = [uid() for _ in range(4)]
        for n, user in enumerate(users[:3]):
            for k in range(n + 2):
                d = decision(user, actions=2)
                object.__setattr__(d, "occurred_at", T0 + timedelta(days=30 * k))
                assert store.save_decision(d, "fp", T0)
        store.record_events([Event(uid("ev"), users[0], EventType.OPENED, T0)], T0)  # a customer row
        store.record_events([Event(uid("ev"), "", EventType.OUT_OF_STOCK, T0, product_ids=("p1",))], T0)
        wanted = [
            SnapshotWanted(users[0], T0 + timedelta(days=100), ("p1", "p2")),  # the oldest out of its window
            SnapshotWanted(users[1], T0 + timedelta(days=1), ()),
            SnapshotWanted(users[2], T0 + timedelta(days=200), ("p2",)),
            SnapshotWanted(users[3], T0, ("p1",)),  # nothing known
        ]
        batch = store.load_snapshots(wanted)
        alone = [store.load_snapshot(*w) for w in wanted]
        assert batch == alone
        assert [len(s.history) for s in batch] == [2, 6, 0, 0] and batch[0].version >= 1
        assert batch[0].out_of_stock == {"p1"} and batch[3].out_of_stock == {"p1"}
        assert store.load_snapshots([]) == []
    finally:
        store.close()
