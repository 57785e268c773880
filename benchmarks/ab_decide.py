"""Old and new decision pipeline, alternately, in process: CPU per ``decide`` for two commits.

The whole-server comparison (``ab_server.sh``) carries gRPC, the database and this shared host's noise;
a refactoring of the pipeline is better judged by the pipeline alone. For BASE_REV (checked out in a
temporary git worktree) and this checkout, each round starts one child process per side
(``PYTHONPATH=<tree>/src``, the same venv), which runs ``DecisionEngine.decide`` on the bundled catalog
(experiments, caps, quiet hours, journeys, CEL rules; no models) for a fixed, seeded mix of triggers and
customers with 0 and 200 past sends, against a store that answers with the prepared customer and keeps
nothing. It reports the process CPU time per decision (``time.process_time``: what the pipeline costs,
whatever else the host is doing), median of the rounds, and the ratio new / old.

    python benchmarks/ab_decide.py BASE_REV [--head REV] [--rounds 5] [--decisions 2000]

``--head REV`` compares against another commit (also in a worktree) instead of this checkout.

The child's store is duck-typed on purpose: it must run against commits from before and after the store
contract (``nextbest.store.DecisionStore``) existed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, random, sys, time, uuid
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
try:
    from nextbest.decision.engine import DecisionEngine
except ImportError:
    from nextbest.engine import DecisionEngine
from nextbest.catalog import bundled_catalog_path, load_catalog
from nextbest.domain import ActionClass, Channel, DecisionRequest, RequestContext
from nextbest.state import ChannelState, CustomerSnapshot, CustomerState, PastExposure

NOW = datetime(2026, 11, 23, 15, tzinfo=UTC)
catalog = load_catalog(bundled_catalog_path())
rng = random.Random(7)

def snapshot(user, sends):
    marketing = [a for a in catalog.actions if a.action_class is not ActionClass.TRANSACTIONAL]
    history = []
    for i in range(sends):
        a = rng.choice(marketing)
        at = NOW - timedelta(seconds=rng.uniform(0, 90 * 86400))
        send_at = NOW + timedelta(hours=rng.uniform(1, 20)) if i < 3 else at + a.delay
        history.append(PastExposure(uuid.uuid4().hex, a.id, a.flow, a.channel, a.action_class,
                                    sorted(a.triggers)[0], at, send_at, i + 1, cancelled=3 <= i < 6))
    history.sort(key=lambda p: p.occurred_at, reverse=True)
    channels = {ch: ChannelState(consent=True, consent_at=NOW - timedelta(days=400)) for ch in Channel}
    state = CustomerState(user, first_seen_at=NOW - timedelta(days=400), orders_count=6, revenue_total=640.0,
                          last_order_at=NOW - timedelta(days=30), last_engagement_at=NOW - timedelta(days=2),
                          channels=MappingProxyType(channels))
    return CustomerSnapshot(state, tuple(history))

class Saved:
    inserted, conflict = True, False
    def __init__(self, cancelled): self.cancelled = cancelled
    def __bool__(self): return True

class Store:
    def __init__(self, snapshots): self.snapshots = snapshots
    def load_snapshot(self, user_id, now, products=()): return self.snapshots[user_id]
    def save_decision(self, decision, fingerprint, decided_at, version=None, deadline=None):
        return Saved(frozenset(c.exposure_id for c in decision.cancelled))
    def find_decision(self, request_id): return None
    def record_events(self, batch, received_at, cancel_rule=None): return []

users = [f"user-{i}" for i in range(200)]
snaps = {u: snapshot(u, 0 if i % 2 else 200) for i, u in enumerate(users)}
engine = DecisionEngine(catalog, Store(snaps), clock=lambda: NOW)
triggers = ["scheduled", "cart_abandoned", "product_viewed", "order_placed"]
n = int(sys.argv[1])
requests = [DecisionRequest(f"r{k}", users[k % len(users)], triggers[k % 4], NOW,
                            RequestContext(cart_value=80.0, product_ids=("p1", "p2")), (), 2, False)
            for k in range(n)]
for r in requests[:200]:
    engine.decide(r)
start = time.process_time()
for r in requests:
    engine.decide(r)
print(json.dumps({"us_per_decision": (time.process_time() - start) / n * 1e6}))
"""


def run(src: Path, decisions: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(decisions)], env=env, capture_output=True, text=True, check=True
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["us_per_decision"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("base", help="the commit to compare against (e.g. the one before a refactoring)")
    parser.add_argument("--head", help="a commit to compare instead of this checkout's files")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--decisions", type=int, default=2000)
    args = parser.parse_args()
    head = args.head or "checkout"
    with tempfile.TemporaryDirectory() as tmp:
        trees = {}
        for name, rev in (("base", args.base), ("head", args.head)):
            if rev:
                trees[name] = Path(tmp) / name
                subprocess.run(
                    ["git", "worktree", "add", "--detach", "-q", str(trees[name]), rev], cwd=ROOT, check=True
                )
        new_src = trees["head"] / "src" if "head" in trees else ROOT / "src"
        try:
            old, new = [], []
            for r in range(args.rounds):
                old.append(run(trees["base"] / "src", args.decisions))
                new.append(run(new_src, args.decisions))
                print(f"round {r + 1}: {args.base} {old[-1]:.0f} µs, {head} {new[-1]:.0f} µs", flush=True)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    o, n = statistics.median(old), statistics.median(new)
    print(
        f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; {args.decisions} decisions "
        f"x {args.rounds} rounds, alternated\nCPU per decide, median: {args.base} {o:.0f} µs, "
        f"{head} {n:.0f} µs; new / old = {n / o:.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
