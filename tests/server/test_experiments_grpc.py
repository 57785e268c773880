"""Experiments over gRPC on SQLite and PostgreSQL: what the caller sees and what the exposure log holds."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from nextbest.api.v1 import decision_service_pb2 as pb
from nextbest.catalog import Catalog, bundled_catalog_path
from nextbest.client import NextbestClient, make_event
from nextbest.errors import CatalogError
from nextbest.server import NextbestServer
from nextbest.settings import Settings
from nextbest.store.schema import assignments, exposures
from tests.conftest import find_unit

T0 = datetime(2026, 11, 10, 9, tzinfo=UTC)


@pytest.fixture(scope="session")
def experiment_server(migrated: str) -> Iterator[NextbestServer]:
    srv = NextbestServer(Settings(port=0, database_url=migrated, workers=4, health_interval=0.2))
    srv.start()
    yield srv
    srv.stop(grace=1.0)


@pytest.fixture(scope="session")
def exp_client(experiment_server: NextbestServer) -> Iterator[NextbestClient]:
    with NextbestClient(experiment_server.address, timeout=10.0) as c:
        c.wait_until_serving(timeout=10.0)
        yield c


def rows(server: NextbestServer, table, user: str) -> list[dict]:  # type: ignore[no-untyped-def]
    with server.store.db.reader.connect() as conn:
        return [dict(r) for r in conn.execute(select(table).where(table.c.user_id == user)).mappings()]


def subscribed(client: NextbestClient, catalog: Catalog, arms: dict[str, str]) -> str:
    user = find_unit(catalog, arms)
    client.record_events([make_event("subscribed", user, T0, channel="email")])
    return user


def test_a_held_out_unit_gets_nothing_and_its_counterfactual_is_logged(
    exp_client: NextbestClient, experiment_server: NextbestServer
) -> None:
    catalog = experiment_server.engine.catalog
    user = subscribed(exp_client, catalog, {"global_holdout": "holdout", "cart_flow_holdout": "treatment"})
    reply = exp_client.next_action(user, "cart_abandoned", occurred_at=T0, cart_value=80.0)  # no explain
    assert list(reply.actions) == []
    (held,) = reply.rejected
    assert (held.action_id, held.reason) == ("cart_reminder_email", pb.REASON_CODE_HELD_OUT)
    assert "held out by global_holdout" in held.detail
    got = {(a.experiment_id, a.arm_id, a.held_out, a.action_id) for a in reply.assignments}
    assert got == {
        ("global_holdout", "holdout", True, "cart_reminder_email"),
        ("cart_flow_holdout", "treatment", True, "cart_reminder_email"),
    }
    logged = rows(experiment_server, assignments, user)
    assert {(r["experiment_id"], r["arm_id"], r["held_out"]) for r in logged} == {
        ("global_holdout", "holdout", True),
        ("cart_flow_holdout", "treatment", True),
    }
    holdout = next(r for r in logged if r["experiment_id"] == "global_holdout")
    assert holdout["probability"] == pytest.approx(0.05)
    assert holdout["action_id"] == "cart_reminder_email" and holdout["channel"] == "email"
    assert holdout["parameters"] == {"template": "cart_reminder_v4"}
    assert holdout["send_at"] == T0 + timedelta(hours=1) and holdout["hash_version"] == 2
    assert holdout["decision_id"] == reply.decision_id
    # Nothing was sent, so nothing enters the contact history.
    assert rows(experiment_server, exposures, user) == []


def test_a_treated_unit_is_logged_with_its_arm(
    exp_client: NextbestClient, experiment_server: NextbestServer
) -> None:
    catalog = experiment_server.engine.catalog
    user = subscribed(exp_client, catalog, {"global_holdout": "treated", "cart_flow_holdout": "treatment"})
    reply = exp_client.next_action(user, "cart_abandoned", occurred_at=T0, cart_value=80.0)
    assert [a.action_id for a in reply.actions] == ["cart_reminder_email"]
    assert list(reply.rejected) == []
    logged = {r["experiment_id"]: r for r in rows(experiment_server, assignments, user)}
    assert logged["global_holdout"]["arm_id"] == "treated" and not logged["global_holdout"]["held_out"]
    assert logged["global_holdout"]["probability"] == pytest.approx(0.95)
    assert logged["cart_flow_holdout"]["probability"] == pytest.approx(0.9)
    assert len(rows(experiment_server, exposures, user)) == 1


def test_a_flow_holdout_leaves_other_flows_alone(
    exp_client: NextbestClient, experiment_server: NextbestServer
) -> None:
    catalog = experiment_server.engine.catalog
    user = subscribed(exp_client, catalog, {"global_holdout": "treated", "cart_flow_holdout": "control"})
    reply = exp_client.next_action(user, "cart_abandoned", occurred_at=T0, cart_value=80.0, explain=True)
    assert list(reply.actions) == []
    reasons = {r.action_id: r.reason for r in reply.rejected}
    assert reasons["cart_reminder_email"] == pb.REASON_CODE_HELD_OUT
    # After the welcome journey (7 days), which outranks promotions.
    promo = exp_client.next_action(user, "scheduled", occurred_at=T0 + timedelta(days=8), channels=["email"])
    assert [a.action_id for a in promo.actions] == ["promo_black_friday_email"]


def test_transactional_actions_are_never_held_out(
    exp_client: NextbestClient, experiment_server: NextbestServer
) -> None:
    user = subscribed(exp_client, experiment_server.engine.catalog, {"global_holdout": "holdout"})
    reply = exp_client.next_action(user, "order_placed", occurred_at=T0, channels=["email"])
    assert [a.action_id for a in reply.actions] == ["order_confirmation_email"]
    assert list(reply.assignments) == []


def test_a_replay_returns_the_same_assignments(
    exp_client: NextbestClient, experiment_server: NextbestServer
) -> None:
    user = subscribed(exp_client, experiment_server.engine.catalog, {"global_holdout": "holdout"})
    request_id = uuid.uuid4().hex
    first = exp_client.next_action(
        user, "cart_abandoned", request_id=request_id, occurred_at=T0, cart_value=9.0
    )
    again = exp_client.next_action(
        user, "cart_abandoned", request_id=request_id, occurred_at=T0, cart_value=9.0
    )
    assert again.replayed and list(again.assignments) == list(first.assignments) and first.assignments
    assert list(again.rejected) == list(first.rejected)


@pytest.mark.slow
def test_a_running_experiment_cannot_change_its_weights(migrated: str, tmp_path: Path) -> None:
    data = yaml.safe_load(bundled_catalog_path().read_text())
    exp_id = f"weights_{uuid.uuid4().hex[:8]}"
    data["experiments"] = [
        {
            "id": exp_id,
            "scope": {"flows": ["promo"]},
            "start": "2026-01-01T00:00:00Z",
            "arms": [{"id": "a", "weight": 0.5, "no_action": True}, {"id": "b", "weight": 0.5}],
        }
    ]
    path = tmp_path / "c.yaml"

    def serve(arms_weights: tuple[float, float], seed: str | None = None) -> None:
        exp = data["experiments"][0]
        exp["arms"][0]["weight"], exp["arms"][1]["weight"] = arms_weights
        if seed:
            exp["seed"] = seed
        path.write_text(yaml.safe_dump(data))
        NextbestServer(Settings(port=0, database_url=migrated, catalog=path)).stop(grace=0)

    serve((0.5, 0.5))
    serve((0.5, 0.5))  # unchanged: fine
    with pytest.raises(CatalogError, match="running experiment is immutable"):
        serve((0.2, 0.8))
    serve((0.2, 0.8), seed=f"{exp_id}-v2")  # a new seed restarts it
