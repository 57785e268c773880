"""An "empty" DecisionService: the same wire contract, no decision logic, a fixed answer.

It is the floor every NextAction figure is compared with: what gRPC + protobuf in Python cost on this
machine with nothing else to do. It also serves the standard grpc.health.v1 service (SERVING), so the
benchmark driver waits for it exactly as it waits for the real server.

    python benchmarks/empty_server.py --port 50151 [--workers 16] [--aio]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import threading
from concurrent import futures
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from nextbest.api.v1 import decision_service_pb2 as pb
from nextbest.api.v1 import decision_service_pb2_grpc as pb_grpc
from nextbest.server.process import supervise

SERVICE_NAME = "nextbest.api.v1.DecisionService"
_OCCURRED_AT = Timestamp(seconds=1_795_000_000)  # 2026-11-18T09:46:40Z, fixed on purpose


def fixed_next_action_response() -> pb.NextActionResponse:
    """A realistic answer: one onsite action with a few parameters, as the real server would send."""
    return pb.NextActionResponse(
        decision_id="dec_5f2c9a7e4b1d4e0f8a3c6b2d9e1f7a40",
        actions=[
            pb.ChosenAction(
                action_id="bench_cart_banner_onsite",
                flow="cart_recovery",
                channel=pb.CHANNEL_ONSITE,
                action_class=pb.ACTION_CLASS_TRIGGERED,
                send_at=_OCCURRED_AT,
                parameters={"placement": "cart_banner", "message": "Your cart is waiting", "variant": "a"},
                score=2.7846,
            )
        ],
        catalog_version="9d542e0a7868",  # benchmarks/catalog_20.yaml's, as the real server answers
        occurred_at=_OCCURRED_AT,
        replayed=False,
    )


def fixed_record_events_response() -> pb.RecordEventsResponse:
    return pb.RecordEventsResponse(
        results=[pb.EventResult(index=0, event_id="evt_bench_0", status=pb.EVENT_STATUS_ACCEPTED)],
        accepted=1,
    )


class EmptyDecisionService(pb_grpc.DecisionServiceServicer):  # type: ignore[misc]
    """Sync handlers: return prebuilt messages (serialization still happens per call)."""

    def __init__(self) -> None:
        self._next_action = fixed_next_action_response()
        self._record_events = fixed_record_events_response()

    def NextAction(  # noqa: N802 - gRPC method name
        self, request: pb.NextActionRequest, context: grpc.ServicerContext
    ) -> pb.NextActionResponse:
        return self._next_action

    def RecordEvents(  # noqa: N802 - gRPC method name
        self, request: pb.RecordEventsRequest, context: grpc.ServicerContext
    ) -> pb.RecordEventsResponse:
        return self._record_events


class AsyncEmptyDecisionService(pb_grpc.DecisionServiceServicer):  # type: ignore[misc]
    """The same fixed answers for grpc.aio."""

    def __init__(self) -> None:
        self._next_action = fixed_next_action_response()
        self._record_events = fixed_record_events_response()

    async def NextAction(  # noqa: N802
        self, request: pb.NextActionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.NextActionResponse:
        return self._next_action

    async def RecordEvents(  # noqa: N802
        self, request: pb.RecordEventsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RecordEventsResponse:
        return self._record_events


def _serving_health() -> health.HealthServicer:
    servicer = health.HealthServicer()
    for name in ("", SERVICE_NAME):
        servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return servicer


def serve_sync(host: str, port: int, workers: int, reuse_port: bool = False) -> None:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers), options=[("grpc.so_reuseport", int(reuse_port))]
    )
    pb_grpc.add_DecisionServiceServicer_to_server(EmptyDecisionService(), server)
    health_pb2_grpc.add_HealthServicer_to_server(_serving_health(), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    server.start()
    logging.info("empty server (sync, %d workers) listening on %s:%d", workers, host, bound)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=1).wait()


async def serve_aio(host: str, port: int) -> None:
    await serve_aio_until_signalled(AsyncEmptyDecisionService(), host, port, "empty server (aio)")


async def serve_aio_until_signalled(servicer: Any, host: str, port: int, label: str) -> None:
    """Serves ``servicer`` as the DecisionService on a grpc.aio server, with grpc.health.v1 SERVING,
    until SIGTERM or SIGINT."""
    server = grpc.aio.server()
    pb_grpc.add_DecisionServiceServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    logging.info("%s listening on %s:%d", label, host, bound)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=16, help="ThreadPoolExecutor size (sync mode)")
    parser.add_argument("--aio", action="store_true", help="use grpc.aio instead of the sync server")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="sync servers sharing the port, as `nextbest serve --processes`",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.aio:
        asyncio.run(serve_aio(args.host, args.port))
    elif args.processes > 1:  # N sync servers on one port, stopped together on SIGTERM
        return supervise(serve_sync, [(args.host, args.port, args.workers, True)] * args.processes)
    else:
        serve_sync(args.host, args.port, args.workers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
