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
from dataclasses import dataclass, replace

from nextbest.catalog import Action, Catalog, ChannelPolicy, Flow
from nextbest.catalog.rules import merge_reads
from nextbest.decision.candidates import Refusal, candidates_for, rejection
from nextbest.decision.gates import channel_gate
from nextbest.decision.rules import FlatRule, ScopePlan, flat_rule
from nextbest.domain import Channel, Rejection
from nextbest.state import CustomerState

__all__ = ["ActionPlan", "FlowPlan", "Plans", "TriggerPlan"]


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
    # The index of its (channel, marketing) in ``TriggerPlan.channels``: the channel gate's answer.
    gate: int
    # The action is a flow step or has a cooldown (``contact.step_failure`` has something to check).
    checks_step: bool
    # The last channel refusal of this action and its rejection, as one tuple (replaced whole, so
    # threads read a consistent pair): most calls refuse an action on a closed channel for the same
    # reason as the call before (no consent, never given), and the rejection is then shared.
    last_refused: list[tuple[Refusal, Rejection] | None]
    # Its rejection for a customer with no channel state, when the channel gate refuses one
    # (``TriggerPlan.blank_gates``).
    blank_refused: Rejection | None = None

    def refused(self, refusal: Refusal) -> Rejection:
        """The rejection of this action for a channel ``refusal``: the previous call's when it is the
        same refusal."""
        last = self.last_refused[0]
        if last is not None and last[0] == refusal:
            return last[1]
        rejected = rejection(self.action, refusal.reason, refusal.detail)
        self.last_refused[0] = (refusal, rejected)
        return rejected


@dataclass(frozen=True, slots=True)
class FlowPlan:
    """A flow's actions in a plan, in plan order: the journey, its gate and the conflict check are
    worked out once for them."""

    flow: Flow
    # The trigger enters the flow (a new journey may start).
    entry: bool
    actions: tuple[ActionPlan, ...]


@dataclass(frozen=True, slots=True)
class TriggerPlan:
    trigger: str
    actions: tuple[ActionPlan, ...]
    # The same actions grouped by flow (consecutive in ``actions``).
    flows: tuple[FlowPlan, ...]
    # The distinct (channel, its policy, marketing) of the actions: the channel gate runs once for each.
    channels: tuple[tuple[Channel, ChannelPolicy, bool], ...]
    # The channel gate's answers for a customer with no channel state at all (no consent, suppression or
    # bounce ever recorded): the same for all of them.
    blank_gates: tuple[Refusal | None, ...]
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
        # The same plans, by trigger, for requests that name no channel.
        self._every_channel: dict[str, TriggerPlan] = {}
        self._lock = threading.Lock()

    def plan(self, trigger: str, channels: Iterable[Channel | None]) -> TriggerPlan:
        """The plan for ``trigger`` on ``channels`` (None, a channel the wire could not name, is left
        out; every channel of the catalog when none is left)."""
        if not channels:  # most requests: every channel, one plan per trigger
            plan = self._every_channel.get(trigger)
            if plan is None:
                plan = self._every_channel.setdefault(trigger, self._plan(trigger, channels))
            return plan
        return self._plan(trigger, channels)

    def _plan(self, trigger: str, channels: Iterable[Channel | None]) -> TriggerPlan:
        allowed = frozenset(c for c in channels if c is not None) or frozenset(self.catalog.channels)
        key = (trigger, allowed)
        plan = self._plans.get(key)
        if plan is None:
            plan = _compile(self.catalog, trigger, allowed)
            with self._lock:
                plan = self._plans.setdefault(key, plan)
        return plan


def _compile(catalog: Catalog, trigger: str, allowed: frozenset[Channel]) -> TriggerPlan:
    engagement = catalog.policy.engagement
    plans: list[ActionPlan] = []
    gates: dict[tuple[Channel, bool], int] = {}
    for action in sorted(candidates_for(catalog, trigger, sorted(allowed)), key=lambda a: a.flow):
        flow = catalog.flows[action.flow]
        when = flow.steps[action.step].when if action.step is not None else None
        marketing = action.action_class.is_marketing
        gate = gates.setdefault((action.channel, marketing), len(gates))
        plans.append(
            ActionPlan(
                action=action,
                flow=flow,
                channel=catalog.channels[action.channel],
                entry=trigger in flow.entry_triggers,
                marketing=marketing,
                checks_stock=action.inventory == "in_stock",
                engaged_only=engagement is not None and action.action_class in engagement.classes,
                when=None if when is None else flat_rule(when),
                rule=None if action.rule.always_true else flat_rule(action.rule),
                gate=gate,
                checks_step=action.step is not None or bool(action.cooldown),
                last_refused=[None],
            )
        )
    channels = tuple((channel, catalog.channels[channel], marketing) for channel, marketing in gates)
    blank = CustomerState("")
    blank_gates = tuple(
        channel_gate(channel, policy, blank, marketing) for channel, policy, marketing in channels
    )
    for i, p in enumerate(plans):
        closed = blank_gates[p.gate]
        if closed is not None:
            plans[i] = replace(p, blank_refused=rejection(p.action, closed.reason, closed.detail))
    flows: list[FlowPlan] = []
    for p in plans:
        if flows and flows[-1].flow is p.flow:
            flows[-1] = replace(flows[-1], actions=(*flows[-1].actions, p))
        else:
            flows.append(FlowPlan(p.flow, p.entry, (p,)))
    rules = [r for p in plans for r in (p.when, p.rule) if r is not None]
    reads = merge_reads(r.rule.reads for r in rules)
    reads.pop("journey", None)
    return TriggerPlan(
        trigger, tuple(plans), tuple(flows), channels, blank_gates, reads, ScopePlan.of(rules, reads)
    )
