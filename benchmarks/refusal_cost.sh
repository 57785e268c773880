#!/usr/bin/env bash
# What a refused call costs the server: `nextbest serve --max-concurrent 1` under 32 closed-loop callers,
# so that nearly every call is refused, once refused by nextbest's shed interceptor (no --health-port) and
# once by gRPC's maximum_concurrent_rpcs (--health-port), alternated ROUNDS times. One line per run:
# calls/s, decisions/s, the refusals, the server's CPU per call. Loopback only; every phase is bounded.
#
#   benchmarks/refusal_cost.sh [ROUNDS=2]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-2}
PY=.venv/bin/python
run() {  # run MODE
  local dir port extra server
  dir=$(mktemp -d)
  port=$($PY -c "from nextbest.server.process import free_port; print(free_port())")
  extra=()
  [ "$1" = grpc ] && extra=(--health-port "$($PY -c "from nextbest.server.process import free_port; print(free_port())")")
  $PY -m nextbest serve --port "$port" --database-url "sqlite:///$dir/r.db" --catalog benchmarks/catalog_20.yaml \
    --max-concurrent 1 "${extra[@]}" --log-level INFO > "$dir/log" 2>&1 &
  server=$!
  for _ in $(seq 200); do grep -q 'nextbest serving' "$dir/log" && break; sleep 0.3; done
  sleep 1  # the first health check
  $PY benchmarks/loadgen.py --port "$port" --server-pid "$server" --duration 5 --warmup 1 closed --concurrency 32 \
    | $PY -c "
import json, sys
d = json.load(sys.stdin)
print(f\"refused by $1: {d['calls_per_s']:.0f} calls/s, {d['decisions_per_s']:.0f} decisions/s, \"
      f\"{d['errors']}, server {d['server_cpu_us_per_call']:.0f} us/call\")"
  kill -INT "$server"
  wait "$server" || true
  rm -rf "$dir"
}
for _ in $(seq "$ROUNDS"); do
  run shed
  run grpc
done
