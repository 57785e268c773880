#!/usr/bin/env bash
# The decision benchmark with access control off and on, alternately, on this checkout: `nextbest serve`
# plaintext without tokens ("plain") against the same server with TLS and bearer tokens ("auth+tls":
# --tls-cert/--tls-key, --tokens-file; the load generator trusts the test CA and sends a `decide` token).
# Issue 20's bound: auth+tls loses at most 15 % of decisions/s.
#
#   benchmarks/ab_auth.sh [ROUNDS=3] [CONCURRENCY=16] [SECONDS=6] [PROCESSES=1]
#
# Each run: a fresh SQLite database, catalog_20.yaml, a 2 s warm-up, then loadgen.py closed loop at
# CONCURRENCY with 8 connections for SECONDS, each run on a free port. One line per run (decisions/s, p50/p99 ms, server and
# client CPU per call), then the mean of each and their ratio. The test CA and certificates are made with
# openssl in a temporary directory (the README's commands). Loopback only; every phase is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
CONC=${2:-16}
SECS=${3:-6}
PROCS=${4:-1}
PY=.venv/bin/python
TREE=$(mktemp -d)
trap 'rm -rf "$TREE"' EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=bench-ca" \
  -keyout "$TREE/ca.key" -out "$TREE/ca.crt" 2> /dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
  -keyout "$TREE/server.key" -out "$TREE/server.csr" 2> /dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$TREE/server.ext"
openssl x509 -req -in "$TREE/server.csr" -CA "$TREE/ca.crt" -CAkey "$TREE/ca.key" -CAcreateserial \
  -days 2 -extfile "$TREE/server.ext" -out "$TREE/server.crt" 2> /dev/null
openssl rand -hex 32 > "$TREE/decide.token"
printf 'bench decide token:%s\n' "$(cat "$TREE/decide.token")" > "$TREE/tokens"
chmod 600 "$TREE/tokens" "$TREE/decide.token" "$TREE"/*.key

run() {  # run LABEL [server flags...] -- [loadgen flags...]
  local label=$1 dir log server
  shift
  local serve=() client=()
  while [ "$1" != "--" ]; do serve+=("$1"); shift; done
  shift
  client=("$@")
  dir=$(mktemp -d -p "$TREE")
  log=$dir/server.log
  PORT=$($PY -c 'from nextbest.server.process import free_port; print(free_port())')
  $PY -m nextbest serve --port "$PORT" --processes "$PROCS" --catalog benchmarks/catalog_20.yaml \
    --database-url "sqlite:///$dir/ab.db" "${serve[@]}" > "$log" 2>&1 &
  server=$!
  for _ in $(seq 100); do
    [ "$(grep -c 'nextbest serving' "$log" || true)" -ge "$PROCS" ] && break
    if ! kill -0 "$server" 2> /dev/null; then echo "$label: server exited:" >&2; tail -5 "$log" >&2; exit 1; fi
    sleep 0.3
  done
  if [ "$(grep -c 'nextbest serving' "$log" || true)" -lt "$PROCS" ]; then
    echo "$label: server not serving after 30 s" >&2; kill -INT "$server"; exit 1
  fi
  $PY benchmarks/loadgen.py --port "$PORT" "${client[@]}" --channels 8 --duration 2 \
    closed --concurrency 8 > /dev/null
  $PY benchmarks/loadgen.py --port "$PORT" "${client[@]}" --server-pid "$server" --channels 8 \
    --duration "$SECS" closed --concurrency "$CONC" > "$dir/result.json"
  kill -INT "$server"
  wait "$server" || true
  $PY - "$label" "$dir/result.json" << 'EOF' | tee -a "$TREE/lines"
import json, sys
label, path = sys.argv[1], sys.argv[2]
d = json.load(open(path))
print(json.dumps({"label": label, "decisions_per_s": d["decisions_per_s"], "p50": d["latency_ms"]["p50"],
                  "p99": d["latency_ms"]["p99"], "errors": sum(d["errors"].values()),
                  "server_us": d["server_cpu_us_per_call"], "client_us": d["client_cpu_us_per_call"]}))
EOF
}

echo "commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo ' (+ uncommitted changes)'), $(date -u +%FT%TZ), $(nproc) cores, processes=$PROCS closed $CONC for ${SECS}s x $ROUNDS rounds"
for _ in $(seq "$ROUNDS"); do
  run plain --
  run auth+tls --tls-cert "$TREE/server.crt" --tls-key "$TREE/server.key" --tokens-file "$TREE/tokens" -- \
    --tls-ca "$TREE/ca.crt" --tls-server-name localhost --token-file "$TREE/decide.token"
done
$PY - "$TREE/lines" << 'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
mean = {}
for label in ("plain", "auth+tls"):
    runs = [r for r in rows if r["label"] == label]
    mean[label] = {k: statistics.fmean(r[k] for r in runs) for k in ("decisions_per_s", "p50", "p99", "server_us")}
    m = mean[label]
    print(f"mean {label:9s} {m['decisions_per_s']:7.0f}/s  p50 {m['p50']:.1f} ms  p99 {m['p99']:.1f} ms  "
          f"server {m['server_us']:.0f} us/call  errors {sum(r['errors'] for r in runs)}")
ratio = mean["auth+tls"]["decisions_per_s"] / mean["plain"]["decisions_per_s"]
print(f"auth+tls / plain = {ratio:.3f} ({(1 - ratio) * 100:+.1f} % fewer decisions/s; bound 15 %)")
EOF
