"""nextbest's own handlers served by grpc.aio instead of the thread pool: the prototype that decides
between the two (issue 25), measured by bench_next_action.py beside the thread-pool servers.

The server is built as ``nextbest serve`` builds it (``NextbestServer``: catalog, models, store, its
interceptors and servicer, which are resolved once per method into one behaviour), but it is not started;
a ``grpc.aio`` server answers instead, on one event loop:

- ``--run inline``: each call's behaviour (interceptors, conversion, the engine) runs on the loop itself,
  one call at a time: no thread hand-off at all. Only sensible with ``--store frozen`` (nothing written:
  a call waiting on a commit would stop the loop);
- ``--run executor``: each behaviour runs on a pool of ``--workers`` threads (the engine blocks on its
  group commit there), the loop doing gRPC's own work;
- ``--run pipelined`` (NextAction only, ``--store database``): conversion, the customer's read and the
  decision inline on the loop, the write queued to **one writer thread** that commits everything queued
  at once (``save_decisions``: one group commit, at most one decision per customer, a customer changed
  meanwhile decided again, as ``decide_batch`` does) and hands the results back to the loop in one
  call: no thread hand-off per call, one per commit; with ``--reads batched`` the customers' snapshots
  are read the same way, by one reader thread (``load_snapshots``), so that a PostgreSQL round trip does
  not stop the loop. No interceptors (auth, admission, metrics): the most an event-loop server with a
  real store could reach, for the thread pool or aio choice (``benchmarks/RESULTS.md``, ninth session).

``--store frozen`` is ``memory_server.py``'s store (customers read once, nothing written); ``--store
database`` the real one. Errors are mapped as the real server maps them, without the shed interceptor
(gRPC's aio server asks no interceptor before reading a request).

    python benchmarks/aio_server.py --port 50155 --catalog benchmarks/catalog_20.yaml \
        --database-url sqlite:////tmp/bench-aio.db --store frozen --run inline
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
from grpc import _interceptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from nextbest.api.v1 import decision_service_pb2 as pb
from nextbest.server import SERVICE_NAME, NextbestServer
from nextbest.settings import Settings
from nextbest.store import FrozenStore

METHODS = {
    "NextAction": (pb.NextActionRequest, pb.NextActionResponse),
    "NextActionBatch": (pb.NextActionBatchRequest, pb.NextActionBatchResponse),
    "RecordEvents": (pb.RecordEventsRequest, pb.RecordEventsResponse),
}


class _AbortError(Exception):
    def __init__(self, code: Any, details: str, status: Any = None) -> None:
        super().__init__(details)
        self.code, self.details, self.status = code, details, status


class SyncContext:
    """A grpc.aio context as the sync interceptors see one: ``abort`` raises instead of being awaited."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._code: Any = None

    def time_remaining(self) -> float | None:
        return self._inner.time_remaining()  # type: ignore[no-any-return]

    def invocation_metadata(self) -> Any:
        return self._inner.invocation_metadata()

    def peer(self) -> str:
        return self._inner.peer()  # type: ignore[no-any-return]

    def auth_context(self) -> Any:
        return self._inner.auth_context()

    def code(self) -> Any:
        return self._code

    def abort(self, code: Any, details: str) -> None:
        self._code = code
        raise _AbortError(code, details)

    def abort_with_status(self, status: Any) -> None:
        self._code = status.code
        raise _AbortError(status.code, status.details, status)


def behaviours(server: NextbestServer) -> dict[str, Any]:
    """Each DecisionService method's sync handler, resolved once through the server's interceptors."""
    servicer = server.decisions
    out = {}
    for name, (request_type, response_type) in METHODS.items():
        plain = grpc.unary_unary_rpc_method_handler(
            getattr(servicer, name),
            request_deserializer=request_type.FromString,
            response_serializer=response_type.SerializeToString,
        )
        details = _Details(f"/{SERVICE_NAME}/{name}")
        out[name] = _interceptor.service_pipeline(server.interceptors).execute(lambda _d, h=plain: h, details)
    return out


class _Details:
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


class _Batcher:
    """One thread that applies ``apply`` to everything queued at once (at most one item per ``key``: the
    store's batch calls want distinct customers) and hands the results back to the loop in one call."""

    def __init__(self, loop: asyncio.AbstractEventLoop, apply: Callable[[list[Any]], list[Any]],
                 key: Callable[[Any], str], name: str) -> None:  # fmt: skip
        self.loop, self.apply, self.key = loop, apply, key
        self._queue: list[tuple[Any, asyncio.Future[Any]]] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def submit(self, item: Any) -> asyncio.Future[Any]:
        future = self.loop.create_future()
        with self._cond:
            self._queue.append((item, future))
            self._cond.notify()
        return future

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                batch, later, seen = [], [], set()
                for entry in self._queue:
                    key = self.key(entry[0])
                    (later if key in seen else batch).append(entry)
                    seen.add(key)
                self._queue = later
            try:
                results = self.apply([item for item, _ in batch])
            except BaseException as exc:  # every waiting call learns it
                results = [exc] * len(batch)
            self.loop.call_soon_threadsafe(self._settle, batch, results)

    @staticmethod
    def _settle(batch: list[tuple[Any, asyncio.Future[Any]]], results: list[Any]) -> None:
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)


class PipelinedDecisions:
    """NextAction decided on the loop, written by one writer thread (``--run pipelined``), the customers
    read on the loop or (``--reads batched``) by one reader thread, many at once."""

    def __init__(self, server: NextbestServer, loop: asyncio.AbstractEventLoop, reads: str) -> None:
        self.engine = server.engine
        self.loop = loop
        store = self.engine.store
        self.writer = _Batcher(loop, store.save_decisions, lambda item: item.decision.user_id, "writer")
        self.reader = (
            _Batcher(loop, store.load_snapshots, lambda wanted: wanted.user_id, "reader")
            if reads == "batched"
            else None
        )

    async def decide(self, request: Any) -> Any:
        from nextbest.decision.engine import (
            MAX_ATTEMPTS,
            _as_saved,
            _without_explanations,
            request_fingerprint,
        )
        from nextbest.decision.validate import validate_request
        from nextbest.errors import ConflictError, InvalidArgumentError, NextbestError
        from nextbest.store import ToSave

        engine = self.engine
        violations = validate_request(request, engine.catalog)
        if violations:
            raise InvalidArgumentError(violations)
        fingerprint = request_fingerprint(request)
        for _attempt in range(MAX_ATTEMPTS):
            decided_at = engine.clock()
            now = request.occurred_at or decided_at
            wanted = engine._wanted(request, now)
            if self.reader is None:
                snapshot = engine.store.load_snapshot(*wanted)
            else:
                snapshot = await self.reader.submit(wanted)
                if isinstance(snapshot, BaseException):
                    raise snapshot
            decision = engine._make_decision(request, snapshot, now)
            to_save = ToSave(decision, fingerprint, decided_at, snapshot.version, None)
            saved = await self.writer.submit(to_save)
            if isinstance(saved, BaseException):
                raise saved if isinstance(saved, NextbestError) else RuntimeError(saved)
            if saved.conflict:
                continue
            if not saved:
                stored = engine.store.find_decision(request.request_id)
                return engine._replay(request, stored.decision, stored.fingerprint, fingerprint)
            written = _as_saved(decision, saved)
            return written if request.explain else _without_explanations(written)
        raise ConflictError("customer kept changing")

    def handler(self) -> Any:
        from nextbest import errors
        from nextbest.server import convert

        codes = {
            errors.InvalidArgumentError: grpc.StatusCode.INVALID_ARGUMENT,
            errors.AlreadyExistsError: grpc.StatusCode.ALREADY_EXISTS,
            errors.ConflictError: grpc.StatusCode.ABORTED,
            errors.DeadlineExceededError: grpc.StatusCode.DEADLINE_EXCEEDED,
        }

        async def next_action(request: Any, context: Any) -> Any:
            try:
                decision = await self.decide(convert.request_from_proto(request))
            except errors.NextbestError as exc:
                await context.abort(codes.get(type(exc), grpc.StatusCode.UNAVAILABLE), str(exc))
            return convert.decision_to_proto(decision)

        request_type, response_type = METHODS["NextAction"]
        return grpc.unary_unary_rpc_method_handler(
            next_action,
            request_deserializer=request_type.FromString,
            response_serializer=response_type.SerializeToString,
        )


def aio_handler(sync: Any, run: Callable[..., Any]) -> Any:
    behaviour = sync.unary_unary

    async def handle(request: Any, context: Any) -> Any:
        wrapped = SyncContext(context)
        try:
            return await run(behaviour, request, wrapped)
        except _AbortError as stop:
            if stop.status is not None:
                context.set_trailing_metadata(stop.status.trailing_metadata)
            await context.abort(stop.code, stop.details)

    return grpc.unary_unary_rpc_method_handler(
        handle, request_deserializer=sync.request_deserializer, response_serializer=sync.response_serializer
    )


async def serve(args: argparse.Namespace) -> None:
    # Built on an ephemeral port it never serves: only its parts are used, the aio server takes args.port.
    settings = Settings(host=args.host, port=0, catalog=args.catalog, database_url=args.database_url)
    nextbest = NextbestServer(settings)
    if args.store == "frozen":
        nextbest.engine.store = FrozenStore(nextbest.store.load_snapshot)
    loop = asyncio.get_running_loop()
    if args.run in ("inline", "pipelined"):

        async def run(behaviour: Any, request: Any, context: Any) -> Any:
            return behaviour(request, context)

    else:
        pool = ThreadPoolExecutor(max_workers=args.workers, thread_name_prefix="nextbest-aio")

        async def run(behaviour: Any, request: Any, context: Any) -> Any:
            return await loop.run_in_executor(pool, behaviour, request, context)

    handlers = {name: aio_handler(sync, run) for name, sync in behaviours(nextbest).items()}
    if args.run == "pipelined":
        handlers["NextAction"] = PipelinedDecisions(nextbest, loop, args.reads).handler()
    server = grpc.aio.server(maximum_concurrent_rpcs=args.max_concurrent)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    health_servicer = health.aio.HealthServicer()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    bound = server.add_insecure_port(f"{args.host}:{args.port}")
    await server.start()
    logging.info(
        "nextbest on grpc.aio (%s store, %s) listening on %s:%d", args.store, args.run, args.host, bound
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=1)
    nextbest.store.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--catalog", type=Path, required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--store", choices=["frozen", "database"], default="frozen")
    parser.add_argument("--run", choices=["inline", "executor", "pipelined"], default="inline")
    parser.add_argument(
        "--reads", choices=["inline", "batched"], default="inline", help="customers' reads (--run pipelined)"
    )
    parser.add_argument("--workers", type=int, default=16, help="executor threads (--run executor)")
    parser.add_argument(
        "--max-concurrent", type=int, help="grpc.aio's maximum_concurrent_rpcs (default: none)"
    )
    args = parser.parse_args(argv)
    if args.run == "inline" and args.store == "database":
        parser.error("--run inline with --store database would stop the loop on every commit")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
