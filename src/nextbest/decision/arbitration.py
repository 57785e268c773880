"""The arbitration stage: a priority queue by class, then score, then flow priority; one action per
channel, at most ``max_actions`` in total. Each candidate that gets its turn is scheduled (the send-time
stage, which applies quiet hours and caps); winners preempt lower-priority pending actions afterwards."""

from __future__ import annotations

from collections.abc import Mapping

from nextbest.catalog import Flow
from nextbest.decision.candidates import rejection
from nextbest.decision.contact import ContactLog
from nextbest.decision.scoring import ScoredCandidate
from nextbest.decision.send_time import schedule
from nextbest.domain import Channel, ReasonCode, Rejection

__all__ = ["arbitrate", "rank_key"]


def rank_key(candidate: ScoredCandidate, flows: Mapping[str, Flow]) -> tuple[int, float, int, str]:
    """Sort key: transactional before triggered before promotional; then higher score, then higher flow
    priority; the action id breaks ties so the order is deterministic."""
    action = candidate.action
    return (action.action_class.rank, -candidate.score, -flows[action.flow].priority, action.id)


def arbitrate(
    candidates: list[ScoredCandidate],
    flows: Mapping[str, Flow],
    max_actions: int,
    contact: ContactLog | None = None,
) -> tuple[list[ScoredCandidate], list[Rejection]]:
    """The winners, highest ranked first (``send_at`` moved past quiet hours where needed), and why
    each other candidate lost."""
    chosen: list[ScoredCandidate] = []
    rejected: list[Rejection] = []
    taken: dict[Channel, ScoredCandidate] = {}
    ranked = sorted(candidates, key=lambda c: rank_key(c, flows)) if len(candidates) > 1 else candidates
    for candidate in ranked:
        action, channel = candidate.action, candidate.channel
        # An action an experiment moves between channels needs every arm's channel free: which arm the
        # unit is in must not decide whether it gets the action.
        variants = candidate.candidate.variants
        if variants:
            channels = [channel, *(ch for ch, _ in variants if ch is not channel)]
            busy = next((ch for ch in channels if ch in taken), None)
        else:
            channels = [channel]
            busy = channel if channel in taken else None
        if busy is not None:
            winner = taken[busy]
            arm = "" if busy is channel else f" (another arm of its experiment sends it on {busy})"
            rejected.append(
                rejection(
                    action,
                    ReasonCode.LOWER_PRIORITY,
                    f"{busy} already taken by {winner.action.id} "
                    f"({winner.action.action_class}, score {winner.score:.4g}){arm}",
                    channel,
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
        for ch in channels:
            taken[ch] = winner
        chosen.append(winner)
    return chosen, rejected
