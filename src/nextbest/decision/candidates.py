"""Eligibility: hard gates, then each action's CEL rule. Produces eligible candidates and rejections."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from nextbest.catalog import Action, Catalog, RuleEvaluationError
from nextbest.domain import Channel, DecisionRequest, ReasonCode, Rejection
from nextbest.eligibility.contact import JourneyBook, contact_failure, step_delay
from nextbest.eligibility.gates import GateFailure, check_gates
from nextbest.eligibility.scope import RuleScope
from nextbest.experiments import Assignment
from nextbest.state import CustomerSnapshot, Journey

__all__ = ["Candidate", "GateFailure", "JourneyBook", "check_gates", "evaluate", "rejection"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Candidate:
    """An eligible action as it would be sent: an experiment arm may change its channel, delay and
    parameters, or hold it out (the unit gets nothing in the experiment's scope).

    When an arm moved the channel or the delay, ``declared`` is the channel and delay the action had
    before (scoring ranks on them) and ``variants`` the channel and delay of every arm of the experiments
    that move it (arbitration admits the candidate only if every arm's version passes the contact
    policy): whether a unit gets the action must not depend on its arm."""

    action: Action
    journey: Journey
    channel: Channel
    parameters: Mapping[str, str]
    delay: timedelta
    assignments: tuple[Assignment, ...] = ()
    held_out_by: Assignment | None = None
    declared: tuple[Channel, timedelta] | None = None
    variants: tuple[tuple[Channel, timedelta], ...] = ()

    @classmethod
    def of(cls, action: Action, journey: Journey, delay: timedelta | None = None) -> Candidate:
        return cls(
            action, journey, action.channel, action.parameters, action.delay if delay is None else delay
        )


def rejection(action: Action, reason: ReasonCode, detail: str, channel: Channel | None = None) -> Rejection:
    return Rejection(action.id, action.flow, channel or action.channel, action.action_class, reason, detail)


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
    book = JourneyBook(catalog, snapshot, request.trigger, now)
    scope = RuleScope(snapshot.state, request, now)
    # By flow, so the rules' ``journey`` variable changes once per flow (setting it costs ten rule runs).
    for action in sorted(actions, key=lambda a: a.flow):
        flow = catalog.flows[action.flow]
        journey = book[flow.id]
        failure = check_gates(
            action,
            catalog.channels[action.channel],
            snapshot.state,
            journey,
            entry_trigger=request.trigger in flow.entry_triggers,
        ) or contact_failure(
            action, flow, journey, book=book, catalog=catalog, snapshot=snapshot, request=request, now=now
        )
        if failure is not None:
            rejected.append(rejection(action, failure.reason, failure.detail))
            continue
        rule = action.rule
        when = flow.steps[action.step].when if action.step is not None else None
        try:
            if when is not None and not when.evaluate(scope.context(flow.id, journey, when.uses_journey)):
                rejected.append(
                    rejection(action, ReasonCode.RULE_FALSE, f"step condition is false: {when.source}")
                )
                continue
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
        eligible.append(Candidate.of(action, journey, step_delay(action, flow, journey, now)))
    return eligible, rejected
