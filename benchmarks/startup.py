"""How long ``nextbest serve`` takes from exec to its first SERVING health answer (issue 19: within 2 s on
the bundled catalog), and the CPU the process spent getting there (less sensitive than the wall clock to
a busy host). A fresh SQLite database per run, so every start migrates, as a first start does.

    python benchmarks/startup.py --runs 3

Prints one JSON object. Loopback only; each server is stopped (SIGTERM, by pid) after its answer.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_start(work: Path, timeout: float) -> dict[str, float]:
    port = _free_port()
    argv = [sys.executable, "-m", "nextbest", "serve", "--host", HOST, "--port", str(port)]
    argv += ["--database-url", f"sqlite:///{work / f'{port}.db'}", "--log-level", "WARNING"]
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # gRPC waits ~1 s (its initial reconnect backoff) before dialling again after a refused connection:
        # the server not listening yet would otherwise add up to a second to the measured start.
        backoff = [("grpc.initial_reconnect_backoff_ms", 20), ("grpc.min_reconnect_backoff_ms", 20)]
        backoff.append(("grpc.max_reconnect_backoff_ms", 50))
        with grpc.insecure_channel(f"{HOST}:{port}", options=backoff) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.perf_counter() - started < timeout:
                if proc.poll() is not None:
                    raise SystemExit(f"the server exited with {proc.returncode}")
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=0.2)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return {"serving_s": time.perf_counter() - started, "cpu_s": _cpu_seconds(proc.pid)}
                except grpc.RpcError:
                    pass
                time.sleep(0.02)
        raise SystemExit(f"not SERVING within {timeout} s")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, choices=range(1, 21), metavar="1..20")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nextbest-startup-") as work:
        runs = [one_start(Path(work), args.timeout) for _ in range(args.runs)]
    result = {
        "runs": args.runs,
        "serving_s": [round(r["serving_s"], 2) for r in runs],
        "serving_s_median": round(statistics.median(r["serving_s"] for r in runs), 2),
        "cpu_s": [round(r["cpu_s"], 2) for r in runs],
        "cpu_s_median": round(statistics.median(r["cpu_s"] for r in runs), 2),
        "load_average": os.getloadavg()[0],
        "cores": os.cpu_count(),
    }
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
