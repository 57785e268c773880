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

from nextbest.server import NextbestServer
from nextbest.settings import Settings
from nextbest.store import FrozenStore


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
    settings = Settings(host=args.host, port=args.port, catalog=args.catalog, database_url=args.database_url)
    server = NextbestServer(settings)
    server.engine.store = FrozenStore(server.store.load_snapshot)
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
