"""NextAction load generator; run it in its own process, never inside the server's.

Closed loop: C threads each keep one blocking call in flight for D seconds (throughput at concurrency C).
Open loop: calls are sent on a fixed schedule of R calls/s for D seconds whatever the server does, from a
``grpc.aio`` event loop with the requests serialized beforehand (~165 µs of CPU per call, half the
blocking stack's); each latency is measured from the call's *scheduled* send time, so a server (or client)
that falls behind is charged for the wait (no coordinated omission). The loop sleeps in the event loop's
millisecond ticks: sends up to ~1-3 ms behind schedule are normal, and charged to the latencies.

Prints one JSON object on stdout. Loopback only.

Overload checks (issue 19): ``--probe-health`` polls grpc.health.v1 every 100 ms from a process of its
own (to ``--health-port`` when given) during the measured window (each probe with a 1 s deadline) and
reports how many took over 100 ms; ``--database-url`` reads the server's database after the run and
counts the calls answered DEADLINE_EXCEEDED whose decision was committed anyway (an exposure for an
answer its caller never got).

    python benchmarks/loadgen.py --port 50151 closed --concurrency 8 --duration 10
    python benchmarks/loadgen.py --port 50151 --server-pid 1234 open --rate 500 --duration 10
    python benchmarks/loadgen.py --port 50151 closed --concurrency 4 --batch 100 --duration 10
    python benchmarks/loadgen.py --port 50151 --tls-ca ca.crt --tls-server-name localhost \
        --token-file decide.token closed --concurrency 8 --duration 10
    python benchmarks/loadgen.py --port 50151 --timeout 0.25 --probe-health \
        --database-url sqlite:///var/bench.db open --rate 1000 --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import math
import os
import random
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import grpc

from nextbest.api.v1 import decision_service_pb2 as pb
from nextbest.api.v1 import decision_service_pb2_grpc as pb_grpc

HOST = "127.0.0.1"
PRODUCT_POOL = 2_000
MAX_DURATION_S = 600.0
MAX_CONCURRENCY = 1_024
MAX_RATE = 50_000.0
LATE_SEND_NS = 1_000_000  # an open-loop send more than 1 ms behind schedule counts as late
_NS = 1_000_000_000


# --- requests ---------------------------------------------------------------------------------------------


class RequestFactory:
    """Builds NextAction requests; one per thread, each with its own deterministic RNG stream."""

    def __init__(self, seed: int, stream: int, users: int, trigger: str) -> None:
        self._rng = random.Random(f"nextbest-bench:{seed}:{stream}")
        self._users = users
        self._trigger = trigger

    def build(self) -> pb.NextActionRequest:
        rng = self._rng
        products = rng.sample(range(PRODUCT_POOL), 2)
        return pb.NextActionRequest(
            request_id=uuid.uuid4().hex,  # unique across runs: the server is idempotent on request_id
            user_id=f"bench-user-{rng.randrange(self._users):05d}",
            trigger=self._trigger,
            context=pb.RequestContext(
                cart_value=round(rng.uniform(5.0, 250.0), 2),
                product_ids=[f"sku-{p:05d}" for p in products],
                time_zone="Europe/Paris",
            ),
            explain=False,
        )


# --- recording --------------------------------------------------------------------------------------------


@dataclass
class Recorder:
    """Thread-safe sink for completed calls."""

    latencies_ns: list[int] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)
    first_actions: Counter[str] = field(default_factory=Counter)
    last_end_ns: int = 0
    timed_out: list[str] = field(default_factory=list)  # request ids answered DEADLINE_EXCEEDED
    decisions: int = 0  # answered NextAction requests: one per OK call, or per answered batch item
    item_errors: Counter[str] = field(default_factory=Counter)  # batch items' own error codes
    ok_ends_ns: list[int] = field(default_factory=list)  # when each OK call ended: goodput second by second
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(
        self,
        latency_ns: int,
        code: str,
        first_action: str | None,
        end_ns: int,
        request_id: str = "",
        *,
        batch: tuple[int, Counter[str]] | None = None,
    ) -> None:
        with self._lock:
            self.latencies_ns.append(latency_ns)
            self.last_end_ns = max(self.last_end_ns, end_ns)
            self.codes[code] += 1
            if batch is not None:
                self.decisions += batch[0]
                self.item_errors.update(batch[1])
            elif code == "OK":
                self.decisions += 1
            if code == "OK":
                self.first_actions[first_action or "(none)"] += 1
                self.ok_ends_ns.append(end_ns)
            elif code == "DEADLINE_EXCEEDED":
                self.timed_out.append(request_id)


def percentile(sorted_values: Sequence[int], pct: float) -> int:
    """Nearest-rank percentile of an ascending sequence."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary_ms(latencies_ns: list[int]) -> dict[str, float | None]:
    if not latencies_ns:
        return {key: None for key in ("mean", "p50", "p90", "p99", "p99_9", "max")}
    ordered = sorted(latencies_ns)
    to_ms = 1e-6
    return {
        "mean": round(sum(ordered) / len(ordered) * to_ms, 3),
        "p50": round(percentile(ordered, 50) * to_ms, 3),
        "p90": round(percentile(ordered, 90) * to_ms, 3),
        "p99": round(percentile(ordered, 99) * to_ms, 3),
        "p99_9": round(percentile(ordered, 99.9) * to_ms, 3),
        "max": round(ordered[-1] * to_ms, 3),
    }


# --- CPU accounting ---------------------------------------------------------------------------------------


def process_cpu_seconds(pid: int) -> float | None:
    """user+system CPU seconds of ``pid`` and its descendants (psutil if present, else /proc)."""
    try:
        import psutil  # type: ignore[import-untyped]
    except ImportError:
        return _proc_stat_cpu_seconds(pid)
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def _proc_stat_cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the command name: fields[0] is state (field 3); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class CpuWindow:
    """Server and client CPU time between :meth:`start` and :meth:`stop`."""

    server_pid: int | None
    server_s: float | None = None
    client_s: float = 0.0

    def start(self) -> None:
        self.server_s = process_cpu_seconds(self.server_pid) if self.server_pid else None
        self.client_s = time.process_time()

    def stop(self) -> None:
        end = process_cpu_seconds(self.server_pid) if self.server_pid else None
        self.server_s = end - self.server_s if end is not None and self.server_s is not None else None
        self.client_s = time.process_time() - self.client_s

    @staticmethod
    def per_unit_us(seconds: float | None, units: int) -> float | None:
        return round(seconds / units * 1e6, 1) if seconds is not None and units else None

    def per_call_us(self, calls: int) -> dict[str, float | None]:
        def per_call(seconds: float | None) -> float | None:
            return round(seconds / calls * 1e6, 1) if seconds is not None and calls else None

        return {
            "server_cpu_s": None if self.server_s is None else round(self.server_s, 3),
            "server_cpu_us_per_call": per_call(self.server_s),
            "client_cpu_s": round(self.client_s, 3),
            "client_cpu_us_per_call": per_call(self.client_s),
        }


# --- calls ------------------------------------------------------------------------------------------------


def _status_name(exc: grpc.RpcError) -> str:
    code = exc.code() if isinstance(exc, grpc.Call) else None
    return code.name if code is not None else "UNKNOWN"


def _first_action(response: pb.NextActionResponse) -> str | None:
    return response.actions[0].action_id if response.actions else None


def batch_call(
    stub: pb_grpc.DecisionServiceStub, requests: list[pb.NextActionRequest], timeout: float
) -> tuple[str, str | None, tuple[int, Counter[str]]]:
    """One NextActionBatch: its code, the first item's first action, (answered items, item error codes)."""
    from google.rpc import code_pb2

    try:
        response = stub.NextActionBatch(pb.NextActionBatchRequest(requests=requests), timeout=timeout)
    except grpc.RpcError as exc:
        return _status_name(exc), None, (0, Counter())
    errors = Counter(code_pb2.Code.Name(r.error.code) for r in response.results if r.HasField("error"))
    first = next((r.response for r in response.results if r.HasField("response")), None)
    return "OK", _first_action(first) if first is not None else None, (response.answered, errors)


def blocking_call(
    stub: pb_grpc.DecisionServiceStub, request: pb.NextActionRequest, timeout: float
) -> tuple[str, str | None]:
    try:
        response = stub.NextAction(request, timeout=timeout)
    except grpc.RpcError as exc:
        return _status_name(exc), None
    return "OK", _first_action(response)


# --- closed loop ------------------------------------------------------------------------------------------


@dataclass
class Window:
    measure_ns: int = 0
    end_ns: int = 0


def _closed_worker(
    *,
    stub: pb_grpc.DecisionServiceStub,
    factory: RequestFactory,
    timeout: float,
    window: Window,
    barrier: threading.Barrier,
    recorder: Recorder,
    batch: int = 0,
) -> None:
    barrier.wait()
    while True:
        if batch:
            requests = [factory.build() for _ in range(batch)]
            start = time.perf_counter_ns()
            if start >= window.end_ns:
                return
            code, first, items = batch_call(stub, requests, timeout)
            end = time.perf_counter_ns()
            if window.measure_ns <= end <= window.end_ns:
                recorder.record(end - start, code, first, end, batch=items)
            continue
        request = factory.build()
        start = time.perf_counter_ns()
        if start >= window.end_ns:
            return
        code, first = blocking_call(stub, request, timeout)
        end = time.perf_counter_ns()
        if window.measure_ns <= end <= window.end_ns:  # completions inside the measured window
            recorder.record(end - start, code, first, end, request.request_id)


def run_closed(
    stubs: list[pb_grpc.DecisionServiceStub], args: argparse.Namespace, recorder: Recorder
) -> dict[str, Any]:
    window, cpu = Window(), CpuWindow(args.server_pid)
    barrier = threading.Barrier(args.concurrency + 1)
    threads = [
        threading.Thread(
            target=_closed_worker,
            kwargs={
                "stub": stubs[i % len(stubs)],
                "factory": _factory(args, i),
                "timeout": args.timeout,
                "window": window,
                "barrier": barrier,
                "recorder": recorder,
                "batch": args.batch,
            },
            name=f"closed-{i}",
            daemon=True,
        )
        for i in range(args.concurrency)
    ]
    for thread in threads:
        thread.start()
    window.measure_ns = time.perf_counter_ns() + int(args.warmup * _NS)
    window.end_ns = window.measure_ns + int(args.duration * _NS)
    barrier.wait()
    _sleep_until(window.measure_ns)
    cpu.start()
    _sleep_until(window.end_ns)
    cpu.stop()
    for thread in threads:
        thread.join(timeout=args.timeout + 5)
    return {
        "mode": "closed",
        "concurrency": args.concurrency,
        "batch": args.batch,
        **_summary(recorder, args.duration, cpu),
    }


# --- open loop --------------------------------------------------------------------------------------------


@dataclass
class Schedule:
    start_ns: int = 0
    sent: int = 0
    late_sends: int = 0
    max_send_lag_ns: int = 0
    tasks: list[asyncio.Future[None]] = field(default_factory=list)


NEXT_ACTION = "/nextbest.api.v1.DecisionService/NextAction"


@dataclass
class Prepared:
    """An open loop's requests, built and serialized before it starts: the sender only sends bytes, so
    building a request (its protobuf, its uuid) cannot make it fall behind schedule."""

    bodies: list[bytes]
    request_ids: list[str]

    @classmethod
    def build(cls, factory: RequestFactory, count: int) -> Prepared:
        requests = [factory.build() for _ in range(count)]
        return cls([r.SerializeToString() for r in requests], [r.request_id for r in requests])


# A completed open-loop call: its index in the schedule, when it ended, its code and the response's bytes.
Ended = tuple[int, int, str, bytes | None]


async def _send_on_schedule(
    calls: list[Any], prepared: Prepared, *, rate: float, timeout: float, metadata: Any, ended: list[Ended]
) -> Schedule:
    """Sends ``prepared``'s requests at ``rate`` on a ``grpc.aio`` event loop (bytes in and out, no
    serializer of the client's own per call): each call is a task that appends its end to ``ended``.
    The sender sleeps until the next call is due and then sends every call due by then."""
    schedule = Schedule(start_ns=time.perf_counter_ns() + 1_000_000)
    interval_ns = _NS / rate
    perf = time.perf_counter_ns
    append = ended.append
    n = len(calls)

    async def one(i: int, body: bytes) -> None:
        try:
            reply = await calls[i % n](body, timeout=timeout, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            append((i, perf(), exc.code().name, None))
        except asyncio.CancelledError:
            append((i, perf(), "CANCELLED", None))
        else:
            append((i, perf(), "OK", reply))

    tasks = []
    late = max_lag = 0
    for i, body in enumerate(prepared.bodies):
        scheduled_ns = schedule.start_ns + round(i * interval_ns)
        lag_ns = perf() - scheduled_ns
        if lag_ns < 0:
            await asyncio.sleep(-lag_ns / _NS)
            lag_ns = perf() - scheduled_ns
        max_lag = max(max_lag, lag_ns)
        late += lag_ns > LATE_SEND_NS
        tasks.append(asyncio.ensure_future(one(i, body)))
    schedule.sent = len(tasks)
    schedule.late_sends, schedule.max_send_lag_ns = late, max_lag
    schedule.tasks = tasks
    return schedule


def _fold(recorder: Recorder, ended: list[Ended], start_ns: int, interval_ns: float, ids: list[str]) -> None:
    """Records the completions after the run: codes, latencies from the scheduled send, first actions."""
    for i, end_ns, code, reply in ended:
        first = _first_action(pb.NextActionResponse.FromString(reply)) if reply is not None else None
        recorder.record(end_ns - (start_ns + round(i * interval_ns)), code, first, end_ns, ids[i])


def _peak_in_flight(ended: list[Ended], start_ns: int, interval_ns: float) -> int:
    """The most calls outstanding at once (sends and completions merged in time)."""
    sends = [(start_ns + round(i * interval_ns), 1) for i, *_ in ended]
    peak = outstanding = 0
    for _at, step in sorted(sends + [(end, -1) for _i, end, *_ in ended]):
        outstanding += step
        peak = max(peak, outstanding)
    return peak


def run_open(
    args: argparse.Namespace, recorder: Recorder, probe: HealthProbe | None, token: str | None
) -> dict[str, Any]:
    """The open loop, on a ``grpc.aio`` event loop: ~165 µs of the load generator's CPU per call
    against ~290-340 µs with the blocking stack's futures (measured against the empty server at 2,600
    calls/s), so at twice a server's capacity it does not fall behind. Requests are built before the
    run and the garbage collector is off during it. The health probe, in a process of its own, counts
    only the measured window."""
    return asyncio.run(_run_open(args, recorder, probe, token))


async def _run_open(
    args: argparse.Namespace, recorder: Recorder, probe: HealthProbe | None, token: str | None
) -> dict[str, Any]:
    factory = _factory(args, 0)
    drain_s = args.timeout + 5
    channels = await _open_aio_channels(args)
    try:
        calls = [channel.unary_unary(NEXT_ACTION) for channel in channels]
        metadata = (("authorization", f"Bearer {token}"),) if token else None
        interval_ns = _NS / args.rate
        send = functools.partial(
            _send_on_schedule, calls, rate=args.rate, timeout=args.timeout, metadata=metadata
        )
        if args.warmup > 0:
            warm = await send(Prepared.build(factory, int(args.rate * args.warmup)), ended=[])
            await asyncio.wait(warm.tasks, timeout=drain_s)
        prepared = Prepared.build(factory, int(args.rate * args.duration))
        ended: list[Ended] = []
        gc.collect()
        gc.freeze()
        gc.disable()
        cpu = CpuWindow(args.server_pid)
        if probe is not None:
            probe.measure()
        cpu.start()
        try:
            schedule = await send(prepared, ended=ended)
            _done, pending = await asyncio.wait(schedule.tasks, timeout=drain_s)
            cpu.stop()
            if probe is not None:
                probe.stop()
        finally:
            gc.enable()
        for task in pending:
            task.cancel()
    finally:
        for channel in channels:
            await channel.close()
    peak = _peak_in_flight(ended, schedule.start_ns, interval_ns)
    _fold(recorder, ended, schedule.start_ns, interval_ns, prepared.request_ids)
    # Completions are counted until the last response: an overloaded server cannot look like it kept up.
    elapsed_s = max(args.duration, (recorder.last_end_ns - schedule.start_ns) / _NS)
    return {
        "mode": "open",
        "rate": args.rate,
        "sent": schedule.sent,
        "late_sends": schedule.late_sends,
        "max_send_lag_ms": round(schedule.max_send_lag_ns / 1e6, 3),
        "peak_in_flight": peak,
        "drained": not pending,
        "ok_per_second": per_second(recorder.ok_ends_ns, schedule.start_ns, elapsed_s),
        **_summary(recorder, args.duration, cpu, elapsed_s=elapsed_s),
    }


async def _open_aio_channels(args: argparse.Namespace) -> list[grpc.aio.Channel]:
    options: list[tuple[str, Any]] = [("grpc.use_local_subchannel_pool", 1)] if args.channels > 1 else []
    if args.tls_server_name:
        options.append(("grpc.ssl_target_name_override", args.tls_server_name))
    target = f"{HOST}:{args.port}"
    credentials, _token = _credentials(args)
    channels = [
        grpc.aio.secure_channel(target, credentials, options=options)
        if credentials is not None
        else grpc.aio.insecure_channel(target, options=options)
        for _ in range(args.channels)
    ]
    for channel in channels:
        await asyncio.wait_for(channel.channel_ready(), timeout=10.0)
    return channels


def per_second(ends_ns: Sequence[int], start_ns: int, elapsed_s: float) -> list[int]:
    """Calls ended in each second after ``start_ns``: a stall shows as a dip that the run's mean hides."""
    counts = [0] * max(1, math.ceil(elapsed_s))
    for end in ends_ns:
        counts[min(len(counts) - 1, max(0, (end - start_ns) // _NS))] += 1
    return counts


# --- overload checks --------------------------------------------------------------------------------------


class HealthProbe:
    """Polls grpc.health.v1 every ``interval`` seconds (1 s deadline each) from a process of its own, on
    a connection of its own: the load generator's own pauses (its GIL, its event loop) cannot delay a
    probe and be charged to the server. It connects when entered; it counts only from ``measure()``
    (or from entering, if that is never called) to ``stop()`` (or exit)."""

    def __init__(self, port: int, interval: float = 0.1) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self._measuring, self._stopping = context.Event(), context.Event()
        self._results, sent = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_probe_process,
            args=(port, interval, self._measuring, self._stopping, sent),
            name="health-probe",
            daemon=True,
        )
        self.latencies_ns: list[int] = []
        self.outcomes: Counter[str] = Counter()

    def __enter__(self) -> HealthProbe:
        self._process.start()
        return self

    def measure(self) -> None:
        self._measuring.set()

    def stop(self) -> None:
        if self._stopping.is_set():
            return
        self._measuring.set()
        self._stopping.set()
        if self._results.poll(30):
            latencies, outcomes = self._results.recv()
            self.latencies_ns, self.outcomes = latencies, Counter(outcomes)
        self._process.join(10)

    def __exit__(self, *_: object) -> None:
        self.stop()

    def summary(self) -> dict[str, Any]:
        return {
            "probes": len(self.latencies_ns),
            "outcomes": dict(self.outcomes),
            "over_100ms": sum(ns > 100_000_000 for ns in self.latencies_ns),
            "latency_ms": latency_summary_ms(self.latencies_ns),
        }


def _probe_process(port: int, interval: float, measuring: Any, stopping: Any, results: Any) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    request = health_pb2.HealthCheckRequest()
    serving = health_pb2.HealthCheckResponse.SERVING
    channel = grpc.insecure_channel(f"{HOST}:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
    stub = health_pb2_grpc.HealthStub(channel)
    latencies: list[int] = []
    outcomes: Counter[str] = Counter()
    with suppress(grpc.FutureTimeoutError):
        grpc.channel_ready_future(channel).result(timeout=10)
    while not stopping.wait(interval):
        start = time.perf_counter_ns()
        try:
            reply = stub.Check(request, timeout=1.0)
            outcome = "SERVING" if reply.status == serving else "NOT_SERVING"
        except grpc.RpcError as exc:
            outcome = _status_name(exc)
        if measuring.is_set():
            latencies.append(time.perf_counter_ns() - start)
            outcomes[outcome] += 1
    channel.close()
    results.send((latencies, dict(outcomes)))


def committed_after_deadline(database_url: str, request_ids: list[str]) -> int:
    """How many of ``request_ids`` (answered DEADLINE_EXCEEDED) have a decision in the database."""
    from sqlalchemy import bindparam, create_engine, text

    engine = create_engine(database_url)
    query = text("SELECT COUNT(*) FROM decisions WHERE request_id IN :ids").bindparams(
        bindparam("ids", expanding=True)
    )
    found = 0
    try:
        with engine.connect() as conn:
            for i in range(0, len(request_ids), 500):
                found += conn.execute(query, {"ids": request_ids[i : i + 500]}).scalar_one()
    finally:
        engine.dispose()
    return found


# --- plumbing ---------------------------------------------------------------------------------------------


def _factory(args: argparse.Namespace, stream: int) -> RequestFactory:
    return RequestFactory(args.seed, stream, args.users, args.trigger)


def _sleep_until(deadline_ns: int) -> None:
    remaining = deadline_ns - time.perf_counter_ns()
    if remaining > 0:
        time.sleep(remaining / _NS)


def _summary(
    recorder: Recorder, duration: float, cpu: CpuWindow, elapsed_s: float | None = None
) -> dict[str, Any]:
    """Rates are per second of ``elapsed_s`` (the measured window unless given)."""
    calls = len(recorder.latencies_ns)
    ok = recorder.codes.get("OK", 0)
    elapsed = elapsed_s or duration
    return {
        "duration_s": duration,
        "elapsed_s": round(elapsed, 3),
        "calls": calls,
        "ok": ok,
        "decisions": recorder.decisions,
        "calls_per_s": round(calls / elapsed, 1),
        "decisions_per_s": round(recorder.decisions / elapsed, 1),
        "errors": {code: n for code, n in sorted(recorder.codes.items()) if code != "OK"},
        "item_errors": dict(sorted(recorder.item_errors.items())),
        "latency_ms": latency_summary_ms(recorder.latencies_ns),
        "first_actions": dict(recorder.first_actions.most_common(5)),
        **cpu.per_call_us(calls),
        # Per decision: a batch call holds many (equal to the per-call figures for single calls).
        "server_cpu_us_per_decision": cpu.per_unit_us(cpu.server_s, recorder.decisions),
    }


def open_channels(
    port: int,
    count: int,
    ready_timeout: float,
    credentials: grpc.ChannelCredentials | None = None,
    server_name: str | None = None,
) -> list[grpc.Channel]:
    # A local subchannel pool gives each channel its own HTTP/2 connection.
    options: list[tuple[str, Any]] = [("grpc.use_local_subchannel_pool", 1)] if count > 1 else []
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    target = f"{HOST}:{port}"
    channels = [
        grpc.secure_channel(target, credentials, options=options)
        if credentials is not None
        else grpc.insecure_channel(target, options=options)
        for _ in range(count)
    ]
    for channel in channels:
        grpc.channel_ready_future(channel).result(timeout=ready_timeout)
    return channels


class _WithToken:
    """A NextAction multicallable that sends ``authorization: Bearer TOKEN`` with every call, blocking
    or as a future: per-call metadata, the cheapest way (a call-credentials plugin runs Python on a
    thread of its own per call)."""

    def __init__(self, inner: Any, token: str) -> None:
        self._inner = inner
        self._metadata = (("authorization", f"Bearer {token}"),)

    def __call__(self, request: Any, timeout: float | None = None) -> Any:
        return self._inner(request, timeout=timeout, metadata=self._metadata)

    def future(self, request: Any, timeout: float | None = None) -> Any:
        return self._inner.future(request, timeout=timeout, metadata=self._metadata)


def _stubs(channels: list[grpc.Channel], token: str | None) -> list[Any]:
    stubs = [pb_grpc.DecisionServiceStub(channel) for channel in channels]
    if token:
        for stub in stubs:
            stub.NextAction = _WithToken(stub.NextAction, token)
    return stubs


def _credentials(args: argparse.Namespace) -> tuple[grpc.ChannelCredentials | None, str | None]:
    """TLS credentials (--tls-ca) and the bearer token (--token-file or NEXTBEST_TOKEN)."""
    token = os.environ.get("NEXTBEST_TOKEN")
    if args.token_file:
        with open(args.token_file, encoding="utf-8") as f:
            token = f.read().strip()
    credentials = None
    if args.tls_ca:
        with open(args.tls_ca, "rb") as f:
            credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
    return credentials, token


def _bounded(kind: Callable[[str], Any], low: float, high: float) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}")
        return value

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--port", type=_bounded(int, 1, 65535), required=True, help=f"server port on {HOST}")
    parser.add_argument("--server-pid", type=int, help="measure this process's CPU time per call")
    parser.add_argument("--duration", type=_bounded(float, 0.1, MAX_DURATION_S), default=10.0)
    parser.add_argument(
        "--warmup", type=_bounded(float, 0.0, 60.0), default=1.0, help="unmeasured lead-in (s)"
    )
    parser.add_argument(
        "--timeout", type=_bounded(float, 0.01, 60.0), default=2.0, help="per-call deadline (s)"
    )
    parser.add_argument(
        "--users", type=_bounded(int, 1, 10_000_000), default=10_000, help="user_id pool size"
    )
    parser.add_argument("--trigger", default="bench_trigger")
    parser.add_argument("--seed", type=int, default=20_261_123)
    parser.add_argument(
        "--channels", type=_bounded(int, 1, 64), default=1, help="gRPC channels (connections)"
    )
    parser.add_argument(
        "--probe-health", action="store_true", help="poll health every 100 ms and report its latency"
    )
    parser.add_argument(
        "--health-port",
        type=_bounded(int, 1, 65535),
        help="probe health on this port (the server's --health-port: plaintext, so a TLS server too)",
    )
    parser.add_argument(
        "--database-url", help="the server's database: count DEADLINE_EXCEEDED calls committed anyway"
    )
    parser.add_argument("--token-file", help="send this bearer token (default: NEXTBEST_TOKEN, if set)")
    parser.add_argument("--tls-ca", help="connect with TLS, trusting this CA (PEM)")
    parser.add_argument("--tls-server-name", help="name the server certificate carries (e.g. localhost)")
    modes = parser.add_subparsers(dest="mode", required=True)
    closed = modes.add_parser("closed", help="fixed concurrency")
    closed.add_argument("--concurrency", type=_bounded(int, 1, MAX_CONCURRENCY), default=8)
    closed.add_argument(
        "--batch",
        type=_bounded(int, 0, 500),
        default=0,
        help="send NextActionBatch calls of this many requests (0: NextAction)",
    )
    open_ = modes.add_parser("open", help="fixed arrival rate")
    open_.add_argument("--rate", type=_bounded(float, 1.0, MAX_RATE), default=500.0, help="calls per second")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    credentials, token = _credentials(args)
    probe = HealthProbe(args.health_port or args.port) if args.probe_health else None
    recorder = Recorder()
    try:
        if probe is not None:
            probe.__enter__()
        if args.mode == "closed":
            if probe is not None:
                probe.measure()
            channels = open_channels(args.port, args.channels, 10.0, credentials, args.tls_server_name)
            try:
                result = run_closed(_stubs(channels, token), args, recorder)
            finally:
                for channel in channels:
                    channel.close()
        else:
            result = run_open(args, recorder, probe, token)
    finally:
        if probe is not None:
            probe.__exit__()
    if probe is not None:
        result["health"] = probe.summary()
    if args.database_url:
        result["timed_out"] = len(recorder.timed_out)
        result["committed_after_deadline"] = committed_after_deadline(args.database_url, recorder.timed_out)
    result.update(
        target=f"{HOST}:{args.port}",
        channels=args.channels,
        warmup_s=args.warmup,
        timeout_s=args.timeout,
        users=args.users,
        trigger=args.trigger,
        seed=args.seed,
    )
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
