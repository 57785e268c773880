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
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice

from nextbest.campaigns.resume import decide_resuming
from nextbest.campaigns.segments import SegmentCount, segment_members
from nextbest.campaigns.targeting import (
    MemberEstimate,
    check_targeting,
    dry_runs,
    estimate,
    interval,
    model_error,
    models_of,
    target_value,
)
from nextbest.catalog import Campaign
from nextbest.decision.engine import MAX_BATCH, DecisionEngine
from nextbest.domain import Decision, DecisionRequest, ReasonCode
from nextbest.errors import NextbestError
from nextbest.state import CustomerState
from nextbest.stats.power import PowerResult, minimum_detectable_effect

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
    """What a run would do now.

    The funnel is over the whole audience: ``refusals`` counts candidate refusals by reason (a member
    refused on two actions counts twice), ``nothing`` members with nothing to send, ``not_targeted``
    members the targeting rule leaves out (no positive expected lift, say), ``over_budget`` members with
    something to send (or held out) that the budget leaves unreached. What the run does: ``decided``
    members, of whom ``sends`` are sent and ``held_out`` held out by an experiment (their counterfactual
    is logged); ``decided_refusals`` are their refusals, which the run's ``refusals`` equal.

    ``expected_value`` sums the sent actions' scores. Under an uplift model covering the campaign's flow
    (``estimated`` of the sends), ``incremental_conversions`` and ``incremental_revenue`` (before
    ``cost``) are what the sends are expected to add, with their variances for an interval."""

    campaign: str
    segment: SegmentCount
    targeting: str = "everyone"
    decided: int = 0
    sends: int = 0
    over_budget: int = 0
    held_out: int = 0
    nothing: int = 0
    not_targeted: int = 0
    refusals: Counter[str] = field(default_factory=Counter)
    decided_refusals: Counter[str] = field(default_factory=Counter)
    by_channel: Counter[str] = field(default_factory=Counter)
    by_hour: Counter[str] = field(default_factory=Counter)
    expected_value: float = 0.0
    failed: Counter[str] = field(default_factory=Counter)
    estimated: int = 0
    incremental_conversions: float = 0.0
    incremental_revenue: float = 0.0
    cost: float = 0.0
    discount_spend: float = 0.0
    variance_conversions: float = 0.0
    variance_revenue: float = 0.0
    # Over the members the run would reach (sent or held out): expected conversions and revenue if sent,
    # and E[revenue^2], for the holdout's minimum detectable effect.
    reached_conversions: float = 0.0
    reached_revenue: float = 0.0
    reached_revenue_square: float = 0.0
    reached_estimated: int = 0
    # The uplift model's error per send in conversion probability (``targeting.model_error``), and the
    # orders at stake over the estimated sends: the model's error moves every send the same way.
    model_error: float | None = None
    value_at_stake: float = 0.0
    discount_reached: bool = False  # the discount budget stopped the ranked list

    def conversions_interval(self) -> tuple[float, float] | None:
        """The 95 % interval of the incremental conversions: the sends' outcomes drawn (each a
        Bernoulli trial) plus the model's error, shared by all sends."""
        if not self.estimated:
            return None
        error = (self.model_error or 0.0) * self.estimated
        return interval(self.incremental_conversions, self.variance_conversions + error**2)

    def revenue_interval(self) -> tuple[float, float] | None:
        """The 95 % interval of the incremental revenue, as :meth:`conversions_interval` (the model's
        error times the orders at stake)."""
        if not self.estimated:
            return None
        error = (self.model_error or 0.0) * self.value_at_stake
        return interval(self.incremental_revenue, self.variance_revenue + error**2)

    def minimum_detectable_effect(self) -> dict[str, PowerResult]:
        """The holdout's minimum detectable effect (80 % power, two-sided 5 %) on conversion and on
        revenue per member, absolute, from the expected outcome of the members the run reaches."""
        n = self.reached_estimated
        if not n:
            error = "no member reached has a conversion estimate"
            return {"conversion": PowerResult(None, None, error), "revenue": PowerResult(None, None, error)}
        p = min(max(self.reached_conversions / n, 0.0), 1.0)
        mean = self.reached_revenue / n
        variance = self.reached_revenue_square / n - mean**2
        return {
            "conversion": minimum_detectable_effect(p * (1 - p), self.held_out, self.sends, baseline_mean=p),
            "revenue": minimum_detectable_effect(variance, self.held_out, self.sends, baseline_mean=mean),
        }


@dataclass(frozen=True, slots=True)
class _Planned:
    """What a plan keeps of a member's dry run (not the decision: a ranked plan holds every member)."""

    user_id: str
    reasons: tuple[str, ...]
    held_out: bool
    sends: tuple[tuple[str, str, float], ...]  # channel, hour, score of each action sent
    member: MemberEstimate | None

    @classmethod
    def of(cls, user_id: str, decision: Decision, member: MemberEstimate | None) -> _Planned:
        return cls(
            user_id,
            tuple(r.reason.value for r in decision.rejected),
            any(r.reason is ReasonCode.HELD_OUT for r in decision.rejected),
            tuple(
                (a.channel.value, a.send_at.strftime("%Y-%m-%d %H:00Z"), a.score) for a in decision.actions
            ),
            member,
        )


def _requests(campaign: Campaign, run_id: str) -> Callable[[str], DecisionRequest]:
    return lambda user_id: campaign_request(campaign, run_id, user_id)


def plan_campaign(
    engine: DecisionEngine, campaign: Campaign, states: Iterable[CustomerState], now: datetime
) -> CampaignPlan:
    """The dry run of the campaign now (raises :class:`TargetingError` when its targeting rule cannot
    be followed with the models loaded)."""
    models = models_of(engine)
    check_targeting(engine.catalog, campaign, models)
    segment = engine.catalog.segments[campaign.audience]
    plan = CampaignPlan(campaign.id, SegmentCount(segment.id), campaign.targeting)
    plan.model_error = model_error(models)
    actions = {a.id: a for a in engine.catalog.actions}
    ranked = campaign.targeting != "everyone"
    queue: list[tuple[float, str, _Planned]] = []
    members = segment_members(segment, states, now, plan.segment)
    for dry in dry_runs(engine, _requests(campaign, "plan"), members):
        if dry.decision is None:
            plan.failed[type(dry.error).__name__] += 1
            continue
        decision = dry.decision
        plan.refusals.update(r.reason.value for r in decision.rejected)
        member = estimate(models, actions, decision)
        planned = _Planned.of(dry.user_id, decision, member)
        if not ranked:
            _tally(plan, planned, campaign.max_sends)
            continue
        key = target_value(campaign, decision, member)
        if key is None:
            if planned.sends or planned.held_out:
                plan.not_targeted += 1
            else:
                plan.nothing += 1
            continue
        queue.append((-key, dry.user_id, planned))
    queue.sort(key=lambda t: t[:2])
    for _, _, planned in queue:
        _tally(plan, planned, campaign.max_sends, campaign.max_discount)
    return plan


def rank_members(
    engine: DecisionEngine, campaign: Campaign, members: Iterable[CustomerState], run_id: str | None = None
) -> list[str]:
    """The members a ranked campaign would reach, best first by its targeting rule: each member's
    decision made dry, valued by what it sends, or for a member an experiment holds out by what it would
    have sent (so that the arms are ranked alike and the holdout stays comparable); members the rule
    leaves out (nothing to send; under ``uplift``, no positive expected incremental value) are left out.

    With ``run_id``, a member this run already decided (a run started again after a crash) comes first,
    whatever a dry run would say now: its decision replays and counts against the budget, so a re-run
    never spends the budget twice (a dry run would now see the run's own send, a frequency cap say, and
    leave the member out)."""
    models = models_of(engine)
    check_targeting(engine.catalog, campaign, models)
    actions = {a.id: a for a in engine.catalog.actions}
    resumed = _requests(campaign, run_id) if run_id is not None else None
    # (key, user, expected discount if sent): a member already decided, or whose dry run failed, has
    # no estimate and counts no discount
    scored: list[tuple[float, str, float]] = []
    for dry in dry_runs(engine, _requests(campaign, "plan"), members, resumed=resumed):
        if dry.decided:
            scored.append((float("inf"), dry.user_id, 0.0))
        elif dry.decision is None:
            scored.append((float("-inf"), dry.user_id, 0.0))  # decided (and its error counted) last
        else:
            member = estimate(models, actions, dry.decision)
            score = target_value(campaign, dry.decision, member)
            if score is not None:
                spend = member.discount_spend if member is not None and dry.decision.actions else 0.0
                scored.append((score, dry.user_id, spend))
    scored.sort(key=lambda t: (-t[0], t[1]))
    if campaign.max_discount is None:
        return [user for _, user, _ in scored]
    reached: list[str] = []
    spent = 0.0
    for _, user, spend in scored:  # best first until the next send would overspend the discount budget
        if spend > 0 and spent + spend > campaign.max_discount:
            break
        spent += spend
        reached.append(user)
    return reached


def _tally(
    plan: CampaignPlan, planned: _Planned, budget: int | None, discount_budget: float | None = None
) -> None:
    reaches = bool(planned.sends) or planned.held_out
    member = planned.member
    if (
        discount_budget is not None
        and planned.sends
        and member is not None
        and member.discount_spend > 0
        and plan.discount_spend + member.discount_spend > discount_budget
    ):
        plan.discount_reached = True  # rank_members cuts the run's list here
    if plan.discount_reached or (budget is not None and plan.sends >= budget):
        # the run stops here: nobody later is decided
        if reaches:
            plan.over_budget += 1
        else:
            plan.nothing += 1
        return
    plan.decided += 1
    plan.decided_refusals.update(planned.reasons)
    if not reaches:
        plan.nothing += 1
        return
    if member is not None:
        plan.reached_estimated += 1
        plan.reached_conversions += member.p_sent
        plan.reached_revenue += member.propensity_value
        plan.reached_revenue_square += member.revenue_square
    if not planned.sends:
        plan.held_out += 1
        return
    plan.sends += 1
    for channel, hour, score in planned.sends:
        plan.by_channel[channel] += 1
        plan.by_hour[hour] += 1
        plan.expected_value += score
    if member is None:
        return
    plan.discount_spend += member.discount_spend
    plan.cost += member.cost
    if member.incremental_revenue is not None and member.incremental_conversions is not None:
        plan.estimated += 1
        plan.incremental_conversions += member.incremental_conversions
        plan.incremental_revenue += member.incremental_revenue
        plan.variance_conversions += member.variance_conversions
        plan.variance_revenue += member.variance_revenue
        plan.value_at_stake += member.value


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
) -> Generator[CampaignRun, None, None]:
    """:func:`run_campaign` one batch at a time: the window and batch size are checked at once (raising
    :class:`OutsideRunWindowError` or ValueError), then the iterator decides a batch, commits it and
    yields the run so far (the same object, updated). A consumer that stops iterating stops the run after
    the batch it last received: nothing is decided until the next item is asked for, and what was
    committed stays (the same run id resumes it)."""
    if not campaign.start <= now < campaign.stop:
        bound = "stop" if now >= campaign.stop else "start"
        raise OutsideRunWindowError(
            f"campaigns.{campaign.id}.{bound}: campaign {campaign.id!r} runs from "
            f"{campaign.start:%Y-%m-%d %H:%M}Z to {campaign.stop:%Y-%m-%d %H:%M}Z; it is "
            f"{now:%Y-%m-%d %H:%M}Z"
            + (" (the run window is in the past)" if bound == "stop" else " (not started yet)")
        )
    if not 1 <= batch_size <= MAX_BATCH:
        raise ValueError(f"batch size must be 1 to {MAX_BATCH}")
    if not RUN_ID.fullmatch(run_id):
        raise ValueError(f"run id {run_id[:80]!r} must be {RUN_ID_RULE}")
    check_targeting(engine.catalog, campaign, models_of(engine))
    return _batches(engine, campaign, states, run_id, now, batch_size=batch_size)


def _batches(
    engine: DecisionEngine,
    campaign: Campaign,
    states: Iterable[CustomerState],
    run_id: str,
    now: datetime,
    *,
    batch_size: int,
) -> Generator[CampaignRun, None, None]:
    segment = engine.catalog.segments[campaign.audience]
    run = CampaignRun(campaign.id, run_id, SegmentCount(segment.id))
    found: Iterator[CustomerState] = segment_members(segment, states, now, run.segment)
    if campaign.targeting != "everyone":
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
        for result in decide_resuming(engine, batch):
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
