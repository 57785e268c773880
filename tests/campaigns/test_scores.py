"""Predicted scores as customer attributes: ``customer.churn_risk`` and ``customer.purchase_propensity``
validated in segment conditions, stored by ``nextbest score`` with the model version, read by segment
scans, stale once the customer changes (no cost on the event path), and computed again lazily."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from sqlalchemy import select

from nextbest.campaigns import count_segment, in_segment
from nextbest.campaigns.scores import NoScoresError, audience_states, rescorer, score_store
from nextbest.catalog import RuleEvaluationError, bundled_catalog_path, parse_catalog
from nextbest.cli import main
from nextbest.domain import Event, EventType
from nextbest.errors import CatalogError
from nextbest.models.churn import CHURN_FEATURES, CustomerScorer
from nextbest.state import CustomerState
from nextbest.state.scored import scores_of, with_scores
from nextbest.store import Database, Store
from nextbest.store.erasure import Erasure
from nextbest.store.scan import ScoreTally, customer_states
from nextbest.store.scores import customer_scores, score_summary
from tests.conftest import uid

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
AT_RISK = "\nsegments:\n  at_risk:\n    condition: customer.churn_risk > 0.6\n"
_RECENCY = CHURN_FEATURES.index("days_since_order")


class _Recency:
    """A stand-in model: churn risk grows with the days since the last order (never ordered: 0.9)."""

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def predict(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        days = x[:, _RECENCY]
        return np.where(np.isnan(days), 0.9, np.clip(days / self.scale, 0.0, 1.0))


SCORER = CustomerScorer(_Recency(100.0), _Recency(400.0), "churn-test", 30.0, 7.0)


def _segment(condition: str = "customer.churn_risk > 0.6") -> object:
    text = bundled_catalog_path().read_text() + f"\nsegments:\n  s:\n    condition: '{condition}'\n"
    return parse_catalog(text, "t.yaml").segments["s"]


def test_score_fields_are_validated_in_segments() -> None:
    segment = _segment("customer.churn_risk > 0.6 && customer.purchase_propensity < 0.2")
    risky = with_scores(CustomerState("a"), {"churn_risk": 0.8, "purchase_propensity": 0.1})
    safe = with_scores(CustomerState("b"), {"churn_risk": 0.3, "purchase_propensity": 0.1})
    assert in_segment(segment, risky, NOW) and not in_segment(segment, safe, NOW)  # type: ignore[arg-type]
    with pytest.raises(RuleEvaluationError, match="no churn_risk score: run `nextbest score --all`"):
        in_segment(segment, CustomerState("c"), NOW)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("where", "condition", "problem"),
    [
        ("segments", "customer.churn_rsk > 0.6", "unknown field or missing key"),
        ("segments", 'customer.churn_risk > "high"', "CEL type error"),
        ("segments", "customer.churn_risk", "must evaluate to a bool"),
    ],
    ids=["misspelt", "compared-to-a-string", "not-a-bool"],
)
def test_a_bad_score_condition_is_a_catalog_error(where: str, condition: str, problem: str) -> None:
    text = bundled_catalog_path().read_text() + f"\n{where}:\n  bad:\n    condition: '{condition}'\n"
    with pytest.raises(CatalogError) as caught:
        parse_catalog(text, "t.yaml")
    lines = [p for p in caught.value.problems if "segments.bad.condition" in p]
    assert lines and problem in lines[0], caught.value.problems


def test_an_action_rule_may_not_read_a_score() -> None:
    text = (
        bundled_catalog_path()
        .read_text()
        .replace(
            "rule: customer.orders_count == 0",
            "rule: customer.orders_count == 0 && customer.churn_risk > 0.5",
            1,
        )
    )
    with pytest.raises(CatalogError) as caught:
        parse_catalog(text, "t.yaml")
    assert any(
        "customer.churn_risk: predicted scores are read by segments" in p for p in caught.value.problems
    )


def _customers(url: str, days_since_order: Sequence[float]) -> list[str]:
    store = Store(Database(url))
    users = [uid("score") for _ in days_since_order]
    store.record_events(
        [
            Event(f"{u}-o", u, EventType.ORDER_PLACED, NOW - timedelta(days=d), value=20.0)
            for u, d in zip(users, days_since_order, strict=True)
        ],
        NOW,
    )
    store.close()
    return users


def _stored(db: Database, users: Sequence[str]) -> dict[str, tuple[float, str, int]]:
    with db.reader.connect() as conn:
        rows = conn.execute(
            select(
                customer_scores.c.user_id,
                customer_scores.c.churn_risk,
                customer_scores.c.model_version,
                customer_scores.c.customer_version,
            ).where(customer_scores.c.user_id.in_(list(users)))
        ).all()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def test_scores_are_stored_read_by_scans_and_stale_after_an_event(migrated: str) -> None:
    users = _customers(migrated, [10.0, 80.0, 95.0])  # churn risk 0.1, 0.8, 0.95
    db = Database(migrated)
    try:
        run = score_store(db, SCORER, NOW, page=2)
        assert run.scanned == run.written >= 3
        stored = _stored(db, users)
        assert [round(stored[u][0], 6) for u in users] == [0.1, 0.8, 0.95]
        assert {stored[u][1] for u in users} == {"churn-test"}
        segment = _segment()
        mine = [s for s in customer_states(db, scores=True) if s.user_id in users]
        assert {s.user_id for s in mine if in_segment(segment, s, NOW)} == set(users[1:])  # type: ignore[arg-type]

        # An order today: the customer's version moves on, so their stored score is stale.
        Store(db).record_events([Event(f"{users[2]}-o2", users[2], EventType.ORDER_PLACED, NOW)], NOW)
        tally = ScoreTally()
        kept = {s.user_id: s for s in customer_states(db, scores=True, tally=tally) if s.user_id in users}
        assert tally.stale_kept >= 1 and scores_of(kept[users[2]])["churn_risk"] == pytest.approx(0.95)
        tally = ScoreTally()
        fresh = {
            s.user_id: s
            for s in customer_states(db, scores=True, rescore=rescorer(SCORER, NOW), tally=tally)
            if s.user_id in users
        }
        assert tally.rescored >= 1 and scores_of(fresh[users[2]])["churn_risk"] == 0.0  # ordered just now
        assert scores_of(fresh[users[0]])["churn_risk"] == pytest.approx(0.1)

        summary = score_summary(db)
        assert summary.stale >= 1 and summary.versions.get("churn-test", 0) >= 3
        again = score_store(db, SCORER, NOW, stale_only=True)
        assert 1 <= again.written < run.written + 1
        assert _stored(db, [users[2]])[users[2]][0] == 0.0
        assert score_store(db, SCORER, NOW, stale_only=True).written == 0
    finally:
        db.dispose()


def test_erasing_a_customer_erases_their_scores(migrated: str) -> None:
    (user,) = _customers(migrated, [40.0])
    db = Database(migrated)
    try:
        score_store(db, SCORER, NOW)
        assert user in _stored(db, [user])
        Erasure(db).erase_customer(user, NOW, "tester")
        assert _stored(db, [user]) == {}
    finally:
        db.dispose()


def test_a_store_without_scores_or_model_says_how_to_compute_them(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    from nextbest.store import upgrade

    db = Database(url)
    upgrade(db)
    _customers(url, [5.0])
    try:
        with pytest.raises(NoScoresError, match="nextbest score --all"):
            audience_states(db, _segment(), None, NOW)  # type: ignore[arg-type]
        # With a model, missing scores are computed as the scan reads each page.
        members = count_segment(_segment(), audience_states(db, _segment(), SCORER, NOW), NOW)  # type: ignore[arg-type]
        assert (members.scanned, members.members) == (1, 0)
    finally:
        db.dispose()


@pytest.mark.slow
def test_score_and_segment_count_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert main(["migrate", "--database-url", url]) == 0
    _customers(url, [3.0, 50.0])
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(bundled_catalog_path().read_text() + AT_RISK)
    missing = ["--database-url", url, "--models-dir", str(tmp_path / "no-models")]
    capsys.readouterr()
    assert main(["score", "--all", *missing]) == 2
    err = capsys.readouterr().err
    assert "no usable churn model" in err and "nextbest train churn --promote" in err
    assert main(["segment", "count", "at_risk", "--catalog", str(catalog), *missing]) == 2
    assert "run `nextbest train churn --promote`" in capsys.readouterr().err
    assert main(["score", "--status", "--database-url", url]) == 0
    assert capsys.readouterr().out.startswith("0 of 2 customers scored")


def test_a_campaign_audience_on_churn_risk_is_validated_and_counted(tmp_path: Path) -> None:
    from nextbest.campaigns import plan_campaign
    from nextbest.decision.engine import DecisionEngine
    from nextbest.store import upgrade
    from tests.campaigns.test_campaigns import CATALOG

    text = CATALOG.replace("BUDGET", "").replace(
        "  buyers:\n    condition: customer.orders_count > 0",
        "  buyers:\n    condition: customer.orders_count > 0 && customer.churn_risk > 0.6",
    )
    catalog = parse_catalog(text, "campaign.yaml")
    url = f"sqlite:///{tmp_path / 'campaign.db'}"
    db = Database(url)
    upgrade(db)
    users = _customers(url, [5.0, 70.0, 90.0, 200.0])  # churn risk 0.05, 0.7, 0.9, 1.0
    store = Store(db)
    store.record_events(
        [Event(f"{u}-sub", u, EventType.SUBSCRIBED, NOW - timedelta(days=300)) for u in users], NOW
    )
    try:
        score_store(db, SCORER, NOW)
        engine = DecisionEngine(catalog, store, clock=lambda: NOW)
        campaign = catalog.campaigns["autumn"]
        segment = catalog.segments[campaign.audience]
        plan = plan_campaign(engine, campaign, audience_states(db, segment, SCORER, NOW), NOW)
        assert (plan.segment.scanned, plan.segment.members) == (4, 3)
        assert plan.sends == 3 and dict(plan.by_channel) == {"email": 3}
    finally:
        store.close()
