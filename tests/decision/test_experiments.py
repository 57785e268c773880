"""The experiments stage inside the pipeline (in-process engine, SQLite): held-out units are never
treated, suppressed or non-consenting units are never assigned, arms apply their overrides."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType

import numpy as np
import numpy.typing as npt
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nextbest.catalog import Catalog, bundled_catalog_path, parse_catalog
from nextbest.decision.candidates import Candidate
from nextbest.decision.engine import DecisionEngine
from nextbest.decision.experiments import apply_experiments
from nextbest.domain import (
    ActionClass,
    Channel,
    Decision,
    DecisionRequest,
    Event,
    EventType,
    ReasonCode,
    RequestContext,
    SendTimeSource,
)
from nextbest.experiments import assign
from nextbest.models import features as feats
from nextbest.models.registry import ModelSet
from nextbest.state import ChannelState, CustomerState, Journey, Suppression
from nextbest.store import Database, MemoryStore, Store, upgrade
from tests.conftest import evening_registry, find_unit, heavy_holdout_catalog, sqlite_engine

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


@pytest.mark.slow
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


def _channel_test(arms: list[dict[str, object]]) -> Catalog:
    """The bundled catalog with one experiment: the cart reminder e-mail, sent by SMS 30 min later in
    arm ``sms``, as declared in arm ``email``. The reminder must go out within 2 h (SMS quiet hours can
    then refuse it rather than defer it)."""
    data = yaml.safe_load(bundled_catalog_path().read_text())
    (reminder,) = [a for a in data["actions"] if a["id"] == "cart_reminder_email"]
    reminder["send_window"] = "2h"
    data["experiments"] = [{"id": "to_sms", "scope": {"actions": ["cart_reminder_email"]}, "arms": arms}]
    return parse_catalog(yaml.safe_dump(data))


SMS_ARM = {"id": "sms", "channel": "sms", "delay": "30m"}


def test_a_channel_experiment_takes_in_only_units_every_arms_channel_reaches(tmp_path: Path) -> None:
    """Without SMS consent the unit could not get the SMS arm, so it is not in the experiment at all (in
    either arm) and gets the reminder as declared; with it, the SMS arm sends by SMS."""
    catalog = _channel_test([{**SMS_ARM, "weight": 1.0 - 1e-9}, {"id": "email", "weight": 1e-9}])
    engines = sqlite_engine(tmp_path / "c.db", catalog)
    engine = next(engines)
    request = RequestContext(cart_value=80.0)
    record(engine, "email-only", [("subscribe", Channel.EMAIL)])
    decision = engine.decide(DecisionRequest("r1", "email-only", "cart_abandoned", T0, request, explain=True))
    sent = {a.action_id: a for a in decision.actions}["cart_reminder_email"]
    assert sent.channel is Channel.EMAIL
    assert "to_sms" not in {e.experiment_id for e in decision.exposures}
    record(engine, "both", [("subscribe", Channel.EMAIL), ("consent_sms", Channel.SMS)])
    decision = engine.decide(DecisionRequest("r2", "both", "cart_abandoned", T0, request))
    sent = {a.action_id: a for a in decision.actions}["cart_reminder_email"]
    assert (sent.channel, sent.send_at) == (Channel.SMS, T0 + timedelta(minutes=30))
    assert {e.experiment_id: e.arm_id for e in decision.exposures}["to_sms"] == "sms"
    engines.close()


class _PrefersEmail:
    """A propensity model by channel alone: e-mail 0.9, push 0.3, anything else 0.1 (the channel column
    holds the channel's index in ``Channel``)."""

    codes: dict[str, float] = {}

    def predict(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        channel = x[:, feats.LOGGED.index("channel")]
        by_channel = {list(Channel).index(Channel.EMAIL): 0.9, list(Channel).index(Channel.PUSH): 0.3}
        return np.array([by_channel.get(int(c), 0.1) for c in channel])

    def score(self, full: npt.NDArray[np.float64], action_ids: list[str]) -> npt.NDArray[np.float64]:
        return self.predict(full)


class _EmailRegistry:
    current = ModelSet(propensity=_PrefersEmail())  # type: ignore[arg-type]


HISTORIES = [
    [("subscribe", Channel.EMAIL)],
    [("subscribe", Channel.EMAIL), ("consent_sms", Channel.SMS)],
    [("subscribe", Channel.EMAIL), ("consent_sms", Channel.SMS), ("subscribe", Channel.PUSH)],
    [("subscribe", Channel.PUSH), ("consent_sms", Channel.SMS)],
    [("subscribe", Channel.EMAIL), ("subscribe", Channel.PUSH), ("consent_sms", Channel.SMS)],
]


@pytest.mark.slow
@pytest.mark.parametrize("hour", [3, 12, 22], ids=lambda h: f"{h:02d}h")
@pytest.mark.parametrize("history", HISTORIES, ids=lambda h: "+".join(f"{k}:{c}" for k, c in h))
def test_whether_a_unit_gets_the_action_does_not_depend_on_its_arm(
    tmp_path: Path, history: list[tuple[str, Channel]], hour: int
) -> None:
    """The same unit, once in each arm of an e-mail-or-SMS test (the two catalogs differ only in the
    weights), with a model that scores SMS far below e-mail, SMS quiet hours at night and a push reminder
    competing for the one action: whether it enters the experiment and which action it gets are the
    same in both arms; only the channel and send time the arm sets differ."""
    outcomes = {}
    for arm, weights in (("sms", (1.0 - 1e-9, 1e-9)), ("email", (1e-9, 1.0 - 1e-9))):
        catalog = _channel_test([{**SMS_ARM, "weight": weights[0]}, {"id": "email", "weight": weights[1]}])
        db = Database(f"sqlite:///{tmp_path}/{arm}.db")
        upgrade(db)
        store = Store(db)
        engine = DecisionEngine(catalog, store, models=_EmailRegistry())  # type: ignore[arg-type]
        record(engine, "unit", history)
        at = T0.replace(hour=hour)
        decision = engine.decide(
            DecisionRequest(
                "r",
                "unit",
                "cart_abandoned",
                at,
                RequestContext(cart_value=80.0, time_zone="UTC"),
                explain=True,
            )
        )
        store.close()
        entered = {e.arm_id for e in decision.exposures if e.experiment_id == "to_sms"}
        assert entered <= {arm}
        outcomes[arm] = (bool(entered), [a.action_id for a in decision.actions])
        if entered and arm == "sms" and "cart_reminder_email" in outcomes[arm][1]:
            (sent,) = [a for a in decision.actions if a.action_id == "cart_reminder_email"]
            assert sent.channel is Channel.SMS and sent.send_at >= at + timedelta(minutes=30)
    assert outcomes["sms"] == outcomes["email"]


class _FlatUplift:
    """Every cart action: P(convert) 0.5 if sent, 0.4 if not — worth sending at 10 % off, not at 60 %."""

    flows = frozenset({"cart_abandonment"})

    def covers(self, action_id: str, flow: str) -> bool:
        return True

    def score(
        self, full: npt.NDArray[np.float64], action_ids: list[str]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        return np.full(len(full), 0.5), np.full(len(full), 0.4)


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


def test_experiments_that_move_the_same_action_vary_it_together() -> None:
    """One experiment moves the reminder to SMS, another delays it by 2 h: arbitration must check every
    combination a unit could get, whichever arms this one is in."""
    data = yaml.safe_load(bundled_catalog_path().read_text())
    scope = {"actions": ["cart_reminder_email"]}
    data["experiments"] = [
        {
            "id": "to_sms",
            "scope": scope,
            "arms": [{"id": "email", "weight": 0.5}, {**SMS_ARM, "weight": 0.5}],
        },
        {
            "id": "later",
            "scope": scope,
            "arms": [{"id": "now", "weight": 0.5}, {"id": "two_hours", "weight": 0.5, "delay": "2h"}],
        },
    ]
    catalog = parse_catalog(yaml.safe_dump(data))
    consent = ChannelState(consent=True, consent_at=T0 - timedelta(days=30))
    state = CustomerState("u1", channels=MappingProxyType({Channel.EMAIL: consent, Channel.SMS: consent}))
    (reminder,) = [a for a in catalog.actions if a.id == "cart_reminder_email"]
    (candidate,) = apply_experiments(
        [Candidate.of(reminder, Journey(active=False))], catalog, state, "cart_abandoned", T0
    )
    assert {a.experiment_id for a in candidate.assignments} == {"to_sms", "later"}
    declared, half_hour, two_hours = reminder.delay, timedelta(minutes=30), timedelta(hours=2)
    assert set(candidate.variants) == {
        (Channel.EMAIL, declared),  # email, now
        (Channel.EMAIL, two_hours),  # email, two_hours
        (Channel.SMS, half_hour),  # sms (30 min later), now
        (Channel.SMS, two_hours),  # sms, two_hours
    }
    assert (candidate.channel, candidate.delay) in candidate.variants


def test_a_send_time_arm_sends_at_the_best_hour_and_the_fixed_arm_when_due() -> None:
    """The review request (due 3 days after delivery, a 12 h send window) in a send-time test: both arms
    get it and are logged with their assignment probability; the optimize arm at the customer's best
    hour (19:00), the fixed arm when due (09:00), whatever the action declares."""
    data = yaml.safe_load(bundled_catalog_path().read_text())
    data["experiments"] = [
        {
            "id": "review_send_hour",
            "scope": {"actions": ["review_request_email"]},
            "arms": [
                {"id": "fixed_hour", "weight": 0.5, "send_time": "fixed"},
                {"id": "best_hour", "weight": 0.5, "send_time": "optimize"},
            ],
        }
    ]
    catalog = parse_catalog(yaml.safe_dump(data))
    store = MemoryStore()
    engine = DecisionEngine(catalog, store, models=evening_registry())
    delivered = T0 + timedelta(days=4)  # after the welcome series the subscription started
    due = delivered + timedelta(days=3)
    sent = {}
    for arm in ("fixed_hour", "best_hour"):
        user = find_unit(catalog, {"review_send_hour": arm})
        record(engine, user, [("subscribe", Channel.EMAIL)])
        decision = engine.decide(
            DecisionRequest(
                f"r-{arm}", user, "order_delivered", delivered, RequestContext(time_zone="UTC"), explain=True
            )
        )
        (review,) = [a for a in decision.actions if a.action_id == "review_request_email"]
        sent[arm] = (review.send_at, review.send_time)
        (exposure,) = [e for e in decision.exposures if e.experiment_id == "review_send_hour"]
        assert (exposure.arm_id, exposure.probability, exposure.held_out) == (arm, 0.5, False)
        assert exposure.action.send_at == review.send_at
    assert sent["fixed_hour"] == (due, SendTimeSource.FIXED)
    assert sent["best_hour"] == (due.replace(hour=19), SendTimeSource.POPULATION)
