"""``nextbest segment count NAME`` and ``nextbest segment sample NAME``: a catalog segment evaluated over
every stored customer, streamed (memory stays flat whatever the number of customers)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

__all__ = ["add_campaign_commands", "run_segment"]


def add_campaign_commands(sub: Any) -> None:
    segment = sub.add_parser("segment", help="count or sample a catalog segment's customers in the store")
    actions = segment.add_subparsers(dest="segment_command", required=True, metavar="{count,sample}")
    count = actions.add_parser("count", help="how many stored customers are in the segment now")
    sample = actions.add_parser("sample", help="the first customers of the segment (stored ids)")
    sample.add_argument("--limit", type=int, default=10, help="how many (default 10)")
    sample.add_argument("--format", choices=["table", "json"], default="table")
    for p in (count, sample):
        p.add_argument("name", help="the segment's id in the catalog")
        p.add_argument("--catalog", help="catalog YAML (default: the bundled example)")
        p.add_argument("--as-of", help="ISO time the conditions are evaluated at (default: now)")
        p.add_argument(
            "--database-url",
            help="sqlite:///path.db or postgresql+psycopg://user@host/db [NEXTBEST_DATABASE_URL]",
        )


def _fail(message: str) -> int:
    print(f"nextbest segment: {message}", file=sys.stderr)
    return 2


def run_segment(args: argparse.Namespace, settings: Callable[[argparse.Namespace], Any]) -> int:
    from nextbest.campaigns import SegmentCount, segment_members
    from nextbest.catalog import bundled_catalog_path, load_catalog
    from nextbest.server.startup import require_schema
    from nextbest.store import Database
    from nextbest.store.scan import customer_states

    catalog = load_catalog(args.catalog or bundled_catalog_path())
    segment = catalog.segments.get(args.name)
    if segment is None:
        known = ", ".join(sorted(catalog.segments)) or "none: add a `segments:` section"
        return _fail(f"no segment {args.name!r} in catalog {catalog.source} (segments: {known})")
    try:
        now = datetime.fromisoformat(args.as_of) if args.as_of else datetime.now(UTC)
    except ValueError:
        return _fail(f"--as-of {args.as_of!r} is not an ISO time such as 2026-11-23T09:00:00Z")
    if now.tzinfo is None:
        return _fail(f"--as-of {args.as_of!r} has no time zone; add Z or +01:00")
    limit: int = getattr(args, "limit", 1)
    if limit < 1:
        return _fail(f"--limit must be at least 1, got {limit}")
    db = Database(settings(args).database_url)
    try:
        require_schema(db, "is --database-url (NEXTBEST_DATABASE_URL) the server's database?")
        tally = SegmentCount(segment.id)
        members = segment_members(segment, customer_states(db), now, tally)
        if args.segment_command == "count":
            for _ in members:
                pass
            failed = sum(tally.failed.values())
            print(
                f"{segment.id}: {tally.members} of {tally.scanned} customers"
                + (f" ({failed} left out: the condition failed for them)" if failed else "")
            )
            for reason, n in tally.failed.most_common(3):
                print(f"  {n} x {reason}", file=sys.stderr)
            return 0
        rows = []
        for state in members:
            rows.append(state)
            if len(rows) >= limit:
                break
        if args.format == "json":
            print(json.dumps([_row(s, now) for s in rows], indent=2))
        else:
            for s in rows:
                r = _row(s, now)
                print(f"{r['user_id']}  orders={r['orders_count']} revenue={r['total_revenue']:.2f}")
        return 0
    finally:
        db.dispose()


def _row(state: Any, now: datetime) -> dict[str, Any]:
    from nextbest.decision.rules import customer_variables

    return {"user_id": state.user_id, **customer_variables(state, now)}
