"""The compiled pipeline: what a decision for a trigger needs from the catalog, worked out once per catalog
and trigger instead of once per call.

A ``TriggerPlan`` holds the trigger's candidate actions on the allowed channels, in the order eligibility
walks them (by flow, so the rules' ``journey`` variable changes once per flow), each with what does not
depend on the customer already looked up: its flow and channel policy, whether the trigger enters its flow,
whether the engagement rule and the stock check apply, its step condition and rule (None when always
true); and what the trigger's rules read of ``customer``, ``context`` and ``trigger``, so that a decision
converts only those fields to CEL (``rules.RuleScope``). Per call, what depends on the customer (a
channel's consent and suppression, a flow's journey, the conflict check) is computed once and shared by
the actions it concerns.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from nextbest.catalog import Action, Catalog, ChannelPolicy, Flow
from nextbest.catalog.rules import merge_reads
from nextbest.decision.candidates import candidates_for
from nextbest.decision.rules import FlatRule, ScopePlan, flat_rule
from nextbest.domain import Channel

__all__ = ["ActionPlan", "Plans", "TriggerPlan"]


@dataclass(frozen=True, slots=True)
class ActionPlan:
    action: Action
    flow: Flow
    channel: ChannelPolicy
    # The trigger enters the action's flow (a new journey may start).
    entry: bool
    marketing: bool
    # ``inventory: in_stock``: the request's products are checked.
    checks_stock: bool
    # The contact policy's engagement rule applies to the action's class.
    engaged_only: bool
    # The step's condition, when the action is a step that has one (flat: ``rules.flat_rule``).
    when: FlatRule | None
    # The action's rule; None when it is ``true``.
    rule: FlatRule | None


@dataclass(frozen=True, slots=True)
class TriggerPlan:
    trigger: str
    actions: tuple[ActionPlan, ...]
    # What the plan's rules and step conditions read, but ``journey`` (set per flow).
    reads: Mapping[str, frozenset[str] | None]
    # Their variables as a decision sets them (flat fields, whole maps), and a context per thread.
    scope: ScopePlan


class Plans:
    """The plans of one catalog, built on first use per (trigger, allowed channels) and kept: there are
    at most as many as triggers times subsets of the catalog's channels."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._plans: dict[tuple[str, frozenset[Channel]], TriggerPlan] = {}
        self._lock = threading.Lock()

    def plan(self, trigger: str, channels: Iterable[Channel | None]) -> TriggerPlan:
        """The plan for ``trigger`` on ``channels`` (None, a channel the wire could not name, is left
        out; every channel of the catalog when none is left)."""
        allowed = frozenset(c for c in channels if c is not None) or frozenset(self.catalog.channels)
        key = (trigger, allowed)
        plan = self._plans.get(key)
        if plan is None:
            plan = _compile(self.catalog, trigger, allowed)
            with self._lock:
                self._plans.setdefault(key, plan)
        return plan


def _compile(catalog: Catalog, trigger: str, allowed: frozenset[Channel]) -> TriggerPlan:
    engagement = catalog.policy.engagement
    plans: list[ActionPlan] = []
    for action in sorted(candidates_for(catalog, trigger, sorted(allowed)), key=lambda a: a.flow):
        flow = catalog.flows[action.flow]
        when = flow.steps[action.step].when if action.step is not None else None
        plans.append(
            ActionPlan(
                action=action,
                flow=flow,
                channel=catalog.channels[action.channel],
                entry=trigger in flow.entry_triggers,
                marketing=action.action_class.is_marketing,
                checks_stock=action.inventory == "in_stock",
                engaged_only=engagement is not None and action.action_class in engagement.classes,
                when=None if when is None else flat_rule(when),
                rule=None if action.rule.always_true else flat_rule(action.rule),
            )
        )
    rules = [r for p in plans for r in (p.when, p.rule) if r is not None]
    reads = merge_reads(r.rule.reads for r in rules)
    reads.pop("journey", None)
    return TriggerPlan(trigger, tuple(plans), reads, ScopePlan.of(rules, reads))
