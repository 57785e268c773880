"""Overload at twice capacity (issue 19's acceptance), the server alone and behind the edge, alternated.

One server (`nextbest serve`, `benchmarks/catalog_20.yaml`, `--health-port`, `--max-concurrent 2 x
LIMIT`) and `nextbest edge` in front of it (at most LIMIT decision calls at once). Each round:

1. the capacity: `benchmarks/loadgen.py` closed loops straight to the server of LIMIT callers and of
   2 LIMIT (as many as it admits: more would only add refusals that closed-loop callers retry at once),
   and of LIMIT callers through the edge; the **highest** is the capacity C (so the edge's own cost
   counts against it);
2. an open loop at 2 C for ``--duration`` seconds, each call with a 0.5 s deadline, straight to the server
   and through the edge (the order alternates by round), health probed every 100 ms on the health port,
   and the calls answered DEADLINE_EXCEEDED looked up in the database (committed after their deadline).

With ``--pin`` the server and nginx run on the last CPU and the load generator on the others — what a load
generator on another host gives: on one host of two vCPUs an open loop at 2 C otherwise takes the cores
the server needs (each call, refused or not, costs the load generator ~165 µs of Python on its event loop).

    .venv/bin/python benchmarks/bench_overload.py --rounds 3 --pin
    .venv/bin/python benchmarks/bench_overload.py --rounds 3 --pin --own-postgres --limit 8
    .venv/bin/python benchmarks/bench_overload.py --pin --own-postgres --sweep 2,4,8,16,32
    .venv/bin/python benchmarks/bench_overload.py --rounds 3 --pin --own-postgres --limit 24 \
        --server-limit 24 --edge-cpus callers

The last measures closed-loop capacity straight to the server at several concurrencies (no overload):
where it levels off is the edge's ``--max-concurrent`` for that server and database. Every open-loop run
also reports its worst second of goodput (a stall shows there, not in the mean) and, pinned, the server
CPU's idle share (0 %: the server's CPU was the limit). ``--edge-cpus callers`` runs nginx beside the load
generator instead of beside the server: the edge as it is deployed, a proxy on a host of its own, whose
refusals do not take the server's CPU.

Prints one JSON line per run and a Markdown table. Loopback only; stops only what it started. A
PostgreSQL ``--database-url`` names a server database: a fresh database is created in it and dropped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_edge import server  # noqa: E402
from nextbest.server.edge import Edge, EdgeConfig  # noqa: E402
from nextbest.server.process import HOST, free_port  # noqa: E402

LOADGEN = str(ROOT / "benchmarks" / "loadgen.py")


@contextmanager
def own_postgres(workdir: Path, cpus: set[int] | None) -> Iterator[tuple[str, int]]:
    """A PostgreSQL cluster of this run's own (initdb into ``workdir``, a free port; the fault harness's
    ``PgCluster``), on the server's CPUs when pinned: the database on the server's host, the load
    generator alone on its CPU. Stopped and removed after."""
    from reliability import PgCluster

    workdir.chmod(0o755)  # initdb runs as the postgres user when this runs as root
    cluster = PgCluster(workdir / "pg")
    cluster.start()
    try:
        if cpus:
            for pid in cluster.pids():
                os.sched_setaffinity(pid, cpus)  # backends forked later inherit the postmaster's
        assert cluster.proc is not None
        yield cluster.url, cluster.proc.pid
    finally:
        cluster.destroy()


@contextmanager
def fresh_database(url: str | None, workdir: Path) -> Iterator[str]:
    """SQLite in ``workdir``, or a new database on the PostgreSQL server ``url`` names (dropped after)."""
    if not url:
        yield f"sqlite:///{workdir / 'overload.db'}"
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"nextbest_overload_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def cpu_times(cpus: set[int] | None) -> tuple[int, int]:
    """(idle, total) clock ticks of ``cpus`` so far, from /proc/stat (0, 0 when not pinned)."""
    if not cpus:
        return 0, 0
    idle = total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            ticks = list(map(int, fields))
            idle += ticks[3] + ticks[4]  # idle and iowait
            total += sum(ticks[:8])
    return idle, total


class Components:
    """CPU seconds used so far by the server, nginx and the run's own PostgreSQL (each with its child
    processes): where the server CPU's time went, per answered decision, closed loop against open."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = pids

    def sample(self) -> dict[str, float]:
        from loadgen import process_cpu_seconds

        return {name: sum(process_cpu_seconds(p) or 0.0 for p in pids) for name, pids in self.pids.items()}

    def per_decision(self, before: dict[str, float], decisions: int) -> dict[str, float]:
        after = self.sample()
        return {f"{name}_us": round((after[name] - before[name]) / max(decisions, 1) * 1e6) for name in after}


def loadgen(cpus: set[int] | None, *args: str) -> dict[str, Any]:
    prefix = ["taskset", "-c", ",".join(map(str, sorted(cpus)))] if cpus else []
    done = subprocess.run(
        [*prefix, sys.executable, LOADGEN, *args], capture_output=True, text=True, check=True, timeout=600
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def capacity_sweep(cpus: set[int] | None, target: list[str], sweep: list[int]) -> int:
    """Closed-loop decisions/s straight to the server at each concurrency, twice (after a warm-up)."""
    closed = ["--duration", "6", "closed", "--concurrency"]
    loadgen(cpus, *target, *closed, str(sweep[0]))
    for pass_ in (1, 2):
        for concurrency in sweep:
            got = loadgen(cpus, *target, *closed, str(concurrency))
            print(
                f"pass {pass_}: {concurrency} callers: {got['decisions_per_s']:,.0f} decisions/s,"
                f" p99 {got['latency_ms']['p99']:.1f} ms",
                flush=True,
            )
    return 0


def _overload_figures(result: dict[str, Any], capacity: float) -> dict[str, Any]:
    """What one open loop at 2 ``capacity`` showed."""
    seconds = result["ok_per_second"][:-1] or result["ok_per_second"]  # the last is partial
    return {
        "capacity": round(capacity),
        "rate": round(2 * capacity),
        "goodput": round(result["decisions_per_s"]),
        "share": round(result["decisions_per_s"] / capacity, 3),
        "errors": result["errors"],
        "late_sends": result["late_sends"],
        "health_probes": result["health"]["probes"],
        "health_over_100ms": result["health"]["over_100ms"],
        "health_slowest_ms": result["health"]["latency_ms"]["max"],
        "committed_after_deadline": result["committed_after_deadline"],
        "server_us_per_call": result["server_cpu_us_per_call"],
        "client_us_per_call": result["client_cpu_us_per_call"],
        # a stall shows here, not in the mean
        "worst_second": min(seconds),
        "seconds_under_half_capacity": sum(n < capacity / 2 for n in seconds),
    }


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of each open loop")
    parser.add_argument("--limit", type=int, default=4, help="the edge's --max-concurrent")
    parser.add_argument(
        "--server-limit",
        type=int,
        help="the server's own --max-concurrent (default: 2 x --limit); the direct path's only limit",
    )
    parser.add_argument("--deadline", type=float, default=0.5, help="each call's deadline in the open loop")
    parser.add_argument(
        "--pin", action="store_true", help="server and nginx on the last CPU, callers on the rest"
    )
    parser.add_argument(
        "--edge-cpus",
        choices=("server", "callers"),
        default="server",
        help="pinned, where nginx runs: on the server's CPU (default), or on the callers' — an edge on a "
        "host or core of its own, as a load balancer in front of the servers is deployed",
    )
    parser.add_argument("--database-url", help="a PostgreSQL server (default: SQLite in a temporary folder)")
    parser.add_argument(
        "--own-postgres",
        action="store_true",
        help="PostgreSQL: a cluster of the run's own, pinned with the server (instead of --database-url)",
    )
    parser.add_argument("--json", type=Path, help="also write the runs here")
    parser.add_argument(
        "--sweep",
        help="instead: closed-loop decisions/s straight to the server at these concurrencies (e.g. "
        "2,4,8,16), two passes; where it levels off is a good --max-concurrent for the edge",
    )
    return parser.parse_args()


def _print_table(runs: list[dict[str, Any]]) -> None:
    header = (
        "| round | path | capacity (direct / via edge) | rate | goodput | share | refused | deadline exceeded"
        " | health > 100 ms (slowest) | committed after deadline | worst second | server CPU idle |"
    )
    print("\n" + header)
    print("|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    for r in runs:
        print(
            f"| {r['round']} | {r['path']} | {r['capacity']:,} ({r['capacity_direct']:,} / "
            f"{r['capacity_via_edge']:,}) | {r['rate']:,} | {r['goodput']:,} | {r['share']:.1%} | "
            f"{r['errors'].get('RESOURCE_EXHAUSTED', 0):,} | {r['errors'].get('DEADLINE_EXCEEDED', 0):,} | "
            f"{r['health_over_100ms']} of {r['health_probes']} ({r['health_slowest_ms']:.0f} ms) | "
            f"{r['committed_after_deadline']} | {r['worst_second']:,} | {r['server_cpu_idle']:.0%} |"
        )
    for path in ("direct", "edge"):
        shares = [r["share"] for r in runs if r["path"] == path]
        print(f"{path}: goodput share median {statistics.median(shares):.1%}, min {min(shares):.1%}")


def main() -> int:
    args = _arguments()
    sweep = sorted({int(c) for c in args.sweep.split(",")}) if args.sweep else []

    cpus = sorted(os.sched_getaffinity(0))
    server_cpus, caller_cpus = ({cpus[-1]}, set(cpus[:-1])) if args.pin and len(cpus) > 1 else (None, None)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-overload-") as tmp:
        workdir = Path(tmp)
        with contextlib.ExitStack() as stack:
            base, postmaster = (
                stack.enter_context(own_postgres(workdir, server_cpus)) if args.own_postgres else (None, None)
            )
            url = stack.enter_context(fresh_database(base or args.database_url, workdir))
            server_limit = args.server_limit or 2 * args.limit
            address, pid, hp = stack.enter_context(
                server(workdir, "server", max([server_limit, *sweep]), database_url=url, cpus=server_cpus)
            )
            common = ["--server-pid", str(pid), "--channels", "4"]
            closed = ["--duration", "6", "closed", "--concurrency"]
            if sweep:
                return capacity_sweep(caller_cpus, [*common, "--port", address.rpartition(":")[2]], sweep)
            edge = stack.enter_context(
                Edge(EdgeConfig(f"{HOST}:{free_port()}", address, args.limit), workdir / "edge")
            )
            edge_cpus = caller_cpus if args.edge_cpus == "callers" else server_cpus
            if edge_cpus:
                for nginx in edge.pids:
                    os.sched_setaffinity(nginx, edge_cpus)
            parts = {"server": [pid], "nginx": edge.pids}
            if postmaster is not None:
                parts["postgres"] = [postmaster]
            components = Components(parts)
            ports = {"direct": address.rpartition(":")[2], "edge": edge.config.listen.rpartition(":")[2]}
            # Unmeasured: the first seconds of a fresh server and database (caches, compiled trees, the
            # tables' first pages) would otherwise fall in round 1's capacity or overload.
            loadgen(caller_cpus, "--port", ports["edge"], *common, *closed, str(args.limit))
            for round_ in range(args.rounds):
                # Straight to the server with as many callers as the edge lets in, and with as many as the
                # server itself admits (its --max-concurrent): the higher of the two is its capacity.
                direct = max(
                    (
                        loadgen(caller_cpus, "--port", ports["direct"], *common, *closed, str(callers))
                        for callers in sorted({args.limit, server_limit})
                    ),
                    key=lambda got: float(got["decisions_per_s"]),
                )
                before = components.sample()
                via_edge = loadgen(caller_cpus, "--port", ports["edge"], *common, *closed, str(args.limit))
                closed_cpu = components.per_decision(before, via_edge["decisions"])
                capacity = max(direct["decisions_per_s"], via_edge["decisions_per_s"])
                order = ("direct", "edge") if round_ % 2 == 0 else ("edge", "direct")
                for path in order:
                    idle0, total0 = cpu_times(server_cpus)
                    before = components.sample()
                    result = loadgen(
                        caller_cpus, "--port", ports[path], *common, "--duration", str(args.duration),
                        "--warmup", "0", "--timeout", str(args.deadline), "--probe-health",
                        "--health-port", str(hp), "--database-url", url,
                        "open", "--rate", str(round(2 * capacity)),
                    )  # fmt: skip
                    idle1, total1 = cpu_times(server_cpus)
                    open_cpu = components.per_decision(before, result["decisions"])
                    run = {
                        "round": round_ + 1,
                        "path": path,
                        "database": "postgresql" if args.database_url or args.own_postgres else "sqlite",
                        "pinned": bool(server_cpus),
                        "edge_cpus": args.edge_cpus if server_cpus else None,
                        "limit": args.limit,
                        "server_limit": server_limit,
                        "capacity_direct": round(direct["decisions_per_s"]),
                        "capacity_via_edge": round(via_edge["decisions_per_s"]),
                        **_overload_figures(result, capacity),
                        # CPU µs per answered decision by process: the edge's closed loop (its capacity)
                        # against this open loop (refusals included)
                        "cpu_per_decision_edge_closed": closed_cpu,
                        "cpu_per_decision_open": open_cpu,
                        "server_cpu_idle": round((idle1 - idle0) / (total1 - total0), 3)
                        if total1 > total0
                        else None,
                    }
                    runs.append(run)
                    print(json.dumps(run), flush=True)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2) + "\n")
    _print_table(runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
