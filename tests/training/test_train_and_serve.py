"""The model loop on a small simulated store: train each kind from the exposure log, check the card, load
it in the engine and see it used; a corrupt or incompatible model leaves decisions on their fallbacks."""

from __future__ import annotations

import math
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml

from nextbest.catalog import Catalog, bundled_catalog_path, parse_catalog
from nextbest.decision.engine import DecisionEngine
from nextbest.domain import (
    Channel,
    DecisionRequest,
    Event,
    EventType,
    ReasonCode,
    RequestContext,
    SendTimeSource,
)
from nextbest.models import features as feats
from nextbest.models.artifacts import ModelKind, promote, read_card, write_artifact
from nextbest.models.registry import ModelRegistry, ModelState
from nextbest.simulate import START, EngineBackend, Simulator, population
from nextbest.store import Database, Store, upgrade
from nextbest.training import Source, train
from nextbest.training.datasets import TrainingSet
from nextbest.training.fit import train_uplift

DAYS = 28
AS_OF = START + timedelta(days=DAYS)
# In the repository (tests/data/README.md): a fresh clone runs the tests that read it.
HILLSTROM = Path(__file__).resolve().parents[1] / "data" / "hillstrom.csv"
SCHEMA = Path(__file__).resolve().parents[2] / "benchmarks" / "hillstrom.yaml"


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory, catalog: Catalog) -> str:
    """A store after four simulated weeks of 600 customers."""
    path = tmp_path_factory.mktemp("sim") / "sim.db"
    url = f"sqlite:///{path}"
    db = Database(url)
    upgrade(db)
    store = Store(db)
    engine = DecisionEngine(catalog, store, clock=lambda: START)
    result = Simulator(EngineBackend(engine), population(600, seed=11), days=DAYS, seed=11, shards=4).run()
    store.close()
    assert len(result.carts) > 300 and result.messages > 300
    return url


@pytest.fixture(scope="module")
def trained(simulated: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = tmp_path_factory.mktemp("models")
    source = Source(database_url=simulated, as_of=AS_OF)
    for kind in ModelKind:
        train(kind, source, models, seed=3, promote_it=True, command="test")
    return models


@pytest.fixture(scope="module")
def plain(catalog: Catalog) -> Catalog:
    """The bundled catalog without experiments: no test customer is held out."""
    data = yaml.safe_load(bundled_catalog_path().read_text())
    data.pop("experiments")
    return parse_catalog(yaml.safe_dump(data), "plain.yaml")


def _subscribed(engine: DecisionEngine, user: str) -> DecisionEngine:
    engine.record_events(
        [Event(f"{user}-sub", user, EventType.SUBSCRIBED, START - timedelta(days=30), channel=Channel.EMAIL)]
    )
    return engine


def _request(user: str, trigger: str = "cart_abandoned", **context: object) -> DecisionRequest:
    return DecisionRequest(
        request_id=f"{user}-{trigger}",
        user_id=user,
        trigger=trigger,
        occurred_at=AS_OF + timedelta(hours=1),
        context=RequestContext(**context),  # type: ignore[arg-type]
        channels=(Channel.EMAIL, Channel.PUSH),
        max_actions=2,
        explain=True,
    )


@pytest.mark.slow
def test_each_kind_trains_with_a_card_and_metrics(trained: Path) -> None:
    for kind in ModelKind:
        versions = [d for d in (trained / kind.value).iterdir() if d.is_dir()]
        assert len(versions) == 1
        card = read_card(versions[0])
        assert card.kind is kind and card.version == versions[0].name
        assert card.libraries["lightgbm"] and card.command == "test"
        assert set(card.sha256) == set(card.files.values())
    propensity = read_card(next(d for d in (trained / "propensity").iterdir() if d.is_dir()))
    assert propensity.features == list(feats.FEATURES)
    assert propensity.data["split"] == "time"
    window = propensity.data["window"]
    assert window["train_end"] <= window["test_start"]  # the test period follows the training period
    test = propensity.metrics["test"]
    assert 0.5 < test["auc"] <= 1 and test["log_loss"] > 0 and 0 <= test["ece"] < 1
    assert sum(r["rows"] for r in test["reliability"]) == test["rows"]
    uplift = read_card(next(d for d in (trained / "uplift").iterdir() if d.is_dir()))
    assert "cart_abandonment" in uplift.flows
    assert set(uplift.metrics["test"]["qini"]) == {"uplift_model", "propensity_ranking", "random"}
    send_time = read_card(next(d for d in (trained / "send-time").iterdir() if d.is_dir()))
    # ~170 test events over 168 hours of the week: the log-likelihood's margin over uniform is noise at
    # this size (+0.01 to +0.04 nats, -0.1 once the simulator sent cross-sells and replenishment
    # reminders); whether the right hours rank first is not.
    hits = send_time.metrics["test"]["top3_hour_hit_rate"]
    assert hits["personal"] > 2 * hits["uniform"] and hits["population"] > 1.5 * hits["uniform"]
    assert math.isfinite(send_time.metrics["test"]["log_likelihood_per_event"]["personal"])


@pytest.mark.slow
def test_training_is_deterministic_for_a_seed(simulated: str, trained: Path, tmp_path: Path) -> None:
    source = Source(database_url=simulated, as_of=AS_OF)
    _, card = train(ModelKind.PROPENSITY, source, tmp_path, seed=3, command="test")
    assert (
        card.version == read_card(next(d for d in (trained / "propensity").iterdir() if d.is_dir())).version
    )
    _, other = train(ModelKind.PROPENSITY, source, tmp_path, seed=4, command="test")
    assert other.version != card.version


@pytest.mark.slow
def test_the_engine_scores_with_the_promoted_models(trained: Path, plain: Catalog, tmp_path: Path) -> None:
    registry = ModelRegistry(trained)
    assert [s.state for s in registry.statuses] == [ModelState.LOADED] * len(ModelKind)  # every kind trained
    store = Store(_fresh_db(tmp_path))
    try:
        with_models = _subscribed(DecisionEngine(plain, store, models=registry), "m1")
        without = _subscribed(DecisionEngine(plain, store), "m2")
        a = with_models.decide(_request("m1", cart_value=120.0, product_ids=("p1",)))
        b = without.decide(_request("m2", cart_value=120.0, product_ids=("p1",)))
        assert a.models == registry.current.versions
        base = {x.action_id: x.score for x in b.actions}
        scored = {x.action_id: x.score for x in a.actions}
        scored.update({r.action_id: None for r in a.rejected if r.reason is ReasonCode.NO_EXPECTED_LIFT})
        assert scored.keys() & base.keys()
        assert any(scored[k] != base[k] for k in scored.keys() & base.keys())
    finally:
        store.close()


@pytest.mark.slow
def test_features_are_logged_with_each_exposure(simulated: str) -> None:
    from sqlalchemy import select

    from nextbest.store.schema import assignments, exposures

    db = Database(simulated)
    try:
        with db.reader.connect() as conn:
            blobs = conn.execute(select(exposures.c.features).limit(50)).scalars().all()
            held = (
                conn.execute(select(assignments.c.features).where(assignments.c.held_out).limit(20))
                .scalars()
                .all()
            )
    finally:
        db.dispose()
    # A simulated month sends hundreds of messages and holds some units out: an empty log is a failure.
    assert len(blobs) == 50, f"{len(blobs)} exposures logged"
    assert held, "no held-out assignment logged"
    for blob in [*blobs, *held]:
        assert blob is not None, "an exposure was logged without its features"
        values = feats.decode(blob)
        assert values is not None and values.size == len(feats.LOGGED)
        assert values[feats.LOGGED.index("orders_count")] >= 0


@pytest.mark.slow
def test_a_corrupt_model_is_reported_and_decisions_fall_back(
    trained: Path, plain: Catalog, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    shutil.copytree(trained, models)
    version = (models / "propensity" / "PROMOTED").read_text().strip()
    (models / "propensity" / version / "model.txt").write_text("tree\nnot a model\n")
    (models / "uplift" / "PROMOTED").unlink()
    registry = ModelRegistry(models)
    states = {s.kind: s for s in registry.statuses}
    assert states[ModelKind.PROPENSITY].state is ModelState.CORRUPT
    assert "SHA-256" in states[ModelKind.PROPENSITY].detail
    assert states[ModelKind.UPLIFT].state is ModelState.MISSING
    assert states[ModelKind.SEND_TIME].state is ModelState.LOADED
    store = Store(_fresh_db(tmp_path))
    try:
        decision = _subscribed(DecisionEngine(plain, store, models=registry), "c1").decide(
            _request("c1", cart_value=80.0, product_ids=("p1",))
        )
    finally:
        store.close()
    by_id = {a.id: a for a in plain.actions}
    assert decision.actions
    for action in decision.actions:
        declared = by_id[action.action_id]
        assert action.score == pytest.approx(declared.base_propensity * declared.value_for(80.0))


@pytest.mark.slow
def test_a_model_trained_on_other_features_is_incompatible(tmp_path: Path) -> None:
    assert HILLSTROM.is_file(), f"{HILLSTROM} is missing: it is part of the repository"
    _, card = train(
        ModelKind.PROPENSITY, Source(csv=HILLSTROM, schema=SCHEMA), tmp_path, promote_it=True, command="test"
    )
    assert card.feature_set == "csv:hillstrom" and card.metrics["test"]["auc"] > 0.55
    status = ModelRegistry(tmp_path).statuses[0]
    assert status.state is ModelState.INCOMPATIBLE
    # The detail names the feature set it was trained on and the one the server builds.
    assert "'csv:hillstrom'" in status.detail and f"'{feats.FEATURE_SET}'" in status.detail


def _synthetic(n: int, effect: float, seed: int = 1) -> TrainingSet:
    rng = np.random.default_rng(seed)
    logged = rng.normal(size=(n, len(feats.LOGGED)))
    treated = rng.random(n) < 0.5
    p = np.clip(0.3 + effect * treated, 0.01, 0.99)
    return TrainingSet(
        x=feats.matrix(logged, ["cart_reminder_email"] * n, {"cart_reminder_email": 0.0}),
        y=(rng.random(n) < p).astype(float),
        features=list(feats.FEATURES),
        feature_set=feats.FEATURE_SET,
        categorical=list(feats.CATEGORICAL),
        categories={feats.ACTION: ["cart_reminder_email"]},
        treated=treated,
        times=np.arange(n, dtype=float),
        flows=["cart_abandonment"],
    )


def test_actions_without_expected_lift_are_rejected(plain: Catalog, tmp_path: Path) -> None:
    """An uplift model that learned the message hurts: the cart reminder is not sent."""
    trained = train_uplift(_synthetic(4000, effect=-0.2), seed=1)
    models = tmp_path / "models"
    directory = write_artifact(models, trained.card, trained.files)
    promote(models, ModelKind.UPLIFT, directory.name)
    registry = ModelRegistry(models)
    assert registry.current.uplift is not None
    store = Store(_fresh_db(tmp_path))
    try:
        decision = _subscribed(DecisionEngine(plain, store, models=registry), "u1").decide(
            _request("u1", cart_value=80.0, product_ids=("p1",))
        )
    finally:
        store.close()
    lifted = [r for r in decision.rejected if r.reason is ReasonCode.NO_EXPECTED_LIFT]
    assert {r.action_id for r in lifted} >= {"cart_reminder_email"}
    assert "uplift -" in lifted[0].detail
    assert "x value 80 " in lifted[0].detail  # the cart at stake, not the action's declared value
    assert all(a.flow != "cart_abandonment" for a in decision.actions)


def test_a_cart_action_is_worth_the_cart_at_stake(plain: Catalog, tmp_path: Path) -> None:
    """Without models the score is base propensity x value, and a cart action's value is the cart."""
    store = Store(_fresh_db(tmp_path))
    try:
        engine = DecisionEngine(plain, store)
        scores = {}
        for user, cart in (("small", 20.0), ("large", 200.0)):
            decision = _subscribed(engine, user).decide(_request(user, cart_value=cart, product_ids=("p1",)))
            scores[user] = {a.action_id: a.score for a in decision.actions}
    finally:
        store.close()
    email = next(a for a in plain.actions if a.id == "cart_reminder_email")
    assert scores["small"]["cart_reminder_email"] == pytest.approx(email.base_propensity * 20.0)
    assert scores["large"]["cart_reminder_email"] == pytest.approx(email.base_propensity * 200.0)


@pytest.mark.slow
def test_send_time_picks_the_customers_best_hour(trained: Path, tmp_path: Path) -> None:
    registry = ModelRegistry(trained)
    store = Store(_fresh_db(tmp_path))
    # The cross-sell e-mail at the customer's best hour (the bundled catalog sends it when due).
    data = yaml.safe_load(bundled_catalog_path().read_text())
    data.pop("experiments")
    (cross_sell,) = [a for a in data["actions"] if a["id"] == "cross_sell_email"]
    cross_sell["send_time"] = "optimize"
    engine = DecisionEngine(parse_catalog(yaml.safe_dump(data), "optimized.yaml"), store, models=registry)
    day = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday
    try:
        # A customer who reads at 19:00 UTC every day, and has ordered (cross-sell needs an order).
        events = [
            Event(f"o{i}", "st1", EventType.OPENED, day - timedelta(days=i, hours=5)) for i in range(1, 15)
        ]
        events.append(
            Event("s", "st1", EventType.SUBSCRIBED, day - timedelta(days=40), channel=Channel.EMAIL)
        )
        events.append(Event("ord", "st1", EventType.ORDER_PLACED, day - timedelta(days=3), value=50.0))
        engine.record_events(events)
        decision = engine.decide(
            DecisionRequest(
                "st1-r", "st1", "order_delivered", day + timedelta(hours=9), channels=(Channel.EMAIL,)
            )
        )
    finally:
        store.close()
    assert decision.actions, decision.rejected
    action = decision.actions[0]
    assert action.send_time is SendTimeSource.PERSONAL
    assert action.send_at.hour == 19


def _fresh_db(tmp_path: Path) -> Database:
    db = Database(f"sqlite:///{tmp_path / 'fresh.db'}")
    upgrade(db)
    return db


def test_the_bundled_models_load() -> None:
    """``make models`` output is committed; the server must be able to load it."""
    from nextbest.models.artifacts import bundled_models_path

    root = bundled_models_path()
    if root is None:
        pytest.skip("no bundled models/ directory in this checkout")
    statuses = ModelRegistry(root).statuses
    assert [(s.kind, s.state) for s in statuses] == [(k, ModelState.LOADED) for k in ModelKind], statuses


@pytest.mark.slow
def test_served_predictions_are_lightgbms_own(trained: Path) -> None:
    """The registry calls LightGBM's C predict directly; it must equal ``Booster.predict`` (to 1e-9)."""
    registry = ModelRegistry(trained)
    models = registry.current
    assert models.propensity is not None and models.uplift is not None
    rng = np.random.default_rng(3)
    for model in (models.propensity, models.uplift.treated, models.uplift.control):
        x = rng.normal(size=(37, len(feats.FEATURES)))
        x[:, -1] = rng.integers(0, len(model.codes), size=37)
        x[::5, 3] = np.nan  # missing values take LightGBM's missing branch either way
        expected = model.booster.predict(x, num_threads=1)
        assert np.max(np.abs(model.predict(x) - expected)) < 1e-9
        assert np.max(np.abs(model.predict(x[:1]) - expected[:1])) < 1e-9
