"""The arbitration stage: a priority queue by class, then score, then flow priority; one action per
channel, at most ``max_actions`` in total. Each candidate that gets its turn is scheduled (the send-time
stage, which applies quiet hours and caps); winners preempt lower-priority pending actions afterwards."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from nextbest.catalog import Action, Flow
from nextbest.decision.candidates import new_rejection, rejection
from nextbest.decision.contact import ContactLog
from nextbest.decision.scoring import ScoredCandidate
from nextbest.decision.send_time import schedule
from nextbest.domain import Channel, ReasonCode, Rejection

__all__ = ["arbitrate", "rank_constants", "rank_key"]


def rank_key(candidate: ScoredCandidate, flows: Mapping[str, Flow]) -> tuple[int, float, int, str]:
    """Sort key: transactional before triggered before promotional; then higher score, then higher flow
    priority; the action id breaks ties so the order is deterministic."""
    action = candidate.action
    return (action.action_class.rank, -candidate.score, -flows[action.flow].priority, action.id)


def rank_constants(flows: Mapping[str, Flow], actions: Iterable[Action]) -> dict[str, tuple[int, int]]:
    """What ``rank_key`` takes from the catalog, per action id (class rank, negated flow priority):
    worked out once per catalog instead of per candidate."""
    return {a.id: (a.action_class.rank, -flows[a.flow].priority) for a in actions}


def arbitrate(
    candidates: list[ScoredCandidate],
    flows: Mapping[str, Flow],
    max_actions: int,
    contact: ContactLog | None = None,
    ranks: Mapping[str, tuple[int, int]] | None = None,
) -> tuple[list[ScoredCandidate], list[Rejection]]:
    """The winners, highest ranked first (``send_at`` moved past quiet hours where needed), and why
    each other candidate lost. ``ranks`` (``rank_constants``) orders as ``rank_key`` does, cheaper."""
    chosen: list[ScoredCandidate] = []
    rejected: list[Rejection] = []
    taken: dict[Channel, ScoredCandidate] = {}
    # Why a channel is taken, per channel: the same sentence for every candidate that loses it.
    taken_by: dict[Channel, str] = {}
    if len(candidates) < 2:
        ranked = candidates
    elif ranks is None:
        ranked = sorted(candidates, key=lambda c: rank_key(c, flows))
    else:
        keyed = []
        for c in candidates:
            action_id = c.candidate.action.id
            cls, priority = ranks[action_id]
            keyed.append((cls, -c.score, priority, action_id))
        ranked = [candidates[i] for i in sorted(range(len(keyed)), key=keyed.__getitem__)]
    for candidate in ranked:
        own = candidate.candidate
        action, channel = own.action, own.channel
        # An action an experiment moves between channels needs every arm's channel free: which arm the
        # unit is in must not decide whether it gets the action.
        variants = own.variants
        if variants:
            channels = [channel, *(ch for ch, _ in variants if ch is not channel)]
            busy = next((ch for ch in channels if ch in taken), None)
        else:
            channels = None
            busy = channel if channel in taken else None
        if busy is not None:
            why = taken_by.get(busy)
            if why is None:
                winner = taken[busy]
                why = taken_by[busy] = (
                    f"{busy} already taken by {winner.action.id} "
                    f"({winner.action.action_class}, score {winner.score:.4g})"
                )
            if busy is not channel:
                why += f" (another arm of its experiment sends it on {busy})"
            rejected.append(
                new_rejection(
                    (action.id, action.flow, channel, action.action_class, ReasonCode.LOWER_PRIORITY, why)
                )
            )
            continue
        if len(chosen) >= max_actions:
            rejected.append(
                rejection(
                    action, ReasonCode.MAX_ACTIONS, f"max_actions={max_actions} already chosen", channel
                )
            )
            continue
        winner = candidate
        if contact is not None:
            scheduled = schedule(candidate, contact, chosen, flows)
            if isinstance(scheduled, Rejection):
                rejected.append(scheduled)
                continue
            winner = scheduled
        for ch in channels or (channel,):
            taken[ch] = winner
        chosen.append(winner)
    return chosen, rejected
