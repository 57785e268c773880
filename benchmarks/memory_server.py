"""The real server with its storage taken out: the ceiling of the decision pipeline inside gRPC.

`nextbest serve`'s server (catalog, CEL rules, contact policy, experiments, models, arbitration, proto
conversion, interceptors, health), with one change: the engine's store is the package's
``nextbest.store.FrozenStore``. It reads each customer once from the real database (so a customer looks
as it would on the first call) and then from memory; decisions are answered but never written. What it
costs per call, less what the empty server costs, is what the pipeline costs inside the server, without
any database work; what the real server costs beyond it is the database's share (reads, the durable
write, the fsync and the thread hand-offs they cause).

It is a slight underestimate of the pipeline's work: customers' histories do not grow with the
decisions made for them, so caps and preemption scan shorter histories than in the real server.

Where snapshots come from (``--snapshots``): ``database``, each customer's first call reads the real
database (one SQLite or PostgreSQL read per customer, inside the calls measured: with the benchmark's
10,000 customers, still a good share of the calls of its first closed-loop phases); ``memory``, an
in-memory store (``MemoryStore``), which answers a customer it has not seen as new; ``auto`` (default),
``memory`` when the database holds no customer, exposure or inventory row (the benchmark's fresh database:
every snapshot it could give is a new customer's, the same as memory's), else ``database``.

(Its ``--aio`` variant, the same engine inline on a ``grpc.aio`` event loop, was measured and rejected
as a design, see RESULTS.md; to rerun it, check out commit ``015fb0c``.)

    python benchmarks/memory_server.py --port 50153 --catalog benchmarks/catalog_20.yaml \
        --database-url sqlite:////tmp/bench-memory.db
"""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import threading
from pathlib import Path

from sqlalchemy import select

from nextbest.server import NextbestServer
from nextbest.settings import Settings
from nextbest.store import Database, FrozenStore, MemoryStore
from nextbest.store.schema import customers, exposures, inventory


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--catalog", type=Path, required=True)
    parser.add_argument("--database-url", required=True, help="where customers are read from, once each")
    parser.add_argument(
        "--snapshots",
        choices=("auto", "database", "memory"),
        default="auto",
        help="where each customer's first snapshot comes from (default auto: memory on an empty database)",
    )
    return parser.parse_args(argv)


def holds_customers(db: Database) -> bool:
    """Whether the database has anything a snapshot is read from: a customer, an exposure, a stock row."""
    with db.reader.connect() as conn:
        return any(
            conn.execute(select(t).limit(1)).first() is not None for t in (customers, exposures, inventory)
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = Settings(host=args.host, port=args.port, catalog=args.catalog, database_url=args.database_url)
    server = NextbestServer(settings)
    source = args.snapshots
    if source == "auto":
        source = "database" if holds_customers(server.store.db) else "memory"
    logging.info("customers' snapshots read once each from %s", source)
    server.engine.store = FrozenStore(
        server.store.load_snapshot if source == "database" else MemoryStore().load_snapshot
    )
    gc.freeze()  # as `nextbest serve` does before serving: full collections skip what start-up built
    server.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _signum, _frame: stop.set())
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
