"""A send-time experiment on a campaign's action: a campaign run sends the best-hour arm's members at
their best hour and the fixed arm's when due, logged like any other arm (its assignment probability with
each exposure), and a plan says the same."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from nextbest.campaigns import campaign_request, plan_campaign, run_campaign
from nextbest.catalog import parse_catalog
from nextbest.decision.engine import DecisionEngine
from nextbest.domain import Channel, Event, EventType, SendTimeSource
from nextbest.store import Database, Store, upgrade
from nextbest.store.scan import customer_states
from tests.campaigns.test_campaigns import CATALOG
from tests.conftest import evening_registry, find_unit

NOW = datetime(2026, 11, 23, 10, tzinfo=UTC)  # a Monday, 10:00 UTC
SEND_HOUR_TEST = """
experiments:
  - id: autumn_send_hour
    scope: {actions: [autumn_email]}
    arms:
      - {id: fixed_hour, weight: 0.5, send_time: fixed}
      - {id: best_hour, weight: 0.5, send_time: optimize}
segments:
"""


def test_a_campaign_run_sends_each_send_time_arm_at_its_hour(tmp_path: Path) -> None:
    catalog = parse_catalog(
        CATALOG.replace("segments:\n", SEND_HOUR_TEST, 1).replace("BUDGET", ""), "campaign.yaml"
    )
    experiment = catalog.experiment("autumn_send_hour")
    assert experiment is not None and experiment.sets_send_time
    db = Database(f"sqlite:///{tmp_path}/c.db")
    upgrade(db)
    store = Store(db)
    units = {
        arm: [find_unit(catalog, {"autumn_send_hour": arm}) for _ in range(3)]
        for arm in ("fixed_hour", "best_hour")
    }
    at = NOW - timedelta(days=20)
    events = []
    for user in (u for users in units.values() for u in users):
        events.append(Event(f"{user}-o", user, EventType.ORDER_PLACED, at, value=30.0))
        events.append(
            Event(
                f"{user}-c", user, EventType.CONSENT_CHANGED, at, channel=Channel.EMAIL, consent_granted=True
            )
        )
    store.record_events(events, at)
    engine = DecisionEngine(catalog, store, clock=lambda: NOW, models=evening_registry())
    campaign = catalog.campaigns["autumn"]

    plan = plan_campaign(engine, campaign, customer_states(db), NOW)
    assert plan.sends == 6
    run = run_campaign(engine, campaign, customer_states(db), "w1", NOW)
    assert (run.decided, run.sent) == (6, 6)
    found = store.find_decisions(
        [campaign_request(campaign, "w1", u).request_id for users in units.values() for u in users]
    )
    expected = {
        "fixed_hour": (NOW, SendTimeSource.FIXED),  # when due: the run's moment, no delay
        "best_hour": (NOW.replace(hour=19), SendTimeSource.POPULATION),  # 19:00 within the 12 h window
    }
    for arm, users in units.items():
        for user in users:
            decision = found[campaign_request(campaign, "w1", user).request_id].decision
            (email,) = [a for a in decision.actions if a.action_id == "autumn_email"]
            assert (email.send_at, email.send_time) == expected[arm], (arm, user)
            (exposure,) = [e for e in decision.exposures if e.experiment_id == "autumn_send_hour"]
            assert (exposure.arm_id, exposure.probability, exposure.held_out) == (arm, 0.5, False)
            assert exposure.action is not None and exposure.action.send_at == email.send_at
    store.close()
