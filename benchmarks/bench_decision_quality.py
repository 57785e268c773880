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
- uplift+explore: the uplift policy with the bundled catalog's declared exploration kept (the cart-flow
               holdout: a randomized share of abandoners gets no cart message, logged with its assignment
               probability, so that the next uplift model learns from unbiased data): what exploring costs;
- uplift-fixed-hour: the uplift policy with every action sent when due, none at the customer's best
               hour: against ``uplift``, what the send-time model earns where the catalog uses it (the
               expected opens of each action's messages, at the hour each was delivered);
- oracle:      the uplift rule with the true effect of the action for this cart (at its due time) and the
               true expected unsubscribe cost in place of the model (``max_actions`` 4; each candidate's
               effect is its marginal over what was already delivered, not over a message chosen with it);
- oracle-blind: the oracle with the customer's unseen traits (reading hour, being put off by any message,
               price sensitivity, annoyance) replaced by their means given what the store's data shows —
               a ceiling for any model of that data; ``oracle-hour``: the same knowing the reading hour;
               ``oracle-blind-deadline``: blind to the traits and to when the cart will be decided (its
               ``decide_at``, which no store sees), valuing a message by the chance the cart is still
               undecided when it lands given that it was not bought before the decision — the tighter
               ceiling: a model of the data sees neither.

Each policy's incremental revenue is exact, not sampled: for every abandoned cart, the expected revenue
with what was delivered minus the expected revenue with nothing (``world.Cart``). The unsubscribe cost is
the expected number of unsubscribes the policy's marketing messages caused (their true probabilities) times
UNSUBSCRIBE_COST. Results are reported as a fraction of the oracle's net, per population (``--policy-seeds``)
and as a mean with its 95 % t-interval over them. ``--memory`` plays the policies on the in-memory store
(the store contract's other implementation: the same decisions, several times faster).

It then checks the measurement loop: over several seeds, the bundled catalog's experiments, their lift
reports against the simulator's true effects — mean error and how many 95 % intervals cover the truth.

    .venv/bin/python benchmarks/bench_decision_quality.py [--customers 2000] [--days 21]
        [--policy-seeds 31,32,33] [--policies uplift,oracle] [--models-dir DIR] [--memory] [--seeds 3]

``--campaigns winback,promo`` compares campaign targeting rules instead (``campaign_targeting``: everyone,
propensity, uplift, oracle-blind and oracle on the simulated campaigns of ``nextbest.simulate.campaigns``,
the uplift model trained on an exploration run's logged holdout; results to
``benchmarks/campaign_targeting.json``):

    .venv/bin/python benchmarks/bench_decision_quality.py --campaigns winback,promo
        [--campaign-seeds 41,42,43] [--campaign-customers 4000] [--explore-customers 16000]
        [--budget-share 0.25] [--campaign-learner x-learner]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy import stats as st

from nextbest.catalog import Catalog, bundled_catalog_path, load_catalog, parse_catalog
from nextbest.decision.engine import DecisionEngine
from nextbest.models import features as feats
from nextbest.models.artifacts import bundled_models_path
from nextbest.models.registry import ModelRegistry, ModelSet
from nextbest.reports import ReportRequest, build_report
from nextbest.simulate import Cart, Customer, EngineBackend, SimulationResult, Simulator, population
from nextbest.simulate.backends import SimRequest
from nextbest.simulate.campaigns import CAMPAIGN_AT, RULES, WINDOW, campaign_catalog, compare_targeting
from nextbest.simulate.truth import truths
from nextbest.simulate.world import (
    CHANNEL_OPENS,
    CHANNEL_RESPONSE,
    LATER_MESSAGE_WEIGHT,
    PEAK_HOURS,
    RESPONSIVE_FLOWS,
    Message,
)
from nextbest.store import Database, MemoryStore, Store, upgrade
from nextbest.training.fit import LEARNERS

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

    def score(self, full: np.ndarray, action_ids: Sequence[str]) -> np.ndarray:
        return self.rng.random(len(action_ids))


@dataclass
class _Current:
    customer: Customer | None = None
    request: SimRequest | None = None
    cart: Cart | None = None


class _Blind:
    """A customer as anything that reads only the store's data could know them: the traits the data does
    not show (reading hour, being put off by any message, price sensitivity, annoyance) replaced by their
    population means given what it does show (orders, typical basket). Quacks like ``world.Customer`` for
    ``Cart.probability``."""

    def __init__(self, c: Customer, *, hour: bool = False) -> None:
        self.hour = hour  # the reading hour is known (as opens on record would show it)
        loyal = len(c.past_orders) >= 4
        structural = 0.30 * (c.cart_value > 60) + 0.10 * (len(c.past_orders) <= 1) - (0.15 if loyal else 0.0)
        self.base_buy = c.base_buy
        self.persuadability = 0.9 * structural + 0.1 * -0.15
        self.price_sensitivity = 0.003 * (0.3 if loyal else 1.0)
        self.customer = c

    def effect(self, m: Message) -> float:
        if m.flow not in RESPONSIVE_FLOWS:
            return 0.0
        response = self.persuadability * CHANNEL_RESPONSE.get(m.channel, 0.0)
        response += self.price_sensitivity * m.discount
        if self.hour:
            return self.customer.open_probability(m.send_at, m.channel) * response
        local = self.customer.local_hour(m.send_at)
        opens = []
        for peak in PEAK_HOURS:  # the population's reading hours, equally likely
            distance = min(abs(local - peak), 24 - abs(local - peak))
            p = 0.5 * math.exp(-(distance**2) / (2 * 2.5**2)) + 0.06
            opens.append(min(0.95, p * CHANNEL_OPENS.get(m.channel, 1.0)))
        return statistics.mean(opens) * response

    def unsubscribe_probability(self, recent: int) -> float:
        return min(1.0, 0.003 * (1 + recent))


class _BlindCart:
    """A cart whose purchase probability is computed for a ``_Blind`` customer."""

    def __init__(self, cart: Cart, customer: _Blind) -> None:
        self.cart = cart
        self.customer = customer

    def expected_revenue(self, messages: list[Message]) -> float:
        effects = [
            self.customer.effect(m)
            for m in sorted(messages, key=lambda m: m.send_at)
            if m.send_at < self.cart.decide_at
        ]
        total = sum(e * LATER_MESSAGE_WEIGHT**k for k, e in enumerate(effects))
        return min(1.0, max(0.0, self.customer.base_buy + total)) * self.cart.order_value(messages)


class _OracleUplift:
    """An 'uplift model' that knows the truth: for each cart-flow candidate, the incremental expected
    revenue of sending it now (its due time) to this cart, minus the expected unsubscribe cost, expressed
    as P(treated) with P(untreated) = 0 so that the engine's ``P(treated) x value x kept - P(untreated) x
    value - cost`` rule applies unchanged. ``blind``: the customer's unseen traits are replaced by their
    means (``_Blind``) — the best any model of the store's data could do, a ceiling for a learned model;
    the cart's own timing (when it will be decided) stays known to it. ``hour``: blind but for the
    customer's reading hour (what opens on record would show) — the most a send-hour feature could add."""

    def __init__(
        self, catalog: Catalog, *, blind: bool = False, hour: bool = False, deadline: bool = True
    ) -> None:
        self.blind = blind
        self.hour = hour
        self.deadline = deadline  # False: blind to when the cart is decided, too
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
        return self.score(x, [self.ids[int(row[-1])] for row in x])

    def score(self, full: np.ndarray, action_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """For the rows of a ``features.candidate_matrix`` (the logged columns first), one per action."""
        current: _Current = self.local.current
        gains = np.zeros(len(action_ids))
        for i, (row, action_id) in enumerate(zip(full, action_ids, strict=True)):
            action = self.actions[action_id]
            c, cart, request = current.customer, current.cart, current.request
            if c is None or cart is None or request is None:
                continue
            send_at = request.at + timedelta(hours=float(row[_DELAY]))
            m = Message(action.id, action.flow, action.channel, send_at, dict(action.parameters))
            blind = _Blind(c, hour=self.hour)
            timing = cart if self.deadline else dataclasses.replace(cart, decide_at=_NEVER)
            seen: Cart | _BlindCart = _BlindCart(timing, blind) if self.blind else timing
            extra = seen.expected_revenue([*cart.delivered, m]) - seen.expected_revenue(cart.delivered)
            if not self.deadline:
                value = timing.order_value(cart.delivered)
                p_buy = seen.expected_revenue(cart.delivered) / value if value > 0 else 0.0
                extra *= _still_open(request.at, send_at, cart, p_buy)
            who: Customer | _Blind = blind if self.blind else c
            unsubscribe = UNSUBSCRIBE_COST * who.unsubscribe_probability(int(row[_SENDS_7D]))
            # The engine's rule multiplies by the order at stake less the action's discount: divide by
            # it, so that the engine's gain is exactly the true incremental value.
            at_stake = action.value_for(request.cart_value) * (1 - action.discount)
            gains[i] = (extra - unsubscribe) / at_stake
        return gains, np.zeros(len(action_ids))


_NEVER = datetime(9999, 1, 1, tzinfo=UTC)
# world.activities: a cart is decided 2 to 84 hours after it was abandoned, uniformly.
_DECIDE_HOURS = (2.0, 84.0)


def _still_open(now: datetime, send_at: datetime, cart: Cart, p_buy: float) -> float:
    """P(the cart is undecided at ``send_at``), given only what a store sees at ``now``: the cart
    abandoned at ``cart.at`` and not bought by ``now`` (``p_buy``: P(buy) with what was delivered, had
    it been decided now)."""
    low, high = _DECIDE_HOURS

    def later(at: datetime) -> float:  # P(decide_at > at)
        hours = (at - cart.at).total_seconds() / 3600
        return min(1.0, max(0.0, (high - hours) / (high - low)))

    open_now, decided = later(now), 1.0 - later(now)
    not_bought = open_now + decided * (1.0 - min(1.0, p_buy))
    return later(send_at) / not_bought if not_bought > 0 else 0.0


def _plain_catalog(keep: tuple[str, ...] = (), *, fixed_hour: bool = False) -> Catalog:
    """The bundled catalog without its experiments, except those in ``keep``; ``fixed_hour``: every
    action sent when due (``send_time: fixed``) instead of at the customer's best hour."""
    data = yaml.safe_load(bundled_catalog_path().read_text())
    if fixed_hour:
        for action in data["actions"]:
            action.pop("send_time", None)
    data["experiments"] = [e for e in data.get("experiments", []) if e["id"] in keep]
    if not data["experiments"]:
        data.pop("experiments")
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
    by_action: dict[str, int]
    opens_by_action: dict[str, float]

    @property
    def net(self) -> float:
        return self.incremental_revenue - self.unsubscribe_cost - self.send_cost


@contextlib.contextmanager
def _store(workdir: Path, name: str, memory: bool = False) -> Iterator[Store | MemoryStore]:
    if memory:  # the same decisions as the SQL store (its contract), without the disk
        yield MemoryStore()
        return
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
    seed: int,
) -> PolicyResult:
    oracle = models.uplift if isinstance(models.uplift, _OracleUplift) else None
    started = time.perf_counter()
    with _store(workdir, f"{name.replace('+', '_')}-{seed}", args.memory) as store:
        engine = DecisionEngine(catalog, store, models=_Fixed(models))  # type: ignore[arg-type]
        result = Simulator(
            EngineBackend(engine),
            customers,
            days=args.days,
            seed=seed,
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
        dict(sorted(result.delivered_by_action.items())),
        dict(sorted(result.opens_by_action.items())),
    )


POLICIES = (
    "random",
    "send-all",
    "propensity",
    "uplift-1",
    "uplift",
    "uplift+explore",
    "uplift-fixed-hour",
    "oracle-blind",
    "oracle-hour",
    "oracle-blind-deadline",
    "oracle",
)
# The bundled catalog's declared exploration: the cart-flow holdout, a randomized share of abandoners
# who get no cart message (logged with its assignment probability) so the next uplift model can learn.
EXPLORATION = ("cart_flow_holdout",)


def policies(args: Any, workdir: Path, seed: int) -> list[PolicyResult]:
    catalog = _plain_catalog()
    registry = ModelRegistry(Path(args.models_dir) if args.models_dir else bundled_models_path())
    registry.reload()
    trained = registry.current
    if trained.propensity is None or trained.uplift is None:
        raise SystemExit("the propensity and uplift models did not load; run `make models`")
    customers = population(args.customers, seed)
    uplift = ModelSet(propensity=trained.propensity, uplift=trained.uplift, send_time=trained.send_time)

    def oracle(blind: bool, hour: bool = False, deadline: bool = True) -> ModelSet:
        return ModelSet(
            propensity=trained.propensity,
            uplift=_OracleUplift(catalog, blind=blind, hour=hour, deadline=deadline),  # type: ignore[arg-type]
            send_time=trained.send_time,
        )

    sets = {  # name -> (models, max_actions, catalog)
        "random": (ModelSet(propensity=_RandomScores(seed), send_time=trained.send_time), 1, catalog),  # type: ignore[arg-type]
        "send-all": (ModelSet(send_time=trained.send_time), 4, catalog),
        "propensity": (ModelSet(propensity=trained.propensity, send_time=trained.send_time), 1, catalog),
        "uplift-1": (uplift, 1, catalog),
        "uplift": (uplift, 4, catalog),
        "uplift+explore": (uplift, 4, _plain_catalog(EXPLORATION)),
        "uplift-fixed-hour": (uplift, 4, _plain_catalog(fixed_hour=True)),
        "oracle-blind": (oracle(True), 4, catalog),
        "oracle-hour": (oracle(True, hour=True), 4, catalog),
        "oracle-blind-deadline": (oracle(True, deadline=False), 4, catalog),
        "oracle": (oracle(False), 4, catalog),
    }
    out = []
    for name in args.policies:
        models, max_actions, policy_catalog = sets[name]
        r = run_policy(
            name,
            policy_catalog,
            models,
            customers,
            max_actions=max_actions,
            args=args,
            workdir=workdir,
            seed=seed,
        )
        print(
            f"  {name:<14} incremental revenue {r.incremental_revenue:>10,.0f}  unsubscribes "
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


def _interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95 % t-interval over seeds (a population per seed)."""
    mean = statistics.mean(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = float(st.t.ppf(0.975, len(values) - 1)) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def summarize(by_seed: dict[int, list[PolicyResult]]) -> dict[str, Any]:
    """Each policy's share of the oracle's net per seed, its mean with a 95 % interval, and whether the
    uplift policy beat send-all and propensity on every seed."""
    shares: dict[str, list[float]] = {}
    for results in by_seed.values():
        oracle = next((r for r in results if r.policy == "oracle"), None)
        if oracle is None:
            continue
        for r in results:
            shares.setdefault(r.policy, []).append(r.net / oracle.net)
    out: dict[str, Any] = {}
    for policy, values in shares.items():
        mean, low, high = _interval(values)
        out[policy] = {"per_seed": values, "mean": mean, "ci95": [low, high]}
    optimized = sorted(
        a.id for a in load_catalog(bundled_catalog_path()).actions if a.send_time == "optimize"
    )
    send_time: dict[str, Any] = {}
    for results in by_seed.values():
        named = {r.policy: r for r in results}
        if "uplift" not in named or "uplift-fixed-hour" not in named:
            continue
        for action in optimized:
            row = send_time.setdefault(action, {"best_hour": [0, 0.0], "fixed_hour": [0, 0.0]})
            for key, policy in (("best_hour", "uplift"), ("fixed_hour", "uplift-fixed-hour")):
                row[key][0] += named[policy].by_action.get(action, 0)
                row[key][1] += named[policy].opens_by_action.get(action, 0.0)
    if send_time:
        out["send_time"] = {
            a: {k: {"delivered": n, "open_rate": (o / n if n else None)} for k, (n, o) in row.items()}
            for a, row in send_time.items()
        }
    nets = {s: {r.policy: r.net for r in rs} for s, rs in by_seed.items()}
    for rival in ("send-all", "propensity"):
        if all("uplift" in n and rival in n for n in nets.values()):
            out.setdefault("uplift", {})[f"beats_{rival}"] = sum(
                n["uplift"] > n[rival] for n in nets.values()
            )
    return out


CAMPAIGN_RESULTS = Path(__file__).with_name("campaign_targeting.json")


def _holdout_coverage(report: Any, truth: dict[str, float]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for metric in ("conversion", "revenue"):
        e = report.analysis.metrics[metric].comparisons["treated"].absolute
        low, high = e.ci_low, e.ci_high
        out[metric] = {
            "estimate": e.value,
            "ci95": [low, high],
            "truth": truth[metric],
            "covered": low is not None and high is not None and low <= truth[metric] <= high,
        }
    return out


def campaign_targeting(args: Any, workdir: Path) -> dict[str, Any]:
    """Campaign targeting rules on the simulated campaigns (``nextbest.simulate.campaigns``): per flow
    and seed, each rule's true net incremental revenue within the budget and its share of the oracle's;
    whether the uplift plan's 95 % interval covers its run's true incremental revenue; whether the
    exploration run's holdout lift report covers the true effect."""
    out: dict[str, Any] = {}
    for flow in args.campaigns:
        per_seed: dict[str, Any] = {}
        for seed in args.campaign_seeds:
            started = time.process_time()
            c = compare_targeting(
                seed,
                args.campaign_customers,
                flow=flow,
                budget_share=args.budget_share,
                explore_customers=args.explore_customers,
                workdir=workdir,
                learner=args.campaign_learner or None,
            )
            oracle = c.results["oracle"].net
            low_high = c.plan.revenue_interval()
            db = Database(c.explore_url)
            try:
                with db.reader.connect() as conn:
                    report = build_report(
                        conn,
                        campaign_catalog(),
                        ReportRequest.validated(
                            f"{flow}_holdout",
                            as_of=CAMPAIGN_AT + WINDOW + timedelta(days=1),
                            window_days=WINDOW.days,
                        ),
                    )
            finally:
                db.dispose()
            holdout = _holdout_coverage(report, c.exploration.true_effect())
            per_seed[str(seed)] = {
                "audience": c.audience,
                "eligible": c.eligible,
                "budget": c.budget,
                "explored_units": len(c.exploration.arms),
                "learner": c.learner,
                "rules": {
                    r: {
                        "sends": c.results[r].sends,
                        "net": c.results[r].net,
                        "of_oracle": c.results[r].net / oracle,
                    }
                    for r in RULES
                },
                "plan": {
                    "sends": c.plan.sends,
                    "run_sends": c.run.run.sent,
                    "sends_match": (c.plan.decided, c.plan.sends, c.plan.decided_refusals)
                    == (c.run.run.decided, c.run.run.sent, c.run.run.refusals),
                    "incremental_revenue": c.plan.incremental_revenue,
                    "ci95": list(low_high) if low_high else None,
                    "truth": c.plan_truth,
                    "covered": low_high is not None and low_high[0] <= c.plan_truth <= low_high[1],
                },
                "holdout": holdout,
                "cpu_s": time.process_time() - started,
            }
            row = per_seed[str(seed)]
            print(
                f"  {flow} seed {seed}: "
                + ", ".join(f"{r} {row['rules'][r]['of_oracle']:.1%}" for r in RULES)
                + f" of the oracle's net {oracle:,.0f} (budget {c.budget} of {c.eligible}; {c.learner})"
                + "; plan "
                f"{c.plan.incremental_revenue:,.0f} [{low_high[0] if low_high else 0:,.0f}, "
                f"{low_high[1] if low_high else 0:,.0f}] vs true {c.plan_truth:,.0f}; holdout covers "
                f"{sum(h['covered'] for h in holdout.values())} of 2",
                flush=True,
            )
        shares = {r: _interval([row["rules"][r]["of_oracle"] for row in per_seed.values()]) for r in RULES}
        out[flow] = {
            "per_seed": per_seed,
            "of_oracle": {r: {"mean": m, "ci95": [lo, hi]} for r, (m, lo, hi) in shares.items()},
            "uplift_beats_everyone": sum(
                row["rules"]["uplift"]["net"] > row["rules"]["everyone"]["net"] for row in per_seed.values()
            ),
            "uplift_beats_propensity": sum(
                row["rules"]["uplift"]["net"] > row["rules"]["propensity"]["net"] for row in per_seed.values()
            ),
            "plan_covered": sum(row["plan"]["covered"] for row in per_seed.values()),
            "plan_sends_match": sum(row["plan"]["sends_match"] for row in per_seed.values()),
            "holdout_covered": sum(
                h["covered"] for row in per_seed.values() for h in row["holdout"].values()
            ),
            "seeds": len(per_seed),
        }
        for r, (m, lo, hi) in shares.items():
            print(f"  {flow} {r:<13} mean {m:6.1%} [{lo:.1%}, {hi:.1%}] of the oracle")
    return out


def _campaign_main(args: Any) -> int:
    args.campaigns = [f for f in args.campaigns.split(",") if f]
    args.campaign_seeds = [int(s) for s in args.campaign_seeds.split(",") if s]
    with tempfile.TemporaryDirectory() as tmp:
        result = campaign_targeting(args, Path(tmp))
    target = Path(args.output or CAMPAIGN_RESULTS)
    target.write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).date().isoformat(),
                "machine": f"{platform.machine()}, {platform.python_version()}",
                "customers": args.campaign_customers,
                "explore_customers": args.explore_customers,
                "budget_share": args.budget_share,
                "learner": args.campaign_learner or "best Qini on the validation slice",
                "seeds": args.campaign_seeds,
                "campaigns": result,
            },
            indent=2,
        )
    )
    print(f"results written to {target}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--days", type=int, default=21)
    parser.add_argument(
        "--policy-seeds", default="31,32,33", help="populations the policies play (comma-separated)"
    )
    parser.add_argument("--policies", default=",".join(POLICIES), help=f"a subset of {','.join(POLICIES)}")
    parser.add_argument("--models-dir", default="", help="models to serve (default: the bundled ones)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds for the measurement check (0: skip)")
    parser.add_argument(
        "--memory", action="store_true", help="policies on the in-memory store (same decisions, faster)"
    )
    parser.add_argument("--output", default="", help="where the JSON results go")
    parser.add_argument(
        "--campaigns",
        default="",
        help="compare campaign targeting rules instead (winback,promo): everyone, propensity, uplift, "
        "oracle; results to benchmarks/campaign_targeting.json",
    )
    parser.add_argument("--campaign-seeds", default="41,42,43", help="populations per campaign")
    parser.add_argument("--campaign-customers", type=int, default=4000, help="the targeted population")
    parser.add_argument(
        "--explore-customers", type=int, default=16000, help="the exploration run's population"
    )
    parser.add_argument("--budget-share", type=float, default=0.25, help="budget: this share of the eligible")
    parser.add_argument(
        "--campaign-learner",
        default="",
        choices=["", *LEARNERS],
        help="the campaigns' uplift learner (default: the best Qini on the validation slice)",
    )
    args = parser.parse_args()
    if args.campaigns:
        return _campaign_main(args)
    args.policies = [p for p in args.policies.split(",") if p]
    unknown = [p for p in args.policies if p not in POLICIES]
    if unknown:
        parser.error(f"unknown policies {unknown}; choose from {', '.join(POLICIES)}")
    policy_seeds = [int(s) for s in args.policy_seeds.split(",") if s]
    by_seed: dict[int, list[PolicyResult]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for seed in policy_seeds:
            print(f"policies on {args.customers:,} customers x {args.days} days (seed {seed}):", flush=True)
            by_seed[seed] = policies(args, workdir, seed)
        summary = summarize(by_seed)
        for action, row in summary.get("send_time", {}).items():
            best, fixed = row["best_hour"], row["fixed_hour"]
            print(
                f"  send time, {action}: {best['delivered']} delivered at the best hour, open rate "
                f"{best['open_rate'] or 0:.3f}; {fixed['delivered']} when due, {fixed['open_rate'] or 0:.3f}"
            )
        for policy, row in summary.items():
            if "mean" not in row:
                continue
            per_seed = " ".join(f"{v:6.1%}" for v in row["per_seed"])
            low, high = row["ci95"]
            print(f"  {policy:<14} {per_seed}  mean {row['mean']:6.1%} [{low:.1%}, {high:.1%}] of the oracle")
        if "uplift" in summary:
            print(
                f"  uplift beats send-all on {summary['uplift'].get('beats_send-all')} seeds, "
                f"propensity on {summary['uplift'].get('beats_propensity')}"
            )
        rows: list[dict[str, Any]] = []
        if args.seeds:
            print(
                f"measurement: {args.seeds} seeds x {args.customers:,} customers x {args.days} days",
                flush=True,
            )
            rows = measurement(args, workdir)
    covered = sum(r["covered"] for r in rows)
    errors = {
        m: statistics.mean(abs(r["estimate"] - r["truth"]) for r in rows if r["metric"] == m)
        for m in ("conversion", "revenue")
        if any(r["metric"] == m for r in rows)
    }
    if rows:
        print(f"  {covered} of {len(rows)} 95% intervals cover the true effect; mean absolute error {errors}")
    output = Path(args.output or RESULTS)
    output.write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).date().isoformat(),
                "machine": f"{platform.machine()}, {platform.python_version()}",
                "customers": args.customers,
                "days": args.days,
                "policy_seeds": policy_seeds,
                "models": args.models_dir or str(bundled_models_path()),
                "unsubscribe_cost": UNSUBSCRIBE_COST,
                "summary": summary,
                "policies": {
                    str(seed): [
                        {
                            **r.__dict__,
                            "net": r.net,
                            **(
                                {"fraction_of_oracle": r.net / o.net}
                                if (o := next((x for x in results if x.policy == "oracle"), None))
                                else {}
                            ),
                        }
                        for r in results
                    ]
                    for seed, results in by_seed.items()
                },
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
    print(f"results written to {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
