"""What the contact policy costs per decision, with a realistic contact history.

Runs ``DecisionEngine.decide`` in process on the bundled catalog against ``nextbest.store.FrozenStore``
answering with a prepared customer and keeping no decision (so the database is out of the measurement and
the history does not grow) and compares, in the same run and alternately:

- ``policy``: the bundled catalog as shipped — caps, quiet hours, engagement suppression, cooldowns,
  re-entry windows, the cart flow in steps, the conflict check between journeys, preemption;
- ``no policy``: the same catalog with its ``policy`` section, steps, cooldowns and re-entry windows
  removed (the pipeline still runs gates, CEL rules, experiments, scoring and arbitration).

For each, customers with 0 and with 200 past sends (over 90 days, all channels and flows, a few pending
and a few cancelled) ask a mix of triggers (scheduled, cart_abandoned, product_viewed, order_placed).
Prints the median and p99 µs per decision and the policy's share.

    python benchmarks/bench_contact_policy.py [--decisions 3000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import gc
import platform
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

import yaml

from nextbest.catalog import Catalog, bundled_catalog_path, parse_catalog
from nextbest.decision.engine import DecisionEngine
from nextbest.domain import ActionClass, Channel, DecisionRequest, RequestContext
from nextbest.state import ChannelState, CustomerSnapshot, CustomerState, PastExposure
from nextbest.store import FrozenStore

NOW = datetime(2026, 11, 23, 15, tzinfo=UTC)
TRIGGERS = ["scheduled", "cart_abandoned", "product_viewed", "order_placed"]


def catalogs() -> tuple[Catalog, Catalog]:
    data = yaml.safe_load(bundled_catalog_path().read_text())
    data.pop("experiments", None)
    with_policy = parse_catalog(yaml.safe_dump(data), "policy.yaml")
    data.pop("policy", None)
    for flow in data["flows"].values():
        flow.pop("steps", None)
        flow.pop("reentry", None)
    for action in data["actions"]:
        action.pop("cooldown", None)
    return with_policy, parse_catalog(yaml.safe_dump(data), "no-policy.yaml")


def customer(catalog: Catalog, sends: int, rng: random.Random) -> CustomerSnapshot:
    marketing = [a for a in catalog.actions if a.action_class is not ActionClass.TRANSACTIONAL]
    history = []
    for i in range(sends):
        action = rng.choice(marketing)
        at = NOW - timedelta(seconds=rng.uniform(0, 90 * 86400))
        pending = i < 3  # a few still pending, a few cancelled
        send_at = NOW + timedelta(hours=rng.uniform(1, 20)) if pending else at + action.delay
        history.append(
            PastExposure(
                uuid.uuid4().hex, action.id, action.flow, action.channel, action.action_class,
                rng.choice(sorted(action.triggers)), at, send_at, i + 1, cancelled=3 <= i < 6,
            )
        )  # fmt: skip
    history.sort(key=lambda p: p.occurred_at, reverse=True)
    channels = {ch: ChannelState(consent=True, consent_at=NOW - timedelta(days=400)) for ch in Channel}
    state = CustomerState(
        "u1",
        first_seen_at=NOW - timedelta(days=400),
        orders_count=6,
        revenue_total=640.0,
        last_order_at=NOW - timedelta(days=30),
        last_engagement_at=NOW - timedelta(days=2),
        channels=MappingProxyType(channels),
    )
    return CustomerSnapshot(state, tuple(history))


def prepared(snapshot: CustomerSnapshot) -> FrozenStore:
    """A store answering every read with ``snapshot``; decisions are accepted and dropped."""
    return FrozenStore(lambda _user_id, _now, _products: snapshot)


def run(engine: DecisionEngine, requests: list[DecisionRequest]) -> list[float]:
    out = []
    gc.disable()
    try:
        for request in requests:
            began = time.perf_counter_ns()
            engine.decide(request)
            out.append((time.perf_counter_ns() - began) / 1000)
    finally:
        gc.enable()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--decisions", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(7)
    with_policy, without = catalogs()
    requests = [
        DecisionRequest(
            uuid.uuid4().hex, "u1", rng.choice(TRIGGERS), NOW,
            RequestContext(cart_value=80.0, product_ids=("sku-1",), time_zone="Europe/Paris"),
            max_actions=2,
        )
        for _ in range(args.decisions)
    ]  # fmt: skip
    results: dict[tuple[str, int], list[float]] = {}
    for sends in (0, 200):
        engines = {
            name: DecisionEngine(catalog, prepared(customer(catalog, sends, random.Random(sends))))
            for name, catalog in (("no policy", without), ("policy", with_policy))
        }
        for engine in engines.values():
            run(engine, requests[:300])  # warm up
        for _ in range(args.rounds):  # alternate, so machine noise hits both alike
            for name, engine in engines.items():
                results.setdefault((name, sends), []).extend(run(engine, requests))
    machine = f"{platform.machine()}, Python {platform.python_version()}"
    print(
        f"- **Date**: {datetime.now(UTC):%Y-%m-%d}; {machine}; "
        f"{args.decisions} requests × {args.rounds} rounds per row, interleaved."
    )
    print()
    print("| catalog | past sends | median µs | p99 µs | policy cost (median) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for sends in (0, 200):
        base = statistics.median(results[("no policy", sends)])
        for name in ("no policy", "policy"):
            values = sorted(results[(name, sends)])
            median = statistics.median(values)
            p99 = values[int(0.99 * (len(values) - 1))]
            extra = f"+{median - base:.0f} µs ({median / base - 1:+.0%})" if name == "policy" else "baseline"
            print(f"| {name} | {sends} | {median:.0f} | {p99:.0f} | {extra} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
