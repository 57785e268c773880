"""The churn model kind: rows rebuilt from events at cut-offs, a time split whose training labels end
before the test cut-off, both heads trained with a card (AUC, Brier, ECE, reliability), loaded and served
by the registry, and clear errors for what cannot be trained."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from nextbest.cli import main
from nextbest.domain import Channel, Event, EventType
from nextbest.models.artifacts import ModelKind, read_card
from nextbest.models.churn import CHURN_FEATURES, customer_features
from nextbest.models.registry import ModelRegistry, ModelState
from nextbest.state import CustomerState
from nextbest.store import Database, Store, upgrade
from nextbest.training import Source, train
from nextbest.training.churn import calibration_metrics, churn_set, cutoffs, time_split

AS_OF = datetime(2026, 12, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def _store(url: str, customers: int = 400, seed: int = 5) -> None:
    """Customers who order at their own rate over 150 days; a third of them stop ordering at a random
    moment (so recency predicts churn). Each views products now and then and subscribed by e-mail."""
    rng = np.random.default_rng(seed)
    start = AS_OF - 150 * DAY
    events: list[Event] = []
    for i in range(customers):
        user = f"c{i:04d}"
        events.append(Event(f"{user}-sub", user, EventType.SUBSCRIBED, start, channel=Channel.EMAIL))
        rate = float(rng.gamma(2.0, 0.03))  # orders per day
        stop = start + float(rng.uniform(0, 150)) * DAY if rng.random() < 0.35 else AS_OF
        day = 0.0
        while True:
            day += float(rng.exponential(1 / rate))
            at = start + day * DAY
            if at >= min(stop, AS_OF):
                break
            events.append(Event(f"{user}-o{day:.3f}", user, EventType.ORDER_PLACED, at, value=40.0))
            events.append(Event(f"{user}-v{day:.3f}", user, EventType.PRODUCT_VIEWED, at - DAY / 4))
    store = Store(Database(url))
    store.record_events(events, AS_OF)
    store.close()


@pytest.fixture(scope="module")
def store_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('churn') / 'store.db'}"
    db = Database(url)
    upgrade(db)
    db.dispose()
    _store(url)
    return url


@pytest.fixture(scope="module")
def models(store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    source = Source(database_url=store_url, as_of=AS_OF, horizon=14 * DAY, window=7 * DAY, cutoffs=8)
    train(ModelKind.CHURN, source, root, seed=3, promote_it=True, command="test")
    return root


def test_features_are_a_function_of_state_and_time() -> None:
    now = datetime(2026, 11, 1, tzinfo=UTC)
    state = CustomerState(
        "a",
        first_seen_at=now - 100 * DAY,
        orders_count=4,
        revenue_total=200.0,
        last_order_at=now - 10 * DAY,
        last_events={EventType.ORDER_PLACED: now - 10 * DAY, EventType.CART_ABANDONED: now - 2 * DAY},
    )
    row = dict(zip(CHURN_FEATURES, customer_features(state, now), strict=True))
    assert row["tenure_days"] == 100 and row["days_since_order"] == 10 and row["days_since_cart"] == 2
    assert row["average_order_value"] == 50 and row["days_since_event"] == 2
    assert np.isnan(row["days_since_engagement"]) and np.isnan(row["days_since_view"])
    empty = customer_features(CustomerState("b"), now)
    assert np.isnan(empty[CHURN_FEATURES.index("average_order_value")])


def test_rows_and_labels_come_from_the_events_at_each_cutoff(store_url: str) -> None:
    db = Database(store_url)
    try:
        data = churn_set(db, AS_OF, 14 * DAY, 7 * DAY, count=8)
    finally:
        db.dispose()
    cuts = cutoffs(AS_OF, 14 * DAY, 7 * DAY, 8)
    assert data.cutoffs == cuts and cuts[-1] == AS_OF - 14 * DAY and cuts[0] == cuts[-1] - 49 * DAY
    assert data.x.shape == (data.churn.size, len(CHURN_FEATURES))
    # An order within 7 days is an order within 14: a buyer of the window is never a churner.
    assert not np.any((data.purchase == 1) & (data.churn == 1))
    # Every customer subscribed at the start, before every cut-off: one row per customer per cut-off.
    assert data.churn.size == 400 * 8
    parts = time_split(data, 14 * DAY)
    test_cut = cuts[-1].timestamp()
    assert np.all(data.cutoff[parts.test] == test_cut)
    # No training or validation label reaches into the test period.
    assert np.all(data.cutoff[parts.train] + 14 * 86400 < test_cut)
    assert np.all(data.cutoff[parts.valid] + 14 * 86400 <= test_cut)
    assert data.cutoff[parts.valid].min() > data.cutoff[parts.train].max()


def test_the_card_shows_discrimination_and_calibration_of_both_heads(models: Path) -> None:
    version = (models / "churn" / "PROMOTED").read_text().strip()
    card = read_card(models / "churn" / version)
    assert card.kind is ModelKind.CHURN and card.features == list(CHURN_FEATURES)
    assert card.params["horizon_days"] == 14 and card.params["window_days"] == 7
    assert card.data["split"].startswith("time") and card.data["test_cutoff"] == "2026-11-17T00:00:00+00:00"
    for head in ("churn", "purchase"):
        m = card.metrics["test"][head]
        assert m["rows"] == 400
        # Recency carries the signal this store plants: the model must find it, and beat the base rate.
        assert m["auc"] > 0.7, m["auc"]
        assert m["brier"] < m["base_brier"] and 0 <= m["ece"] < 0.1
        assert sum(r["rows"] for r in m["reliability"]) == m["rows"]


def test_the_registry_serves_the_promoted_churn_model(models: Path) -> None:
    loaded = ModelRegistry(models).current
    status = next(s for s in loaded.statuses if s.kind is ModelKind.CHURN)
    assert status.state is ModelState.LOADED and loaded.churn is not None
    now = AS_OF
    lapsed = CustomerState("x", first_seen_at=now - 150 * DAY, orders_count=3, last_order_at=now - 90 * DAY)
    active = CustomerState("y", first_seen_at=now - 150 * DAY, orders_count=9, last_order_at=now - 2 * DAY)
    scores = loaded.churn.score([lapsed, active], now)
    assert scores["churn_risk"][0] > scores["churn_risk"][1]
    assert scores["purchase_propensity"][0] < scores["purchase_propensity"][1]
    assert np.all((scores["churn_risk"] > 0) & (scores["churn_risk"] < 1))


def test_a_churn_card_with_other_features_is_incompatible(models: Path, tmp_path: Path) -> None:
    version = (models / "churn" / "PROMOTED").read_text().strip()
    target = tmp_path / "churn" / version
    target.mkdir(parents=True)
    for f in (models / "churn" / version).iterdir():
        (target / f.name).write_bytes(f.read_bytes())
    card = json.loads((target / "card.json").read_text())
    card["feature_set"] = "customer-v0"
    (target / "card.json").write_text(json.dumps(card))
    (tmp_path / "churn" / "PROMOTED").write_text(version)
    status = next(s for s in ModelRegistry(tmp_path).statuses if s.kind is ModelKind.CHURN)
    assert status.state is ModelState.INCOMPATIBLE and "customer-v1" in status.detail


def test_calibration_metrics_add_the_brier_score() -> None:
    y = np.array([0.0, 1.0, 1.0, 0.0])
    p = np.array([0.1, 0.8, 0.6, 0.3])
    m = calibration_metrics(y, p)
    assert m["brier"] == pytest.approx((0.01 + 0.04 + 0.16 + 0.09) / 4)
    assert m["base_brier"] == pytest.approx(0.25)


def test_training_errors_are_one_line(
    store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--database-url", store_url, "--models-dir", str(tmp_path), "--as-of", AS_OF.isoformat()]
    with pytest.raises(SystemExit) as caught:
        main(["train", "churn", *args, "--horizon-days", "7", "--window-days", "14"])
    assert "must not exceed --horizon-days" in str(caught.value)
    with pytest.raises(SystemExit) as caught:
        main(["train", "churn", *args, "--horizon-days", "60", "--cutoffs", "3"])
    assert "do not reach back far enough" in str(caught.value) and "--horizon-days" in str(caught.value)
    with pytest.raises(SystemExit):
        main(["train", "no-such-kind", *args])
    assert "invalid choice: 'no-such-kind'" in capsys.readouterr().err


def test_training_from_a_database_nextbest_never_wrote_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'other.db'}"
    assert main(["train", "churn", "--database-url", url, "--models-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "has no nextbest tables" in err and len(err.strip().splitlines()) == 1
