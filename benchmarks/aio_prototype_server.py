"""A rejected design, kept so that its measurement can be repeated: the real engine on ``grpc.aio``.

The pipeline runs inline on the event loop (customer reads too: SQLite only), and the durable write —
``Store.save_decision`` with its group commit — is awaited on a thread pool, so the loop never waits on
a commit. It reaches into the engine (``DecisionEngine._decide``, catching the write it is about to make)
instead of splitting it for real: it is a measurement, not a server. Alternated with ``nextbest serve``
it made as many decisions per second for as much CPU (benchmarks/RESULTS.md, "The pipeline without a
database"), which is why nextbest keeps the thread-pool server.

    python benchmarks/aio_prototype_server.py --port 50154 --catalog benchmarks/catalog_20.yaml \
        --database-url sqlite:////tmp/bench-aio.db [--writers 16]
"""

from __future__ import annotations

import argparse
import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from empty_server import serve_aio_until_signalled
from nextbest.api.v1 import decision_service_pb2 as pb
from nextbest.api.v1 import decision_service_pb2_grpc as pb_grpc
from nextbest.catalog import load_catalog
from nextbest.domain import Decision, DecisionRequest
from nextbest.engine import DecisionEngine, request_fingerprint
from nextbest.scoring.registry import ModelRegistry
from nextbest.server import convert
from nextbest.settings import Settings
from nextbest.store import Database, Store, upgrade


class _Write(Exception):  # noqa: N818 - not an error: the write the engine was about to make
    def __init__(self, *args: Any) -> None:
        super().__init__()
        self.args_ = args


class _CatchWrite:
    """The engine's store while it decides: reads pass through, the write is caught and handed back."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def load_snapshot(self, *args: Any) -> Any:
        return self._store.load_snapshot(*args)

    def save_decision(self, *args: Any) -> Any:
        raise _Write(*args)


class PrototypeService(pb_grpc.DecisionServiceServicer):  # type: ignore[misc]
    def __init__(self, engine: DecisionEngine, store: Store, writers: int) -> None:
        self._engine = engine
        self._store = store
        self._writers = ThreadPoolExecutor(writers, thread_name_prefix="writer")

    def _prepare(self, request: DecisionRequest) -> tuple[Any, ...]:
        decided_at: datetime = self._engine.clock()
        now = request.occurred_at or decided_at
        try:
            self._engine._decide(request, request_fingerprint(request), decided_at, now)
        except _Write as write:
            return write.args_
        raise RuntimeError("the engine decided without writing")

    async def NextAction(self, request: pb.NextActionRequest, context: Any) -> pb.NextActionResponse:  # noqa: N802
        domain = convert.request_from_proto(request)
        args = self._prepare(domain)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writers, self._store.save_decision, *args)
        decision: Decision = args[0]
        return convert.decision_to_proto(decision)


async def serve(args: argparse.Namespace) -> None:
    settings = Settings(catalog=args.catalog, database_url=args.database_url)
    db = Database(settings.database_url, pool_size=args.writers)
    upgrade(db)
    store = Store(db)
    engine = DecisionEngine(load_catalog(settings.catalog), store, models=ModelRegistry(settings.models_dir))
    engine.store = _CatchWrite(store)  # type: ignore[assignment]
    service = PrototypeService(engine, store, args.writers)
    await serve_aio_until_signalled(service, args.host, args.port, "aio prototype server")
    store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--catalog", type=Path, required=True)
    parser.add_argument("--database-url", required=True, help="a SQLite URL (reads run on the loop)")
    parser.add_argument("--writers", type=int, default=16, help="threads awaiting the group commit")
    asyncio.run(serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
