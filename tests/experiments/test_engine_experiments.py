"""The experiments stage inside the pipeline (in-process engine, SQLite): held-out units are never
treated, suppressed or non-consenting units are never assigned, arms apply their overrides."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nextbest.catalog import bundled_catalog_path, parse_catalog
from nextbest.domain import (
    ActionClass,
    Channel,
    Decision,
    DecisionRequest,
    Event,
    EventType,
    ReasonCode,
    RequestContext,
)
from nextbest.engine import DecisionEngine
from nextbest.experiments import assign
from nextbest.scoring.registry import ModelSet
from nextbest.state import Suppression
from nextbest.store import Database, Store, upgrade
from tests.conftest import find_unit, heavy_holdout_catalog, sqlite_engine

T0 = datetime(2026, 11, 10, 9, tzinfo=UTC)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DecisionEngine]:
    yield from sqlite_engine(tmp_path_factory.mktemp("exp") / "e.db", heavy_holdout_catalog())


EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["subscribe", "unsubscribe", "consent_sms", "bounce", "order"]),
        st.sampled_from([Channel.EMAIL, Channel.SMS, Channel.PUSH]),
    ),
    max_size=4,
)
TRIGGERS = st.sampled_from(["cart_abandoned", "product_viewed", "subscribed", "scheduled", "order_placed"])


def record(engine: DecisionEngine, user: str, history: list[tuple[str, Channel]]) -> None:
    events = []
    for i, (kind, channel) in enumerate(history):
        at = T0 + timedelta(minutes=i)
        eid = f"{user}-{i}"
        if kind == "subscribe":
            events.append(Event(eid, user, EventType.SUBSCRIBED, at, channel=channel))
        elif kind == "unsubscribe":
            events.append(Event(eid, user, EventType.UNSUBSCRIBED, at, channel=channel))
        elif kind == "consent_sms":
            events.append(
                Event(eid, user, EventType.CONSENT_CHANGED, at, channel=Channel.SMS, consent_granted=True)
            )
        elif kind == "bounce":
            events.append(Event(eid, user, EventType.COMPLAINED, at, channel=channel))
        else:
            events.append(Event(eid, user, EventType.ORDER_PLACED, at, value=30.0))
    if events:
        engine.record_events(events)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=EVENTS, trigger=TRIGGERS, max_actions=st.integers(1, 3))
def test_held_out_never_treated_and_gated_never_assigned(
    engine: DecisionEngine, history: list[tuple[str, Channel]], trigger: str, max_actions: int
) -> None:
    user = f"unit-{uuid.uuid4().hex[:10]}"
    record(engine, user, history)
    now = T0 + timedelta(hours=1)
    request = DecisionRequest(
        uuid.uuid4().hex,
        user,
        trigger,
        now,
        RequestContext(cart_value=60.0, product_ids=("sku-1",)),
        max_actions=max_actions,
        explain=True,
    )
    decision = engine.decide(request)
    catalog = engine.catalog
    actions = {a.id: a for a in catalog.actions}
    state = engine.store.load_snapshot(user, now).state
    for chosen in decision.actions:
        action = actions[chosen.action_id]
        if action.action_class is ActionClass.TRANSACTIONAL:
            continue
        for exp in catalog.experiments:
            if exp.active(now) and exp.covers(action.id, action.flow, action.action_class):
                assert not assign(exp, user).held_out, f"{user} held out of {exp.id} but got {action.id}"
    for exposure in decision.exposures:
        channel = state.channel(exposure.action.channel)
        assert channel.suppression is None or (
            channel.suppression is Suppression.UNSUBSCRIBED
            and exposure.action.action_class is ActionClass.TRANSACTIONAL
        ), "a suppressed unit was assigned"
        if catalog.channels[exposure.action.channel].requires_consent:
            assert channel.consent, "a non-consenting unit was assigned"
        assert exposure.arm_id == assign(catalog.experiment(exposure.experiment_id), user).arm_id  # type: ignore[arg-type]
    held = {r.action_id for r in decision.rejected if r.reason is ReasonCode.HELD_OUT}
    assert held.isdisjoint(a.action_id for a in decision.actions)
    assert {e.action.action_id for e in decision.exposures if e.held_out} <= held


def _incentive_step(engine: DecisionEngine, user: str) -> Decision:
    """A subscriber abandons an 80 cart; the decision at the cart flow's 48 h step (the incentive)."""
    engine.record_events([Event(f"{user}-s", user, EventType.SUBSCRIBED, T0, channel=Channel.EMAIL)])
    engine.decide(
        DecisionRequest(uuid.uuid4().hex, user, "cart_abandoned", T0, RequestContext(cart_value=80.0))
    )
    return engine.decide(
        DecisionRequest(
            uuid.uuid4().hex,
            user,
            "scheduled",
            T0 + timedelta(hours=49),
            RequestContext(cart_value=80.0),
            channels=(Channel.EMAIL,),
            explain=True,
        )
    )


def test_an_arm_overrides_the_action_parameters(engine: DecisionEngine) -> None:
    user = find_unit(
        engine.catalog,
        {
            "global_holdout": "treated",
            "cart_flow_holdout": "treatment",
            "cart_incentive_discount": "discount_15",
        },
    )
    step = _incentive_step(engine, user)
    (action,) = step.actions
    assert action.action_id == "cart_incentive_email"
    assert action.parameters["discount_percent"] == "15"
    assert action.parameters["template"] == "cart_incentive_v2_15"
    arms = {e.experiment_id: e.arm_id for e in step.exposures}
    assert arms == {
        "global_holdout": "treated",
        "cart_flow_holdout": "treatment",
        "cart_incentive_discount": "discount_15",
    }


def test_an_arm_that_moves_the_channel_goes_through_that_channels_gates(tmp_path: Path) -> None:
    data = yaml.safe_load(bundled_catalog_path().read_text())
    data["experiments"] = [
        {
            "id": "to_sms",
            "scope": {"actions": ["cart_reminder_email"]},
            "arms": [
                {"id": "sms", "weight": 1.0 - 1e-9, "channel": "sms", "delay": "30m"},
                {"id": "email", "weight": 1e-9},
            ],
        }
    ]
    db = Database(f"sqlite:///{tmp_path}/c.db")
    upgrade(db)
    store = Store(db)
    engine = DecisionEngine(parse_catalog(yaml.safe_dump(data)), store)
    user = "channel-mover"
    engine.record_events([Event("e1", user, EventType.SUBSCRIBED, T0, channel=Channel.EMAIL)])
    request = DecisionRequest("r1", user, "cart_abandoned", T0, RequestContext(cart_value=80.0), explain=True)
    decision = engine.decide(request)
    moved = {r.action_id: r for r in decision.rejected}["cart_reminder_email"]
    assert moved.reason is ReasonCode.NO_CONSENT and moved.channel is Channel.SMS
    assert moved.detail.startswith("arm moved it to sms: no sms consent")
    engine.record_events(
        [Event("e2", user, EventType.CONSENT_CHANGED, T0, channel=Channel.SMS, consent_granted=True)]
    )
    decision = engine.decide(
        DecisionRequest("r2", user, "cart_abandoned", T0, RequestContext(cart_value=80.0))
    )
    (action,) = decision.actions
    assert (action.action_id, action.channel) == ("cart_reminder_email", Channel.SMS)
    assert action.send_at == T0 + timedelta(minutes=30)
    store.close()


class _Codes:
    codes: dict[str, float] = {}


class _FlatUplift:
    """Every cart action: P(convert) 0.5 if sent, 0.4 if not — worth sending at 10 % off, not at 60 %."""

    treated = _Codes()
    flows = frozenset({"cart_abandonment"})

    def covers(self, action_id: str, flow: str) -> bool:
        return True

    def predict(self, x: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        return np.full(len(x), 0.5), np.full(len(x), 0.4)


class _Registry:
    current = ModelSet(uplift=_FlatUplift())  # type: ignore[arg-type]


def test_the_arms_of_a_discount_test_face_the_same_decision_to_send(tmp_path: Path) -> None:
    """A deeper discount in one arm must not keep that arm's units out of the test: the decision to send
    is scored with the declared discount, the arm's goes out with the message."""
    data = yaml.safe_load(bundled_catalog_path().read_text())
    data["experiments"] = [
        {
            "id": "deep_discount",
            "scope": {"actions": ["cart_incentive_email"]},
            "arms": [
                {"id": "ten", "weight": 0.5},
                {"id": "sixty", "weight": 0.5, "parameters": {"discount_percent": 60}},
            ],
        }
    ]
    catalog = parse_catalog(yaml.safe_dump(data))
    db = Database(f"sqlite:///{tmp_path}/d.db")
    upgrade(db)
    store = Store(db)
    engine = DecisionEngine(catalog, store, models=_Registry())  # type: ignore[arg-type]
    sent = {}
    for arm in ("ten", "sixty"):
        user = find_unit(catalog, {"deep_discount": arm})
        step = _incentive_step(engine, user)
        assert [a.action_id for a in step.actions] == ["cart_incentive_email"], step.rejected
        sent[arm] = (step.actions[0].parameters["discount_percent"], step.actions[0].score)
        assert {e.experiment_id: e.arm_id for e in step.exposures} == {"deep_discount": arm}
    store.close()
    assert sent["ten"][0] == "10" and sent["sixty"][0] == "60"
    assert sent["ten"][1] == pytest.approx(sent["sixty"][1])  # 0.5 x 80 x 0.9 - 0.4 x 80 - cost
