"""CPU per decision of the real server on PostgreSQL, split between the server, PostgreSQL's backends and
the load generator, against the empty server and the memory server, on a shared host.

On a host shared with other work, max decisions/s measures the load as much as the server; CPU per
decision much less so. For each server (``--servers``: empty, memory, real), a fresh server process (the
real one on a fresh PostgreSQL database next to ``--postgres``, dropped after), a warm-up, then
``--rounds`` closed loops of ``--concurrency`` callers (``loadgen.py``) of ``--seconds`` each; per round,
CPU per decision read from ``/proc`` (the server's processes, and the database's backends as listed by
``pg_stat_activity``; the load generator's from its own report). ``--waits`` also samples what the
database's backends wait on (``pg_stat_activity``, every 20 ms) and reads the database's commits,
rollbacks, deadlocks and conflicts after the round. One JSON line per round on stdout. The sum over the
three parts, against 2 CPUs, bounds what a CPU-bound run could reach; its ratio to the empty server's sum
estimates bench_next_action's ratio on an idle host.

    .venv/bin/python benchmarks/bench_pg_cpu.py \\
        --postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres \\
        --servers empty,memory,real --processes 1 --rounds 2 [--waits]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from nextbest.server.process import free_port, stop_process, wait_serving

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
HZ = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU of each process still there."""
    out = {}
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        out[pid] = (int(fields[11]) + int(fields[12])) / HZ
    return out


def with_children(root: int) -> list[int]:
    """``root`` and its direct children (``nextbest serve --processes N``'s workers)."""
    pids = [root]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if parent == root:
                pids.append(int(entry))
    return pids


def spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU spent between two readings (a process first seen in ``after`` counts from zero)."""
    return sum(after.values()) - sum(before.get(pid, 0.0) for pid in after)


class Postgres:
    def __init__(self, url: str) -> None:
        base = make_url(url)
        self.admin = base.set(drivername="postgresql", database="postgres").render_as_string(
            hide_password=False
        )
        self.name = f"nb_cpu_{secrets.token_hex(4)}"
        self.url = base.set(database=self.name).render_as_string(hide_password=False)

    def __enter__(self) -> Postgres:
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        return self

    def __exit__(self, *_: object) -> None:
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name)))

    def backends(self) -> list[int]:
        with psycopg.connect(self.admin, autocommit=True) as conn:
            query = "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
            return [row[0] for row in conn.execute(query, (self.name,))]

    def waits(self, seconds: float) -> dict[str, int]:
        counts: dict[str, int] = {}
        end = time.monotonic() + seconds
        query = (
            "SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()"
        )
        with psycopg.connect(self.admin, autocommit=True) as conn:
            while time.monotonic() < end:
                for state, kind, event in conn.execute(query, (self.name,)):
                    key = f"{state}/{kind}/{event}"
                    counts[key] = counts.get(key, 0) + 1
                time.sleep(0.02)
        return dict(sorted(counts.items(), key=lambda kv: -kv[1]))

    def totals(self) -> dict[str, int]:
        with psycopg.connect(self.admin, autocommit=True) as conn:
            row = conn.execute(
                "SELECT xact_commit, xact_rollback, deadlocks, conflicts FROM pg_stat_database "
                "WHERE datname = %s",
                (self.name,),
            ).fetchone()
        assert row is not None
        return dict(zip(("commits", "rollbacks", "deadlocks", "conflicts"), row, strict=True))


def server_argv(kind: str, port: int, *, catalog: Path, url: str, processes: int, workdir: Path) -> list[str]:
    if kind == "empty":
        return [sys.executable, str(BENCH_DIR / "empty_server.py"), "--port", str(port), "--workers", "16"]
    if kind == "memory":
        return [
            sys.executable, str(BENCH_DIR / "memory_server.py"), "--host", "127.0.0.1", "--port", str(port),
            "--catalog", str(catalog), "--database-url", f"sqlite:///{workdir / f'memory-{port}.db'}",
        ]  # fmt: skip
    return [
        sys.executable, "-m", "nextbest", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--catalog", str(catalog), "--database-url", url, "--processes", str(processes),
    ]  # fmt: skip


def loadgen(port: int, seconds: float, concurrency: int, users: int) -> subprocess.Popen[str]:
    argv = [
        sys.executable, str(BENCH_DIR / "loadgen.py"), "--port", str(port), "--duration", str(seconds),
        "--users", str(users), "closed", "--concurrency", str(concurrency),
    ]  # fmt: skip
    return subprocess.Popen(
        argv,
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )


def bench(kind: str, args: argparse.Namespace, workdir: Path, db: Postgres | None) -> None:
    port = free_port()
    log = workdir / f"{kind}-{port}.log"
    url = db.url.replace("postgresql://", "postgresql+psycopg://", 1) if db else ""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            server_argv(kind, port, catalog=args.catalog, url=url, processes=args.processes, workdir=workdir),
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_serving(f"127.0.0.1:{port}", proc, log, 60)
        loadgen(port, args.warmup, 8, args.users).communicate()
        for _ in range(args.rounds):
            servers = with_children(proc.pid)
            backends = db.backends() if db else []
            server0, pg0 = cpu_seconds(servers), cpu_seconds(backends)
            load = loadgen(port, args.seconds, args.concurrency, args.users)
            waits: dict[str, int] = {}
            if db is not None and args.waits:
                waits = db.waits(args.seconds - 1)
            else:
                time.sleep(args.seconds / 2)
            backends = db.backends() if db else []  # those opened meanwhile too
            report: dict[str, Any] = json.loads(load.communicate()[0])
            server1, pg1 = cpu_seconds(servers), cpu_seconds(backends)
            decisions = report["decisions_per_s"] * args.seconds
            line: dict[str, Any] = {
                "server": kind,
                "processes": args.processes if kind == "real" else 1,
                "decisions_per_s": round(report["decisions_per_s"]),
                "errors": report["errors"],
                "server_cpu_us": round(spent(server0, server1) / decisions * 1e6),
                "postgres_cpu_us": round(spent(pg0, pg1) / decisions * 1e6) if db else 0,
                "loadgen_cpu_us": round(report["client_cpu_us_per_call"]),
                "load_average": round(os.getloadavg()[0], 1),
            }
            line["sum_us"] = line["server_cpu_us"] + line["postgres_cpu_us"] + line["loadgen_cpu_us"]
            if db is not None and args.waits:
                line["waits"] = waits
                line["database"] = db.totals()
            print(json.dumps(line), flush=True)
    finally:
        stop_process(proc, timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--postgres", required=True, help="a PostgreSQL URL (a fresh database beside it)")
    parser.add_argument("--servers", default="empty,memory,real", help="any of empty, memory, real")
    parser.add_argument("--processes", type=int, default=1, help="processes of the real server")
    parser.add_argument("--catalog", type=Path, default=BENCH_DIR / "catalog_20.yaml")
    parser.add_argument("--concurrency", type=int, default=16, help="callers (16: the admission limit)")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--waits", action="store_true", help="sample the backends' waits (real server)")
    args = parser.parse_args(argv)
    kinds = args.servers.split(",")
    unknown = set(kinds) - {"empty", "memory", "real"}
    if unknown:
        parser.error(f"unknown servers: {', '.join(sorted(unknown))}")
    if args.seconds <= 2:
        parser.error("--seconds must be over 2")
    with tempfile.TemporaryDirectory(prefix="nextbest-pg-cpu-") as tmp:
        for kind in kinds:
            if kind == "real":
                with Postgres(args.postgres) as db:
                    bench(kind, args, Path(tmp), db)
            else:
                bench(kind, args, Path(tmp), None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
