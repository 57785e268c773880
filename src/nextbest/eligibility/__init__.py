"""Eligibility: hard gates, then each action's CEL rule. Produces eligible candidates and rejections."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from nextbest.catalog import Action, Catalog, RuleEvaluationError
from nextbest.domain import DecisionRequest, ReasonCode, Rejection
from nextbest.eligibility.gates import GateFailure, check_gates
from nextbest.eligibility.scope import RuleScope
from nextbest.state import CustomerSnapshot, Journey, journey_in

__all__ = ["Candidate", "GateFailure", "check_gates", "evaluate", "rejection"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Candidate:
    action: Action
    journey: Journey


def rejection(action: Action, reason: ReasonCode, detail: str) -> Rejection:
    return Rejection(action.id, action.flow, action.channel, action.action_class, reason, detail)


def evaluate(
    actions: list[Action],
    catalog: Catalog,
    snapshot: CustomerSnapshot,
    request: DecisionRequest,
    now: datetime,
) -> tuple[list[Candidate], list[Rejection]]:
    """Splits ``actions`` into eligible candidates and rejections with their reasons."""
    eligible: list[Candidate] = []
    rejected: list[Rejection] = []
    journeys: dict[str, Journey] = {}
    scope = RuleScope(snapshot.state, request, now)
    # By flow, so the rules' ``journey`` variable changes once per flow (setting it costs ten rule runs).
    for action in sorted(actions, key=lambda a: a.flow):
        flow = catalog.flows[action.flow]
        journey = journeys.get(flow.id)
        if journey is None:
            journey = journeys[flow.id] = journey_in(flow, snapshot, request.trigger, now)
        failure = check_gates(
            action,
            catalog.channels[action.channel],
            snapshot.state,
            journey,
            entry_trigger=request.trigger in flow.entry_triggers,
        )
        if failure is not None:
            rejected.append(rejection(action, failure.reason, failure.detail))
            continue
        rule = action.rule
        try:
            passed = rule.always_true or rule.evaluate(scope.context(flow.id, journey, rule.uses_journey))
        except RuleEvaluationError as exc:
            logger.warning("rule of %s failed to evaluate: %s", action.id, exc)
            rejected.append(
                rejection(action, ReasonCode.RULE_ERROR, f"rule {action.rule.source!r} failed: {exc}")
            )
            continue
        if not passed:
            rejected.append(rejection(action, ReasonCode.RULE_FALSE, f"rule is false: {action.rule.source}"))
            continue
        eligible.append(Candidate(action, journey))
    return eligible, rejected
