"""Campaign targeting rules and the issue's bad input: each a clear error naming the catalog path."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from nextbest.campaigns import OutsideRunWindowError, TargetingError, iter_campaign, plan_campaign
from nextbest.catalog import parse_catalog
from nextbest.cli import main
from nextbest.decision.engine import DecisionEngine
from nextbest.errors import CatalogError
from nextbest.store.scan import customer_states
from tests.campaigns.test_campaigns import CATALOG, NOW, _store


@pytest.mark.parametrize(
    ("change", "path", "problem"),
    [
        # the list: an unknown segment, a CEL error, a budget below zero, a campaign whose actions
        # are not promotional (a run window in the past is a run-time error: below)
        (("audience: buyers", "audience: nobody"), "campaigns.autumn.audience", "unknown segment 'nobody'"),
        (
            ("condition: customer.orders_count > 0", "condition: customer.orders_count >"),
            "segments.buyers.condition",
            "CEL syntax error",
        ),
        (
            ("condition: customer.orders_count > 0", "condition: customer.churn_risky > 0.6"),
            "segments.buyers.condition",
            "unknown field",
        ),
        (
            ("    BUDGET", "    budget: {sends: -1}"),
            "campaigns.autumn.budget.sends",
            "greater than or equal to 1",
        ),
        (
            ("trigger: campaign_autumn\n    start", "trigger: order_placed\n    start"),
            "campaigns.autumn.trigger",
            "must be promotional",
        ),
        # targeting
        (("    BUDGET", "    targeting: propensity"), "campaigns.autumn.targeting", "needs a budget"),
        (("    BUDGET", "    targeting: ranked"), "campaigns.autumn.targeting", "needs a budget"),
        (("    BUDGET", "    targeting: best"), "campaigns.autumn.targeting", "'everyone', 'ranked'"),
        # a budget of discount spend: positive, and only for a ranked rule
        (
            ("    BUDGET", "    budget: {discount: -5}\n    targeting: uplift"),
            "campaigns.autumn.budget.discount",
            "greater than 0",
        ),
        (
            ("    BUDGET", "    budget: {discount: 50}"),
            "campaigns.autumn.budget.discount",
            "needs targeting propensity, ranked or uplift",
        ),
    ],
)
def test_bad_campaign_input_names_the_catalog_path(change: tuple[str, str], path: str, problem: str) -> None:
    with pytest.raises(CatalogError) as caught:
        parse_catalog(CATALOG.replace(*change).replace("BUDGET", ""), "c.yaml")
    lines = [p for p in caught.value.problems if path in p]
    assert lines and problem in lines[0], caught.value.problems


def test_uplift_targeting_without_budget_is_valid() -> None:
    catalog = parse_catalog(CATALOG.replace("BUDGET", "targeting: uplift"), "c.yaml")
    assert catalog.campaigns["autumn"].targeting == "uplift"


def test_a_run_window_in_the_past_names_the_stop(tmp_path: Path) -> None:
    store, _ = _store(f"sqlite:///{tmp_path}/w.db", users=3, consenting=3)
    catalog = parse_catalog(CATALOG.replace("BUDGET", ""), "c.yaml")
    later = datetime(2027, 1, 5, tzinfo=UTC)
    engine = DecisionEngine(catalog, store, clock=lambda: later)
    with pytest.raises(
        OutsideRunWindowError, match=r"campaigns\.autumn\.stop: .*the run window is in the past"
    ):
        iter_campaign(engine, catalog.campaigns["autumn"], customer_states(store.db), "r1", later)
    earlier = datetime(2026, 10, 1, tzinfo=UTC)
    with pytest.raises(OutsideRunWindowError, match=r"campaigns\.autumn\.start: .*not started yet"):
        iter_campaign(engine, catalog.campaigns["autumn"], customer_states(store.db), "r1", earlier)
    store.close()


def test_uplift_targeting_needs_an_uplift_model_covering_the_flow(tmp_path: Path) -> None:
    store, _ = _store(f"sqlite:///{tmp_path}/u.db", users=3, consenting=3)
    catalog = parse_catalog(CATALOG.replace("BUDGET", "targeting: uplift"), "c.yaml")
    engine = DecisionEngine(catalog, store, clock=lambda: NOW)
    campaign = catalog.campaigns["autumn"]
    for attempt in (
        lambda: plan_campaign(engine, campaign, customer_states(store.db), NOW),
        lambda: iter_campaign(engine, campaign, customer_states(store.db), "r1", NOW),
    ):
        with pytest.raises(TargetingError) as caught:
            attempt()
        assert str(caught.value).startswith("campaigns.autumn.targeting: uplift targeting needs an uplift")
        assert "flow promo" in str(caught.value) and "no uplift model is promoted" in str(caught.value)
    store.close()


def test_command_line_errors_for_targeting_and_the_window(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    store, _ = _store(url, users=4, consenting=4)
    store.close()
    now = datetime.now(UTC)
    monkeypatch.setenv("NEXTBEST_MODELS_DIR", "")
    window = CATALOG.replace("2026-11-01T00:00:00Z", (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    window = window.replace("2026-12-01T00:00:00Z", (now + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    uplift = tmp_path / "uplift.yaml"
    uplift.write_text(window.replace("BUDGET", "targeting: uplift"))
    past = tmp_path / "past.yaml"
    past.write_text(
        CATALOG.replace("BUDGET", "")
        .replace("2026-11-01T00:00:00Z", (now - timedelta(days=9)).strftime("%Y-%m-%dT%H:%M:%SZ"))
        .replace("2026-12-01T00:00:00Z", (now - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    )
    for command in ("plan", "run"):
        assert main(["campaign", command, "autumn", "--catalog", str(uplift), "--database-url", url]) == 2
        err = capsys.readouterr().err
        assert err.startswith("nextbest campaign: campaigns.autumn.targeting: uplift targeting needs")
        assert "Traceback" not in err and err.count("\n") == 1
    assert main(["campaign", "run", "autumn", "--catalog", str(past), "--database-url", url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nextbest campaign: campaigns.autumn.stop: ") and "in the past" in err
    # the plan's figures: no uplift model, so no incremental estimate; no holdout, so no MDE
    plain = tmp_path / "plain.yaml"
    plain.write_text(window.replace("BUDGET", ""))
    assert (
        main(
            ["campaign", "plan", "autumn", "--format", "json", "--catalog", str(plain), "--database-url", url]
        )
        == 0
    )
    figures = json.loads(capsys.readouterr().out)
    assert figures["decided"] == 4 and figures["sends"] == 4
    assert figures["incremental"]["revenue"] is None and figures["holdout"]["mde_conversion"] is None
    assert figures["refusals_of_decided"] == figures["refusals"]
