"""NextAction load benchmark: the real server against an empty gRPC server on the same machine.

For each server under test (the empty sync server, the empty grpc.aio server, the real server with its
store in memory, the real server on SQLite and, with --postgres, on a fresh PostgreSQL database; and, on
request, the same handlers on grpc.aio: memory-aio, real-aio, real-pipelined[-reads], see aio_server.py)
it starts the server as a subprocess, waits for the grpc.health.v1 SERVING status, and runs
benchmarks/loadgen.py in another process: a warm-up, a closed loop at a few concurrencies (maximum
decisions/s), NextActionBatch calls of 100 requests (decisions/s against the same server's single-call
maximum: issue 25 wants >= 3 x) and an open loop at a fixed arrival rate (latency at a realistic load). It
prints a Markdown report and writes the raw JSON to benchmarks/results/latest.json.

    python benchmarks/bench_next_action.py            # ~3 minutes
    python benchmarks/bench_next_action.py --quick    # ~30 s smoke run
    python benchmarks/bench_next_action.py --postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from google import protobuf

from nextbest.server.process import free_port, stop_process, wait_serving

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
LOADGEN = BENCH_DIR / "loadgen.py"
EMPTY_SERVER = BENCH_DIR / "empty_server.py"
MEMORY_SERVER = BENCH_DIR / "memory_server.py"
AIO_SERVER = BENCH_DIR / "aio_server.py"
HOST = "127.0.0.1"

# Targets (issue 25): the open loop at half of a server's own maximum within this p99 and without errors;
# each server's maximum at least this fraction of the empty server's (by name or prefix: the memory server,
# the real one on SQLite, on PostgreSQL; any other real server gets the PostgreSQL fraction).
OPEN_LOOP_P99_TARGET_MS = 10.0
MIN_FRACTION_OF_EMPTY = {"memory": 0.6, "real-sqlite": 0.4, "real-postgres": 1.0 / 3.0}
DEFAULT_MIN_FRACTION = 1.0 / 3.0

REFERENCE_SERVER = "empty"  # the floor the ratio is computed against
MEMORY_SERVER_NAME = "memory"  # the real pipeline without storage: the most any store could leave
BATCH_TARGET = 3.0  # NextActionBatch decisions/s over the same server's single-call maximum (issue 25)


def min_fraction(name: str) -> float:
    """The target for a server by its database (a prototype such as real-sqlite-pipelined has its
    database's target)."""
    for prefix, fraction in MIN_FRACTION_OF_EMPTY.items():
        if name == prefix or name.startswith(prefix + "-"):
            return fraction
    return DEFAULT_MIN_FRACTION


@dataclass(frozen=True)
class Plan:
    """Durations and loads of one run."""

    warmup_s: float
    warmup_concurrency: int
    concurrencies: tuple[int, ...]
    closed_s: float
    phase_warmup_s: float
    open_rate: float
    open_s: float
    batch: int = 100  # requests per NextActionBatch call (0: no batch phase)
    batch_concurrency: int = 16  # as many callers as the server has admission slots


DEFAULT_PLAN = Plan(
    warmup_s=3.0, warmup_concurrency=8, concurrencies=(1, 8, 32), closed_s=6.0, phase_warmup_s=1.0,
    open_rate=0.0, open_s=10.0,
)  # fmt: skip
QUICK_PLAN = Plan(
    warmup_s=1.0, warmup_concurrency=8, concurrencies=(1, 32), closed_s=2.0, phase_warmup_s=0.5,
    open_rate=0.0, open_s=3.0,
)  # fmt: skip


@dataclass
class ServerSpec:
    """How to start one server under test."""

    name: str
    description: str
    argv: Callable[[int], list[str]]
    env: Callable[[int], dict[str, str]] = lambda port: {}
    display: Callable[[int], list[str]] | None = None  # argv with secrets redacted, for the report
    processes: int = 1  # server processes sharing the port
    batches: bool = True  # serves NextActionBatch (the empty servers do not)


@dataclass
class ServerResult:
    name: str
    description: str
    processes: int = 1
    command: list[str] = field(default_factory=list)
    status: str = "not run"
    error: str | None = None
    startup_s: float | None = None
    peak_rss_mb: float | None = None
    phases: list[dict[str, Any]] = field(default_factory=list)

    def closed_phases(self) -> list[dict[str, Any]]:
        return [p for p in self.phases if p["phase"].startswith("closed")]

    def batch_phase(self) -> dict[str, Any] | None:
        return next((p for p in self.phases if p["phase"].startswith("batch")), None)

    def open_phase(self) -> dict[str, Any] | None:
        return next((p for p in self.phases if p["phase"].startswith("open")), None)

    def max_decisions_per_s(self) -> float | None:
        return max((p["decisions_per_s"] for p in self.closed_phases()), default=None)


class BenchError(RuntimeError):
    pass


# --- servers ----------------------------------------------------------------------------------------------


def empty_server_spec(workers: int, aio: bool, processes: int = 1) -> ServerSpec:
    def argv(port: int) -> list[str]:
        cmd = [sys.executable, str(EMPTY_SERVER), "--port", str(port), "--workers", str(workers)]
        if processes > 1:
            cmd += ["--processes", str(processes)]
        return [*cmd, "--aio"] if aio else cmd

    kind = "grpc.aio" if aio else f"sync grpc.server, {workers} worker threads"
    if processes > 1:
        kind += f", {processes} processes"
    return ServerSpec(
        name=("empty-aio" if aio else "empty") + _processes_suffix(processes),
        description=f"empty DecisionService ({kind}), fixed response",
        argv=argv,
        processes=processes,
        batches=False,
    )


def _processes_suffix(processes: int) -> str:
    return f"-{processes}p" if processes > 1 else ""


def memory_server_spec(catalog: Path, database_url: str) -> ServerSpec:
    """The real server with its store in memory (benchmarks/memory_server.py): the pipeline's ceiling."""

    def argv(port: int) -> list[str]:
        return [
            sys.executable, str(MEMORY_SERVER), "--host", HOST, "--port", str(port),
            "--catalog", str(catalog), "--database-url", database_url,
        ]  # fmt: skip

    return ServerSpec(
        name=MEMORY_SERVER_NAME,
        description=f"nextbest's server, store in memory: no database reads or writes ({catalog.name})",
        argv=argv,
    )


def aio_server_spec(
    name: str, catalog: Path, database_url: str, store: str, run: str, *, reads: str = "inline"
) -> ServerSpec:
    """nextbest's handlers on grpc.aio (benchmarks/aio_server.py): the thread pool's alternative."""

    def argv(port: int) -> list[str]:
        return [
            sys.executable, str(AIO_SERVER), "--host", HOST, "--port", str(port), "--catalog", str(catalog),
            "--database-url", database_url, "--store", store, "--run", run, "--reads", reads,
        ]  # fmt: skip

    what = "store in memory" if store == "frozen" else database_url.split(":", 1)[0]
    return ServerSpec(
        name=name,
        description=f"nextbest's handlers on grpc.aio, {run} ({what}, {catalog.name})",
        argv=argv,
    )


def real_server_spec(
    name: str, catalog: Path, database_url: str, shown_url: str, processes: int = 1
) -> ServerSpec:
    def argv_with(url: str) -> Callable[[int], list[str]]:
        def argv(port: int) -> list[str]:
            return [
                sys.executable, "-m", "nextbest", "serve", "--host", HOST, "--port", str(port),
                "--catalog", str(catalog), "--database-url", url, "--processes", str(processes),
            ]  # fmt: skip

        return argv

    def env(port: int) -> dict[str, str]:
        return {
            "NEXTBEST_HOST": HOST,
            "NEXTBEST_PORT": str(port),
            "NEXTBEST_CATALOG": str(catalog),
            "NEXTBEST_DATABASE_URL": database_url,
            "NEXTBEST_PROCESSES": str(processes),
        }

    backend = database_url.split(":", 1)[0]
    shown = f", {processes} processes" if processes > 1 else ""
    return ServerSpec(
        name=name + _processes_suffix(processes),
        description=f"nextbest serve ({backend}, {catalog.name}{shown})",
        argv=argv_with(database_url),
        env=env,
        display=argv_with(shown_url),
        processes=processes,
    )


def _pin(cpus: set[int] | None) -> Callable[[], None] | None:
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


@dataclass
class RunningServer:
    pid: int
    port: int


@contextlib.contextmanager
def running_server(
    spec: ServerSpec, workdir: Path, startup_timeout: float, cpus: set[int] | None, result: ServerResult
) -> Iterator[RunningServer]:
    port = free_port()
    log_path = workdir / f"{spec.name}.log"
    result.command = (spec.display or spec.argv)(port)
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            spec.argv(port),
            cwd=REPO,
            env={**os.environ, **spec.env(port)},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_pin(cpus),  # noqa: PLW1509 - the driver is single-threaded
        )
    try:
        wait_serving(f"{HOST}:{port}", proc, log_path, startup_timeout)
        result.startup_s = round(time.monotonic() - started, 2)
        yield RunningServer(pid=proc.pid, port=port)
        result.peak_rss_mb = peak_rss_mb(proc.pid)
    finally:
        stop_process(proc, timeout=10)


def peak_rss_mb(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


# --- load -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadOptions:
    users: int
    seed: int
    trigger: str
    channels: int
    cpus: set[int] | None


def run_loadgen(
    server: RunningServer, options: LoadOptions, duration: float, warmup: float, mode_args: list[str]
) -> dict[str, Any]:
    cmd = [
        sys.executable, str(LOADGEN), "--port", str(server.port), "--server-pid", str(server.pid),
        "--duration", str(duration), "--warmup", str(warmup), "--users", str(options.users),
        "--seed", str(options.seed), "--trigger", options.trigger, "--channels", str(options.channels),
        *mode_args,
    ]  # fmt: skip
    try:
        done = subprocess.run(
            cmd,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=duration + warmup + 90,
            check=False,
            preexec_fn=_pin(options.cpus),
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"load generator timed out: {' '.join(mode_args)}") from exc
    if done.returncode != 0:
        raise BenchError(f"load generator failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def run_phases(
    server: RunningServer, plan: Plan, options: LoadOptions, result: ServerResult, batches: bool = True
) -> None:
    phases: list[tuple[str, float, float, list[str]]] = [
        ("warmup", plan.warmup_s, 0.0, ["closed", "--concurrency", str(plan.warmup_concurrency)]),
        *(
            (f"closed C={c}", plan.closed_s, plan.phase_warmup_s, ["closed", "--concurrency", str(c)])
            for c in plan.concurrencies
        ),
    ]
    if batches and plan.batch:
        c, b = plan.batch_concurrency, plan.batch
        # A call of b decisions takes b times one: its deadline is 30 s, not a single call's 2 s.
        args = ["--timeout", "30", "closed", "--concurrency", str(c), "--batch", str(b)]
        # A call takes about a second: three times a closed phase (at least 6 s) holds enough of them.
        phases.append((f"batch C={c} x{b}", max(3 * plan.closed_s, 6.0), plan.phase_warmup_s, args))
    for label, duration, warmup, mode_args in phases:
        data = run_loadgen(server, options, duration, warmup, mode_args)
        data["phase"] = label
        _progress(f"[{result.name}] {label}: {_phase_line(data)}")
        if label != "warmup":
            result.phases.append(data)
    # Issue 25: the open loop runs at half of this server's own measured maximum (--open-rate fixes it).
    measured = result.max_decisions_per_s()
    rate = plan.open_rate or (max(round(measured / 2), 1) if measured else 500.0)
    label = f"open {rate:g}/s" + ("" if plan.open_rate else " (half of its max)")
    data = run_loadgen(server, options, plan.open_s, plan.phase_warmup_s, ["open", "--rate", str(rate)])
    data["phase"] = label
    _progress(f"[{result.name}] {label}: {_phase_line(data)}")
    result.phases.append(data)


def _phase_line(data: dict[str, Any]) -> str:
    lat = data["latency_ms"]
    errors = sum(data["errors"].values())
    return (
        f"{data['decisions_per_s']:.0f} decisions/s, p50 {lat['p50']} ms, p99 {lat['p99']} ms, "
        f"errors {errors}"
    )


def bench_server(
    spec: ServerSpec,
    plan: Plan,
    options: LoadOptions,
    *,
    workdir: Path,
    startup_timeout: float,
    server_cpus: set[int] | None,
) -> ServerResult:
    result = ServerResult(name=spec.name, description=spec.description, processes=spec.processes)
    _progress(f"[{spec.name}] starting: {spec.description}")
    try:
        with running_server(spec, workdir, startup_timeout, server_cpus, result) as server:
            run_phases(server, plan, options, result, spec.batches)
        result.status = "ok"
    except (RuntimeError, OSError, ValueError) as exc:  # BenchError, or a server that never served
        result.status, result.error = "failed", str(exc)
        _progress(f"[{spec.name}] FAILED: {exc}")
    return result


# --- PostgreSQL -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_postgres_database(url: str) -> Iterator[tuple[str, str]]:
    """Creates nb_bench_<random> next to ``url``'s database, yields (url, redacted url), drops it after."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    base = make_url(url)
    name = f"nb_bench_{secrets.token_hex(4)}"
    admin = base.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    _progress(f"[postgres] created database {name}")
    try:
        bench = base.set(database=name)
        yield bench.render_as_string(hide_password=False), bench.render_as_string(hide_password=True)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        _progress(f"[postgres] dropped database {name}")


# --- report -----------------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "protobuf": protobuf.__version__,
        "git_commit": _git_commit(),
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _git_commit() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
        )
        return done.stdout.strip() or None
    return None


def evaluate_targets(results: list[ServerResult]) -> dict[str, Any]:
    """Ratio to the empty server and the two targets, for every real server that ran."""
    by_name = {r.name: r for r in results}
    reference = by_name.get(REFERENCE_SERVER)
    floor = reference.max_decisions_per_s() if reference else None
    verdicts: dict[str, Any] = {}
    batches: dict[str, Any] = {}
    ceiling = by_name.get(MEMORY_SERVER_NAME)
    ceiling_max = ceiling.max_decisions_per_s() if ceiling and ceiling.status == "ok" else None
    for result in results:
        if result.status == "ok" and result.batch_phase() is not None:
            batch_dps = result.batch_phase()["decisions_per_s"]  # type: ignore[index]
            single = result.max_decisions_per_s()
            ratio = round(batch_dps / single, 2) if single else None
            batches[result.name] = {
                "batch_decisions_per_s": batch_dps,
                "single_max_decisions_per_s": single,
                "ratio": ratio,
                "target_holds": None if ratio is None else ratio >= BATCH_TARGET,
            }
        if result.name.startswith(("empty", MEMORY_SERVER_NAME)) or result.status != "ok":
            continue
        verdicts[result.name] = _verdict(result, floor)
        # The empty server run with as many processes, when it ran: the floor for that layout.
        peer = by_name.get(REFERENCE_SERVER + _processes_suffix(result.processes))
        peer_max = peer.max_decisions_per_s() if peer and peer.status == "ok" else None
        max_dps = verdicts[result.name]["max_decisions_per_s"]
        verdicts[result.name]["ratio_to_empty_same_processes"] = (
            round(max_dps / peer_max, 3) if peer_max and max_dps is not None else None
        )
        one = by_name.get(result.name.removesuffix(_processes_suffix(result.processes)))
        one_max = one.max_decisions_per_s() if one and one.status == "ok" and one is not result else None
        verdicts[result.name]["ratio_to_one_process"] = (
            round(max_dps / one_max, 3) if one_max and max_dps is not None else None
        )
    return {
        "reference_server": REFERENCE_SERVER,
        "reference_max_decisions_per_s": floor,
        "memory_max_decisions_per_s": ceiling_max,
        "memory_ratio_to_empty": round(ceiling_max / floor, 3) if ceiling_max and floor else None,
        "memory_target_holds": ceiling_max / floor >= MIN_FRACTION_OF_EMPTY[MEMORY_SERVER_NAME]
        if ceiling_max and floor
        else None,
        "servers": verdicts,
        "batch": batches,
    }


def _verdict(result: ServerResult, floor: float | None) -> dict[str, Any]:
    max_dps = result.max_decisions_per_s()
    ratio = round(max_dps / floor, 3) if max_dps is not None and floor else None
    open_phase = result.open_phase()
    p99 = open_phase["latency_ms"]["p99"] if open_phase else None
    open_errors = sum(open_phase["errors"].values()) if open_phase else None
    latency_holds = None if p99 is None else p99 <= OPEN_LOOP_P99_TARGET_MS and open_errors == 0
    return {
        "max_decisions_per_s": max_dps,
        "ratio_to_empty": ratio,
        "throughput_target_holds": None if ratio is None else ratio >= min_fraction(result.name),
        "open_loop_p99_ms": p99,
        "open_loop_errors": open_errors,
        "latency_target_holds": latency_holds,
    }


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _verdict_word(holds: bool | None) -> str:
    return {True: "**holds**", False: "**FAILS**", None: "n/a"}[holds]


def render_markdown(report: dict[str, Any], results: list[ServerResult]) -> str:
    machine, plan = report["machine"], report["plan"]
    out = [
        "# NextAction benchmark",
        "",
        f"{machine['date']} · {machine['cpu_model']} · {machine['usable_cpus']} usable CPUs "
        f"(load {machine['load_average_at_start']}) · Python {machine['python']} · grpcio {machine['grpcio']}"
        f" · commit {machine['git_commit'] or '?'}",
        "",
        f"Closed loop {plan['closed_s']:g} s per concurrency, open loop "
        + (f"{plan['open_rate']:g} calls/s" if plan["open_rate"] else "at half of each server's maximum")
        + f" for {plan['open_s']:g} s; latencies in ms from (scheduled) send to response; "
        "CPU in µs per call.",
        "",
        "| server | phase | calls/s | decisions/s | p50 | p99 | p99.9 | max | errors "
        "| server CPU | server CPU/decision | client CPU |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for result in results:
        if result.status != "ok":
            out.append(f"| {result.name} | **{result.status}** | | | | | | | | | | |")
            continue
        out.extend(_phase_row(result.name, phase) for phase in result.phases)
    out += ["", *_target_lines(report["targets"])]
    failures = [r for r in results if r.status != "ok"]
    if failures:
        out += ["", "Servers that could not be benchmarked:", ""]
        out += [f"- {r.name}: {(r.error or '').splitlines()[0] if r.error else r.status}" for r in failures]
    return "\n".join(out) + "\n"


def _phase_row(name: str, phase: dict[str, Any]) -> str:
    lat = phase["latency_ms"]
    errors = ", ".join(f"{code} {n}" for code, n in phase["errors"].items()) or "0"
    cells = [
        name, phase["phase"], _fmt(phase["calls_per_s"]), _fmt(phase["decisions_per_s"]),
        _fmt(lat["p50"], 2), _fmt(lat["p99"], 2), _fmt(lat["p99_9"], 2), _fmt(lat["max"], 2), errors,
        _fmt(phase["server_cpu_us_per_call"]), _fmt(phase.get("server_cpu_us_per_decision")),
        _fmt(phase["client_cpu_us_per_call"]),
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def _target_lines(targets: dict[str, Any]) -> list[str]:
    floor = targets["reference_max_decisions_per_s"]
    lines = [f"Empty server ({targets['reference_server']}) max: {_fmt(floor)} decisions/s."]
    if targets.get("memory_max_decisions_per_s"):
        lines.append(
            f"Store in memory ({MEMORY_SERVER_NAME}, the pipeline without database work) max: "
            f"{_fmt(targets['memory_max_decisions_per_s'])} decisions/s = "
            f"{_fmt(targets['memory_ratio_to_empty'], 2)} x empty (target >= "
            f"{MIN_FRACTION_OF_EMPTY[MEMORY_SERVER_NAME]:.2g}: "
            f"{_verdict_word(targets.get('memory_target_holds'))}); the most a faster store could reach."
        )
    lines.append("")
    if targets.get("batch"):
        lines += [
            "| server | NextActionBatch decisions/s | single-call max | ratio | >= 3 x |",
            "| --- | ---: | ---: | ---: | --- |",
        ]
        for name, b in targets["batch"].items():
            cells = [
                name, _fmt(b["batch_decisions_per_s"]), _fmt(b["single_max_decisions_per_s"]),
                _fmt(b["ratio"], 2), _verdict_word(b["target_holds"]),
            ]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if not targets["servers"]:
        return [*lines, "No real server was benchmarked: targets not evaluated."]
    lines += [
        "| server | max decisions/s | ratio to empty | target | ratio to empty, same processes "
        f"| ratio to its 1 process | open-loop p99 (ms) | p99 <= {OPEN_LOOP_P99_TARGET_MS:g} ms, 0 errors |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for name, v in targets["servers"].items():
        fraction = min_fraction(name)
        cells = [
            name, _fmt(v["max_decisions_per_s"]), _fmt(v["ratio_to_empty"], 2),
            f">= {fraction:.2g}: {_verdict_word(v['throughput_target_holds'])}",
            _fmt(v.get("ratio_to_empty_same_processes"), 2), _fmt(v.get("ratio_to_one_process"), 2),
            _fmt(v["open_loop_p99_ms"], 2), _verdict_word(v["latency_target_holds"]),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(
        "Issue 25 wants the PostgreSQL server with --processes 2 at >= 1.6 x its one-process maximum."
    )
    return lines


def write_json(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- main -------------------------------------------------------------------------------------------------

SERVER_CHOICES = (
    "empty", "empty-aio", "memory", "memory-aio", "real", "real-aio",
    "real-pipelined", "real-pipelined-reads",
)  # fmt: skip
DEFAULT_SERVERS = ("empty", "empty-aio", "memory", "real")
# The event-loop prototypes (aio_server.py --run pipelined): the customers' reads inline, or batched.
PIPELINED = {"pipelined": "inline", "pipelined-reads": "batched"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="~30 s smoke run with short phases")
    parser.add_argument(
        "--servers", default=",".join(DEFAULT_SERVERS), help=f"comma-separated subset of {SERVER_CHOICES}"
    )
    parser.add_argument("--postgres", metavar="URL", help="also run the real server on PostgreSQL")
    parser.add_argument("--catalog", type=Path, default=BENCH_DIR / "catalog_20.yaml")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results" / "latest.json")
    parser.add_argument("--empty-workers", type=int, default=16, help="thread pool of the sync empty server")
    parser.add_argument(
        "--open-rate", type=float, help="open-loop arrival rate (default: half of each server's maximum)"
    )
    parser.add_argument(
        "--batch",
        type=int,
        help="requests per NextActionBatch call in the batch phase (default 100; 0: none)",
    )
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=20_261_123)
    parser.add_argument("--trigger", default="bench_trigger")
    parser.add_argument("--channels", type=int, default=1, help="gRPC channels per load generator")
    parser.add_argument(
        "--processes",
        default="1",
        help="comma-separated server process counts to run each server with (e.g. 1,2: one per core)",
    )
    parser.add_argument("--startup-timeout", type=float, default=60.0)
    parser.add_argument(
        "--pin", action="store_true", help="server on the first half of the CPUs, load on the rest"
    )
    parser.add_argument("--strict", action="store_true", help="exit 2 when a target fails")
    args = parser.parse_args(argv)
    unknown = set(args.servers.split(",")) - set(SERVER_CHOICES)
    if unknown:
        parser.error(f"unknown servers: {', '.join(sorted(unknown))}")
    try:
        args.process_counts = sorted({int(p) for p in args.processes.split(",")})
    except ValueError:
        parser.error(f"--processes takes whole numbers separated by commas, not {args.processes!r}")
    if args.process_counts[0] < 1:
        parser.error("--processes: each count must be at least 1")
    return args


def _cpu_split(pin: bool) -> tuple[set[int] | None, set[int] | None]:
    cpus = sorted(os.sched_getaffinity(0)) if pin and hasattr(os, "sched_getaffinity") else []
    if len(cpus) < 2:
        return None, None
    half = len(cpus) // 2
    return set(cpus[:half]), set(cpus[half:])


def _plan(args: argparse.Namespace) -> Plan:
    plan = QUICK_PLAN if args.quick else DEFAULT_PLAN
    if args.open_rate:
        plan = Plan(**{**asdict(plan), "open_rate": args.open_rate})
    if args.batch is not None:
        plan = Plan(**{**asdict(plan), "batch": args.batch})
    return plan


def run_all(
    args: argparse.Namespace, plan: Plan, workdir: Path, stack: contextlib.ExitStack
) -> list[ServerResult]:
    server_cpus, load_cpus = _cpu_split(args.pin)
    options = LoadOptions(args.users, args.seed, args.trigger, args.channels, load_cpus)
    selected = args.servers.split(",")
    catalog = args.catalog.resolve()
    specs: list[ServerSpec] = []
    for processes in args.process_counts:
        if "empty" in selected:
            specs.append(empty_server_spec(args.empty_workers, aio=False, processes=processes))
        if "empty-aio" in selected and processes == 1:
            specs.append(empty_server_spec(args.empty_workers, aio=True))
        if "memory" in selected and processes == 1:
            specs.append(memory_server_spec(catalog, f"sqlite:///{workdir / 'bench-memory.db'}"))
        if "memory-aio" in selected and processes == 1:
            url = f"sqlite:///{workdir / 'bench-memory-aio.db'}"
            specs.append(aio_server_spec("memory-aio", catalog, url, "frozen", "inline"))
        if "real" in selected:
            sqlite_url = f"sqlite:///{workdir / f'bench-{processes}.db'}"
            specs.append(real_server_spec("real-sqlite", catalog, sqlite_url, sqlite_url, processes))
        if "real-aio" in selected and processes == 1:
            url = f"sqlite:///{workdir / 'bench-aio.db'}"
            specs.append(aio_server_spec("real-sqlite-aio", catalog, url, "database", "executor"))
        for variant, reads in PIPELINED.items():
            if f"real-{variant}" in selected and processes == 1:
                url = f"sqlite:///{workdir / f'bench-{variant}.db'}"
                name = f"real-sqlite-{variant}"
                specs.append(aio_server_spec(name, catalog, url, "database", "pipelined", reads=reads))
    common = {"workdir": workdir, "startup_timeout": args.startup_timeout, "server_cpus": server_cpus}
    results = [bench_server(spec, plan, options, **common) for spec in specs]
    if args.postgres:
        for processes in args.process_counts:
            url, shown = stack.enter_context(fresh_postgres_database(args.postgres))
            spec = real_server_spec("real-postgres", catalog, url, shown, processes)
            results.append(bench_server(spec, plan, options, **common))
        for variant, reads in PIPELINED.items():
            if f"real-{variant}" in selected:
                url, _shown = stack.enter_context(fresh_postgres_database(args.postgres))
                name = f"real-postgres-{variant}"
                spec = aio_server_spec(name, catalog, url, "database", "pipelined", reads=reads)
                results.append(bench_server(spec, plan, options, **common))
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = _plan(args)
    machine = machine_info()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="nextbest-bench-") as tmp, contextlib.ExitStack() as stack:
        results = run_all(args, plan, Path(tmp), stack)
    report = {
        "machine": machine,
        "plan": asdict(plan),
        "load": {"users": args.users, "seed": args.seed, "trigger": args.trigger, "channels": args.channels},
        "pinned": args.pin,
        "wall_time_s": round(time.monotonic() - started, 1),
        "servers": [asdict(r) for r in results],
        "targets": evaluate_targets(results),
    }
    write_json(args.output, report)
    print(render_markdown(report, results))
    _progress(f"raw results: {args.output} ({report['wall_time_s']} s)")
    if any(r.status != "ok" for r in results):
        return 1
    failed = any(
        v["throughput_target_holds"] is False or v["latency_target_holds"] is False
        for v in report["targets"]["servers"].values()
    )
    return 2 if args.strict and failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
