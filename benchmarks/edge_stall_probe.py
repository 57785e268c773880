"""Who stalls behind the edge: the server or the load generator? (issue 19, benchmarks/RESULTS.md)

`nextbest serve` on SQLite and `nextbest edge` (limit LIMIT, default 16) on CPU 1, `loadgen.py` on CPU 0 at
twice the edge's closed-loop capacity for 30 s with its own health probe, and beside it a health prober in
a process of its own on CPU 1, which the load generator cannot slow. A stall both probers see is the
server's; one only the load generator's prober sees is the load generator's.

    .venv/bin/python benchmarks/edge_stall_probe.py [LIMIT]

Needs two CPUs and nginx; loopback only; stops only what it started.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_edge import server
from bench_overload import loadgen
from nextbest.server.edge import Edge, EdgeConfig
from nextbest.server.process import HOST, free_port

PROBER = r"""
import sys, time, json, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
ch = grpc.insecure_channel(sys.argv[1]); stub = health_pb2_grpc.HealthStub(ch)
end = time.monotonic() + float(sys.argv[2]); lat = []
while time.monotonic() < end:
    t = time.perf_counter()
    try: stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
    except Exception: pass
    lat.append((time.monotonic(), (time.perf_counter() - t) * 1000)); time.sleep(0.1)
slow = [(round(a, 1), round(b)) for a, b in lat if b > 100]
print(json.dumps({"probes": len(lat), "max_ms": round(max(b for _, b in lat)), "slow": slow}))
"""
limit = int(sys.argv[1]) if len(sys.argv) > 1 else 16
with tempfile.TemporaryDirectory() as tmp:
    w = Path(tmp)
    with (
        server(w, "s", 2 * limit, cpus={1}) as (addr, pid, hp),
        Edge(EdgeConfig(f"{HOST}:{free_port()}", addr, limit), w / "edge") as edge,
    ):
        for p in edge.pids:
            os.sched_setaffinity(p, {1})
        port = edge.config.listen.rpartition(":")[2]
        closed = ["--port", port, "--channels", "4", "--duration", "6", "closed", "--concurrency", str(limit)]
        loadgen({0}, *closed)  # warm-up
        cap = loadgen({0}, *closed)["decisions_per_s"]
        prober = subprocess.Popen(
            ["taskset", "-c", "1", sys.executable, "-c", PROBER, f"{HOST}:{hp}", "32"],
            stdout=subprocess.PIPE,
            text=True,
        )
        t0 = time.monotonic()
        r = loadgen(
            {0},
            "--port",
            port,
            "--server-pid",
            str(pid),
            "--channels",
            "4",
            "--duration",
            "30",
            "--warmup",
            "0",
            "--timeout",
            "0.5",
            "--probe-health",
            "--health-port",
            str(hp),
            "open",
            "--rate",
            str(round(2 * cap)),
        )
        out = json.loads(prober.communicate()[0])
        print(
            "capacity via edge",
            round(cap),
            "goodput",
            round(r["decisions_per_s"]),
            "errors",
            r["errors"],
            "late_sends",
            r["late_sends"],
        )
        print(
            "loadgen's prober: max",
            r["health"]["latency_ms"]["max"],
            "over 100 ms",
            r["health"]["over_100ms"],
        )
        print(
            "own prober (on the server's CPU):",
            out["max_ms"],
            "ms max;",
            "slow at",
            [(round(a - t0, 1), b) for a, b in out["slow"]],
        )
        print("ok per second:", r["ok_per_second"])
        log = (w / "s.log").read_text() if (w / "s.log").exists() else ""
        print(
            "the server's last WAL restarts:",
            [line for line in log.splitlines() if "WAL" in line][-10:],
        )
