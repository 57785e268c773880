"""What the edge (`nextbest edge`: nginx in front of the server, issue 19) costs and saves.

One server (`nextbest serve`, `benchmarks/catalog_20.yaml`, a fresh SQLite database, `--health-port`) and,
in front of it, an edge admitting ``--limit`` decision calls at once. Alternated ``--rounds`` times:

- *accepted calls*: a closed loop of ``--limit`` callers (`benchmarks/loadgen.py`) straight to the server,
  then through the edge: decisions/s, p50/p99 latency, the server's CPU per decision and nginx's.
- *refusals*: 32 closed-loop callers against a limit of 1, so that nearly every call is refused: by the
  server itself (a second server with `--max-concurrent 1 --health-port`: gRPC's
  `maximum_concurrent_rpcs`, the cheapest refusal inside Python) and by the edge (`max_conns=1`): CPU
  per call of the server and of nginx.

Prints a JSON report and a Markdown table. Loopback only; it stops only the processes it started.

    .venv/bin/python benchmarks/bench_edge.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from loadgen import process_cpu_seconds  # noqa: E402
from nextbest.server.edge import Edge, EdgeConfig  # noqa: E402
from nextbest.server.process import HOST, free_port, stop_process, wait_serving  # noqa: E402

CATALOG = ROOT / "benchmarks" / "catalog_20.yaml"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its children (nginx's master and its workers)."""
    return process_cpu_seconds(pid) or 0.0


@contextmanager
def server(
    workdir: Path,
    name: str,
    max_concurrent: int,
    *,
    database_url: str | None = None,
    cpus: set[int] | None = None,
) -> Iterator[tuple[str, int, int]]:
    """``nextbest serve`` (default: on a fresh SQLite database; ``cpus``: pinned to them); yields
    (address, pid, health port) once SERVING."""
    port, health = free_port(), free_port()
    log = workdir / f"{name}.log"
    argv = [
        sys.executable, "-m", "nextbest", "serve", "--host", HOST, "--port", str(port),
        "--catalog", str(CATALOG), "--database-url", database_url or f"sqlite:///{workdir / name}.db",
        "--health-port", str(health), "--max-concurrent", str(max_concurrent),
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,  # noqa: PLW1509
        )
    try:
        wait_serving(f"{HOST}:{health}", proc, log, 120.0)
        time.sleep(1.0)  # the first database health check
        yield f"{HOST}:{port}", proc.pid, health
    finally:
        stop_process(proc)


def load(
    port: str, server_pid: int, concurrency: int, duration: float, nginx_pid: int | None
) -> dict[str, Any]:
    """One closed-loop run of loadgen.py; adds nginx's CPU per call when it is in the path."""
    before = cpu_seconds(nginx_pid) if nginx_pid else 0.0
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "loadgen.py"),
            "--port",
            port,
            "--server-pid",
            str(server_pid),
            "--channels",
            "4",
            "--duration",
            str(duration),
            "--warmup",
            "1",
            "closed",
            "--concurrency",
            str(concurrency),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 120,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    # loadgen counts the server's CPU over its measured window only; nginx's here is over the whole run
    # (warm-up included), divided by the calls of the measured window: a slight overstatement.
    nginx = cpu_seconds(nginx_pid) - before if nginx_pid else 0.0
    calls = max(result["calls"], 1)
    return {
        "calls_per_s": result["calls_per_s"],
        "decisions_per_s": result["decisions_per_s"],
        "errors": result["errors"],
        "p50_ms": result["latency_ms"]["p50"],
        "p99_ms": result["latency_ms"]["p99"],
        "server_us_per_call": result["server_cpu_us_per_call"],
        "nginx_us_per_call": round(nginx / (calls * (1 + 1 / duration)) * 1e6, 1) if nginx_pid else 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=6.0, help="seconds of each measured run")
    parser.add_argument("--limit", type=int, default=4, help="the edge's --max-concurrent (callers: as many)")
    parser.add_argument("--json", type=Path, help="also write the JSON report here")
    args = parser.parse_args()

    runs: dict[str, list[dict[str, Any]]] = {
        k: [] for k in ("direct", "edge", "refused-grpc", "refused-edge")
    }
    with tempfile.TemporaryDirectory(prefix="bench-edge-") as tmp:
        workdir = Path(tmp)
        with (
            server(workdir, "main", 2 * args.limit) as (address, pid, _),
            server(workdir, "limited", 1) as (limited, limited_pid, _),
            Edge(EdgeConfig(f"{HOST}:{free_port()}", address, args.limit), workdir / "edge") as edge,
            Edge(EdgeConfig(f"{HOST}:{free_port()}", address, 1), workdir / "edge-1") as edge1,
        ):
            assert edge.proc is not None and edge1.proc is not None
            port = address.rpartition(":")[2]
            for round_ in range(args.rounds):
                runs["direct"].append(load(port, pid, args.limit, args.duration, None))
                runs["edge"].append(
                    load(edge.config.listen.rpartition(":")[2], pid, args.limit, args.duration, edge.proc.pid)
                )
                runs["refused-grpc"].append(
                    load(limited.rpartition(":")[2], limited_pid, 32, args.duration, None)
                )
                runs["refused-edge"].append(
                    load(edge1.config.listen.rpartition(":")[2], pid, 32, args.duration, edge1.proc.pid)
                )
                print(
                    f"round {round_ + 1}: {json.dumps({k: v[-1] for k, v in runs.items()})}", file=sys.stderr
                )

    def med(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[kind])

    summary = {
        kind: {key: med(kind, key) for key in ("decisions_per_s", "calls_per_s", "p50_ms", "p99_ms",
                                                "server_us_per_call", "nginx_us_per_call")}
        for kind in runs
    }  # fmt: skip
    report = {
        "limit": args.limit,
        "rounds": args.rounds,
        "duration_s": args.duration,
        "runs": runs,
        "median": summary,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    print("\n| path | decisions/s | calls/s | p50 ms | p99 ms | server µs/call | nginx µs/call |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind, row in summary.items():
        print(
            f"| {kind} | {row['decisions_per_s']:,.0f} | {row['calls_per_s']:,.0f} | {row['p50_ms']:.2f} | "
            f"{row['p99_ms']:.2f} | {row['server_us_per_call']:.0f} | {row['nginx_us_per_call']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
