"""Segments: validated like rules (but they read only ``customer``), evaluated over every stored customer
by ``nextbest segment count`` and ``sample``, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from nextbest.campaigns import count_segment, in_segment
from nextbest.catalog import bundled_catalog_path, parse_catalog
from nextbest.cli import main
from nextbest.domain import Channel, Event, EventType
from nextbest.errors import CatalogError
from nextbest.state import ChannelState, CustomerState
from nextbest.store import Database, Store
from nextbest.store.scan import customer_states
from tests.conftest import uid

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
SEGMENTS = """
segments:
  big_spenders:
    description: over 100 spent
    condition: customer.total_revenue > 100.0
  lapsed:
    condition: customer.orders_count > 0 && customer.days_since_last_order > 30.0
  email_reachable:
    condition: '"email" in customer.consents'
"""


def _catalog_text(extra: str) -> str:
    return bundled_catalog_path().read_text() + extra


def test_segments_are_parsed_and_evaluated() -> None:
    catalog = parse_catalog(_catalog_text(SEGMENTS), "test.yaml")
    assert sorted(catalog.segments) == ["big_spenders", "email_reachable", "lapsed"]
    rich = CustomerState("a", orders_count=2, revenue_total=250.0, last_order_at=NOW - timedelta(days=40))
    poor = CustomerState(
        "b",
        orders_count=1,
        revenue_total=20.0,
        last_order_at=NOW - timedelta(days=2),
        channels={Channel.EMAIL: ChannelState(consent=True)},
    )
    segs = catalog.segments
    assert in_segment(segs["big_spenders"], rich, NOW) and not in_segment(segs["big_spenders"], poor, NOW)
    assert in_segment(segs["lapsed"], rich, NOW) and not in_segment(segs["lapsed"], poor, NOW)
    assert in_segment(segs["email_reachable"], poor, NOW) and not in_segment(
        segs["email_reachable"], rich, NOW
    )
    tally = count_segment(segs["big_spenders"], [rich, poor, rich], NOW)
    assert (tally.scanned, tally.members) == (3, 2)


@pytest.mark.parametrize(
    ("condition", "problem"),
    [
        ("context.cart_value > 1.0", "a segment reads only customer, not context"),
        ("customer.total_revenue >", "CEL syntax error"),
        ("customer.total_revenue", "must evaluate to a bool"),
        ("customer.no_such_field > 1", "unknown field or missing key"),
    ],
)
def test_a_bad_condition_is_a_catalog_error_naming_its_path(condition: str, problem: str) -> None:
    with pytest.raises(CatalogError) as caught:
        parse_catalog(_catalog_text(f"\nsegments:\n  bad_one:\n    condition: '{condition}'\n"), "t.yaml")
    lines = [p for p in caught.value.problems if "segments.bad_one.condition" in p]
    assert lines and problem in lines[0], caught.value.problems


def test_a_segment_needs_a_condition_and_a_valid_name() -> None:
    with pytest.raises(CatalogError) as caught:
        parse_catalog(_catalog_text("\nsegments:\n  Bad Name:\n    description: x\n"), "t.yaml")
    text = "\n".join(caught.value.problems)
    assert "segments" in text and "condition" in text


def _customers(url: str, count: int) -> list[str]:
    """``count`` customers, customer i with i orders of 30 each (so revenue 30 i)."""
    store = Store(Database(url))
    users = [uid("seg") for _ in range(count)]
    events = [
        Event(f"{user}-order-{k}", user, EventType.ORDER_PLACED, NOW - timedelta(days=60), value=30.0)
        for i, user in enumerate(users)
        for k in range(i)
    ]
    events += [Event(f"{u}-view", u, EventType.PRODUCT_VIEWED, NOW - timedelta(days=1)) for u in users]
    store.record_events(events, NOW)
    store.close()
    return users


def test_scan_streams_every_customer_once_in_pages(migrated: str) -> None:
    users = set(_customers(migrated, 7))
    db = Database(migrated)
    try:
        seen = [s.user_id for s in customer_states(db, page=3)]
    finally:
        db.dispose()
    assert len(seen) == len(set(seen)) and users <= set(seen)
    assert seen == sorted(seen)


@pytest.mark.slow
def test_segment_count_and_sample_from_the_command_line(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        _catalog_text(
            """
segments:
  mine_big:
    condition: customer.total_revenue > 100.0
"""
        )
    )
    db = Database(database_url)
    from nextbest.store import upgrade

    upgrade(db)
    db.dispose()
    users = _customers(database_url, 6)  # revenues 0, 30, ..., 150: two over 100 (120, 150)
    # Other tests' customers share the database: count at least ours, sample exactly ours among them.
    args = ["--catalog", str(catalog), "--database-url", database_url, "--as-of", NOW.isoformat()]
    assert main(["segment", "count", "mine_big", *args]) == 0
    out = capsys.readouterr().out
    members, scanned = (int(x) for x in out.split(":")[1].split("customers")[0].split(" of "))
    assert members >= 2 and scanned >= 6
    assert main(["segment", "sample", "mine_big", "--limit", "1000", "--format", "json", *args]) == 0
    sampled = json.loads(capsys.readouterr().out)
    mine = {r["user_id"] for r in sampled} & set(users)
    assert mine == set(users[4:]) and all(r["total_revenue"] > 100 for r in sampled)
    assert len(sampled) == members


def test_command_line_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path}/none.db"
    assert main(["segment", "count", "no_such", "--database-url", url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nextbest segment: no segment 'no_such'") and len(err.strip().splitlines()) == 1
    catalog = tmp_path / "c.yaml"
    catalog.write_text(_catalog_text(SEGMENTS))
    assert main(["segment", "count", "lapsed", "--catalog", str(catalog), "--database-url", url]) == 2
    assert "has no nextbest tables" in capsys.readouterr().err
    args = ["--catalog", str(catalog), "--database-url", url]
    assert main(["segment", "sample", "lapsed", "--limit", "0", *args]) == 2
    assert "--limit must be at least 1" in capsys.readouterr().err
    assert main(["segment", "count", "lapsed", "--as-of", "2026-11-23T09:00:00", *args]) == 2
    assert "no time zone" in capsys.readouterr().err
