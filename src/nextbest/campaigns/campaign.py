"""Campaigns: a catalog campaign decides for every member of its segment through the decision pipeline.

``plan_campaign`` is a dry run: each member's decision as ``NextAction`` would make it now (consent,
suppression, caps, quiet hours, the conflict check, experiments, scoring, send time), nothing written.
Customers are independent of each other (a decision reads only its own customer), so the plan's sends and
refusals are the run's, as long as the store and the clock do not move in between.

``run_campaign`` makes those decisions for real, in batches through ``DecisionEngine.decide_batch``: each
committed with its exposures like any decision, landing in the pending queue at its ``send_at`` where a
lifecycle flow of higher priority can preempt it. A member's request id is ``campaign:<id>:<run>:<user>``,
so a run that crashed and is started again (same run id) replays what was decided and sends nobody twice.
A budget of sends is never overshot: a batch holds at most as many members as sends are left.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import islice

from nextbest.campaigns.segments import SegmentCount, segment_members
from nextbest.catalog import Campaign
from nextbest.decision.engine import MAX_BATCH, DecisionEngine
from nextbest.domain import Decision, DecisionRequest, ReasonCode
from nextbest.errors import NextbestError
from nextbest.state import CustomerState

__all__ = [
    "RUN_ID",
    "RUN_ID_RULE",
    "CampaignPlan",
    "CampaignRun",
    "OutsideRunWindowError",
    "campaign_request",
    "iter_campaign",
    "plan_campaign",
    "rank_members",
    "run_campaign",
]


# A run id is part of every request id (campaign:<id>:<run>:<user>): no ':' in it, or two runs' ids
# could collide ("a:b" for customer "c" and "a" for customer "b:c").
RUN_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
RUN_ID_RULE = "1-64 of A-Z a-z 0-9 _ . -"


def campaign_request(campaign: Campaign, run_id: str, user_id: str) -> DecisionRequest:
    """A member's request: the same for every attempt of a run (so a re-run replays, never decides
    twice), with no time of its own (the decision is made at the engine's clock)."""
    return DecisionRequest(
        request_id=f"campaign:{campaign.id}:{run_id}:{user_id}",
        user_id=user_id,
        trigger=campaign.trigger,
        occurred_at=None,
        explain=True,  # not part of the request's fingerprint: the reasons are tallied, and stored anyway
    )


@dataclass
class CampaignPlan:
    """What a run would do now. ``refusals`` counts candidate refusals by reason (a member refused on
    two actions counts twice); ``held_out`` members an experiment holds out (their counterfactual is
    logged); ``expected_value`` sums the chosen actions' scores (expected incremental value where an
    uplift model scores the flow, expected value otherwise)."""

    campaign: str
    segment: SegmentCount
    sends: int = 0
    over_budget: int = 0
    held_out: int = 0
    nothing: int = 0
    refusals: Counter[str] = field(default_factory=Counter)
    by_channel: Counter[str] = field(default_factory=Counter)
    by_hour: Counter[str] = field(default_factory=Counter)
    expected_value: float = 0.0
    failed: Counter[str] = field(default_factory=Counter)


def plan_campaign(
    engine: DecisionEngine, campaign: Campaign, states: Iterable[CustomerState], now: datetime
) -> CampaignPlan:
    segment = engine.catalog.segments[campaign.audience]
    plan = CampaignPlan(campaign.id, SegmentCount(segment.id))
    ranked = campaign.targeting == "ranked"
    sends: list[tuple[float, str, Decision]] = []
    for state in segment_members(segment, states, now, plan.segment):
        try:
            decision = engine.dry_run(campaign_request(campaign, "plan", state.user_id))
        except NextbestError as exc:
            plan.failed[type(exc).__name__] += 1
            continue
        if ranked and decision.actions:  # tallied once ranked, best first
            plan.refusals.update(r.reason.value for r in decision.rejected)
            sends.append((-sum(a.score for a in decision.actions), state.user_id, _lean(decision)))
            continue
        _tally(plan, decision, campaign.max_sends)
    for _, _, decision in sorted(sends, key=lambda t: t[:2]):
        _tally(plan, decision, campaign.max_sends, refusals=False)
    return plan


def _lean(decision: Decision) -> Decision:
    """What a plan keeps of a decision it ranks: its actions (not its reasons, already counted)."""
    return replace(decision, rejected=(), exposures=())


def rank_members(
    engine: DecisionEngine, campaign: Campaign, members: Iterable[CustomerState], run_id: str | None = None
) -> list[str]:
    """The members a ranked campaign would reach, best first: each member's decision made dry, scored by
    what it sends, or for a member an experiment holds out by what it would have sent (so that the arms
    are ranked alike and the holdout stays comparable); members with nothing to send are left out.

    With ``run_id``, a member this run already decided (a run started again after a crash) comes first,
    whatever a dry run would say now: its decision replays and counts against the budget, so a re-run
    never spends the budget twice (a dry run would now see the run's own send, a frequency cap say, and
    leave the member out)."""
    scored: list[tuple[float, str]] = []
    for state in members:
        if run_id is not None:
            request = campaign_request(campaign, run_id, state.user_id)
            if engine.store.find_decision(request.request_id) is not None:
                scored.append((float("inf"), state.user_id))
                continue
        try:
            decision = engine.dry_run(campaign_request(campaign, "plan", state.user_id))
        except NextbestError:
            scored.append((float("-inf"), state.user_id))  # decided (and its error counted) last
            continue
        score = _value(decision)
        if score is not None:
            scored.append((score, state.user_id))
    scored.sort(key=lambda t: (-t[0], t[1]))
    return [user for _, user in scored]


def _value(decision: Decision) -> float | None:
    if decision.actions:
        return sum(a.score for a in decision.actions)
    held = [e.action.score for e in decision.exposures if e.held_out]
    return sum(held) if held else None


def _tally(plan: CampaignPlan, decision: Decision, budget: int | None, *, refusals: bool = True) -> None:
    if refusals:
        plan.refusals.update(r.reason.value for r in decision.rejected)
    if not decision.actions:
        if any(r.reason is ReasonCode.HELD_OUT for r in decision.rejected):
            plan.held_out += 1
        else:
            plan.nothing += 1
        return
    if budget is not None and plan.sends >= budget:
        plan.over_budget += 1
        return
    plan.sends += 1
    for action in decision.actions:
        plan.by_channel[action.channel.value] += 1
        plan.by_hour[action.send_at.strftime("%Y-%m-%d %H:00Z")] += 1
        plan.expected_value += action.score


@dataclass
class CampaignRun:
    """A run's outcome. ``sent`` counts decisions that chose an action (those replayed from an earlier
    attempt of the run included); ``replayed`` those an earlier attempt had made; ``failed`` members
    whose decision failed, by error (they can be retried by running again)."""

    campaign: str
    run_id: str
    segment: SegmentCount
    decided: int = 0
    sent: int = 0
    replayed: int = 0
    held_out: int = 0
    budget_reached: bool = False
    refusals: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)


class OutsideRunWindowError(ValueError):
    pass


def run_campaign(
    engine: DecisionEngine,
    campaign: Campaign,
    states: Iterable[CustomerState],
    run_id: str,
    now: datetime,
    *,
    batch_size: int = MAX_BATCH,
    progress: Callable[[CampaignRun], None] | None = None,
) -> CampaignRun:
    """Decides for every member of the campaign's segment, ``batch_size`` at a time (fewer when the
    budget has fewer sends left); ``progress`` is called after each batch."""
    for run in iter_campaign(engine, campaign, states, run_id, now, batch_size=batch_size):
        if progress is not None:
            progress(run)
    return run


def iter_campaign(
    engine: DecisionEngine,
    campaign: Campaign,
    states: Iterable[CustomerState],
    run_id: str,
    now: datetime,
    *,
    batch_size: int = MAX_BATCH,
) -> Iterator[CampaignRun]:
    """:func:`run_campaign` one batch at a time: the window and batch size are checked at once (raising
    :class:`OutsideRunWindowError` or ValueError), then the iterator decides a batch, commits it and
    yields the run so far (the same object, updated). A consumer that stops iterating stops the run after
    the batch it last received: nothing is decided until the next item is asked for, and what was
    committed stays (the same run id resumes it)."""
    if not campaign.start <= now < campaign.stop:
        raise OutsideRunWindowError(
            f"campaign {campaign.id!r} runs from {campaign.start:%Y-%m-%d %H:%M}Z to "
            f"{campaign.stop:%Y-%m-%d %H:%M}Z; it is {now:%Y-%m-%d %H:%M}Z"
        )
    if not 1 <= batch_size <= MAX_BATCH:
        raise ValueError(f"batch size must be 1 to {MAX_BATCH}")
    if not RUN_ID.fullmatch(run_id):
        raise ValueError(f"run id {run_id[:80]!r} must be {RUN_ID_RULE}")
    return _batches(engine, campaign, states, run_id, now, batch_size=batch_size)


def _batches(
    engine: DecisionEngine,
    campaign: Campaign,
    states: Iterable[CustomerState],
    run_id: str,
    now: datetime,
    *,
    batch_size: int,
) -> Iterator[CampaignRun]:
    segment = engine.catalog.segments[campaign.audience]
    run = CampaignRun(campaign.id, run_id, SegmentCount(segment.id))
    found: Iterator[CustomerState] = segment_members(segment, states, now, run.segment)
    if campaign.targeting == "ranked":
        members: Iterator[str] = iter(rank_members(engine, campaign, found, run_id))
    else:
        members = (s.user_id for s in found)
    budget = campaign.max_sends
    run.budget_reached = budget is not None and budget <= 0
    yielded = False
    while not run.budget_reached:
        size = batch_size if budget is None else min(batch_size, budget - run.sent)
        batch = [campaign_request(campaign, run_id, user) for user in islice(members, size)]
        if not batch:
            break
        for result in engine.decide_batch(batch):
            if isinstance(result, NextbestError):
                run.failed[type(result).__name__] += 1
                continue
            run.decided += 1
            run.replayed += result.replayed
            run.refusals.update(r.reason.value for r in result.rejected)
            if result.actions:
                run.sent += 1
            elif any(r.reason is ReasonCode.HELD_OUT for r in result.rejected):
                run.held_out += 1
        run.budget_reached = budget is not None and run.sent >= budget
        yielded = True
        yield run
    if not yielded:  # no batch at all (an empty audience): the scan's counts all the same
        yield run
