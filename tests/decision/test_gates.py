from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

import pytest

from nextbest.catalog import Action, ChannelPolicy, CompiledRule
from nextbest.decision.gates import check_gates
from nextbest.domain import ActionClass, Channel, EventType, ReasonCode
from nextbest.state import ChannelState, CustomerState, Journey

T0 = datetime(2026, 11, 1, tzinfo=UTC)
ACTION = Action(
    "a",
    "cart",
    Channel.EMAIL,
    ActionClass.TRIGGERED,
    frozenset({"t"}),
    CompiledRule("true", None),
    timedelta(0),
    10.0,
    0.1,
    0.0,
    {},
)
OPT_IN = ChannelPolicy(requires_consent=True, default_consent=False)
ACTIVE = Journey(active=True, entered_at=T0)


def customer(**email: object) -> CustomerState:
    return CustomerState("u", channels=MappingProxyType({Channel.EMAIL: ChannelState(**email)}))  # type: ignore[arg-type]


def reason(
    action: Action = ACTION,
    policy: ChannelPolicy = OPT_IN,
    state: CustomerState | None = None,
    journey: Journey = ACTIVE,
    entry: bool = True,
) -> ReasonCode | None:
    failure = check_gates(action, policy, state or customer(consent=True, consent_at=T0), journey, entry)
    return failure.reason if failure else None


TRANSACTIONAL = replace(ACTION, action_class=ActionClass.TRANSACTIONAL)
PROMO = replace(ACTION, action_class=ActionClass.PROMOTIONAL)


@pytest.mark.parametrize(
    ("action", "state", "expected"),
    [
        pytest.param(ACTION, customer(consent=True), None, id="consented"),
        pytest.param(ACTION, customer(), ReasonCode.NO_CONSENT, id="never-asked"),
        pytest.param(PROMO, customer(consent=False), ReasonCode.NO_CONSENT, id="revoked"),
        pytest.param(TRANSACTIONAL, customer(), None, id="transactional-needs-no-consent"),
        pytest.param(
            ACTION, customer(consent=True, unsubscribed_at=T0), ReasonCode.SUPPRESSED, id="unsubscribed"
        ),
        pytest.param(TRANSACTIONAL, customer(unsubscribed_at=T0), None, id="transactional-after-unsubscribe"),
        pytest.param(
            TRANSACTIONAL, customer(hard_bounced_at=T0), ReasonCode.SUPPRESSED, id="transactional-hard-bounce"
        ),
        pytest.param(
            TRANSACTIONAL, customer(complained_at=T0), ReasonCode.SUPPRESSED, id="transactional-complaint"
        ),
    ],
)
def test_consent_and_suppression(action: Action, state: CustomerState, expected: ReasonCode | None) -> None:
    assert reason(action=action, state=state) is expected


def test_default_consent_applies_only_when_the_customer_never_said() -> None:
    opt_out = ChannelPolicy(requires_consent=True, default_consent=True)
    assert reason(policy=opt_out, state=customer()) is None
    assert reason(policy=opt_out, state=customer(consent=False)) is ReasonCode.NO_CONSENT
    assert reason(policy=ChannelPolicy(False, False), state=customer()) is None


def test_suppression_comes_before_everything() -> None:
    exited = Journey(False, T0, 1, EventType.ORDER_PLACED, T0)
    assert reason(state=customer(complained_at=T0), journey=exited) is ReasonCode.SUPPRESSED


def test_exit_and_journey_gates() -> None:
    assert reason(journey=Journey(False, T0, 1, EventType.ORDER_PLACED, T0)) is ReasonCode.EXITED_FLOW
    assert reason(journey=Journey(False), entry=False) is ReasonCode.NOT_IN_JOURNEY
    assert reason(journey=ACTIVE, entry=False) is None
