"""Fault harness (issue 19): a live server on SQLite and PostgreSQL under faults, audited by a ledger.

A loopback client keeps a ledger of every NextAction it attempts. A call that ends without a definite
answer (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, a dropped connection) is an unknown
outcome and is retried with the same request_id, as a careful caller would, until it is answered. After
each scenario the harness reads the database directly and counts:

- lost: acknowledged (OK) but not stored;
- duplicates: a request_id stored twice, or stored under another decision than the one acknowledged;
- phantoms: a stored decision nobody attempted, or an exposure without its decision.

All three must be 0. The self-test runs a deliberately broken server (it acknowledges a decision before its
group commit, which happens up to half a second later; enabled only by this script's ``serve-broken``
entry point, never by a setting of the product) and must find lost decisions after a SIGKILL.

Faults: SIGKILL under load (repeated), SIGTERM under load, PostgreSQL stopped and frozen (SIGSTOP) on a
cluster the harness initialises itself in a temporary folder on a free port (never a shared one), SQLite
on a small tmpfs filled to the last byte, and an open loop at twice the measured capacity. Health is
polled every 100 ms throughout; the WAL and the database file sizes are sampled on SQLite.

    .venv/bin/python benchmarks/reliability.py                 # the full run (make reliability), ~15 min
    .venv/bin/python benchmarks/reliability.py --short         # SQLite: self-test, 2 SIGKILLs, SIGTERM
    .venv/bin/python benchmarks/reliability.py --only pg-freeze --databases postgresql

Only loopback; only processes it started, by pid; its PostgreSQL cluster and tmpfs are removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import pwd
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import create_engine, text

from nextbest.api.v1 import decision_service_pb2 as pb
from nextbest.api.v1 import decision_service_pb2_grpc as pb_grpc
from nextbest.server.edge import Edge, EdgeConfig
from nextbest.server.process import free_port
from nextbest.throttle import AdaptiveThrottle, ThrottledError

HOST = "127.0.0.1"
# Outcomes a careful caller cannot read as "not written": retried with the same request_id.
UNKNOWN = {
    "THROTTLED",  # refused by the caller's own throttle: nothing was sent
    "UNAVAILABLE",
    "DEADLINE_EXCEEDED",
    "RESOURCE_EXHAUSTED",
    "ABORTED",
    "CANCELLED",
    "UNKNOWN",
    "INTERNAL",
}
CALL_TIMEOUT = 2.0
_CHANNEL_OPTIONS = [
    # Reconnect quickly to a restarted server (gRPC's default backoff grows to 2 minutes).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


# --- the ledger -------------------------------------------------------------------------------------------


@dataclass
class Entry:
    request: pb.NextActionRequest
    attempts: int = 0
    acked: str | None = None  # the decision id of the OK answer
    refused: str | None = None  # a definite refusal (INVALID_ARGUMENT, ...): nothing should be stored
    statuses: Counter[str] = field(default_factory=Counter)


class Ledger:
    """Every request attempted, every attempt's status, and what was acknowledged."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.entries: dict[str, Entry] = {}
        self.retry: queue.SimpleQueue[Entry] = queue.SimpleQueue()
        self.details: dict[str, str] = {}  # the latest message of each non-OK status, for diagnosis

    def new(self) -> Entry:
        with self._lock:
            rng = self._rng
            request = pb.NextActionRequest(
                request_id=f"rel-{uuid.UUID(int=rng.getrandbits(128)).hex}",
                user_id=f"rel-user-{rng.randrange(3000):05d}",
                trigger="cart_abandoned",
                context=pb.RequestContext(
                    cart_value=round(rng.uniform(5.0, 250.0), 2),
                    product_ids=[f"sku-{rng.randrange(500):05d}"],
                    time_zone="Europe/Paris",
                ),
            )
            request.occurred_at.GetCurrentTime()
            entry = Entry(request)
            self.entries[request.request_id] = entry
            return entry

    def next(self) -> Entry:
        try:
            return self.retry.get_nowait()
        except queue.Empty:
            return self.new()

    def record(self, entry: Entry, status: str, decision_id: str | None = None) -> None:
        with self._lock:
            entry.attempts += 1
            entry.statuses[status] += 1
            if status == "OK":
                if entry.acked is not None and entry.acked != decision_id:
                    entry.statuses["REPLAY_MISMATCH"] += 1
                entry.acked = entry.acked or decision_id
            elif status not in UNKNOWN:
                entry.refused = status
        if status in UNKNOWN:
            self.retry.put(entry)

    def unresolved(self) -> list[Entry]:
        with self._lock:
            return [e for e in self.entries.values() if e.acked is None and e.refused is None]

    def statuses(self) -> Counter[str]:
        total: Counter[str] = Counter()
        with self._lock:
            for e in self.entries.values():
                total.update(e.statuses)
        return total


def call(
    stub: pb_grpc.DecisionServiceStub, ledger: Ledger, entry: Entry, timeout: float = CALL_TIMEOUT
) -> str:
    try:
        response = stub.NextAction(entry.request, timeout=timeout)
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        status = code.name if code is not None else "UNKNOWN"
        ledger.details[status] = str(exc.details() if isinstance(exc, grpc.Call) else exc)[:300]
        ledger.record(entry, status)
        return status
    ledger.record(entry, "OK", response.decision_id)
    return "OK"


def audit(url: str, ledger: Ledger) -> dict[str, Any]:
    """Reads the database directly and compares it with the ledger."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            stored = {r: d for r, d in conn.execute(text("SELECT request_id, decision_id FROM decisions"))}
            doubled = conn.execute(
                text(
                    "SELECT count(*) FROM (SELECT request_id FROM decisions"
                    " GROUP BY request_id HAVING count(*) > 1) d"
                )
            ).scalar_one()
            orphans = conn.execute(
                text(
                    "SELECT count(*) FROM exposures e LEFT JOIN decisions d ON d.decision_id = e.decision_id "
                    "WHERE d.decision_id IS NULL"
                )
            ).scalar_one()
    finally:
        engine.dispose()
    entries = ledger.entries
    acked = {rid: e.acked for rid, e in entries.items() if e.acked is not None}
    lost = [rid for rid in acked if rid not in stored]
    mismatched = [rid for rid, d in acked.items() if rid in stored and stored[rid] != d]
    refused_but_stored = [rid for rid, e in entries.items() if e.refused and rid in stored]
    phantoms = [rid for rid in stored if rid not in entries]
    return {
        "attempted": len(entries),
        "attempts": sum(e.attempts for e in entries.values()),
        "acknowledged": len(acked),
        "stored": len(stored),
        "unresolved": len(ledger.unresolved()),
        "lost": len(lost),
        "duplicates": int(doubled) + len(mismatched) + len(refused_but_stored),
        "phantoms": len(phantoms) + int(orphans),
        "statuses": dict(ledger.statuses()),
        "examples": {"lost": lost[:3], "mismatched": mismatched[:3], "phantoms": phantoms[:3]},
        "last_errors": ledger.details,
    }


# --- load -------------------------------------------------------------------------------------------------


class Load:
    """Closed-loop callers (``threads`` of them) drawing new requests and retries from the ledger."""

    def __init__(self, address: str, ledger: Ledger, threads: int) -> None:
        self.ledger = ledger
        self._channel = grpc.insecure_channel(address, options=_CHANNEL_OPTIONS)
        self.stub = pb_grpc.DecisionServiceStub(self._channel)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        self.log: list[tuple[float, str]] = []  # (monotonic end, status) of every attempt

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(CALL_TIMEOUT + 5)

    def _run(self) -> None:
        while not self._stop.is_set():
            status = call(self.stub, self.ledger, self.ledger.next())
            self.log.append((time.monotonic(), status))
            if status not in {"OK", "INVALID_ARGUMENT"}:
                time.sleep(0.25)  # a caller's backoff; also leaves the cores to a restarting server

    def close(self) -> None:
        self._channel.close()


def resolve(address: str, ledger: Ledger, rounds: int = 20) -> None:
    """Retries every unknown outcome (same request_id) against a healthy server until it is answered."""
    with grpc.insecure_channel(address, options=_CHANNEL_OPTIONS) as channel:
        stub = pb_grpc.DecisionServiceStub(channel)
        for _ in range(rounds):
            pending = ledger.unresolved()
            if not pending:
                return
            for entry in pending:
                call(stub, ledger, entry, timeout=10)
            time.sleep(0.5)


def open_loop(
    address: str,
    ledger: Ledger,
    rate: float,
    seconds: float,
    *,
    deadline: float = CALL_TIMEOUT,
    throttle: AdaptiveThrottle | None = None,
) -> dict[str, Any]:
    """Sends at ``rate`` calls/s for ``seconds`` whatever the answers (futures), each call with
    ``deadline`` seconds: an overload test. Returns once every call has ended. With ``throttle``, each
    call first passes the callers' adaptive throttle (``nextbest.throttle``), which may refuse it
    locally (THROTTLED: nothing sent, retried later like a refusal)."""
    codes: Counter[str] = Counter()
    lock = threading.Lock()
    with grpc.insecure_channel(address, options=_CHANNEL_OPTIONS) as channel:
        stub = pb_grpc.DecisionServiceStub(channel)
        futures = []
        start = time.monotonic()
        sent = 0
        while (now := time.monotonic()) - start < seconds:
            due = int((now - start) * rate)
            while sent < due:
                entry = ledger.next()
                sent += 1
                if throttle is not None:
                    try:
                        throttle.admit()
                    except ThrottledError:
                        ledger.record(entry, "THROTTLED")
                        with lock:
                            codes["THROTTLED"] += 1
                        continue
                future = stub.NextAction.future(entry.request, timeout=deadline)

                def done(f: Any, entry: Entry = entry) -> None:
                    try:
                        status, decision_id = "OK", f.result().decision_id
                    except grpc.RpcError as exc:
                        code = exc.code() if isinstance(exc, grpc.Call) else None
                        status, decision_id = (code.name if code else "UNKNOWN"), None
                    if throttle is not None:
                        throttle.record(status != "RESOURCE_EXHAUSTED")
                    ledger.record(entry, status, decision_id)
                    with lock:
                        codes[status] += 1

                future.add_done_callback(done)
                futures.append(future)
            time.sleep(0.001)
        for f in futures:
            with contextlib.suppress(Exception):
                f.exception(timeout=deadline + 5)
    return {
        "rate": rate,
        "seconds": seconds,
        "sent": sent,
        "ok_per_s": codes["OK"] / seconds,
        "codes": dict(codes),
    }


def capacity(address: str, ledger: Ledger, seconds: float = 6.0, threads: int = 16) -> float:
    """OK answers per second of a closed loop of ``threads`` callers."""
    load = Load(address, ledger, threads)
    with load:
        time.sleep(seconds)
    load.close()
    return sum(1 for _, s in load.log if s == "OK") / seconds


# --- health -----------------------------------------------------------------------------------------------


class HealthWatch:
    """Polls grpc.health.v1 every 100 ms (each probe with a 1 s deadline) and keeps the timeline."""

    def __init__(self, address: str) -> None:
        self._channel = grpc.insecure_channel(address, options=_CHANNEL_OPTIONS)
        self._stub = health_pb2_grpc.HealthStub(self._channel)
        self.timeline: list[tuple[float, str, float]] = []  # (monotonic, status, probe seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                reply = self._stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError as exc:
                code = exc.code() if isinstance(exc, grpc.Call) else None
                status = f"RPC_{code.name if code else 'ERROR'}"
            self.timeline.append((started, status, time.monotonic() - started))
            self._stop.wait(max(0.0, 0.1 - (time.monotonic() - started)))

    def first(self, status: str, after: float) -> float | None:
        """Seconds from ``after`` to the first probe at or after it that answered ``status``."""
        for at, s, _ in self.timeline:
            if at >= after and s == status:
                return at - after
        return None

    def between(self, start: float, end: float) -> Counter[str]:
        return Counter(s for at, s, _ in self.timeline if start <= at < end)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(3)
        self._channel.close()


# --- the server -------------------------------------------------------------------------------------------


class Server:
    """``nextbest serve`` on a fixed loopback port, restarted on the same port after each fault."""

    def __init__(
        self,
        url: str,
        workdir: Path,
        *,
        broken: bool = False,
        extra: list[str] | None = None,
        cpus: set[int] | None = None,
    ) -> None:
        self.url = url
        self.cpus = cpus  # the CPUs the server (and its children) may run on; None: any
        self.port = free_port()
        self.address = f"{HOST}:{self.port}"
        self.broken = broken
        self.extra = extra or []
        self.log_path = workdir / f"server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 60.0) -> float:
        """Starts the server and waits for SERVING; returns the seconds it took."""
        entry = [__file__, "serve-broken"] if self.broken else ["-m", "nextbest", "serve"]
        argv = [sys.executable, *entry, "--database-url", self.url, "--host", HOST, "--port", str(self.port)]
        if self.cpus is not None:  # children (--processes) inherit it
            argv = ["taskset", "--cpu-list", ",".join(map(str, sorted(self.cpus))), *argv]
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*argv, *self.extra], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        self.starts += 1
        self.wait_serving(timeout)
        return time.monotonic() - started

    def wait_serving(self, timeout: float) -> float:
        started = time.monotonic()
        with grpc.insecure_channel(self.address, options=_CHANNEL_OPTIONS) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                with contextlib.suppress(grpc.RpcError):
                    reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return time.monotonic() - started
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log_path}")
                if time.monotonic() - started > timeout:
                    raise RuntimeError(f"server not SERVING after {timeout:.0f} s; see {self.log_path}")
                time.sleep(0.1)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signum)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# --- PostgreSQL and tmpfs ---------------------------------------------------------------------------------


class PgCluster:
    """A throwaway PostgreSQL cluster: initdb into a temporary folder, on a free loopback port, run as the
    ``postgres`` user when the harness runs as root. Never touches another cluster."""

    def __init__(self, root: Path) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
        if not bins:
            raise RuntimeError("no PostgreSQL binaries under /usr/lib/postgresql/*/bin")
        self.bin = Path(bins[-1])
        self.dir = root / "pgdata"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@{HOST}:{self.port}/postgres"
        self._user = pwd.getpwnam("postgres") if os.getuid() == 0 else None
        root.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            os.chown(root, self._user.pw_uid, self._user.pw_gid)
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = root / "postgres.log"
        self._run(
            [str(self.bin / "initdb"), "-D", str(self.dir), "-A", "trust", "-U", "postgres", "--no-sync"]
        )

    def _as_user(self) -> dict[str, Any]:
        return {} if self._user is None else {"user": self._user.pw_uid, "group": self._user.pw_gid}

    def _run(self, argv: list[str]) -> None:
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **self._as_user())

    def start(self) -> None:
        with open(self._log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.bin / "postgres"), "-D", str(self.dir), "-p", str(self.port),
                    "-k", str(self.dir), "-c", f"listen_addresses={HOST}", "-c", "max_connections=200",
                ],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, **self._as_user(),
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                engine = create_engine(self.url)
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
                engine.dispose()
                return
            except Exception:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"PostgreSQL did not start; see {self._log}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster): sessions are cut, nothing committed is lost."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(30)

    def pids(self) -> list[int]:
        """The postmaster and every process under it."""
        assert self.proc is not None
        found, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            for task in glob.glob(f"/proc/{pid}/task/*/children"):
                with contextlib.suppress(OSError):
                    todo += [int(c) for c in Path(task).read_text().split()]
        return found

    def freeze(self) -> list[int]:
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        return pids

    @staticmethod
    def thaw(pids: list[int]) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def destroy(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.thaw(self.pids())
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def small_disk(root: Path, megabytes: int) -> Iterator[tuple[Path, str]]:
    """A tmpfs of ``megabytes`` (root can mount one), else a loop-mounted ext4 image; yields its mount point
    and what it is."""
    mount = root / "disk"
    mount.mkdir(parents=True, exist_ok=True)
    kind = f"tmpfs {megabytes} MB"
    done = subprocess.run(  # noqa: PLW1510 (the return code is checked below)
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}); run as root")
    try:
        yield mount, kind
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path) -> int:
    """Writes zeros into ``path`` until the file system is full; returns the bytes written."""
    written = 0
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        for size in (65536, 4096, 512, 1):
            while True:
                try:
                    written += f.write(chunk[:size])
                except OSError:
                    break
    return written


class SizeSampler:
    """Samples the SQLite database and WAL sizes every 50 ms."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.wal_path = db_path.with_name(db_path.name + "-wal")
        self.max_wal = 0
        self.max_ratio = 0.0
        self.at_max: tuple[int, int] = (0, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                wal, db = self.wal_path.stat().st_size, self.db_path.stat().st_size
            except OSError:
                continue
            if wal > self.max_wal:
                self.max_wal, self.at_max = wal, (wal, db)
            if db:
                self.max_ratio = max(self.max_ratio, wal / db)

    def close(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(2)
        wal, db = self.at_max
        return {
            "max_wal_mb": round(wal / 2**20, 1),
            "db_mb_then": round(db / 2**20, 1),
            "max_wal_to_db": round(self.max_ratio, 2),
        }


# --- scenarios --------------------------------------------------------------------------------------------


@dataclass
class Context:
    database: str  # "sqlite" or "postgresql"
    url: str
    workdir: Path
    pg: PgCluster | None
    threads: int
    seed: int

    def fresh_url(self, name: str) -> str:
        """A new empty database for one scenario."""
        if self.database == "sqlite":
            return f"sqlite:///{self.workdir / (name + '.db')}"
        assert self.pg is not None
        engine = create_engine(self.pg.url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return self.pg.url.rsplit("/", 1)[0] + f"/{name}"


def _finish(server: Server, ledger: Ledger, url: str, result: dict[str, Any]) -> dict[str, Any]:
    resolve(server.address, ledger)
    server.stop()
    result.update(audit(url, ledger))
    # Clean: nothing lost, doubled or invented, and every unknown outcome answered once the fault ended
    # (a server that never recovers leaves callers retrying for ever).
    result["clean"] = (result["lost"], result["duplicates"], result["phantoms"], result["unresolved"]) == (
        0,
        0,
        0,
        0,
    )
    return result


def scenario_selftest(ctx: Context) -> dict[str, Any]:
    """The broken server (acknowledge before commit) under load, SIGKILLed: the audit must find losses."""
    url = ctx.fresh_url("selftest")
    ledger = Ledger(ctx.seed)
    broken = Server(url, ctx.workdir, broken=True)
    broken.start()
    load = Load(broken.address, ledger, ctx.threads)
    with load:
        time.sleep(2.0)
        broken.signal(signal.SIGKILL)
        broken.wait(10)
    load.close()
    server = Server(url, ctx.workdir)
    server.port, server.address = broken.port, broken.address
    server.start()
    result = _finish(server, ledger, url, {"scenario": "selftest (ack before commit)"})
    result["caught"] = result["lost"] > 0 or result["duplicates"] > 0
    result["clean"] = result["caught"]  # for the self-test, success is finding the fault
    return result


def scenario_kills(ctx: Context, kills: int, *, sigterm: bool = False) -> dict[str, Any]:
    """``kills`` SIGKILLs at random moments under load, each followed by a restart; with ``sigterm``, a
    SIGTERM under load after them (the short run's way of testing both on one database)."""
    url = ctx.fresh_url("kills")
    ledger = Ledger(ctx.seed + 1)
    server = Server(url, ctx.workdir)
    server.start()
    sampler = SizeSampler(Path(url.removeprefix("sqlite:///"))) if ctx.database == "sqlite" else None
    rng = random.Random(ctx.seed)
    restarts: list[float] = []
    result: dict[str, Any] = {
        "scenario": f"{kills} x SIGKILL under load" + (", then SIGTERM" if sigterm else "")
    }
    load = Load(server.address, ledger, ctx.threads)
    with load:
        for _ in range(kills):
            time.sleep(rng.uniform(0.3, 1.5))
            server.signal(signal.SIGKILL)
            server.wait(10)
            restarts.append(server.start())
        if sigterm:
            time.sleep(1.0)
            started = time.monotonic()
            server.signal(signal.SIGTERM)
            result["sigterm_exit_code"] = server.wait(30)
            result["sigterm_stop_s"] = round(time.monotonic() - started, 2)
            server.start()
        time.sleep(1.0)
    load.close()
    result["restart_s_max"] = _round(max(restarts, default=0))
    if sampler is not None:
        result["wal"] = sampler.close()
    result = _finish(server, ledger, url, result)
    if sigterm and result["sigterm_exit_code"] != 0:
        result["clean"] = False
    return result


def scenario_sigterm(ctx: Context) -> dict[str, Any]:
    url = ctx.fresh_url("sigterm")
    ledger = Ledger(ctx.seed + 2)
    server = Server(url, ctx.workdir)
    server.start()
    load = Load(server.address, ledger, ctx.threads)
    with load:
        time.sleep(1.5)
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        code = server.wait(30)
        drained = time.monotonic() - started
        server.start()
        time.sleep(1.0)
    load.close()
    result = _finish(server, ledger, url, {"scenario": "SIGTERM under load", "exit_code": code})
    result["stop_s"] = round(drained, 2)
    result["clean"] = result["clean"] and code == 0
    return result


def _outage(
    ctx: Context, name: str, begin: Callable[[], Any], end: Callable[[Any], None], seconds: float
) -> dict[str, Any]:
    url = ctx.fresh_url(name.replace("-", "_"))
    ledger = Ledger(ctx.seed + 3)
    server = Server(url, ctx.workdir)
    server.start()
    watch = HealthWatch(server.address)
    load = Load(server.address, ledger, ctx.threads)
    with load:
        time.sleep(2.0)
        t0 = time.monotonic()
        token = begin()
        time.sleep(seconds)
        t1 = time.monotonic()
        end(token)
        with contextlib.suppress(RuntimeError):
            server.wait_serving(60)
        time.sleep(2.0)
    load.close()
    watch.close()
    during = Counter(s for at, s in load.log if t0 + 1 <= at < t1)
    back = t1 + (watch.first("SERVING", t1) or 0.0)
    result = {
        "scenario": f"PostgreSQL {name} {seconds:g} s under load",
        "calls_after_recovery": dict(Counter(s for at, s in load.log if at >= back + 0.5)),
        "not_serving_after_s": _round(watch.first("NOT_SERVING", t0)),
        "serving_again_after_s": _round(watch.first("SERVING", t1)),
        "health_during": dict(watch.between(t0, t1)),
        "calls_during": dict(during),
        "server_restarted": server.starts > 1,
    }
    return _finish(server, ledger, url, result)


def scenario_pg_stop(ctx: Context, seconds: float) -> dict[str, Any]:
    assert ctx.pg is not None
    pg = ctx.pg
    return _outage(ctx, "stopped", pg.stop, lambda _: pg.start(), seconds)


def scenario_pg_freeze(ctx: Context, seconds: float) -> dict[str, Any]:
    assert ctx.pg is not None
    pg = ctx.pg
    return _outage(ctx, "frozen", pg.freeze, pg.thaw, seconds)


def scenario_disk_full(ctx: Context, seconds: float, megabytes: int = 64) -> dict[str, Any]:
    ledger = Ledger(ctx.seed + 4)
    with small_disk(ctx.workdir / "small", megabytes) as (mount, kind):
        db_path = mount / "full.db"
        url = f"sqlite:///{db_path}"
        server = Server(url, ctx.workdir)
        server.start()
        watch = HealthWatch(server.address)
        sampler = SizeSampler(db_path)
        load = Load(server.address, ledger, ctx.threads)
        with load:
            time.sleep(2.0)
            filler = mount / "filler"
            filled = fill(filler)
            t0 = time.monotonic()
            time.sleep(seconds)
            filler.unlink()
            t1 = time.monotonic()
            time.sleep(5.0)
        load.close()
        watch.close()
        during = Counter(s for at, s in load.log if t0 + 1 <= at < t1)
        failed = next((at for at, s in sorted(load.log) if at >= t0 and s != "OK"), None)
        result: dict[str, Any] = {
            "scenario": f"SQLite on a full {kind} for {seconds:g} s under load",
            "filler_mb": round(filled / 2**20, 1),
            "first_failed_write_after_s": _round(None if failed is None else failed - t0),
            "not_serving_after_first_failure_s": _round(
                None if failed is None else watch.first("NOT_SERVING", failed)
            ),
            "not_serving_after_s": _round(watch.first("NOT_SERVING", t0)),
            "serving_again_after_s": _round(watch.first("SERVING", t1)),
            "health_during": dict(watch.between(t0 + 1, t1)),
            "calls_during": dict(during),
            "wal": sampler.close(),
        }
        return _finish(server, ledger, url, result)


@contextlib.contextmanager
def _pinned(cpus: set[int] | None) -> Iterator[None]:
    """Every thread of this process (gRPC's own included) on ``cpus`` while inside; as before after."""
    if cpus is None:
        yield
        return
    threads = [int(tid) for tid in os.listdir("/proc/self/task")]
    before = os.sched_getaffinity(0)
    for tid in threads:
        with contextlib.suppress(OSError):  # a thread that has ended meanwhile
            os.sched_setaffinity(tid, cpus)
    try:
        yield
    finally:
        for tid in (int(t) for t in os.listdir("/proc/self/task")):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, before)


def split_cpus() -> tuple[set[int], set[int]] | None:
    """The host's CPUs split in two — the server's (the last one, or the upper half) and the callers'
    (the rest) — to play a load generator on another host on one machine; None with a single CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    half = max(1, len(cpus) // 2)
    return set(cpus[half:]), set(cpus[:half])


def scenario_overload(
    ctx: Context,
    seconds: float,
    *,
    limit: int | None = None,
    processes: int = 1,
    pin: bool = False,
    deadline: float = 0.5,
    throttle_k: float | None = None,
    edge: bool = False,
) -> dict[str, Any]:
    """Open loop at twice the measured capacity. Health is probed on its own port (``--health-port``),
    so the service port refuses calls beyond ``--max-concurrent`` inside gRPC, before any Python.

    With ``edge``, the callers go through ``nextbest.server.edge`` (nginx, refusing beyond ``limit``
    decision calls at once, default 2 per core, in C) and the server behind it admits twice that; nginx
    runs on the server's CPUs, as a sidecar would, and its CPU is counted with the server's.

    With ``pin``, the server runs on its own CPUs and the callers (this harness) on the others, as a load
    generator on another host would: otherwise the callers' share of the same cores grows with the rate
    and the server gets less CPU at 2 x capacity than while its capacity was measured."""
    url = ctx.fresh_url("overload")
    ledger = Ledger(ctx.seed + 5)
    health_port = free_port()
    extra = ["--health-port", str(health_port)]
    if edge:
        limit = limit or 2 * len(os.sched_getaffinity(0))
        extra += ["--max-concurrent", str(2 * limit)]  # the edge is the limit; the server a backstop
    elif limit is not None:
        extra += ["--max-concurrent", str(limit)]
    if processes > 1:
        extra += ["--processes", str(processes)]
    split = split_cpus() if pin else None
    server = Server(url, ctx.workdir, extra=extra, cpus=split[0] if split else None)
    server.start()
    sampler = SizeSampler(Path(url.removeprefix("sqlite:///"))) if ctx.database == "sqlite" else None
    assert server.proc is not None
    front: Edge | None = None
    address = server.address
    if edge:
        assert limit is not None
        front = Edge(EdgeConfig(f"{HOST}:{free_port()}", server.address, limit)).start()
        address = front.config.listen
        if split:
            for pid in front.pids:
                os.sched_setaffinity(pid, split[0])

    def server_cpu() -> float:
        assert server.proc is not None
        return _cpu_seconds(server.proc.pid) + (_cpu_seconds(front.pids[0]) if front else 0.0)

    try:
        with _pinned(split[1] if split else None):
            # Through the edge, as many callers as it admits (more would be refused and back off, and
            # understate it); the server alone too, with as many and with 16 callers: the highest of the
            # three is the capacity, so the edge's own cost and its limit count against it.
            direct = (
                max(capacity(server.address, ledger, threads=limit), capacity(server.address, ledger))
                if front
                else None
            )
            cpu = server_cpu(), time.process_time()
            measured = capacity(address, ledger, threads=limit if front else 16)
            at_capacity = server_cpu() - cpu[0], time.process_time() - cpu[1]
            via_edge, measured = measured, max(measured, direct or 0.0)
            watch = HealthWatch(f"{HOST}:{health_port}")
            cpu = server_cpu(), time.process_time()
            throttle = AdaptiveThrottle(k=throttle_k) if throttle_k is not None else None
            run = open_loop(address, ledger, 2 * measured, seconds, deadline=deadline, throttle=throttle)
            overloaded = server_cpu() - cpu[0], time.process_time() - cpu[1]
            watch.close()
    finally:
        if front is not None:
            front.stop()
    late = committed_unanswered(url, ledger)
    probes = [d for _, s, d in watch.timeline]
    result: dict[str, Any] = {
        "scenario": f"open loop at 2 x capacity for {seconds:g} s",
        "max_concurrent": limit,
        "edge": edge,
        "processes": processes,
        "cpus": None if split is None else {"server": sorted(split[0]), "callers": sorted(split[1])},
        "capacity_per_s": round(measured),
        # With the edge: the capacity through it and of the server alone (the highest is capacity_per_s).
        "capacity_via_edge_per_s": round(via_edge) if front else None,
        "capacity_direct_per_s": round(direct) if direct is not None else None,
        "goodput_per_s": round(run["ok_per_s"]),
        "goodput_share": round(run["ok_per_s"] / measured, 3) if measured else None,
        "deadline_s": deadline,
        "callers_throttle_k": throttle_k,
        # Calls that ended in an error (their first attempts, before any retry) yet were committed.
        "committed_unanswered": late,
        "codes": run["codes"],
        "health_probes": len(probes),
        "health_slowest_s": _round(max(probes, default=0)),
        "health_not_answered": sum(1 for _, s, _ in watch.timeline if s.startswith("RPC_")),
        "health_over_100ms": sum(1 for d in probes if d > 0.1),
        # Cores used (CPU seconds per second) by the server and by this harness (the callers), while
        # capacity was measured (6 s) and during the overload: what the host gave each.
        "cores_at_capacity": {
            "server": round(at_capacity[0] / 6.0, 2),
            "callers": round(at_capacity[1] / 6.0, 2),
        },
        "cores_overloaded": {
            "server": round(overloaded[0] / seconds, 2),
            "callers": round(overloaded[1] / seconds, 2),
        },
    }
    if sampler is not None:
        result["wal"] = sampler.close()
    return _finish(server, ledger, url, result)


def committed_unanswered(url: str, ledger: Ledger) -> dict[str, int]:
    """Requests stored although every attempt so far got an error, by the errors they got: a decision
    committed after its caller was told DEADLINE_EXCEEDED (or anything else) is an exposure for an answer
    nobody received. Read once every call has ended and before any retry resolves them."""
    unanswered = {rid: e for rid, e in ledger.entries.items() if e.acked is None}
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            stored = {r for (r,) in conn.execute(text("SELECT request_id FROM decisions"))}
    finally:
        engine.dispose()
    late: Counter[str] = Counter()
    for rid, entry in unanswered.items():
        if rid in stored:
            late.update(entry.statuses)
    return dict(late)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its children (``--processes``)."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


# --- the broken server ------------------------------------------------------------------------------------


def serve_broken(argv: list[str]) -> int:
    """``nextbest serve`` with the group commit patched to acknowledge a decision at once and commit it
    up to half a second later: exactly the bug the harness exists to catch. Never use it for anything else."""
    from nextbest import cli
    from nextbest.store import writer

    def write_many(self: Any, members: Any) -> None:
        # Every decision write (single, and NextActionBatch's rounds) goes through write_many: queue the
        # members, say they are inserted and done at once, and commit them later on another thread.
        with self._cond:  # the group commit's queue lock
            self._queue.extend(members)
            if getattr(self, "_late", None) is None:
                self._late = threading.Thread(target=flush, args=(self,), daemon=True)
                self._late.start()
        for member in members:
            member.guard = None  # no version check: the broken server must not decide again either
            member.inserted, member.done = True, True

    def flush(self: Any) -> None:
        while True:
            time.sleep(0.5)
            with self.commit_lock:
                with self._cond:
                    batch, self._queue[:] = list(self._queue), []
                if batch:
                    for member in batch:
                        member.done = False
                    self._commit(batch)

    writer.GroupCommitWriter.write_many = write_many  # type: ignore[method-assign]
    return cli.main(["serve", *argv])


# --- main -------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    root = Path(tempfile.mkdtemp(prefix="nextbest-reliability-"))
    os.chmod(root, 0o755)
    try:
        for database in args.databases:
            pg = None
            if database == "postgresql":
                pg = PgCluster(root / "pg")
                pg.start()
            workdir = root / database
            workdir.mkdir()
            ctx = Context(database, pg.url if pg else "", workdir, pg, args.threads, args.seed)
            plan: list[tuple[str, Callable[[], dict[str, Any]]]] = [
                ("selftest", partial(scenario_selftest, ctx)),
                ("kills", partial(scenario_kills, ctx, args.kills, sigterm=args.short)),
            ]
            if not args.short:
                plan.append(("sigterm", partial(scenario_sigterm, ctx)))
                if database == "sqlite":
                    plan.append(("disk-full", partial(scenario_disk_full, ctx, args.outage)))
                else:
                    plan.append(("pg-stop", partial(scenario_pg_stop, ctx, args.outage)))
                    plan.append(("pg-freeze", partial(scenario_pg_freeze, ctx, args.outage)))
                overload = partial(
                    scenario_overload,
                    ctx,
                    args.overload,
                    limit=args.overload_limit,
                    processes=args.overload_processes,
                    pin=args.overload_pin,
                    deadline=args.overload_deadline,
                    throttle_k=args.overload_throttle,
                    edge=args.overload_edge,
                )
                plan.append(("overload", overload))
            try:
                for name, scenario in plan:
                    if args.only and name not in args.only:
                        continue
                    started = time.monotonic()
                    result = {
                        "database": database,
                        **scenario(),
                        "seconds": round(time.monotonic() - started, 1),
                    }
                    results.append(result)
                    print(json.dumps(result), flush=True)
            finally:
                if pg is not None:
                    pg.destroy()
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve-broken"]:
        return serve_broken(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--short", action="store_true", help="SQLite self-test, 3 SIGKILLs and a SIGTERM (make test)"
    )
    parser.add_argument("--databases", nargs="+", choices=["sqlite", "postgresql"], default=None)
    parser.add_argument(
        "--only", nargs="+", help="scenarios: selftest kills sigterm disk-full pg-stop pg-freeze overload"
    )
    parser.add_argument("--kills", type=int, default=None, help="SIGKILLs per database (20; 2 with --short)")
    parser.add_argument(
        "--outage", type=float, default=30.0, help="seconds PostgreSQL is stopped / frozen, the disk full"
    )
    parser.add_argument("--overload", type=float, default=30.0, help="seconds of the 2 x capacity open loop")
    parser.add_argument(
        "--overload-limit", type=int, help="--max-concurrent of the overload scenario's server (default: its)"
    )
    parser.add_argument(
        "--overload-processes", type=int, default=1, help="--processes of the overload scenario's server"
    )
    parser.add_argument(
        "--overload-pin",
        action="store_true",
        help="overload: the server on its own CPUs, the callers on the others (as on two hosts)",
    )
    parser.add_argument(
        "--overload-edge",
        action="store_true",
        help="overload: the callers go through `nextbest edge` (nginx refusing beyond --overload-limit, "
        "default 2 per core)",
    )
    parser.add_argument(
        "--overload-deadline", type=float, default=0.5, help="overload: each call's deadline in seconds"
    )
    parser.add_argument(
        "--overload-throttle",
        type=float,
        metavar="K",
        help="overload: the callers throttle themselves (nextbest.throttle.AdaptiveThrottle with this k)",
    )
    parser.add_argument("--threads", type=int, default=8, help="closed-loop callers")
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--keep", action="store_true", help="keep the working folder (logs, databases)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    args.databases = args.databases or (["sqlite"] if args.short else ["sqlite", "postgresql"])
    args.kills = args.kills if args.kills is not None else (2 if args.short else 20)
    results = run(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    bad = [r for r in results if not r["clean"]]
    for r in bad:
        print(f"FAILED: {r['database']}: {r['scenario']}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
