"""The simulator plays campaigns: the plan against the run, the plan's prediction and the holdout's lift
report against the simulated truth."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from nextbest.campaigns import plan_campaign
from nextbest.catalog import parse_catalog
from nextbest.decision.engine import DecisionEngine
from nextbest.reports import ReportRequest, build_report
from nextbest.simulate.campaigns import (
    CAMPAIGN_AT,
    CAMPAIGN_CATALOG,
    WINDOW,
    campaign_catalog,
    compare_targeting,
    load_history,
    play_campaign,
    true_response,
)
from nextbest.simulate.world import population
from nextbest.store import Database, Store, upgrade
from nextbest.store.scan import customer_states

pytestmark = pytest.mark.slow


def _store(tmp_path: Path, customers: int, seed: int) -> tuple[Database, Store]:
    db = Database(f"sqlite:///{tmp_path}/sim-{seed}.db")
    upgrade(db)
    store = Store(db)
    load_history(store, population(customers, seed))
    return db, store


def test_true_response_is_heterogeneous_so_targeting_matters() -> None:
    truths = [true_response(c, "winback") for c in population(3000, 5)]
    nets = [t.net for t in truths]
    assert min(nets) < 0 < max(nets)
    # the customers likeliest to order when sent are not those a send adds most to
    by_propensity = sorted(truths, key=lambda t: -t.p_with)[:300]
    by_net = sorted(truths, key=lambda t: -t.net)[:300]
    assert sum(t.net for t in by_net) > 2 * sum(t.net for t in by_propensity)


@pytest.mark.parametrize(("flow", "budget"), [("winback", None), ("promo", 150)])
def test_planned_sends_and_refusals_are_the_runs(tmp_path: Path, flow: str, budget: int | None) -> None:
    db, store = _store(tmp_path, 1200, 41)
    try:
        catalog = campaign_catalog()
        campaign = replace(catalog.campaigns[flow], max_sends=budget)
        engine = DecisionEngine(catalog, store, clock=lambda: CAMPAIGN_AT)
        plan = plan_campaign(engine, campaign, customer_states(db), CAMPAIGN_AT)
        played = play_campaign(engine, campaign, population(1200, 41), seed=41)
        run = played.run
        assert plan.sends > 0 and plan.held_out > 0 and plan.refusals["SUPPRESSED"] > 0
        assert (plan.decided, plan.sends, plan.held_out) == (run.decided, run.sent, run.held_out)
        assert plan.decided_refusals == run.refusals
        assert sum(played.arms.values()) == run.sent
        if budget is not None:
            assert run.sent == budget and plan.over_budget > 0
    finally:
        db.dispose()


def test_a_discount_budget_stops_the_ranked_list_where_the_plan_says(tmp_path: Path) -> None:
    """Without models, and at its declared value (not each member's average order), each win-back send
    is expected to give 0.1 x 68 x 15 % = 1.02 of discount: a budget of 10 reaches 9 sends (and the
    held-out members ranked among them), plan and run alike."""
    db, store = _store(tmp_path, 600, 43)
    try:
        declared = CAMPAIGN_CATALOG.replace("    value_from: average_order\n", "")
        assert declared != CAMPAIGN_CATALOG
        catalog = parse_catalog(declared, "declared-values.yaml")
        campaign = replace(catalog.campaigns["winback"], targeting="ranked", max_discount=10.0)
        engine = DecisionEngine(catalog, store, clock=lambda: CAMPAIGN_AT)
        plan = plan_campaign(engine, campaign, customer_states(db), CAMPAIGN_AT)
        run = play_campaign(engine, campaign, population(600, 43), seed=43).run
        assert plan.sends == run.sent == 9 and plan.discount_reached and plan.over_budget > 0
        assert plan.discount_spend == pytest.approx(9 * 0.1 * 68 * 0.15)
        assert (plan.decided, plan.held_out) == (run.decided, run.held_out)
        assert plan.decided_refusals == run.refusals
        assert plan.held_out > 0
    finally:
        db.dispose()


@pytest.mark.parametrize("seed", [51, 52])
def test_the_holdout_lift_report_covers_the_true_effect(tmp_path: Path, seed: int) -> None:
    db, store = _store(tmp_path, 4000, seed)
    try:
        catalog = campaign_catalog()
        engine = DecisionEngine(catalog, store, clock=lambda: CAMPAIGN_AT)
        plan = plan_campaign(engine, catalog.campaigns["winback"], customer_states(db), CAMPAIGN_AT)
        played = play_campaign(engine, catalog.campaigns["winback"], population(4000, seed), seed=seed)
        truth = played.true_effect()
        request = ReportRequest.validated(
            "winback_holdout", as_of=CAMPAIGN_AT + WINDOW + timedelta(days=1), window_days=WINDOW.days
        )
        with db.reader.connect() as conn:
            report = build_report(conn, catalog, request)
        assert report.units == {
            "holdout": sum(1 for s in played.arms.values() if not s),
            "treated": sum(played.arms.values()),
        }
        for metric in ("conversion", "revenue"):
            estimate = report.analysis.metrics[metric].comparisons["treated"].absolute
            assert estimate.ci_low is not None and estimate.ci_high is not None
            assert estimate.ci_low <= truth[metric] <= estimate.ci_high, (metric, estimate, truth)
        conversion = report.analysis.metrics["conversion"].comparisons["treated"].absolute
        assert conversion.ci_low is not None and conversion.ci_low > 0  # the holdout sees the win-back work
        # The plan's minimum detectable effect (80 % power) is about (1.96 + 0.84) / 1.96 of the report's
        # half-width, up to the plan's guess of the conversion rate (the declared base propensity here).
        mde = plan.minimum_detectable_effect()["conversion"].value
        assert mde is not None and conversion.ci_high is not None
        half_width = (conversion.ci_high - conversion.ci_low) / 2
        assert 0.5 < mde / (half_width * 2.8 / 1.96) < 2.0, (mde, half_width)
    finally:
        db.dispose()


def test_uplift_plan_predicts_its_run_and_beats_everyone_and_propensity(tmp_path: Path) -> None:
    """Explore with a holdout, train on the logged exposures, plan and run the uplift rule: the plan's
    sends are the run's, its incremental revenue interval covers the run's true incremental revenue."""
    compared = compare_targeting(61, 1500, explore_customers=6000, workdir=tmp_path)
    plan, run = compared.plan, compared.run.run
    assert (plan.decided, plan.sends, plan.held_out) == (run.decided, run.sent, run.held_out)
    assert plan.decided_refusals == run.refusals
    assert plan.sends == compared.budget == compared.results["uplift"].sends
    low_high = plan.revenue_interval()
    assert low_high is not None
    assert low_high[0] <= compared.plan_truth <= low_high[1], (low_high, compared.plan_truth)
    net = {rule: r.net for rule, r in compared.results.items()}
    assert net["uplift"] > net["everyone"] and net["uplift"] > net["propensity"], net
    assert net["oracle"] >= net["uplift"]
