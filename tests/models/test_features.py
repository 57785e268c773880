"""The feature matrix built in one step, and models served by feature name."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from nextbest.catalog import bundled_catalog_path, load_catalog
from nextbest.decision.candidates import Candidate
from nextbest.decision.scoring import score_candidates
from nextbest.domain import DecisionRequest, RequestContext
from nextbest.models import features as feats
from nextbest.models.artifacts import ModelCard, ModelKind, promote, write_artifact
from nextbest.models.registry import ModelRegistry, ModelState
from nextbest.state import CustomerSnapshot, CustomerState, Journey

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)


def _decision() -> tuple[list[Candidate], dict[str, object]]:
    catalog = load_catalog(bundled_catalog_path())
    actions = [a for a in catalog.actions if "product_viewed" in a.triggers or "cart_abandoned" in a.triggers]
    state = CustomerState(
        "u", first_seen_at=NOW - timedelta(days=90), orders_count=2, last_order_at=NOW - timedelta(days=9)
    )
    request = DecisionRequest(
        "r", "u", "cart_abandoned", NOW, RequestContext(cart_value=42.0, product_ids=("p",))
    )
    kwargs: dict[str, object] = {
        "snapshot": CustomerSnapshot(state),
        "request": request,
        "zone": catalog.policy.time_zone,
    }
    return [Candidate.of(a, Journey(active=False)) for a in actions], kwargs


def test_the_one_step_matrix_is_the_row_by_row_one() -> None:
    """``candidate_matrix`` + ``Layout.select`` build what ``logged_matrix`` + ``matrix`` build one
    candidate at a time (the definition training shares), and the same logged bytes."""
    candidates, kw = _decision()
    customer = feats.customer_row(kw["snapshot"], kw["request"], NOW, kw["zone"])  # type: ignore[arg-type]
    rows = [feats.action_columns(c.action, c.channel, c.delay) for c in candidates]
    ids = [c.action.id for c in candidates]
    codes = feats.action_codes(ids[::2])  # some actions unknown to the model: NaN
    full = feats.candidate_matrix(customer, rows)
    logged = feats.logged_matrix(customer, rows)
    assert feats.encode_rows(full) == feats.encode_rows(logged)
    x = feats.Layout.of(feats.FEATURES).select(full, ids, codes)
    np.testing.assert_array_equal(x, feats.matrix(logged, ids, codes))
    assert np.isnan(x[1::2, -1]).all()


def test_the_derived_columns_read_the_customers_orders_alike_in_serving_and_training() -> None:
    """A customer of 90 days with 3 orders worth 240, the last 45 days ago: an average order of 80, and
    45 days into a usual gap of 30 (1.5: overdue). Without an order both are NaN (missing to LightGBM)."""
    request = DecisionRequest("r", "u", "winback", NOW)
    zone = load_catalog(bundled_catalog_path()).policy.time_zone
    buyer = CustomerState(
        "u",
        first_seen_at=NOW - timedelta(days=90),
        orders_count=3,
        revenue_total=240.0,
        last_order_at=NOW - timedelta(days=45),
    )
    rows = [feats.customer_row(CustomerSnapshot(s), request, NOW, zone) for s in (buyer, CustomerState("v"))]
    assert feats.derived(rows[0]) == pytest.approx((80.0, 1.5))
    assert all(np.isnan(feats.derived(rows[1])))
    action = [0.0, 2.0, 50.0, 0.1, 0.0]
    served = np.vstack([feats.candidate_matrix(r, [action]) for r in rows])
    logged = np.vstack([feats.logged_matrix(r, [action]) for r in rows])
    trained = feats.matrix(logged, ["a", "a"], {"a": 0.0})
    columns = [feats.FEATURES.index(name) for name in feats.DERIVED]
    np.testing.assert_array_equal(served[:, columns], trained[:, columns])
    np.testing.assert_array_equal(trained[0, columns], [80.0, 1.5])


def test_a_layout_takes_the_models_features_by_name() -> None:
    names = ["action", "cart_value", "tenure_days", "channel"]
    layout = feats.Layout.of(names)
    assert not layout.identity
    rng = np.random.default_rng(0)
    full = rng.normal(size=(5, len(feats.FEATURES)))
    x = layout.select(full, ["a", "b", "a", "c", "b"], {"a": 0.0, "b": 1.0})
    assert x.flags.c_contiguous and x.shape == (5, 4)
    np.testing.assert_array_equal(x[:, 0], [0.0, 1.0, 0.0, np.nan, 1.0])
    for j, name in enumerate(names[1:], start=1):
        np.testing.assert_array_equal(x[:, j], full[:, feats.FEATURES.index(name)])
    with pytest.raises(ValueError, match="lifetime_value"):
        feats.Layout.of(["tenure_days", "lifetime_value"])


def _train(features: list[str], seed: int = 1) -> lgb.Booster:
    rng = np.random.default_rng(seed)
    n = 3000
    x = rng.normal(size=(n, len(features)))
    if "action" in features:
        x[:, features.index("action")] = rng.integers(0, 3, size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-x[:, 0] - x[:, -1]))).astype(float)
    params = {"objective": "binary", "num_leaves": 7, "verbose": -1, "num_threads": 1, "seed": seed}
    data = lgb.Dataset(
        x, y, feature_name=features, categorical_feature=[f for f in feats.CATEGORICAL if f in features]
    )
    return lgb.train(params, data, num_boost_round=20)


def _promote(root: Path, features: list[str], booster: lgb.Booster, actions: list[str]) -> None:
    card = ModelCard(
        kind=ModelKind.PROPENSITY,
        version="",
        feature_set=feats.FEATURE_SET,
        features=features,
        categorical=[f for f in feats.CATEGORICAL if f in features],
        categories={feats.ACTION: actions},
        files={"model": "model.txt"},
        sha256={},
    )
    directory = write_artifact(root, card, {"model.txt": booster.model_to_string().encode()})
    promote(root, ModelKind.PROPENSITY, directory.name)


def test_a_model_on_other_features_in_another_order_is_served_by_name(tmp_path: Path) -> None:
    """A propensity model trained on a subset of the features, in its own order, scores each candidate
    from the same logged matrix as LightGBM would from its own columns."""
    features = ["local_hour", "action", "cart_value", "days_since_order", "channel", "tenure_days"]
    candidates, kw = _decision()
    actions = sorted({c.action.id for c in candidates})[:3]
    booster = _train(features)
    _promote(tmp_path, features, booster, actions)
    registry = ModelRegistry(tmp_path)
    assert registry.statuses[0].state is ModelState.LOADED
    scored, _ = score_candidates(candidates, NOW, models=registry.current, **kw)  # type: ignore[arg-type]
    customer = feats.customer_row(kw["snapshot"], kw["request"], NOW, kw["zone"])  # type: ignore[arg-type]
    codes = feats.action_codes(actions)
    for s in scored:
        sent = feats.action_columns(s.action, s.channel, s.candidate.delay)
        row = dict(zip(feats.LOGGED, customer + sent, strict=True))
        row["action"] = codes.get(s.action.id, np.nan)
        p = booster.predict(np.array([[row[f] for f in features]]), num_threads=1)[0]
        value = s.action.value_for(42.0) * (1 - s.action.discount)
        assert s.score == pytest.approx(p * value, rel=1e-12, abs=1e-12)
        assert feats.decode(s.features) is not None


def test_a_model_on_features_the_server_does_not_build_is_incompatible(tmp_path: Path) -> None:
    features = ["tenure_days", "lifetime_value"]
    _promote(tmp_path, features, _train(features), [])
    status = ModelRegistry(tmp_path).statuses[0]
    assert status.state is ModelState.INCOMPATIBLE
    assert "lifetime_value" in status.detail
    assert (
        json.loads((tmp_path / "propensity" / status.version / "card.json").read_text())["features"]
        == features
    )


def test_one_row_is_encoded_as_encode_rows_encodes_it() -> None:
    rng = np.random.default_rng(3)
    full = rng.normal(size=(4, len(feats.FEATURES)))
    full[1, 2] = np.nan
    full[2, 0] = -0.0
    for matrix in (full, full.astype(">f8"), np.asfortranarray(full)):
        for row in range(4):
            assert feats.encode_row(matrix, row) == feats.encode_rows(matrix[row : row + 1])[0]
            assert len(feats.encode_row(matrix, row)) == len(feats.LOGGED) * 8
