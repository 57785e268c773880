"""Decision quality against ground truth: what each targeting policy earns on the same simulated store.

Every policy plays the same simulated population (same customers, same carts, same hidden purchase
draws) through the real decision engine, in process, on a fresh SQLite store, with the bundled catalog
minus its experiments (so every customer is targeted by the policy under test):

- random:      one eligible action per trigger, chosen at random (within the class order);
- send-all:    every eligible action, one per channel (up to four: ``max_actions`` 4);
- propensity:  the bundled propensity model's best action per trigger (P(convert) x value); it cannot
               tell whether a message adds anything, so it sends one (with four it would be send-all);
- uplift:      the bundled uplift model: every action whose expected incremental value (P(convert |
               sent) x value x kept - P(convert | not sent) x value - cost) is positive, best first, one
               per channel (``max_actions`` 4, as send-all); nothing when none is (NO_EXPECTED_LIFT) —
               what nextbest does with an uplift model promoted. ``uplift-1`` is the same, one action per
               trigger;
- oracle:      the uplift rule with the true effect of the action for this cart (at its due time) and the
               true expected unsubscribe cost in place of the model (``max_actions`` 4; each candidate's
               effect is its marginal over what was already delivered, not over a message chosen with it).

Each policy's incremental revenue is exact, not sampled: for every abandoned cart, the expected revenue
with what was delivered minus the expected revenue with nothing (``world.Cart``). The unsubscribe cost is
the expected number of unsubscribes the policy's marketing messages caused (their true probabilities) times
UNSUBSCRIBE_COST. Results are reported as a fraction of the oracle's net.

It then checks the measurement loop: over several seeds, the bundled catalog's experiments, their lift
reports against the simulator's true effects — mean error and how many 95 % intervals cover the truth.

    .venv/bin/python benchmarks/bench_decision_quality.py [--customers 2000] [--days 21] [--seeds 4]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from nextbest.catalog import Catalog, bundled_catalog_path, load_catalog, parse_catalog
from nextbest.decision.engine import DecisionEngine
from nextbest.models import features as feats
from nextbest.models.artifacts import bundled_models_path
from nextbest.models.registry import ModelRegistry, ModelSet
from nextbest.reports import ReportRequest, build_report
from nextbest.simulate import Cart, Customer, EngineBackend, SimulationResult, Simulator, population
from nextbest.simulate.backends import SimRequest
from nextbest.simulate.truth import truths
from nextbest.simulate.world import Message
from nextbest.store import Database, Store, upgrade

UNSUBSCRIBE_COST = 20.0  # the margin a subscriber brings over the following months (an assumption)
RESULTS = Path(__file__).with_name("decision_quality.json")
_DELAY = feats.LOGGED.index("delay_hours")
_SENDS_7D = feats.LOGGED.index("sends_7d")


class _Fixed:
    """A registry stand-in serving one model set."""

    def __init__(self, models: ModelSet) -> None:
        self.current = models


class _RandomScores:
    """A 'propensity model' drawing a random number per candidate: a random eligible action."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.codes: dict[str, float] = {}

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.rng.random(len(x))


@dataclass
class _Current:
    customer: Customer | None = None
    request: SimRequest | None = None
    cart: Cart | None = None


class _OracleUplift:
    """An 'uplift model' that knows the truth: for each cart-flow candidate, the incremental expected
    revenue of sending it now (its due time) to this cart, minus the expected unsubscribe cost, expressed
    as P(treated) with P(untreated) = 0 so that the engine's ``P(treated) x value x kept - P(untreated) x
    value - cost`` rule applies unchanged."""

    def __init__(self, catalog: Catalog) -> None:
        self.flows = frozenset({"cart_abandonment"})
        self.actions = {a.id: a for a in catalog.actions}
        vocabulary = sorted(a.id for a in catalog.actions)
        self.treated = type("Codes", (), {"codes": {a: float(i) for i, a in enumerate(vocabulary)}})()
        self.ids = vocabulary
        self.local = threading.local()

    def covers(self, action_id: str, flow: str) -> bool:
        return flow in self.flows

    def set(self, customer: Customer, request: SimRequest, cart: Cart | None) -> None:
        self.local.current = _Current(customer, request, cart)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        current: _Current = self.local.current
        gains = np.zeros(len(x))
        for i, row in enumerate(x):
            action = self.actions[self.ids[int(row[-1])]]
            c, cart, request = current.customer, current.cart, current.request
            if c is None or cart is None or request is None:
                continue
            send_at = request.at + timedelta(hours=float(row[_DELAY]))
            m = Message(action.id, action.flow, action.channel, send_at, dict(action.parameters))
            extra = cart.expected_revenue([*cart.delivered, m]) - cart.expected_revenue(cart.delivered)
            unsubscribe = UNSUBSCRIBE_COST * c.unsubscribe_probability(int(row[_SENDS_7D]))
            # The engine's rule multiplies by the order at stake less the action's discount: divide by
            # it, so that the engine's gain is exactly the true incremental value.
            at_stake = action.value_for(request.cart_value) * (1 - action.discount)
            gains[i] = (extra - unsubscribe) / at_stake
        return gains, np.zeros(len(x))


def _plain_catalog() -> Catalog:
    data = yaml.safe_load(bundled_catalog_path().read_text())
    data.pop("experiments", None)
    return parse_catalog(yaml.safe_dump(data), "bundled catalog without experiments")


@dataclass
class PolicyResult:
    policy: str
    incremental_revenue: float
    expected_unsubscribes: float
    unsubscribe_cost: float
    send_cost: float
    messages: int
    carts: int
    seconds: float
    max_actions: int

    @property
    def net(self) -> float:
        return self.incremental_revenue - self.unsubscribe_cost - self.send_cost


@contextlib.contextmanager
def _store(workdir: Path, name: str) -> Iterator[Store]:
    db = Database(f"sqlite:///{workdir / name}.db")
    upgrade(db)
    store = Store(db)
    try:
        yield store
    finally:
        store.close()


def run_policy(
    name: str,
    catalog: Catalog,
    models: ModelSet,
    customers: list[Customer],
    *,
    max_actions: int,
    args: Any,
    workdir: Path,
) -> PolicyResult:
    oracle = models.uplift if isinstance(models.uplift, _OracleUplift) else None
    started = time.perf_counter()
    with _store(workdir, name) as store:
        engine = DecisionEngine(catalog, store, models=_Fixed(models))  # type: ignore[arg-type]
        result = Simulator(
            EngineBackend(engine),
            customers,
            days=args.days,
            seed=args.seed,
            shards=1 if oracle or name == "random" else 2,  # their state is per thread or per draw order
            max_actions=max_actions,
            before_decide=oracle.set if oracle else None,
        ).run()
    seconds = time.perf_counter() - started
    costs = {a.id: a.cost for a in catalog.actions}
    incremental = sum(c.expected_revenue(c.delivered) - c.expected_revenue([]) for c in result.carts)
    return PolicyResult(
        name,
        incremental,
        result.expected_unsubscribes,
        UNSUBSCRIBE_COST * result.expected_unsubscribes,
        sum(costs.get(a, 0.0) * n for a, n in result.delivered_by_action.items()),
        result.messages,
        len(result.carts),
        seconds,
        max_actions,
    )


def policies(args: Any, workdir: Path) -> list[PolicyResult]:
    catalog = _plain_catalog()
    registry = ModelRegistry(bundled_models_path())
    registry.reload()
    trained = registry.current
    if trained.propensity is None or trained.uplift is None:
        raise SystemExit("the bundled propensity and uplift models did not load; run `make models`")
    customers = population(args.customers, args.seed)
    uplift = ModelSet(propensity=trained.propensity, uplift=trained.uplift, send_time=trained.send_time)
    sets = {  # name -> (models, max_actions)
        "random": (ModelSet(propensity=_RandomScores(args.seed), send_time=trained.send_time), 1),  # type: ignore[arg-type]
        "send-all": (ModelSet(send_time=trained.send_time), 4),
        "propensity": (ModelSet(propensity=trained.propensity, send_time=trained.send_time), 1),
        "uplift-1": (uplift, 1),
        "uplift": (uplift, 4),
        "oracle": (
            ModelSet(
                propensity=trained.propensity,
                uplift=_OracleUplift(catalog),  # type: ignore[arg-type]
                send_time=trained.send_time,
            ),
            4,
        ),
    }
    out = []
    for name, (models, max_actions) in sets.items():
        r = run_policy(name, catalog, models, customers, max_actions=max_actions, args=args, workdir=workdir)
        print(
            f"  {name:<10} incremental revenue {r.incremental_revenue:>10,.0f}  unsubscribes "
            f"{r.expected_unsubscribes:6.1f} (cost {r.unsubscribe_cost:8,.0f})  net {r.net:>10,.0f}  "
            f"messages {r.messages:>6,}  ({r.seconds:.0f}s)",
            flush=True,
        )
        out.append(r)
    return out


def measurement(args: Any, workdir: Path) -> list[dict[str, Any]]:
    """The bundled catalog's experiments over several seeds: estimate vs truth."""
    catalog = load_catalog(bundled_catalog_path())
    registry = ModelRegistry(bundled_models_path())
    registry.reload()
    rows = []
    for k in range(args.seeds):
        seed = 100 + k
        with _store(workdir, f"measure-{seed}") as store:
            engine = DecisionEngine(catalog, store, models=registry)
            result: SimulationResult = Simulator(
                EngineBackend(engine), population(args.customers, seed), days=args.days, seed=seed, shards=2
            ).run()
            for t in truths(result, catalog, as_of=result.end):
                if not t.units:
                    continue
                request = ReportRequest.validated(t.experiment_id, as_of=result.end)
                with store.db.reader.connect() as conn:
                    report = build_report(conn, catalog, request)
                for metric in ("conversion", "revenue"):
                    m = report.analysis.metrics.get(metric)
                    c = m.comparisons.get(t.arm) if m else None
                    if c is None or c.absolute.value is None:
                        continue
                    e = c.absolute
                    rows.append(
                        {
                            "seed": seed,
                            "experiment": t.experiment_id,
                            "arm": t.arm,
                            "metric": metric,
                            "units": t.units,
                            "truth": t.effects[metric],
                            "estimate": e.value,
                            "ci": [e.ci_low, e.ci_high],
                            "covered": e.ci_low is not None
                            and e.ci_high is not None
                            and e.ci_low <= t.effects[metric] <= e.ci_high,
                        }
                    )
        print(
            f"  seed {seed}: {sum(1 for r in rows if r['seed'] == seed and r['covered'])} of "
            f"{sum(1 for r in rows if r['seed'] == seed)} intervals cover the truth",
            flush=True,
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--days", type=int, default=21)
    parser.add_argument("--seed", type=int, default=31)
    parser.add_argument("--seeds", type=int, default=4, help="seeds for the measurement check")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        print(f"policies on {args.customers:,} customers x {args.days} days (seed {args.seed}):", flush=True)
        results = policies(args, workdir)
        oracle = next(r for r in results if r.policy == "oracle")
        for r in results:
            print(f"  {r.policy:<10} {r.net / oracle.net:6.1%} of the oracle's net incremental revenue")
        print(
            f"measurement: {args.seeds} seeds x {args.customers:,} customers x {args.days} days", flush=True
        )
        rows = measurement(args, workdir)
    covered = sum(r["covered"] for r in rows)
    errors = {
        m: statistics.mean(abs(r["estimate"] - r["truth"]) for r in rows if r["metric"] == m)
        for m in ("conversion", "revenue")
        if any(r["metric"] == m for r in rows)
    }
    print(f"  {covered} of {len(rows)} 95% intervals cover the true effect; mean absolute error {errors}")
    RESULTS.write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).date().isoformat(),
                "machine": f"{platform.machine()}, {platform.python_version()}",
                "customers": args.customers,
                "days": args.days,
                "seed": args.seed,
                "unsubscribe_cost": UNSUBSCRIBE_COST,
                "policies": [
                    {**r.__dict__, "net": r.net, "fraction_of_oracle": r.net / oracle.net} for r in results
                ],
                "measurement": {
                    "covered": covered,
                    "intervals": len(rows),
                    "mean_abs_error": errors,
                    "rows": rows,
                },
            },
            indent=2,
        )
    )
    print(f"results written to {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
