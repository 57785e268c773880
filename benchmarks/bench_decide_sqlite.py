"""The decision path on SQLite in process, without gRPC: where the store's share of a decision goes.

``DecisionEngine.decide`` (or ``decide_batch``) on ``benchmarks/catalog_20.yaml`` with the real SQL store
on a fresh SQLite file (WAL, ``synchronous=FULL``, the store's checkpointer running), called by T threads
for a few seconds, against the same engine on an in-memory store (``--store memory``: each customer read
once from the database, never written). Prints decisions/s, this process's CPU per decision (user and
system: the store's fsyncs and WAL writes are system time), latency, and the group commit's decisions
per commit. ``--log`` prints the checkpointer's WAL restarts (how long the writers were paused). The
machine is shared: compare runs made one after the other, old and new alternating
(``PYTHONPATH=<worktree>/src``).

    .venv/bin/python benchmarks/bench_decide_sqlite.py --threads 16 --seconds 5
    .venv/bin/python benchmarks/bench_decide_sqlite.py --threads 4 --batch 100
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import tempfile
import threading
import time
import uuid
from pathlib import Path

from nextbest.catalog import load_catalog
from nextbest.decision.engine import DecisionEngine
from nextbest.domain import DecisionRequest, RequestContext
from nextbest.store import Database, FrozenStore, Store, upgrade

BENCH_DIR = Path(__file__).resolve().parent


def request(rng: random.Random, users: int) -> DecisionRequest:
    """A request as ``loadgen.py`` sends it (a fresh request id, a customer among ``users``)."""
    return DecisionRequest(
        request_id=uuid.uuid4().hex,
        user_id=f"bench-user-{rng.randrange(users):05d}",
        trigger="bench_trigger",
        occurred_at=None,
        context=RequestContext(
            cart_value=round(rng.uniform(5, 250), 2),
            product_ids=tuple(f"sku-{p:05d}" for p in rng.sample(range(2000), 2)),
            time_zone="Europe/Paris",
        ),
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=16, help="concurrent callers (the server has 16)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch", type=int, default=0, help="requests per decide_batch call (0: decide)")
    parser.add_argument("--store", choices=("sqlite", "memory"), default="sqlite")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--log", action="store_true", help="print the checkpointer's WAL restarts")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.log:
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        logging.getLogger("nextbest.store.database").setLevel(logging.INFO)
    catalog = load_catalog(BENCH_DIR / "catalog_20.yaml")
    with tempfile.TemporaryDirectory(prefix="nb-bench-decide-") as tmp:
        db = Database(f"sqlite:///{tmp}/decide.db")
        upgrade(db)
        store = Store(db)
        engine = DecisionEngine(catalog, store)
        if args.store == "memory":
            engine.store = FrozenStore(store.load_snapshot)
        warm = random.Random(99)
        for _ in range(300):
            engine.decide(request(warm, args.users))
        commits, writes = store.writer.batches, store.writer.writes
        stop = threading.Event()
        latencies: list[float] = []
        decided = [0]

        def caller(k: int) -> None:
            rng = random.Random(k)
            mine, n = [], 0
            while not stop.is_set():
                started = time.perf_counter()
                if args.batch:
                    engine.decide_batch([request(rng, args.users) for _ in range(args.batch)])
                    n += args.batch
                else:
                    engine.decide(request(rng, args.users))
                    n += 1
                mine.append(time.perf_counter() - started)
            latencies.extend(mine)
            decided[0] += n

        threads = [threading.Thread(target=caller, args=(k,)) for k in range(args.threads)]
        before, wall = os.times(), time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(args.seconds)
        stop.set()
        for t in threads:
            t.join()
        after, wall = os.times(), time.perf_counter() - wall
        n = decided[0]
        latencies.sort()
        commits, writes = store.writer.batches - commits, store.writer.writes - writes
        user, system = (after.user - before.user) / n * 1e6, (after.system - before.system) / n * 1e6
        print(
            f"{args.store}, {args.threads} threads, batch {args.batch}: {n / wall:,.0f} decisions/s, "
            f"CPU {user + system:.0f} µs per decision (user {user:.0f}, system {system:.0f}); latency per "
            f"call p50 {latencies[len(latencies) // 2] * 1e3:.2f} ms, p99 "
            f"{latencies[int(len(latencies) * 0.99)] * 1e3:.2f} ms, max {latencies[-1] * 1e3:.1f} ms; "
            f"{writes / max(1, commits):.1f} decisions per commit",
            flush=True,
        )
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
