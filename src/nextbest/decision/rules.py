"""The rules stage: each action's CEL rule, and its flow step's condition, compiled once at catalog load.

The variables the rules see are built once per decision (and once per flow for ``journey``). A rule that
fails to evaluate refuses its action (``RULE_ERROR``) and is logged; it never fails the decision.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from nextbest.catalog import Action, Flow, RuleEvaluationError
from nextbest.catalog.rules import rule_context
from nextbest.decision.candidates import Refusal
from nextbest.decision.journeys import journey_variables
from nextbest.domain import DecisionRequest, ReasonCode
from nextbest.state import CustomerState, Journey

__all__ = ["RuleScope", "check_rules"]

logger = logging.getLogger(__name__)


def _days(now: datetime, then: datetime | None) -> float:
    return (now - then).total_seconds() / 86400 if then is not None else -1.0


class RuleScope:
    """One ``cel.Context`` per decision: converting Python values to CEL costs forty times more than
    evaluating a rule, so the customer and context maps are converted once and only ``journey`` is
    replaced when the candidates move to another flow."""

    def __init__(self, state: CustomerState, request: DecisionRequest, now: datetime) -> None:
        ctx = request.context
        self._base: dict[str, Any] = {
            "customer": {
                "orders_count": state.orders_count,
                "refunds_count": state.refunds_count,
                "total_revenue": float(state.revenue_total),
                "days_since_last_order": _days(now, state.last_order_at),
                "days_since_first_seen": max(_days(now, state.first_seen_at), 0.0),
                "days_since_last_engagement": _days(now, state.last_engagement_at),
                "consents": [ch.value for ch, s in state.channels.items() if s.consent],
                "subscribed": any(s.consent for s in state.channels.values()),
            },
            "context": {
                "cart_value": float(ctx.cart_value or 0.0),
                "has_cart_value": ctx.cart_value is not None,
                "product_ids": list(ctx.product_ids),
                "page_category": ctx.page_category,
                "time_zone": ctx.time_zone,
                "attributes": dict(ctx.attributes),
            },
            "trigger": request.trigger,
        }
        self._now = now
        self._state = state
        self._context: Any = None
        self._journey_of: str | None = None

    def context(self, flow: str, journey: Journey, uses_journey: bool) -> Any:
        """The shared context; ``journey`` is (re)set only for rules that read it."""
        if self._context is None:
            self._context = rule_context(self._base)
        if uses_journey and self._journey_of != flow:
            self._context.add_variable(
                "journey", journey_variables(journey, self._state.last_events, self._now)
            )
            self._journey_of = flow
        return self._context


def check_rules(action: Action, flow: Flow, journey: Journey, scope: RuleScope) -> Refusal | None:
    """The step condition, then the action's rule: the first that is false or fails, or None."""
    rule = action.rule
    when = flow.steps[action.step].when if action.step is not None else None
    try:
        if when is not None and not when.evaluate(scope.context(flow.id, journey, when.uses_journey)):
            return Refusal(ReasonCode.RULE_FALSE, f"step condition is false: {when.source}")
        passed = rule.always_true or rule.evaluate(scope.context(flow.id, journey, rule.uses_journey))
    except RuleEvaluationError as exc:
        # The error's text can quote the caller's context values: it goes to the caller (explain), not
        # to the log.
        logger.warning("rule of %s failed to evaluate (%s)", action.id, type(exc).__name__)
        return Refusal(ReasonCode.RULE_ERROR, f"rule {action.rule.source!r} failed: {exc}")
    if not passed:
        return Refusal(ReasonCode.RULE_FALSE, f"rule is false: {action.rule.source}")
    return None
