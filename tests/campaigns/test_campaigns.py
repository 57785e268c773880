"""Campaigns: validated in the catalog, planned (a dry run whose sends and refusals are the run's), run
through decide_batch within a budget, resumable and idempotent per (run, customer)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from nextbest.campaigns import OutsideRunWindowError, iter_campaign, plan_campaign, run_campaign
from nextbest.catalog import Catalog, parse_catalog
from nextbest.cli import main
from nextbest.decision.engine import DecisionEngine
from nextbest.domain import Channel, Event, EventType
from nextbest.errors import CatalogError
from nextbest.store import Database, Store, upgrade
from nextbest.store.scan import customer_states
from nextbest.store.schema import decisions
from tests.conftest import uid

NOW = datetime(2026, 11, 23, 10, tzinfo=UTC)
CATALOG = """
version: 1
channels:
  email: {requires_consent: true}
  push: {requires_consent: true}
flows:
  promo:
    priority: 20
  orders:
    priority: 90
policy:
  caps:
    - {id: weekly, classes: [promotional], limit: 1, window: 7d}
actions:
  - id: autumn_email
    flow: promo
    channel: email
    class: promotional
    triggers: [campaign_autumn]
    value: 40.0
    base_propensity: 0.05
  - id: autumn_push
    flow: promo
    channel: push
    class: promotional
    triggers: [campaign_autumn]
    value: 10.0
    base_propensity: 0.05
  - id: order_notice
    flow: orders
    channel: email
    class: transactional
    triggers: [order_placed]
segments:
  buyers:
    condition: customer.orders_count > 0
campaigns:
  autumn:
    audience: buyers
    trigger: campaign_autumn
    start: 2026-11-01T00:00:00Z
    stop: 2026-12-01T00:00:00Z
    BUDGET
"""


def _catalog(budget: str = "") -> Catalog:
    return parse_catalog(CATALOG.replace("BUDGET", budget), "campaign.yaml")


@pytest.mark.parametrize(
    ("change", "path", "problem"),
    [
        (("audience: buyers", "audience: nobody"), "campaigns.autumn.audience", "unknown segment 'nobody'"),
        (
            ("trigger: campaign_autumn\n    start", "trigger: order_placed\n    start"),
            "campaigns.autumn.trigger",
            "must be promotional; order_notice answers 'order_placed'",
        ),
        (
            ("trigger: campaign_autumn\n    start", "trigger: nothing\n    start"),
            "campaigns.autumn.trigger",
            "no action",
        ),
        (
            ("stop: 2026-12-01T00:00:00Z", "stop: 2026-10-01T00:00:00Z"),
            "campaigns.autumn.stop",
            "after start",
        ),
        (
            ("    BUDGET", "    budget: {sends: -5}"),
            "campaigns.autumn.budget.sends",
            "greater than or equal to 1",
        ),
        (("    BUDGET", "    holdout: nope"), "campaigns.autumn.holdout", "unknown experiment 'nope'"),
        (("start: 2026-11-01T00:00:00Z", "start: 2026-11-01T00:00:00"), "campaigns.autumn.start", "timezone"),
    ],
)
def test_bad_campaigns_are_catalog_errors_naming_the_path(
    change: tuple[str, str], path: str, problem: str
) -> None:
    text = CATALOG.replace(*change).replace("BUDGET", "")
    with pytest.raises(CatalogError) as caught:
        parse_catalog(text, "c.yaml")
    lines = [p for p in caught.value.problems if path in p]
    assert lines and problem in lines[0], caught.value.problems


def _store(url: str, users: int, consenting: int, push: int = 0) -> tuple[Store, list[str]]:
    """``users`` buyers (one order each), the first ``consenting`` with email consent, the last ``push``
    with push consent, and one customer who never ordered (not in the segment)."""
    db = Database(url)
    upgrade(db)
    store = Store(db)
    ids = [uid("camp") for _ in range(users)]
    at = NOW - timedelta(days=20)
    events = [Event(f"{u}-o", u, EventType.ORDER_PLACED, at, value=30.0) for u in ids]
    events += [
        Event(f"{u}-c", u, EventType.CONSENT_CHANGED, at, channel=Channel.EMAIL, consent_granted=True)
        for u in ids[:consenting]
    ]
    events += [
        Event(f"{u}-p", u, EventType.CONSENT_CHANGED, at, channel=Channel.PUSH, consent_granted=True)
        for u in (ids[-push:] if push else [])
    ]
    browser = uid("browser")
    events.append(Event(f"{browser}-v", browser, EventType.PRODUCT_VIEWED, at))
    store.record_events(events, at)
    return store, ids


def _campaign_decisions(db: Database, prefix: str) -> int:
    with db.reader.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(decisions).where(decisions.c.request_id.like(f"{prefix}%"))
            ).scalar_one()
        )


def test_plan_is_what_the_run_does_and_a_rerun_sends_nobody_twice(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/c.db"
    catalog = _catalog()
    store, _ = _store(url, users=9, consenting=6)
    engine = DecisionEngine(catalog, store, clock=lambda: NOW)
    campaign = catalog.campaigns["autumn"]
    db = store.db
    plan = plan_campaign(engine, campaign, customer_states(db), NOW)
    # Refusals count candidates: 3 members without email consent, and all 9 without push consent.
    assert (plan.segment.members, plan.sends, plan.refusals["NO_CONSENT"]) == (9, 6, 3 + 9)
    assert plan.by_channel == {"email": 6}
    assert _campaign_decisions(db, "campaign:") == 0  # a plan writes nothing

    run = run_campaign(engine, campaign, customer_states(db), "w1", NOW, batch_size=4)
    assert (run.segment.members, run.decided, run.sent, run.replayed) == (9, 9, 6, 0)
    assert run.refusals == plan.refusals
    assert _campaign_decisions(db, "campaign:autumn:w1:") == 9

    again = run_campaign(engine, campaign, customer_states(db), "w1", NOW, batch_size=4)
    assert (again.decided, again.sent, again.replayed) == (9, 6, 9)
    assert _campaign_decisions(db, "campaign:autumn:w1:") == 9

    # A second wave a day later: the weekly cap refuses everyone the first wave reached.
    later = DecisionEngine(catalog, store, clock=lambda: NOW + timedelta(days=1))
    wave = run_campaign(later, campaign, customer_states(db), "w2", NOW + timedelta(days=1))
    assert (wave.sent, wave.refusals["FREQUENCY_CAP"]) == (0, 6)
    store.close()


def test_a_run_killed_halfway_then_run_again_decides_each_customer_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/k.db"
    catalog = _catalog()
    store, _ = _store(url, users=10, consenting=10)
    engine = DecisionEngine(catalog, store, clock=lambda: NOW)
    campaign = catalog.campaigns["autumn"]

    class KilledError(Exception):
        pass

    def kill_after_first_batch(run: object) -> None:
        raise KilledError

    with pytest.raises(KilledError):
        run_campaign(
            engine,
            campaign,
            customer_states(store.db),
            "r",
            NOW,
            batch_size=3,
            progress=kill_after_first_batch,
        )
    assert _campaign_decisions(store.db, "campaign:autumn:r:") == 3
    done = run_campaign(engine, campaign, customer_states(store.db), "r", NOW, batch_size=3)
    assert (done.decided, done.replayed, done.sent) == (10, 3, 10)
    assert _campaign_decisions(store.db, "campaign:autumn:r:") == 10
    store.close()


def test_the_budget_is_never_overshot_and_the_window_is_kept(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/b.db"
    catalog = _catalog("budget: {sends: 4}")
    store, _ = _store(url, users=10, consenting=10)
    engine = DecisionEngine(catalog, store, clock=lambda: NOW)
    campaign = catalog.campaigns["autumn"]
    plan = plan_campaign(engine, campaign, customer_states(store.db), NOW)
    assert (plan.sends, plan.over_budget) == (4, 6)
    run = run_campaign(engine, campaign, customer_states(store.db), "b", NOW, batch_size=3)
    assert (run.sent, run.decided, run.budget_reached) == (4, 4, True)
    assert _campaign_decisions(store.db, "campaign:autumn:b:") == 4
    with pytest.raises(OutsideRunWindowError, match="runs from 2026-11-01 00:00Z to 2026-12-01 00:00Z"):
        run_campaign(engine, campaign, customer_states(store.db), "late", NOW + timedelta(days=30))
    store.close()


@pytest.mark.slow
def test_campaign_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    store, _ = _store(url, users=5, consenting=3)
    store.close()
    catalog = tmp_path / "catalog.yaml"
    # The CLI decides at the real clock: a window around it.
    now = datetime.now(UTC)
    catalog.write_text(
        CATALOG.replace("BUDGET", "")
        .replace("2026-11-01T00:00:00Z", (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"))
        .replace("2026-12-01T00:00:00Z", (now + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    )
    monkeypatch.setenv("NEXTBEST_MODELS_DIR", "")
    args = ["--catalog", str(catalog), "--database-url", url]
    assert main(["campaign", "plan", "autumn", "--format", "json", *args]) == 0
    planned = json.loads(capsys.readouterr().out)
    assert (planned["audience"], planned["sends"], planned["refusals"]) == (5, 3, {"NO_CONSENT": 2 + 5})
    assert main(["campaign", "run", "autumn", "--run-id", "x", "--quiet", *args]) == 0
    assert "5 decided (0 replayed from an earlier attempt), 3 sent" in capsys.readouterr().out
    assert main(["campaign", "run", "autumn", "--run-id", "x", *args]) == 0
    captured = capsys.readouterr()
    assert "5 decided (5 replayed from an earlier attempt), 3 sent" in captured.out
    assert "6 scanned, 5 decided, 3 sent" in captured.err  # the progress line (the browser is scanned too)
    assert main(["campaign", "run", "nope", *args]) == 2
    assert capsys.readouterr().err.startswith("nextbest campaign: no campaign 'nope'")
    assert main(["campaign", "run", "autumn", "--batch-size", "0", *args]) == 2
    assert "--batch-size must be 1 to 500" in capsys.readouterr().err
    # A ':' in a run id could make two runs' request ids collide (campaign:<id>:<run>:<user>).
    assert main(["campaign", "run", "autumn", "--run-id", "a:b", *args]) == 2
    assert "--run-id 'a:b' must be 1-64 of" in capsys.readouterr().err


def test_ranked_targeting_spends_the_budget_on_the_best_scored_members_first(tmp_path: Path) -> None:
    # Email (value 40) scores 2.0 and push (value 10) 0.5: with a budget of 5, the 4 email-reachable
    # members come first, then one push-reachable member; the rest are never decided.
    text = CATALOG.replace("BUDGET", "budget: {sends: 5}\n    targeting: ranked")
    catalog = parse_catalog(text, "ranked.yaml")
    store, ids = _store(f"sqlite:///{tmp_path}/r.db", users=10, consenting=4, push=6)
    engine = DecisionEngine(catalog, store, clock=lambda: NOW)
    campaign = catalog.campaigns["autumn"]
    plan = plan_campaign(engine, campaign, customer_states(store.db), NOW)
    assert (plan.sends, plan.over_budget, plan.by_channel) == (5, 5, {"email": 4, "push": 1})
    assert plan.expected_value == pytest.approx(4 * 2.0 + 0.5)
    run = run_campaign(engine, campaign, customer_states(store.db), "r1", NOW, batch_size=2)
    assert (run.sent, run.decided, run.budget_reached) == (5, 5, True)
    with store.db.reader.connect() as conn:
        decided = {
            r.request_id.rsplit(":", 1)[1]
            for r in conn.execute(
                select(decisions.c.request_id).where(decisions.c.request_id.like("campaign:%"))
            )
        }
    assert set(ids[:4]) <= decided and len(decided) == 5
    with pytest.raises(CatalogError, match="ranked targeting needs a budget"):
        parse_catalog(CATALOG.replace("BUDGET", "targeting: ranked"), "r.yaml")
    store.close()


def test_a_campaign_valued_by_the_average_order_plans_each_members_usual_order(tmp_path: Path) -> None:
    # The buyers' one order was 30.0: valued by it, the e-mail scores 0.05 x 30 = 1.5 (2.0 at its
    # declared 40), in the ranked order as in the plan's expected revenue.
    text = CATALOG.replace("BUDGET", "budget: {sends: 4}\n    targeting: ranked").replace(
        "value: 40.0", "value: 40.0\n    value_from: average_order"
    )
    catalog = parse_catalog(text, "average.yaml")
    store, _ids = _store(f"sqlite:///{tmp_path}/a.db", users=6, consenting=4)
    engine = DecisionEngine(catalog, store, clock=lambda: NOW)
    plan = plan_campaign(engine, catalog.campaigns["autumn"], customer_states(store.db), NOW)
    assert plan.sends == 4
    assert plan.expected_value == pytest.approx(4 * 0.05 * 30.0)
    assert plan.reached_revenue == pytest.approx(4 * 0.05 * 30.0)
    store.close()


def test_iter_campaign_decides_only_the_batches_asked_for(tmp_path: Path) -> None:
    catalog = _catalog()
    store, _ = _store(f"sqlite:///{tmp_path}/i.db", users=7, consenting=7)
    engine = DecisionEngine(catalog, store, clock=lambda: NOW)
    campaign = catalog.campaigns["autumn"]
    batches = iter_campaign(engine, campaign, customer_states(store.db), "i", NOW, batch_size=3)
    assert _campaign_decisions(store.db, "campaign:autumn:i:") == 0  # nothing before the first is asked
    first = next(batches)
    assert (first.decided, first.sent) == (3, 3)
    batches.close()  # the consumer went away (a cancelled stream): the run stops after that batch
    assert _campaign_decisions(store.db, "campaign:autumn:i:") == 3
    seen = [
        (r.decided, r.replayed)
        for r in iter_campaign(engine, campaign, customer_states(store.db), "i", NOW, batch_size=3)
    ]
    assert seen == [(3, 3), (6, 3), (7, 3)]  # resumed: the first batch replayed, each batch yielded once
    with pytest.raises(OutsideRunWindowError):  # checked when called, before any item is asked for
        iter_campaign(engine, campaign, customer_states(store.db), "i", NOW + timedelta(days=30))
    with pytest.raises(ValueError, match="batch size must be 1 to 500"):
        iter_campaign(engine, campaign, customer_states(store.db), "i", NOW, batch_size=0)
    empty = parse_catalog(CATALOG.replace("BUDGET", "").replace("orders_count > 0", "orders_count > 99"), "e")
    nobody = DecisionEngine(empty, store, clock=lambda: NOW)
    only = list(iter_campaign(nobody, empty.campaigns["autumn"], customer_states(store.db), "e", NOW))
    assert len(only) == 1 and (only[0].segment.scanned, only[0].decided) == (8, 0)
    store.close()


def test_a_ranked_run_started_again_does_not_spend_its_budget_twice(tmp_path: Path) -> None:
    # Budget 4, batches of 2, killed after the first batch. Started again, the two members it reached
    # would now be refused by the weekly cap in a dry run; they must still count (they replay), so the
    # run ends with 4 sends in all, not 2 + 4.
    catalog = parse_catalog(CATALOG.replace("BUDGET", "budget: {sends: 4}\n    targeting: ranked"), "r.yaml")
    store, _ = _store(f"sqlite:///{tmp_path}/rr.db", users=10, consenting=10)
    engine = DecisionEngine(catalog, store, clock=lambda: NOW)
    campaign = catalog.campaigns["autumn"]

    class KilledError(Exception):
        pass

    def kill(run: object) -> None:
        raise KilledError

    with pytest.raises(KilledError):
        run_campaign(engine, campaign, customer_states(store.db), "rr", NOW, batch_size=2, progress=kill)
    assert _campaign_decisions(store.db, "campaign:autumn:rr:") == 2
    done = run_campaign(engine, campaign, customer_states(store.db), "rr", NOW, batch_size=2)
    assert (done.sent, done.replayed, done.budget_reached) == (4, 2, True)
    assert _campaign_decisions(store.db, "campaign:autumn:rr:") == 4
    store.close()
