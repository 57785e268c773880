"""The events' write path on the raw driver (``nextbest.store.event_rows``): what it stores must be what
SQLAlchemy's column types store, and the customer it folds must be the state the events make."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from nextbest.domain import Channel, Event, EventOutcome, EventType, OrderItem
from nextbest.state import CustomerState, apply_event, fold_events
from nextbest.store import Store, codec
from nextbest.store.database import _json_dumps
from nextbest.store.event_rows import EventRows, _utc_text
from nextbest.store.schema import UTCDateTime, events
from tests.conftest import uid
from tests.state.test_customer import event_sets
from tests.store.test_store import T0


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 11, 1, 12, tzinfo=UTC),
        datetime(2026, 11, 1, 12, 0, 0, 1, tzinfo=UTC),
        datetime(2026, 3, 29, 1, 30, 15, 999999, tzinfo=ZoneInfo("Europe/Paris")),
        datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC),
    ],
    ids=["whole-second", "microsecond", "other-zone", "year-999"],
)
def test_sqlite_times_are_the_text_sqlalchemy_stores(moment: datetime) -> None:
    dialect = sqlite.dialect()
    theirs = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert theirs is not None
    assert _utc_text(moment) == theirs(moment)


def test_sqlite_times_refuse_naive_values() -> None:
    with pytest.raises(ValueError, match="naive"):
        _utc_text(datetime(2026, 11, 1, 12))


def _events(user: str, start: datetime) -> list[Event]:
    return [
        Event(uid("e"), user, EventType.SUBSCRIBED, start, channel=Channel.SMS),
        Event(uid("e"), user, EventType.OPENED, start + timedelta(hours=2), channel=Channel.EMAIL),
        Event(
            uid("e"),
            user,
            EventType.ORDER_PLACED,
            start + timedelta(hours=1),
            value=42.5,
            order_id=uid("o"),
            items=(OrderItem("sku-1", 2, 21.25),),
            properties={"source": "web"},
        ),
        Event(uid("e"), user, EventType.UNSUBSCRIBED, start + timedelta(hours=3), channel=Channel.EMAIL),
        Event(uid("e"), user, EventType.PRODUCT_VIEWED, start, product_ids=("sku-1", "sku-2")),
    ]


def test_events_and_the_customer_they_fold_are_stored_as_the_domain_says(store: Store) -> None:
    """Events of a customer first seen and of one already stored, in one batch and then in a second:
    the ``events`` rows read back as ``codec.event_row``'s, each customer is the state the events
    make in time order (whatever order they came in) at one version more per batch, and a replay
    changes nothing."""
    received = T0 + timedelta(days=1)
    known, first_seen = uid("u"), uid("u")
    earlier = _events(known, T0)
    store.record_events(earlier, received)
    batch = _events(known, T0 + timedelta(days=2)) + _events(first_seen, T0 + timedelta(days=2))
    batch.reverse()  # out of order: the fold sorts each customer's events by time
    outcomes = store.record_events(batch, received)
    assert [o for o, _ in outcomes] == [EventOutcome.ACCEPTED] * len(batch)
    with store.db.reader.connect() as conn:
        stored = {
            r["event_id"]: r
            for r in conn.execute(
                select(events).where(events.c.event_id.in_([e.event_id for e in batch]))
            ).mappings()
        }
    for e in batch:
        row = stored[e.event_id]
        assert {c: row[c] for c in codec.EVENT_COLUMNS} == codec.event_row(e, received)

    def expected(evs: list[Event]) -> CustomerState:
        state = CustomerState(evs[0].user_id)
        for e in sorted(evs, key=lambda e: e.occurred_at):  # type: ignore[arg-type, return-value]
            state = apply_event(state, e)
        return state

    now = T0 + timedelta(days=3)
    both = [e for e in earlier + batch if e.user_id == known]
    snapshot = store.load_snapshot(known, now)
    assert snapshot.state == expected(both)
    assert snapshot.version == 2
    new = store.load_snapshot(first_seen, now)
    assert new.state == expected([e for e in batch if e.user_id == first_seen])
    assert new.version == 1
    replay = store.record_events(batch, received)
    assert {o for o, _ in replay} == {EventOutcome.DUPLICATE}
    assert store.load_snapshot(known, now) == snapshot


@settings(max_examples=100, deadline=None)
@given(event_sets(), st.sampled_from([UTC, ZoneInfo("Europe/Paris"), ZoneInfo("Asia/Kolkata")]))
def test_customer_rows_hold_the_documents_the_codec_makes(events: list[Event], zone: tzinfo) -> None:
    """``EventRows.customer_values`` encodes a state's documents itself (orjson writing the times of
    ``last_events``): the text must be ``codec.state_values``' documents as SQLAlchemy would write them."""
    moved = [replace(e, occurred_at=e.occurred_at.astimezone(zone)) for e in events]  # type: ignore[union-attr]
    state = fold_events("u", sorted(moved, key=lambda e: e.occurred_at))  # type: ignore[arg-type, return-value]
    expected = codec.state_values(state, T0)
    for dialect in (sqlite.dialect(), postgresql.psycopg.dialect()):  # type: ignore[no-untyped-call]
        rows = EventRows(dialect)
        values = rows.customer_values(state, T0)
        assert values[0] == "u"
        # SQLite binds the documents' text; PostgreSQL takes them inside the batch's JSON.
        written = values[8:] if rows.embedded else [_json_dumps(v) for v in values[8:]]
        assert written == [_json_dumps(document) for document in expected[7:]]
