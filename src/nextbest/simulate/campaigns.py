"""The simulator plays campaigns: a win-back and a promotion with known, heterogeneous true effects.

The simulated store (``world.population``: order histories, consents, hidden traits) is loaded into a
store as of ``CAMPAIGN_AT``; a campaign of :data:`CAMPAIGN_CATALOG` is then run through the real
decision engine (``nextbest.campaigns.run_campaign``), and every customer's order over the following
``WINDOW`` is drawn from their true response: whether the campaign's message was delivered to them or
not, P(order) is known for both worlds (:class:`CampaignTruth`), so the true effect of a run, of its
holdout, or of any targeting of the audience is computed exactly, not sampled.

**The true response** (hidden from the service; it sees only the history the response depends on):
without the message, a customer orders in the window at their own rate (``orders_per_day``, a fifth of
it once lapsed), and a regular one (three or more orders) whose last order is within 1.5 times their
usual interval is *due back*: +0.30. The message adds, in probability:

- win-back (15 % off): nothing for a customer due back; +0.20 for a customer with two or more orders
  whose last one is 60 or more days old, +0.06 for a lapsed one-order customer, +0.01 for a recent
  buyer; +0.06 more for a big basket (over 60); plus price sensitivity x 15;
- promotion (10 % off): +0.10 for a customer with at most one order, +0.03 otherwise, 0.02 less for a
  loyal one (four or more orders); plus price sensitivity x 10;
- one customer in ten is put off by any message (-0.05 win-back, -0.03 promotion).

An order is worth the customer's basket, less the discount when the message was delivered (paid on
orders that would have come anyway too); the store sees that basket as the customer's past orders, and
the campaigns' actions are valued by it (``value_from: average_order``; their declared 68, the
population's mean basket, for a customer with no order). So the customers most likely to order when
sent (loyal, recent) are those a send adds least to and costs most: propensity targeting spends the
budget where the incremental value is lowest.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from nextbest.campaigns import CampaignPlan, CampaignRun, campaign_request, plan_campaign, run_campaign
from nextbest.campaigns.campaign import rank_members
from nextbest.catalog import Campaign, Catalog, parse_catalog
from nextbest.decision.engine import DecisionEngine
from nextbest.domain import Channel, Event, EventType, ReasonCode
from nextbest.models import ModelRegistry, ModelSet
from nextbest.models.artifacts import ModelKind
from nextbest.models.registry import UpliftModel
from nextbest.simulate.world import START, Customer, population
from nextbest.store import Database, Store, upgrade
from nextbest.store.scan import customer_states
from nextbest.training.pipeline import Source, train

__all__ = [
    "CAMPAIGN_AT",
    "CAMPAIGN_CATALOG",
    "RULES",
    "WINDOW",
    "CampaignOutcome",
    "CampaignTruth",
    "TargetingComparison",
    "TargetingResult",
    "blind_net",
    "campaign_catalog",
    "compare_targeting",
    "explore_and_learn",
    "load_history",
    "play_campaign",
    "true_response",
]

CAMPAIGN_AT = START + timedelta(hours=9)
WINDOW = timedelta(days=14)
KINDS = {"winback": 15.0, "promo": 10.0}  # the campaign's flow -> its discount percent

CAMPAIGN_CATALOG = """
version: 1
name: simulated-campaigns
channels:
  email: {requires_consent: true}
  push: {requires_consent: true}
flows:
  winback: {priority: 30}
  promo: {priority: 20}
policy:
  quiet_hours:
    push: {start: "21:00", end: "09:00"}
actions:
  - id: winback_email
    flow: winback
    channel: email
    class: promotional
    triggers: [campaign_winback]
    value: 68.0
    value_from: average_order
    base_propensity: 0.1
    cost: 0.05
    parameters: {template: winback_v1, discount_percent: 15}
    discount_parameter: discount_percent
  - id: promo_email
    flow: promo
    channel: email
    class: promotional
    triggers: [campaign_promo]
    value: 68.0
    value_from: average_order
    base_propensity: 0.1
    cost: 0.05
    parameters: {template: promo_v1, discount_percent: 10}
    discount_parameter: discount_percent
experiments:
  - id: winback_holdout
    scope: {flows: [winback]}
    arms:
      - {id: holdout, weight: 0.5, no_action: true}
      - {id: treated, weight: 0.5}
  - id: promo_holdout
    scope: {flows: [promo]}
    arms:
      - {id: holdout, weight: 0.5, no_action: true}
      - {id: treated, weight: 0.5}
segments:
  lapsing:
    description: buyers whose last order is over a month old
    condition: customer.orders_count >= 1 && customer.days_since_last_order > 30.0
  subscribers:
    condition: customer.subscribed
campaigns:
  winback:
    audience: lapsing
    trigger: campaign_winback
    start: 2026-11-01T00:00:00Z
    stop: 2026-12-01T00:00:00Z
    holdout: winback_holdout
  promo:
    audience: subscribers
    trigger: campaign_promo
    start: 2026-11-01T00:00:00Z
    stop: 2026-12-01T00:00:00Z
    holdout: promo_holdout
"""


def campaign_catalog(*, holdout: bool = True) -> Catalog:
    """The simulated campaigns' catalog; without ``holdout``, no experiments (everyone targeted is
    sent: a campaign after its exploration)."""
    text = CAMPAIGN_CATALOG
    if not holdout:
        head, rest = text.split("experiments:\n", 1)
        text = head + "segments:\n" + rest.split("segments:\n", 1)[1]
        text = text.replace("    holdout: winback_holdout\n", "").replace("    holdout: promo_holdout\n", "")
    return parse_catalog(text, "simulated-campaigns.yaml")


@dataclass(frozen=True, slots=True)
class CampaignTruth:
    """One customer's true response to a campaign's message over the window."""

    p_without: float
    p_with: float
    value: float  # the order's value without a discount
    discount: float  # fraction off when the message was delivered
    cost: float

    @property
    def incremental_conversion(self) -> float:
        return self.p_with - self.p_without

    @property
    def incremental_revenue(self) -> float:
        return self.p_with * self.value * (1 - self.discount) - self.p_without * self.value

    @property
    def net(self) -> float:
        return self.incremental_revenue - self.cost

    def revenue(self, sent: bool) -> float:
        return self.value * (1 - self.discount) if sent else self.value


def true_response(
    customer: Customer, flow: str, at: datetime = CAMPAIGN_AT, window: timedelta = WINDOW, cost: float = 0.05
) -> CampaignTruth:
    past = [o for o in customer.past_orders if o < at]
    orders = len(past)
    days_since = (at - past[-1]).total_seconds() / 86400 if past else math.inf
    rate = customer.orders_per_day * customer.activity(at)
    p_without = 1 - math.exp(-rate * window.total_seconds() / 86400)
    # A regular customer whose last order is not yet overdue (within 1.5 of their usual interval) is
    # due back: likely to order anyway, and a win-back adds nothing.
    tenure = (at - customer.first_seen_at).total_seconds() / 86400
    due = orders >= 3 and days_since <= 1.5 * tenure / orders
    if due:
        p_without = min(1.0, p_without + 0.3)
    percent = KINDS[flow]
    put_off = customer.persuadability < -0.1
    if flow == "winback":
        if put_off:
            lift = -0.05
        elif due:
            lift = 0.0
        else:
            lapsed = days_since >= 60
            lift = 0.20 if lapsed and orders >= 2 else 0.06 if lapsed else 0.01
            lift += 0.06 * (customer.cart_value > 60)
    elif put_off:
        lift = -0.03
    else:
        lift = 0.10 if orders <= 1 else 0.03
        lift -= 0.02 * (orders >= 4)
    if not put_off:
        lift += customer.price_sensitivity * percent
    p_with = min(1.0, max(0.0, p_without + lift))
    return CampaignTruth(p_without, p_with, round(customer.cart_value, 2), percent / 100.0, cost)


def load_history(store: Store, customers: Iterable[Customer], at: datetime = CAMPAIGN_AT) -> None:
    """Each customer's history before ``at``: subscription (one in ten has unsubscribed since),
    consents and past orders."""
    events: list[Event] = []
    for c in customers:
        events.append(
            Event(f"{c.user_id}-sub", c.user_id, EventType.SUBSCRIBED, c.first_seen_at, channel=Channel.EMAIL)
        )
        events.append(
            Event(
                f"{c.user_id}-push",
                c.user_id,
                EventType.CONSENT_CHANGED,
                c.first_seen_at,
                channel=Channel.PUSH,
                consent_granted=c.push,
            )
        )
        for n, when in enumerate(o for o in c.past_orders if o < at):
            events.append(
                Event(
                    f"{c.user_id}-past{n}",
                    c.user_id,
                    EventType.ORDER_PLACED,
                    when,
                    value=round(c.cart_value, 2),
                    order_id=f"{c.user_id}-past{n}",
                )
            )
        if c.annoyance > 0.0054:  # the most annoyed tenth has unsubscribed from e-mail
            quit_at = max(c.first_seen_at, at - timedelta(days=10))
            events.append(
                Event(f"{c.user_id}-unsub", c.user_id, EventType.UNSUBSCRIBED, quit_at, channel=Channel.EMAIL)
            )
    for i in range(0, len(events), 2000):
        store.record_events(events[i : i + 2000], at)


@dataclass
class CampaignOutcome:
    """A played campaign: the run, and for every member it decided whether it was sent (True) or held
    out (False), with each member's true response; ``orders`` drawn over the window."""

    run: CampaignRun
    arms: dict[str, bool] = field(default_factory=dict)
    truth: dict[str, CampaignTruth] = field(default_factory=dict)
    orders: int = 0

    def true_effect(self) -> dict[str, float]:
        """The holdout comparison's true effect per unit (every unit sent against none sent)."""
        units = [self.truth[u] for u in self.arms]
        n = len(units) or 1
        return {
            "conversion": sum(t.incremental_conversion for t in units) / n,
            "revenue": sum(t.incremental_revenue for t in units) / n,
        }

    def true_incremental_revenue(self) -> float:
        """What the run's sends truly add (expected revenue, before cost)."""
        return sum(self.truth[u].incremental_revenue for u, sent in self.arms.items() if sent)


def play_campaign(
    engine: DecisionEngine,
    campaign: Campaign,
    customers: Sequence[Customer],
    *,
    seed: int,
    run_id: str = "sim",
    at: datetime = CAMPAIGN_AT,
    window: timedelta = WINDOW,
) -> CampaignOutcome:
    """Runs ``campaign`` at ``at`` for the store's customers (``customers``, loaded with
    :func:`load_history`), then records every customer's order over the window, drawn from their true
    response to what the run decided (sent, or not)."""
    store = engine.store
    assert isinstance(store, Store)
    run = run_campaign(engine, campaign, customer_states(store.db), run_id, at)
    flow = engine.catalog.actions_for(campaign.trigger)[0].flow
    outcome = CampaignOutcome(run)
    events: list[Event] = []
    found = store.find_decisions(
        [campaign_request(campaign, run_id, c.user_id).request_id for c in customers]
    )
    for c in customers:
        truth = true_response(c, flow, at, window)
        stored = found.get(campaign_request(campaign, run_id, c.user_id).request_id)
        sent = False
        if stored is not None:
            decision = stored.decision
            sent = bool(decision.actions)
            if sent or any(r.reason is ReasonCode.HELD_OUT for r in decision.rejected):
                outcome.arms[c.user_id] = sent
                outcome.truth[c.user_id] = truth
        rng = np.random.default_rng([seed, 3, c.index])
        u, when = rng.random(2)
        if u < (truth.p_with if sent else truth.p_without):
            placed = at + timedelta(days=1 + float(when) * (window.days - 2))
            events.append(
                Event(
                    f"{c.user_id}-{campaign.id}-{run_id}-order",
                    c.user_id,
                    EventType.ORDER_PLACED,
                    placed,
                    value=truth.revenue(sent),
                    order_id=f"{c.user_id}-{campaign.id}-{run_id}-order",
                )
            )
    for i in range(0, len(events), 2000):
        store.record_events(events[i : i + 2000], at + window)
    outcome.orders = len(events)
    return outcome


# -- targeting rules against the truth ------------------------------------------------------------------

RULES = ("everyone", "propensity", "uplift", "oracle-blind", "oracle")
PUT_OFF_SHARE = 0.1


def blind_net(customer: Customer, flow: str) -> float:
    """The true net a send is expected to add given only what the store's data shows: the hidden traits
    (being put off at random, price sensitivity) replaced by their population means, knowing the rest (the
    ceiling for any model of the store's data). What the data does show stays: a loyal customer with a
    small basket is put off by construction (``world.population``: persuadability -0.15), whoever they
    are; one in ten of the others is put off at random."""
    past = len(customer.past_orders)
    loyal = past >= 4
    structural = 0.30 * (customer.cart_value > 60) + 0.10 * (past <= 1) - (0.15 if loyal else 0.0)
    mean_sensitivity = 0.003 * (0.3 if loyal else 1.0)  # world.population: uniform(0, 0.006), x 0.3 loyal
    typical = replace(customer, persuadability=structural, price_sensitivity=mean_sensitivity)
    put_off = replace(customer, persuadability=-0.15)
    return (1 - PUT_OFF_SHARE) * true_response(typical, flow).net + PUT_OFF_SHARE * true_response(
        put_off, flow
    ).net


@dataclass(frozen=True)
class TargetingResult:
    """One targeting rule on one population: its sends and their true incremental revenue, net of the
    sends' cost (exact: the sum of the members' true responses)."""

    rule: str
    sends: int
    net: float
    incremental_revenue: float
    incremental_conversions: float


def _result(rule: str, users: Sequence[str], truth: dict[str, CampaignTruth]) -> TargetingResult:
    picked = [truth[u] for u in users]
    return TargetingResult(
        rule,
        len(picked),
        sum(t.net for t in picked),
        sum(t.incremental_revenue for t in picked),
        sum(t.incremental_conversion for t in picked),
    )


@dataclass
class TargetingComparison:
    """The rules on one evaluation population, with what the exploration run's holdout measured and the
    uplift plan's prediction for the sends it chose."""

    seed: int
    audience: int
    eligible: int
    budget: int
    results: dict[str, TargetingResult]
    exploration: CampaignOutcome
    explore_url: str  # the exploration store (its holdout's lift report)
    plan: CampaignPlan  # the uplift rule's plan, made before its run
    run: CampaignOutcome  # the uplift rule's run, played after the plan
    learner: str = ""  # the uplift learner kept

    @property
    def plan_truth(self) -> float:
        """The true incremental revenue (expected, before cost) of the sends the uplift run made."""
        return self.run.true_incremental_revenue()


def explore_and_learn(
    seed: int, customers: int, flow: str, workdir: Path, learner: str | None = None
) -> tuple[CampaignOutcome, UpliftModel, str]:
    """The exploration run (the campaign with its 50 % holdout to everyone in the audience of
    population ``seed``, its orders drawn from the truth), and the uplift model ``nextbest train
    uplift``'s pipeline trains on that run's logged randomized exposures (never on the truth). Returns
    the run, the model and the exploration store's URL (its lift report reads it). ``learner``: the
    uplift learner to keep (default: ``nextbest train uplift``'s, the best Qini on the validation
    slice)."""
    url = f"sqlite:///{workdir}/explore-{flow}-{seed}.db"
    models_dir = workdir / f"models-{flow}-{seed}"
    db = Database(url)
    try:
        upgrade(db)
        catalog = campaign_catalog()
        explorers = population(customers, seed)
        store = Store(db)
        load_history(store, explorers)
        engine = DecisionEngine(catalog, store, clock=lambda: CAMPAIGN_AT)
        exploration = play_campaign(engine, catalog.campaigns[flow], explorers, seed=seed, run_id="explore")
    finally:
        db.dispose()
    train(
        ModelKind.UPLIFT,
        Source(database_url=url, window=WINDOW, as_of=CAMPAIGN_AT + WINDOW + timedelta(days=1)),
        models_dir,
        seed,
        promote_it=True,
        learner=learner,
    )
    uplift = ModelRegistry(models_dir).current.uplift
    if uplift is None:
        raise RuntimeError(f"the uplift model trained in {models_dir} did not load")
    return exploration, uplift, url


def compare_targeting(
    seed: int,
    customers: int,
    *,
    flow: str = "winback",
    budget_share: float = 0.25,
    explore_customers: int | None = None,
    workdir: Path,
    learner: str | None = None,
) -> TargetingComparison:
    """Explores, learns, then targets, as a store would: :func:`explore_and_learn` on population
    ``seed`` (``explore_customers`` customers), then a fresh population of the same store (``seed +
    1000``, ``customers``), no holdout: each rule's sends within a budget of ``budget_share`` of the
    members with something to send. ``everyone`` in scan order, ``propensity`` by P(convert | sent) x
    value x kept (the uplift model's treated arm as the propensity model: trained on the same sends),
    ``uplift`` by expected incremental value (positive only), ``oracle`` by the true net (positive only),
    ``oracle-blind`` by :func:`blind_net`. Each ranking is made dry; then the uplift rule's plan, then its
    run (played: its orders drawn), to check the plan against the run. ``learner``: the uplift learner
    (default: the best Qini on the validation slice)."""
    exploration, uplift, explore_url = explore_and_learn(
        seed, explore_customers or customers, flow, workdir, learner
    )
    target_db = Database(f"sqlite:///{workdir}/target-{flow}-{seed}.db")
    try:
        upgrade(target_db)
        targets = population(customers, seed + 1000)
        truth = {c.user_id: true_response(c, flow) for c in targets}
        target_store = Store(target_db)
        load_history(target_store, targets)
        quiet = campaign_catalog(holdout=False)
        base = quiet.campaigns[flow]

        def engine_with(models: ModelSet) -> DecisionEngine:
            registry = ModelRegistry(None)
            registry.current = models
            return DecisionEngine(quiet, target_store, clock=lambda: CAMPAIGN_AT, models=registry)

        def ranking(models: ModelSet, rule: str) -> list[str]:
            return rank_members(
                engine_with(models), replace(everyone, targeting=rule), customer_states(target_db)
            )

        plain = engine_with(ModelSet())
        dry = plan_campaign(plain, base, customer_states(target_db), CAMPAIGN_AT)
        budget = max(1, round(budget_share * dry.sends))
        everyone = replace(base, max_sends=budget)
        eligible = ranking(ModelSet(), "ranked")  # every member with something to send
        blind = {c.user_id: blind_net(c, flow) for c in targets}
        orders = {
            "everyone": sorted(eligible),  # scan order is user-id order
            "propensity": ranking(ModelSet(propensity=uplift.treated), "propensity"),
            "uplift": ranking(ModelSet(uplift=uplift), "uplift"),
            "oracle-blind": sorted((u for u in eligible if blind[u] > 0), key=lambda u: (-blind[u], u)),
            "oracle": sorted((u for u in eligible if truth[u].net > 0), key=lambda u: (-truth[u].net, u)),
        }
        results = {rule: _result(rule, users[:budget], truth) for rule, users in orders.items()}
        uplift_engine = engine_with(ModelSet(uplift=uplift))
        by_uplift = replace(everyone, targeting="uplift")
        plan = plan_campaign(uplift_engine, by_uplift, customer_states(target_db), CAMPAIGN_AT)
        run = play_campaign(uplift_engine, by_uplift, targets, seed=seed + 1000, run_id="uplift")
        return TargetingComparison(
            seed,
            dry.segment.members,
            dry.sends,
            budget,
            results,
            exploration,
            explore_url,
            plan,
            run,
            str(uplift.card.params.get("learner", "")),
        )
    finally:
        target_db.dispose()
