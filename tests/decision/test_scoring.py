"""Scoring in isolation: what an action is worth, with and without an uplift model."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pytest

from nextbest.catalog import parse_catalog
from nextbest.decision.candidates import Candidate
from nextbest.decision.scoring import score_candidates
from nextbest.domain import DecisionRequest, ReasonCode, RequestContext
from nextbest.models.registry import ModelSet
from nextbest.state import CustomerSnapshot, CustomerState, Journey

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)

CATALOG = """\
version: 1
channels: {email: {}}
flows:
  cart: {priority: 80, entry_triggers: [cart_abandoned], exit_on: [order_placed]}
actions:
  - id: reminder
    flow: cart
    channel: email
    class: triggered
    triggers: [cart_abandoned]
    value: 50
    value_from: cart_value
    cost: 0.5
  - id: incentive
    flow: cart
    channel: email
    class: triggered
    triggers: [cart_abandoned]
    value: 50
    value_from: cart_value
    base_propensity: 0.2
    cost: 0.5
    parameters: {discount_percent: 10}
    discount_parameter: discount_percent
"""


class _Uplift:
    """An uplift model that predicts the same P(convert | treated) and P(convert | untreated) for all."""

    flows = frozenset({"cart"})

    def __init__(self, treated: float, control: float) -> None:
        self.p = (treated, control)

    def covers(self, action_id: str, flow: str) -> bool:
        return True

    def score(
        self, full: npt.NDArray[np.float64], action_ids: list[str]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        return np.full(len(full), self.p[0]), np.full(len(full), self.p[1])


def _score(uplift: _Uplift | None, discount: str | None = None) -> dict[str, object]:
    catalog = parse_catalog(CATALOG)
    journey = Journey(active=True, entered_at=NOW, new=True)
    candidates = [Candidate.of(a, journey) for a in catalog.actions]
    if discount is not None:  # an experiment arm overriding the discount
        incentive = candidates[1]
        candidates[1] = Candidate(
            incentive.action,
            journey,
            incentive.channel,
            {**incentive.parameters, "discount_percent": discount},
            incentive.delay,
        )
    request = DecisionRequest(
        request_id="r",
        user_id="u",
        trigger="cart_abandoned",
        occurred_at=NOW,
        context=RequestContext(cart_value=200.0),
    )
    scored, rejected = score_candidates(
        candidates,
        NOW,
        snapshot=CustomerSnapshot(CustomerState("u")),
        request=request,
        zone=ZoneInfo("UTC"),
        models=ModelSet(uplift=uplift),  # type: ignore[arg-type]
    )
    out: dict[str, object] = {s.action.id: s.score for s in scored}
    out.update({r.action_id: r for r in rejected})
    return out


def test_without_models_an_order_is_worth_what_the_store_keeps_after_the_discount() -> None:
    scores = _score(None)
    assert scores["reminder"] == pytest.approx(0.01 * 200.0)
    assert scores["incentive"] == pytest.approx(0.2 * 200.0 * 0.9)


def test_the_discount_is_paid_on_orders_that_would_have_come_anyway() -> None:
    # +4 pp on a 200 cart is worth 8 without a discount; with 10 % off, the 40 % who would have bought
    # anyway get it too: 0.44 x 180 - 0.40 x 200 = -0.8 (less the 0.5 cost).
    scores = _score(_Uplift(0.44, 0.40))
    assert scores["reminder"] == pytest.approx(0.04 * 200.0 - 0.5)
    lost = scores["incentive"]
    assert getattr(lost, "reason", None) is ReasonCode.NO_EXPECTED_LIFT
    assert "less 10 % off" in lost.detail  # type: ignore[attr-defined]
    assert "= -1.3" in lost.detail  # type: ignore[attr-defined]
    # A large enough uplift pays for the discount: 0.70 x 180 - 0.40 x 200 - 0.5 = 45.5.
    assert _score(_Uplift(0.70, 0.40))["incentive"] == pytest.approx(45.5)


def test_an_arm_that_overrides_the_discount_faces_the_same_decision_to_send() -> None:
    """Whether to send reads the declared discount: a unit in a 15 % or a 90 % arm is scored as one in
    the 10 % arm, so an A/B test's arms hold the same kind of customers."""
    declared = _score(_Uplift(0.70, 0.40))["incentive"]
    assert _score(_Uplift(0.70, 0.40), discount="15")["incentive"] == declared
    assert _score(_Uplift(0.70, 0.40), discount="90")["incentive"] == declared


AVERAGE_ORDER_CATALOG = """\
version: 1
channels: {email: {}}
flows:
  promo: {priority: 20}
actions:
  - id: promo_email
    flow: promo
    channel: email
    class: promotional
    triggers: [campaign_promo]
    value: 50
    value_from: average_order
    base_propensity: 0.1
    parameters: {discount_percent: 10}
    discount_parameter: discount_percent
"""


@pytest.mark.parametrize(
    ("orders", "revenue", "value"),
    [(3, 240.0, 80.0), (0, 0.0, 50.0)],
    ids=["the-customer's-average-order", "no-order-yet-the-declared-value"],
)
def test_an_action_valued_by_the_average_order_puts_the_customers_usual_basket_at_stake(
    orders: int, revenue: float, value: float
) -> None:
    catalog = parse_catalog(AVERAGE_ORDER_CATALOG)
    (action,) = catalog.actions
    candidates = [Candidate.of(action, Journey(active=False))]
    request = DecisionRequest(request_id="r", user_id="u", trigger="campaign_promo", occurred_at=NOW)
    state = CustomerState("u", orders_count=orders, revenue_total=revenue)
    (scored,), _ = score_candidates(
        candidates, NOW, snapshot=CustomerSnapshot(state), request=request, zone=ZoneInfo("UTC")
    )
    assert scored.score == pytest.approx(0.1 * value * 0.9)
