"""The rules stage: each action's CEL rule, and its flow step's condition, compiled once at catalog load.

The variables the rules see are built once per decision (and once per flow for ``journey``). A rule that
fails to evaluate refuses its action (``RULE_ERROR``) and is logged; it never fails the decision.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from nextbest.catalog import Action, Flow, RuleEvaluationError
from nextbest.catalog.rules import rule_context
from nextbest.decision.candidates import Refusal
from nextbest.decision.journeys import journey_variables
from nextbest.domain import DecisionRequest, ReasonCode, RequestContext
from nextbest.state import CustomerState, Journey

__all__ = ["RuleScope", "check_rules", "customer_variables"]

logger = logging.getLogger(__name__)


def _days(now: datetime, then: datetime | None) -> float:
    return (now - then).total_seconds() / 86400 if then is not None else -1.0


_CUSTOMER: dict[str, Callable[[CustomerState, datetime], Any]] = {
    "orders_count": lambda state, now: state.orders_count,
    "refunds_count": lambda state, now: state.refunds_count,
    "total_revenue": lambda state, now: float(state.revenue_total),
    "days_since_last_order": lambda state, now: _days(now, state.last_order_at),
    "days_since_first_seen": lambda state, now: max(_days(now, state.first_seen_at), 0.0),
    "days_since_last_engagement": lambda state, now: _days(now, state.last_engagement_at),
    "consents": lambda state, now: [ch.value for ch, s in state.channels.items() if s.consent],
    "subscribed": lambda state, now: any(s.consent for s in state.channels.values()),
}
_CONTEXT: dict[str, Callable[[RequestContext], Any]] = {
    "cart_value": lambda ctx: float(ctx.cart_value or 0.0),
    "has_cart_value": lambda ctx: ctx.cart_value is not None,
    "product_ids": lambda ctx: list(ctx.product_ids),
    "page_category": lambda ctx: ctx.page_category,
    "time_zone": lambda ctx: ctx.time_zone,
    "attributes": lambda ctx: dict(ctx.attributes),
}
_ALL = {"customer": None, "context": None, "trigger": None}


def _fields(builders: Mapping[str, Callable[..., Any]], wanted: frozenset[str] | None) -> list[str]:
    return list(builders) if wanted is None else [f for f in builders if f in wanted]


def customer_variables(
    state: CustomerState, now: datetime, fields: frozenset[str] | None = None
) -> dict[str, Any]:
    """What CEL sees as ``customer`` (the fields named, or all): rules, and segments over stored
    customers."""
    return {f: _CUSTOMER[f](state, now) for f in _fields(_CUSTOMER, fields)}


class RuleScope:
    """One ``cel.Context`` per decision: converting Python values to CEL costs a hundred times more than
    evaluating a rule, so the customer and context maps are converted once and only ``journey`` is
    replaced when the candidates move to another flow. Only what the decision's rules read is built
    (``reads``, from ``catalog.rules.rule_reads``; every variable when not given): each field converted
    costs microseconds."""

    def __init__(
        self,
        state: CustomerState,
        request: DecisionRequest,
        now: datetime,
        reads: Mapping[str, frozenset[str] | None] | None = None,
    ) -> None:
        self._reads = _ALL if reads is None else reads
        self._request = request
        self._now = now
        self._state = state
        self._context: Any = None
        self._journey_of: str | None = None

    def _variables(self) -> dict[str, Any]:
        reads, state, now, ctx = self._reads, self._state, self._now, self._request.context
        variables: dict[str, Any] = {}
        if "customer" in reads:
            variables["customer"] = customer_variables(state, now, reads["customer"])
        if "context" in reads:
            variables["context"] = {f: _CONTEXT[f](ctx) for f in _fields(_CONTEXT, reads["context"])}
        if "trigger" in reads:
            variables["trigger"] = self._request.trigger
        return variables

    def context(self, flow: str, journey: Journey, uses_journey: bool) -> Any:
        """The shared context; ``journey`` is (re)set only for rules that read it."""
        if self._context is None:
            self._context = rule_context(self._variables())
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
