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

With ``--aio`` the same engine answers on a ``grpc.aio`` server instead, inline on its event loop (one
thread runs every call's Python; no interceptors, health only): what a single-threaded server would
cost with the same pipeline. It is a measurement, not a server nextbest ships: a real one would have to
await its commits without blocking the loop.

    python benchmarks/memory_server.py --port 50153 --catalog benchmarks/catalog_20.yaml \
        --database-url sqlite:////tmp/bench-memory.db [--aio]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from empty_server import serve_aio_until_signalled
from nextbest.api.v1 import decision_service_pb2 as pb
from nextbest.api.v1 import decision_service_pb2_grpc as pb_grpc
from nextbest.catalog import load_catalog
from nextbest.domain import Decision
from nextbest.engine import DecisionEngine
from nextbest.scoring.registry import ModelRegistry
from nextbest.server import NextbestServer, convert
from nextbest.settings import Settings
from nextbest.state import CustomerSnapshot
from nextbest.store import Database, Store, upgrade
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


class InlineDecisionService(pb_grpc.DecisionServiceServicer):  # type: ignore[misc]
    """NextAction run inline on the event loop (the store never blocks: it is in memory)."""

    def __init__(self, engine: DecisionEngine) -> None:
        self._engine = engine

    async def NextAction(self, request: pb.NextActionRequest, context: Any) -> pb.NextActionResponse:  # noqa: N802
        return convert.decision_to_proto(self._engine.decide(convert.request_from_proto(request)))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--catalog", type=Path, required=True)
    parser.add_argument("--database-url", required=True, help="where customers are read from, once each")
    parser.add_argument("--aio", action="store_true", help="answer inline on a grpc.aio event loop")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = Settings(host=args.host, port=args.port, catalog=args.catalog, database_url=args.database_url)
    if args.aio:  # the engine as `nextbest serve` builds it, on another server
        db = Database(settings.database_url)
        upgrade(db)
        store = Store(db)
        engine = DecisionEngine(
            load_catalog(settings.catalog), MemoryStore(store), models=ModelRegistry(settings.models_dir)
        )
        server_label = "memory server (aio)"
        asyncio.run(
            serve_aio_until_signalled(InlineDecisionService(engine), args.host, args.port, server_label)
        )
        store.close()
        return 0
    server = NextbestServer(settings)
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
