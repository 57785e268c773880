"""The real server with its storage taken out: the ceiling of the decision pipeline inside gRPC.

`nextbest serve`'s server (catalog, CEL rules, contact policy, experiments, models, arbitration, proto
conversion, interceptors, health), with one change: the engine's store is a :class:`MemoryStore`. It
reads each customer once from the real database (so a customer looks as it would on the first call) and
then from memory; decisions are answered but never written. What it costs per call, less what the empty
server costs, is what the pipeline costs inside the server, without any database work; what the real
server costs beyond it is the database's share (reads, the durable write, the fsync and the thread
hand-offs they cause).

It is a slight underestimate of the pipeline's work: customers' histories do not grow with the
decisions made for them, so caps and preemption scan shorter histories than in the real server.

    python benchmarks/memory_server.py --port 50153 --catalog benchmarks/catalog_20.yaml \
        --database-url sqlite:////tmp/bench-memory.db
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from nextbest.domain import Decision
from nextbest.server import NextbestServer
from nextbest.settings import Settings
from nextbest.state import CustomerSnapshot
from nextbest.store import Store
from nextbest.store.repository import SavedDecision


class MemoryStore:
    """What the engine asks of a store: snapshots read once per customer, decisions not written."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._snapshots: dict[str, CustomerSnapshot] = {}

    def load_snapshot(self, user_id: str, now: datetime, products: Sequence[str] = ()) -> CustomerSnapshot:
        snapshot = self._snapshots.get(user_id)
        if snapshot is None:
            snapshot = self._snapshots[user_id] = self._store.load_snapshot(user_id, now, products)
        return snapshot

    def save_decision(
        self, decision: Decision, fingerprint: str, decided_at: datetime, version: int | None = None
    ) -> SavedDecision:
        return SavedDecision(True, frozenset(c.exposure_id for c in decision.cancelled))

    def __getattr__(self, name: str) -> Any:  # everything else (events, reports) goes to the database
        return getattr(self._store, name)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--catalog", type=Path, required=True)
    parser.add_argument("--database-url", required=True, help="where customers are read from, once each")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server = NextbestServer(
        Settings(host=args.host, port=args.port, catalog=args.catalog, database_url=args.database_url)
    )
    server.engine.store = MemoryStore(server.store)  # type: ignore[assignment]
    server.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _signum, _frame: stop.set())
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
