"""The simulated store: its ground truth, its determinism, and the same story over gRPC as in process."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from nextbest.catalog import Catalog, bundled_catalog_path
from nextbest.client import NextbestClient
from nextbest.domain import Channel
from nextbest.experiments import Arm, Experiment
from nextbest.server import NextbestServer
from nextbest.settings import Settings
from nextbest.simulate import (
    START,
    Cart,
    EngineBackend,
    GrpcBackend,
    Message,
    SimulationResult,
    Simulator,
    population,
)
from nextbest.simulate.backends import Decided, SimEvent, SimRequest
from nextbest.simulate.command import SimulationOptions, run_simulation
from nextbest.simulate.truth import experiment_truth
from nextbest.simulate.world import HOUR_RESPONSIVE_FLOWS, Touch, activities
from tests.conftest import sqlite_engine


class Silent:
    """A backend that never sends anything and logs what it is told, in order."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str, object]] = []

    def decide(self, request: SimRequest) -> Decided:
        self.log.append(("decide", request.user_id, request.at))
        return Decided(f"d{len(self.log)}", [])

    def record(self, events: list[SimEvent]) -> list[tuple[str, str]]:
        self.log.extend(("event", e.user_id, e.at) for e in events)
        return []


def _fingerprint(result: SimulationResult) -> list[tuple[str, bool | None, tuple[str, ...]]]:
    return sorted((c.id, c.bought, tuple(m.action_id for m in c.delivered)) for c in result.carts)


def test_the_population_and_its_behaviour_are_the_same_for_a_seed() -> None:
    a, b = population(50, seed=4), population(50, seed=4)
    assert a == b and a != population(50, seed=5)
    assert [activities(c, 14, 4) for c in a] == [activities(c, 14, 4) for c in b]
    kinds = {x.kind for c in a for x in activities(c, 14, 4)}
    assert kinds == {"browse", "cart", "order"}


def test_nothing_is_recorded_before_it_happens_and_each_decision_sees_its_events_first() -> None:
    backend = Silent()
    Simulator(backend, population(80, seed=6), days=10, seed=6).run()
    assert {kind for kind, _, _ in backend.log} == {"decide", "event"}
    by_user: dict[str, list[tuple[str, object]]] = {}
    for kind, user, at in backend.log:
        by_user.setdefault(user, []).append((kind, at))
    for story in by_user.values():
        times = [at for _, at in story if at >= START]  # (onboarding replays history first)
        assert times == sorted(times)  # decisions and events of a customer reach the server in time order


def test_a_cart_knows_its_purchase_probability_under_any_messages() -> None:
    customer = replace(
        population(1, seed=1)[0],
        base_buy=0.2,
        persuadability=0.3,
        price_sensitivity=0.004,
        peak_hour=20,
        time_zone="Europe/London",
    )
    cart = Cart("c1", customer, START, 80.0, ("p1",), 0.5, START + timedelta(hours=30))
    at_peak = START + timedelta(hours=20)  # 20:00 in London in November
    reminder = Message("cart_reminder_email", "cart_abandonment", Channel.EMAIL, at_peak)
    incentive = Message(
        "cart_incentive_email",
        "cart_abandonment",
        Channel.EMAIL,
        at_peak + timedelta(hours=2),
        {"discount_percent": "15"},
    )
    too_late = replace(reminder, send_at=cart.decide_at + timedelta(minutes=1))
    unrelated = Message("browse_reminder_email", "browse_abandonment", Channel.EMAIL, at_peak)
    assert cart.probability([]) == 0.2
    assert cart.probability([too_late]) == 0.2 and cart.probability([unrelated]) == 0.2
    first = customer.open_probability(at_peak, Channel.EMAIL) * 0.3
    assert cart.probability([reminder]) == pytest.approx(0.2 + first)
    second = customer.open_probability(incentive.send_at, Channel.EMAIL) * (0.3 + 0.004 * 15)
    assert cart.probability([incentive, reminder]) == pytest.approx(0.2 + first + 0.6 * second)
    assert cart.order_value([reminder]) == 80.0 and cart.order_value([reminder, incentive]) == 68.0
    put_off = replace(customer, persuadability=-0.5)
    assert Cart("c2", put_off, START, 80.0, (), 0.5, cart.decide_at).probability([reminder]) < 0.2


def test_the_true_effect_of_a_holdout_counts_what_it_held_out_and_what_it_covered() -> None:
    customers = population(2, seed=1)
    treated_unit, held_unit = (
        replace(c, base_buy=0.2, persuadability=0.3, orders_per_day=0.0) for c in customers
    )
    at = START + timedelta(hours=1)
    reminder = Message("cart_reminder_email", "cart_abandonment", Channel.EMAIL, at)
    sent = Cart("a", treated_unit, START, 50.0, (), 0.9, START + timedelta(hours=20))
    sent.delivered.append(reminder)
    sent.scopes.append(frozenset({"holdout_test"}))
    held = Cart("b", held_unit, START, 50.0, (), 0.9, START + timedelta(hours=20))
    held.held["holdout_test"] = [reminder]
    result = SimulationResult(
        [treated_unit, held_unit],
        START,
        START + timedelta(days=7),
        carts=[sent, held],
        units={"holdout_test": {treated_unit.user_id: (START, "on"), held_unit.user_id: (START, "off")}},
    )
    experiment = Experiment("holdout_test", "seed", 2, (Arm("off", 0.5, no_action=True), Arm("on", 0.5)))
    catalog = Catalog("v", "test", "t", {}, {}, ())
    (truth,) = experiment_truth(result, catalog, experiment, as_of=result.end)
    lift_a = sent.probability([reminder]) - 0.2
    lift_b = held.probability([reminder]) - 0.2
    assert truth.units == 2 and truth.arm == "on" and truth.control == "off"
    assert truth.effects["conversion"] == pytest.approx((lift_a + lift_b) / 2)
    assert truth.effects["revenue"] == pytest.approx(50.0 * (lift_a + lift_b) / 2)
    # outside the attribution window the same carts count for nothing
    (late,) = experiment_truth(result, catalog, experiment, as_of=result.end, window=timedelta(hours=10))
    assert late.effects["conversion"] == 0.0


@pytest.mark.slow
def test_splitting_customers_across_threads_changes_no_outcome(tmp_path: Path, catalog: Catalog) -> None:
    customers = population(60, seed=8)
    results = []
    for shards in (1, 3):
        for engine in sqlite_engine(tmp_path / f"s{shards}.db", catalog):
            results.append(Simulator(EngineBackend(engine), customers, days=10, seed=8, shards=shards).run())
    one, three = results
    assert one.decisions == three.decisions and one.events == three.events and one.decisions > 100
    assert _fingerprint(one) == _fingerprint(three)
    assert one.units == three.units


@pytest.fixture(scope="module")
def experiment_server(migrated: str) -> Iterator[NextbestServer]:
    """The bundled catalog, experiments included, on the suite's database (SQLite and PostgreSQL)."""
    settings = Settings(
        port=0, database_url=migrated, catalog=bundled_catalog_path(), workers=8, health_interval=0.2
    )
    srv = NextbestServer(settings)
    srv.start()
    yield srv
    srv.stop(grace=1.0)


@pytest.mark.slow
def test_over_grpc_the_store_gets_the_same_answers_as_in_process(
    experiment_server: NextbestServer, tmp_path: Path, catalog: Catalog
) -> None:
    customers = population(40, seed=21)
    flows = {a.id: a.flow for a in catalog.actions}
    with NextbestClient(experiment_server.address, timeout=10.0) as client:
        client.wait_until_serving()
        remote = Simulator(GrpcBackend(client, flows), customers, days=8, seed=21, shards=2).run()
    for engine in sqlite_engine(tmp_path / "local.db", catalog):
        local = Simulator(EngineBackend(engine), customers, days=8, seed=21).run()
    assert remote.decisions == local.decisions > 50
    assert _fingerprint(remote) == _fingerprint(local)
    assert remote.units == local.units and remote.units  # experiment assignments came back over the wire
    held = [c for c in remote.carts if c.held]
    assert all(m.flow == "cart_abandonment" for c in held for ms in c.held.values() for m in ms)


@pytest.mark.slow
def test_simulate_writes_the_truth_and_sets_each_estimate_beside_it(
    experiment_server: NextbestServer, tmp_path: Path
) -> None:
    lines: list[str] = []
    outcome = run_simulation(
        SimulationOptions(
            customers=60,
            days=7,
            seed=22,
            shards=2,
            target=experiment_server.address,
            truth=tmp_path / "truth.json",
            html_dir=None,
        ),
        say=lines.append,
    )
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert truth["seed"] == 22 and len(truth["customers"]) == 60
    assert truth["run"]["decisions"] == outcome.result.decisions > 0
    assert {e["experiment_id"] for e in truth["experiments"]} >= {"global_holdout", "cart_flow_holdout"}
    assert all(0 <= c["p_without_messages"] <= 1 for c in truth["carts"])
    assert outcome.comparisons, "no experiment had units"
    for c in outcome.comparisons:
        assert math.isfinite(c.truth.effects[c.metric])
    text = "\n".join(lines)
    assert "true effect" in text and "covered" in text and "global_holdout" in text


@pytest.mark.slow
def test_a_unit_enters_an_experiment_at_the_same_moment_whichever_arm_it_is_in(
    tmp_path: Path, catalog: Catalog
) -> None:
    """Before its first exposure nothing in scope has reached a unit, so when (and whether) it enters
    cannot depend on its arm: the held-out winner is logged exactly when a treated one would be sent.
    Played once with (almost) everyone held out and once with everyone treated, every customer enters
    at the same moment — an asymmetry would bias every holdout report by who gets counted."""
    customers = population(80, seed=31)

    def entries(held_share: float) -> dict[str, tuple[object, str]]:
        experiments = tuple(
            replace(e, arms=(Arm("holdout", held_share, no_action=True), Arm("treated", 1 - held_share)))
            if e.id == "global_holdout"
            else e
            for e in catalog.experiments
        )
        variant = replace(catalog, experiments=experiments)
        for engine in sqlite_engine(tmp_path / f"held-{held_share}.db", variant):
            result = Simulator(EngineBackend(engine), customers, days=10, seed=31, shards=1).run()
        return result.units["global_holdout"]

    held, treated = entries(1 - 1e-9), entries(1e-9)
    assert {arm for _, arm in held.values()} == {"holdout"}
    assert {arm for _, arm in treated.values()} == {"treated"}
    assert len(held) > 20
    assert {u: at for u, (at, _) in held.items()} == {u: at for u, (at, _) in treated.items()}


@pytest.mark.slow
def test_a_long_run_reports_its_progress(tmp_path: Path, catalog: Catalog) -> None:
    seen: list[tuple[int, object]] = []
    for engine in sqlite_engine(tmp_path / "progress.db", catalog):
        result = Simulator(
            EngineBackend(engine),
            population(40, seed=9),
            days=8,
            seed=9,
            shards=2,
            progress=lambda n, at: seen.append((n, at)),
            progress_every=0.001,
        ).run()
    assert seen
    counts = [n for n, _ in seen]
    assert counts == sorted(counts) and counts[-1] <= result.decisions
    assert all(START <= at <= result.end for _, at in seen)  # type: ignore[operator]


def test_an_arm_without_units_is_written_as_null_not_as_nan(tmp_path: Path) -> None:
    """A short run leaves some arms without units: their true effect is unknown, written as null (the
    truth file was refused as JSON with NaN in it)."""
    from datetime import UTC, datetime

    from nextbest.simulate.simulator import SimulationResult
    from nextbest.simulate.truth import ArmTruth, write_truth

    start = datetime(2026, 11, 1, tzinfo=UTC)
    result = SimulationResult(customers=[], start=start, end=start + timedelta(days=1))
    arms = [ArmTruth("exp", "b", "a", 0, {"conversion": math.nan, "revenue": math.nan})]
    path = write_truth(tmp_path / "t.json", result, arms, as_of=start, window=timedelta(days=14), seed=1)
    (written,) = json.loads(path.read_text())["experiments"]
    assert written["units"] == 0 and written["effects"] == {"conversion": None, "revenue": None}


class OneEmail(Silent):
    """A backend that answers every abandoned cart with a reminder e-mail three hours later."""

    def decide(self, request: SimRequest) -> Decided:
        super().decide(request)
        if request.trigger != "cart_abandoned":
            return Decided(f"d{len(self.log)}", [])
        at = request.at + timedelta(hours=3)
        return Decided(
            f"d{len(self.log)}", [Message("cart_reminder_email", "cart_abandonment", Channel.EMAIL, at)]
        )


def test_each_actions_expected_opens_are_its_messages_open_probabilities_when_delivered() -> None:
    result = Simulator(OneEmail(), population(80, seed=4), days=10, seed=4).run()
    delivered = [m for cart in result.carts for m in cart.delivered]
    assert result.delivered_by_action == {"cart_reminder_email": len(delivered)} and len(delivered) > 20
    expected = sum(
        cart.customer.open_probability(m.send_at, m.channel) for cart in result.carts for m in cart.delivered
    )
    assert result.opens_by_action["cart_reminder_email"] == pytest.approx(expected)
    assert 0.06 * len(delivered) < expected < 0.95 * len(delivered)


def test_a_non_urgent_message_earns_more_at_the_customers_reading_hour() -> None:
    """A cross-sell at the reading hour brings an order with the flow's full response, 7 h or more away
    with three quarters of it; a cart flow's message brings none this way."""
    customer = replace(population(1, seed=1)[0], peak_hour=20, time_zone="Europe/London")
    at_peak = START + timedelta(hours=20)  # 20:00 in London in November
    cross_sell = Message("cross_sell_email", "cross_sell", Channel.EMAIL, at_peak)
    assert customer.order_probability(cross_sell) == pytest.approx(HOUR_RESPONSIVE_FLOWS["cross_sell"])
    far = replace(cross_sell, send_at=at_peak - timedelta(hours=9))
    assert customer.order_probability(far) == pytest.approx(0.75 * 0.03, rel=1e-3)
    reminder = Message("cart_reminder_email", "cart_abandonment", Channel.EMAIL, at_peak)
    assert customer.order_probability(reminder) == 0.0


def test_a_campaign_email_earns_more_at_the_reading_hour_and_its_order_carries_the_discount() -> None:
    """Win-back, VIP and promotion e-mails answer the hour they arrive like the lifecycle e-mails: the
    full response at the reading hour, three quarters 7 h or more away; the order a 15 %-off win-back
    brings is the typical basket less 15 %."""
    customer = replace(population(1, seed=1)[0], peak_hour=20, time_zone="Europe/London", cart_value=80.0)
    at_peak = START + timedelta(hours=20)
    for action, flow in (
        ("winback_email", "winback"),
        ("vip_early_access_email", "vip"),
        ("promo_black_friday_email", "promo"),
    ):
        sent = Message(action, flow, Channel.EMAIL, at_peak, {"discount_percent": "15"})
        assert customer.order_probability(sent) == pytest.approx(HOUR_RESPONSIVE_FLOWS[flow])
        far = replace(sent, send_at=at_peak - timedelta(hours=9))
        assert customer.order_probability(far) == pytest.approx(0.75 * HOUR_RESPONSIVE_FLOWS[flow], rel=1e-3)
        assert Touch(customer, sent, at_peak).value == 68.0
    plain = Message("cross_sell_email", "cross_sell", Channel.EMAIL, at_peak)
    assert Touch(customer, plain, at_peak).value == 80.0


class WinbackAfterCarts(Silent):
    """A backend that answers every abandoned cart with a win-back e-mail, due at once, sent 5 h later."""

    def decide(self, request: SimRequest) -> Decided:
        super().decide(request)
        if request.trigger != "cart_abandoned":
            return Decided(f"d{len(self.log)}", [])
        sent = Message(
            "winback_email",
            "winback",
            Channel.EMAIL,
            request.at + timedelta(hours=5),
            {"discount_percent": "15"},
        )
        return Decided(f"d{len(self.log)}", [sent], due={"winback_email": request.at})


def test_a_delivered_campaign_email_is_kept_with_its_due_hour_and_brings_orders() -> None:
    """Each win-back e-mail delivered is kept (``Touch``) with the hour it was due, so the truth of its
    send hour is exact; the orders it brings are drawn from that truth."""
    backend = WinbackAfterCarts()
    result = Simulator(backend, population(300, seed=5), days=14, seed=5).run()
    touches = [t for t in result.touches if t.message.action_id == "winback_email"]
    assert len(touches) == result.delivered_by_action["winback_email"] > 50
    assert all(t.message.send_at - t.due == timedelta(hours=5) for t in touches)
    silent = Simulator(Silent(), population(300, seed=5), days=14, seed=5).run()
    assert result.orders > silent.orders  # the induced orders come on top of the same organic ones


class Triggers(Silent):
    """A backend that sends nothing and keeps each request's trigger and context."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[SimRequest] = []

    def decide(self, request: SimRequest) -> Decided:
        self.requests.append(request)
        return super().decide(request)


def test_the_campaign_job_asks_about_every_customer_at_its_moments() -> None:
    """With ``campaigns``, every customer gets a ``scheduled`` request without a cart at each moment;
    without, no request comes at those moments (the store's own triggers are the same either way)."""
    customers = population(40, seed=6)
    moments = [timedelta(days=1, hours=14), timedelta(days=4, hours=14)]
    backend = Triggers()
    Simulator(backend, customers, days=6, seed=6, campaigns=moments).run()
    plain = Triggers()
    Simulator(plain, customers, days=6, seed=6).run()
    at = {START + m for m in moments}
    job = [r for r in backend.requests if r.at in at and r.trigger == "scheduled"]
    assert sorted(r.user_id for r in job) == sorted(c.user_id for c in customers for _ in moments)
    assert all(r.cart_value is None and not r.product_ids for r in job)
    assert not [r for r in plain.requests if r.at in at]
    rest = [(r.user_id, r.trigger, r.at) for r in backend.requests if r.at not in at]
    assert rest == [(r.user_id, r.trigger, r.at) for r in plain.requests]


def test_the_true_effect_of_a_send_time_arm_is_the_best_hour_against_the_due_hour() -> None:
    """Two units of a send-time test: the best-hour one's cross-sell went out at its reading hour, due 9 h
    earlier; the fixed-hour one's when due. The truth is measured on the best-hour unit (both hours known):
    the order's value times P(order) at the reading hour minus at the due hour; a holdout covering
    neither message sees no effect."""
    best_unit, fixed_unit = (
        replace(c, orders_per_day=0.0, peak_hour=20, time_zone="Europe/London", cart_value=50.0)
        for c in population(2, seed=1)
    )
    at_peak = START + timedelta(hours=20)
    due = at_peak - timedelta(hours=9)
    sent = Message("cross_sell_email", "cross_sell", Channel.EMAIL, at_peak)
    touches = [
        Touch(best_unit, sent, due, frozenset({("send_hour", "best_hour")})),
        Touch(fixed_unit, replace(sent, send_at=due), due, frozenset({("send_hour", "fixed_hour")})),
    ]
    result = SimulationResult(
        [best_unit, fixed_unit],
        START,
        START + timedelta(days=7),
        touches=touches,
        units={
            "send_hour": {best_unit.user_id: (START, "best_hour"), fixed_unit.user_id: (START, "fixed_hour")}
        },
    )
    experiment = Experiment(
        "send_hour",
        "seed",
        2,
        (Arm("fixed_hour", 0.5, send_time="fixed"), Arm("best_hour", 0.5, send_time="optimize")),
    )
    catalog = Catalog("v", "test", "t", {}, {}, ())
    (truth,) = experiment_truth(result, catalog, experiment, as_of=result.end)
    gain = best_unit.order_probability(sent) - best_unit.order_probability(replace(sent, send_at=due))
    assert gain > 0.007
    assert truth.units == 1
    assert truth.effects["orders"] == pytest.approx(gain)
    assert truth.effects["revenue"] == pytest.approx(50.0 * gain)
    holdout = Experiment("other", "seed", 2, (Arm("off", 0.5, no_action=True), Arm("on", 0.5)))
    result.units["other"] = {best_unit.user_id: (START, "on")}
    (none,) = experiment_truth(result, catalog, holdout, as_of=result.end)
    assert none.effects["revenue"] == 0.0
