#!/usr/bin/env bash
# Old and new code alternately under the same load generator: the comparison this shared, noisy host
# allows (a whole `make bench` run an hour apart can differ by more than a change does).
#
#   benchmarks/ab_server.sh BASE_REV [PROCESSES=2] [LOAD="closed 32"] [ROUNDS=3]
#
# BASE_REV is checked out in a temporary git worktree; each round starts `nextbest serve` from it and from
# this checkout (same venv, fresh SQLite database each run, --processes PROCESSES, catalog_20.yaml), warms
# up 2 s, then runs loadgen.py with 8 connections: LOAD "closed C" (6 s) or "open RATE" (10 s). One line
# per run: decisions/s, p50 and p99 ms, server and client CPU per call. Loopback only; every phase is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${1:?usage: benchmarks/ab_server.sh BASE_REV [PROCESSES] [LOAD] [ROUNDS]}
PROCS=${2:-2}
read -r MODE ARG <<< "${3:-closed 32}"
ROUNDS=${4:-3}
PORT=${AB_PORT:-50190}
PY=.venv/bin/python
case $MODE in
  closed) PHASE=(--duration 6 closed --concurrency "$ARG") ;;
  open) PHASE=(--duration 10 open --rate "$ARG") ;;
  *) echo "LOAD must be 'closed C' or 'open RATE', not '$MODE'" >&2; exit 2 ;;
esac
TREE=$(mktemp -d)
git worktree add --detach -q "$TREE/base" "$BASE"
trap 'git worktree remove --force "$TREE/base"; rm -rf "$TREE"' EXIT

run() {  # run LABEL SRC
  local dir log server
  dir=$(mktemp -d -p "$TREE")
  log=$dir/server.log
  PYTHONPATH=$2/src $PY -m nextbest serve --port "$PORT" --processes "$PROCS" \
    --catalog benchmarks/catalog_20.yaml --database-url "sqlite:///$dir/ab.db" > "$log" 2>&1 &
  server=$!
  for _ in $(seq 100); do
    [ "$(grep -c 'nextbest serving' "$log" || true)" -ge "$PROCS" ] && break
    sleep 0.3
  done
  $PY benchmarks/loadgen.py --port "$PORT" --channels 8 --duration 2 closed --concurrency 8 > /dev/null
  $PY benchmarks/loadgen.py --port "$PORT" --server-pid "$server" --channels 8 "${PHASE[@]}" | $PY -c "
import json, sys
d = json.load(sys.stdin)
print(f\"$1 processes=$PROCS $MODE $ARG: {d['decisions_per_s']:.0f}/s p50 {d['latency_ms']['p50']:.1f} ms \"
      f\"p99 {d['latency_ms']['p99']:.1f} ms errors {sum(d['errors'].values())} \"
      f\"server {d['server_cpu_us_per_call']:.0f} client {d['client_cpu_us_per_call']:.0f} us/call\")"
  kill -INT "$server"
  wait "$server" || true
}

for _ in $(seq "$ROUNDS"); do
  run "base $BASE" "$TREE/base"
  run "head $(git rev-parse --short HEAD)" "$PWD"
done
