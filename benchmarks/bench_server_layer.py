"""What nextbest's server layer costs around the pipeline, in process: no sockets, no threads.

The server is built as ``nextbest serve`` builds it (``NextbestServer``, its interceptors, its servicer),
with its store in memory (``FrozenStore``, as in ``memory_server.py``), and each NextAction is run the way
gRPC's thread runs it: the interceptor pipeline picks the handler, the handler's deserializer decodes the
request bytes, the wrapped behaviour answers, the serializer encodes the answer. Against the same calls
made three other ways, interleaved in rounds:

- ``decide``: ``DecisionEngine.decide`` on an already-converted request (the pipeline alone);
- ``convert``: bytes -> proto -> domain, ``decide``, domain -> proto -> bytes (adds the conversion);
- ``layer``: the whole handler as gRPC runs it (adds the interceptors, metrics, admission, errors);
- ``batch``: the same requests through ``NextActionBatch``, ``--batch`` per call, cost per decision.

So ``layer - decide`` is what the server layer adds in Python, per call; gRPC's own C core, its polling
and the thread hand-offs are not in it (the load benchmark, bench_next_action.py, has those). CPU time
per call (``time.process_time``), median of the rounds. Under ``valgrind --tool=callgrind`` (``--calls
200 --rounds 1 --only layer``), instruction counts are deterministic on this shared machine.

    python benchmarks/bench_server_layer.py [--calls 2000] [--rounds 5] [--catalog benchmarks/catalog_20.yaml]
    python benchmarks/bench_server_layer.py --profile layer     # cProfile of the layer mode, top 30
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from grpc import _interceptor

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from loadgen import RequestFactory  # noqa: E402
from nextbest.api.v1 import decision_service_pb2 as pb  # noqa: E402
from nextbest.server import NextbestServer, convert  # noqa: E402
from nextbest.settings import Settings  # noqa: E402
from nextbest.store import FrozenStore  # noqa: E402

METHOD = "/nextbest.api.v1.DecisionService/NextAction"
BATCH_METHOD = "/nextbest.api.v1.DecisionService/NextActionBatch"
MODES = ("decide", "convert", "layer", "batch")


class AbortedError(Exception):
    pass


class Context:
    """The parts of ``grpc.ServicerContext`` nextbest's handlers use."""

    def __init__(self, timeout: float = 60.0) -> None:
        self._deadline = time.monotonic() + timeout
        self._code: Any = None

    def time_remaining(self) -> float:
        return self._deadline - time.monotonic()

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    def auth_context(self) -> dict[str, Any]:
        return {}

    def code(self) -> Any:
        return self._code

    def abort(self, code: Any, details: str) -> None:
        self._code = code
        raise AbortedError(f"{code}: {details}")

    def abort_with_status(self, status: Any) -> None:
        self._code = status.code
        raise AbortedError(f"{status.code}: {status.details}")


class Details:
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


def build_server(catalog: Path, workdir: Path) -> NextbestServer:
    settings = Settings(port=0, catalog=catalog, database_url=f"sqlite:///{workdir / 'layer.db'}")
    server = NextbestServer(settings)
    server.engine.store = FrozenStore(server.store.load_snapshot)
    server._set_health(True)
    return server


def handlers(server: NextbestServer) -> dict[str, Any]:
    servicer = server.decisions
    return {
        METHOD: grpc.unary_unary_rpc_method_handler(
            servicer.NextAction,
            request_deserializer=pb.NextActionRequest.FromString,
            response_serializer=pb.NextActionResponse.SerializeToString,
        ),
        BATCH_METHOD: grpc.unary_unary_rpc_method_handler(
            servicer.NextActionBatch,
            request_deserializer=pb.NextActionBatchRequest.FromString,
            response_serializer=pb.NextActionBatchResponse.SerializeToString,
        ),
    }


def runners(server: NextbestServer, batch: int) -> dict[str, Callable[[list[bytes]], int]]:
    """Each mode as a function of a list of serialized NextActionRequests; returns the decisions made."""
    engine = server.engine
    pipeline = _interceptor.service_pipeline(server.interceptors)
    methods = handlers(server)

    def query(details: Any) -> Any:
        return methods.get(details.method)

    def run_decide(bodies: list[bytes]) -> int:
        requests = [convert.request_from_proto(pb.NextActionRequest.FromString(b)) for b in bodies]
        start = time.process_time()
        for request in requests:
            engine.decide(request)
        _spent[0] = time.process_time() - start
        return len(requests)

    def run_convert(bodies: list[bytes]) -> int:
        start = time.process_time()
        for body in bodies:
            decision = engine.decide(convert.request_from_proto(pb.NextActionRequest.FromString(body)))
            convert.decision_to_proto(decision).SerializeToString()
        _spent[0] = time.process_time() - start
        return len(bodies)

    def run_layer(bodies: list[bytes]) -> int:
        details = Details(METHOD)
        start = time.process_time()
        for body in bodies:
            handler = pipeline.execute(query, details)
            request = handler.request_deserializer(body)
            handler.response_serializer(handler.unary_unary(request, Context()))
        _spent[0] = time.process_time() - start
        return len(bodies)

    def run_batch(bodies: list[bytes]) -> int:
        details = Details(BATCH_METHOD)
        messages = [
            pb.NextActionBatchRequest(
                requests=[pb.NextActionRequest.FromString(b) for b in bodies[i : i + batch]]
            ).SerializeToString()
            for i in range(0, len(bodies), batch)
        ]
        start = time.process_time()
        for message in messages:
            handler = pipeline.execute(query, details)
            request = handler.request_deserializer(message)
            handler.response_serializer(handler.unary_unary(request, Context(timeout=60.0)))
        _spent[0] = time.process_time() - start
        return len(bodies)

    return {"decide": run_decide, "convert": run_convert, "layer": run_layer, "batch": run_batch}


_spent = [0.0]


def bodies_for(seed: int, stream: int, calls: int, users: int, trigger: str) -> list[bytes]:
    factory = RequestFactory(seed, stream, users, trigger)
    return [factory.build().SerializeToString() for _ in range(calls)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--catalog", type=Path, default=BENCH_DIR / "catalog_20.yaml")
    parser.add_argument("--calls", type=int, default=2000, help="calls per mode per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=100, help="requests per NextActionBatch call")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=20_261_123)
    parser.add_argument("--trigger", default="bench_trigger")
    parser.add_argument("--only", choices=MODES, action="append", help="run only these modes")
    parser.add_argument("--profile", choices=MODES, help="cProfile one round of this mode; print the top 30")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    modes = tuple(args.only or MODES)
    with tempfile.TemporaryDirectory(prefix="nextbest-layer-") as tmp:
        server = build_server(args.catalog.resolve(), Path(tmp))
        try:
            run = runners(server, args.batch)
            # Warm every path (and the frozen store's customers) on calls not measured.
            for mode in modes:
                run[mode](bodies_for(args.seed, 999, 200, args.users, args.trigger))
            if args.profile:
                bodies = bodies_for(args.seed, 0, args.calls, args.users, args.trigger)
                profiler = cProfile.Profile()
                profiler.runcall(run[args.profile], bodies)
                pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
                return 0
            per_call: dict[str, list[float]] = {mode: [] for mode in modes}
            for round_ in range(args.rounds):
                for mode in modes:
                    # Fresh request ids and the same customers in every mode of a round.
                    bodies = bodies_for(args.seed, round_, args.calls, args.users, args.trigger)
                    done = run[mode](bodies)
                    per_call[mode].append(_spent[0] / done * 1e6)
        finally:
            server.store.close()
    medians = {mode: round(statistics.median(v), 1) for mode, v in per_call.items()}
    report = {"calls": args.calls, "rounds": args.rounds, "batch": args.batch, "us_per_decision": medians}
    if "decide" in medians:
        report["added_us"] = {m: round(medians[m] - medians["decide"], 1) for m in medians if m != "decide"}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"CPU µs per decision, median of {args.rounds} rounds of {args.calls} calls:")
    for mode, value in medians.items():
        added = report.get("added_us", {}).get(mode)
        spread = ", ".join(f"{v:.0f}" for v in per_call[mode])
        extra = f" (+{added:.0f} over decide)" if added is not None else ""
        print(f"  {mode:8s} {value:8.1f}{extra}   rounds: {spread}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
