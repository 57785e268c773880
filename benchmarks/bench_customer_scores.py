"""Customer scores in bulk: ``nextbest score --all`` and ``--stale``, and a segment that reads a score,
with stored scores against scores computed as the scan reads them.

Inputs: ``--customers`` synthetic customers (seeded: tenure, orders, revenue, recency, engagement, a view
and a cart, e-mail consent), written straight into the ``customers`` table of an empty store (a fresh
SQLite file by default, or ``--database-url`` — an empty, migrated PostgreSQL database), and the bundled
churn model. Rows, each with wall time, this process's CPU time and the rate:

- ``score --all``: every customer scored and written, ``--page`` per transaction;
- ``score --stale`` with nothing stale: the cost of finding nothing to do;
- ``score --stale`` after 10 % of the customers changed (their version bumped, as an event does);
- ``segment count`` of ``customer.churn_risk > 0.6`` with every score stored and fresh, against the same
  count after the scores are deleted, when the scan computes them (the baseline of the same run).

Peak resident memory of the process is printed last (the scan streams: it does not grow with customers).

    .venv/bin/python benchmarks/bench_customer_scores.py [--customers 100000] [--database-url URL]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import delete, func, insert, select, update

from nextbest.campaigns import count_segment
from nextbest.campaigns.scores import audience_states, score_store
from nextbest.catalog import bundled_catalog_path, parse_catalog
from nextbest.domain import Channel, EventType
from nextbest.models.artifacts import bundled_models_path
from nextbest.models.registry import ModelRegistry
from nextbest.state import ChannelState, CustomerState
from nextbest.store import Database, upgrade
from nextbest.store.codec import state_row
from nextbest.store.schema import customers
from nextbest.store.scores import customer_scores

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _states(n: int, seed: int) -> list[CustomerState]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        tenure = float(rng.exponential(300)) + 1
        orders = int(rng.poisson(tenure / 120))
        last_order = NOW - timedelta(days=float(rng.uniform(0, tenure))) if orders else None
        seen = NOW - timedelta(days=float(rng.uniform(0, min(tenure, 60))))
        out.append(
            CustomerState(
                f"bench-{i:08d}",
                first_seen_at=NOW - timedelta(days=tenure),
                orders_count=orders,
                revenue_total=orders * float(rng.lognormal(4, 0.5)),
                last_order_at=last_order,
                last_engagement_at=seen if rng.random() < 0.5 else None,
                channels={Channel.EMAIL: ChannelState(consent=True, consent_at=NOW - timedelta(days=tenure))},
                last_events={EventType.PRODUCT_VIEWED: seen, EventType.CART_ABANDONED: seen},
                engagement_hours={int(rng.integers(0, 168)): int(rng.integers(1, 9))},
            )
        )
    return out


def _fill(db: Database, n: int, seed: int) -> None:
    with db.reader.connect() as conn:
        if conn.execute(select(func.count()).select_from(customers)).scalar_one():
            raise SystemExit("bench_customer_scores: the store must be empty (it writes synthetic customers)")
    chunk = 5000
    for start in range(0, n, chunk):
        rows = []
        for state in _states(min(chunk, n - start), seed + start):
            row = state_row(state, NOW)
            rows.append({"user_id": f"{row.pop('b_user_id')}-{start}", **row, "version": 1})
        with db.begin_write() as conn:
            conn.execute(insert(customers), rows)


def _timed(name: str, n: int, work: Callable[[], Any]) -> Any:
    wall, cpu = time.perf_counter(), time.process_time()
    result = work()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{name:<42} {n:>9,} customers  {wall:8.2f} s wall  {cpu:8.2f} s CPU  {n / wall:>9,.0f}/s wall")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--database-url", help="an empty store (default: a fresh SQLite file)")
    parser.add_argument("--page", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{Path(tempfile.mkdtemp()) / 'scores.db'}"
    root = bundled_models_path()
    scorer = ModelRegistry(root).current.churn if root is not None else None
    if scorer is None:
        raise SystemExit("bench_customer_scores: no bundled churn model under models/churn")
    db = Database(url)
    upgrade(db)
    n = args.customers
    print(f"store {db.dialect}, {n:,} customers, model {scorer.version}, page {args.page}")
    _fill(db, n, args.seed)
    _timed("score --all", n, lambda: score_store(db, scorer, NOW, page=args.page))
    _timed("score --stale (nothing stale)", n, lambda: score_store(db, scorer, NOW, stale_only=True))
    with db.begin_write() as conn:
        changed = conn.execute(
            update(customers)
            .where(func.substr(customers.c.user_id, 14, 1) == "0")  # bench-NNNNNNN0-...: one in ten
            .values(version=customers.c.version + 1)
        ).rowcount
    run = _timed(
        f"score --stale ({changed:,} changed)", n, lambda: score_store(db, scorer, NOW, stale_only=True)
    )
    assert run.written == changed, (run.written, changed)
    catalog = parse_catalog(
        bundled_catalog_path().read_text().split("\nsegments:")[0]
        + "\nsegments:\n  risky:\n    condition: customer.churn_risk > 0.6\n",
        "bench",
    )
    segment = catalog.segments["risky"]

    def count() -> Any:
        return count_segment(segment, audience_states(db, segment, scorer, NOW), NOW)

    stored = _timed("segment count, scores stored", n, count)
    with db.begin_write() as conn:
        conn.execute(delete(customer_scores))
    computed = _timed("segment count, scores computed in the scan", n, count)
    assert stored.members == computed.members, (stored.members, computed.members)
    print(f"members {stored.members:,} of {stored.scanned:,} either way")
    print(f"peak resident memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    db.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
