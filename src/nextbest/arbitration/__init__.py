"""Arbitration: a priority queue by class, then score, then flow priority; one action per channel and at
most ``max_actions`` in total."""

from __future__ import annotations

from collections.abc import Mapping

from nextbest.catalog import Flow
from nextbest.domain import Channel, ReasonCode, Rejection
from nextbest.eligibility import rejection
from nextbest.scoring import ScoredCandidate

__all__ = ["arbitrate", "rank_key"]


def rank_key(candidate: ScoredCandidate, flows: Mapping[str, Flow]) -> tuple[int, float, int, str]:
    """Sort key: transactional before triggered before promotional; then higher score, then higher flow
    priority; the action id breaks ties so the order is deterministic."""
    action = candidate.action
    return (action.action_class.rank, -candidate.score, -flows[action.flow].priority, action.id)


def arbitrate(
    candidates: list[ScoredCandidate], flows: Mapping[str, Flow], max_actions: int
) -> tuple[list[ScoredCandidate], list[Rejection]]:
    """The winners, highest ranked first, and why each other candidate lost."""
    chosen: list[ScoredCandidate] = []
    rejected: list[Rejection] = []
    taken: dict[Channel, ScoredCandidate] = {}
    for candidate in sorted(candidates, key=lambda c: rank_key(c, flows)):
        action, channel = candidate.action, candidate.channel
        if channel in taken:
            winner = taken[channel]
            rejected.append(
                rejection(
                    action,
                    ReasonCode.LOWER_PRIORITY,
                    f"{channel} already taken by {winner.action.id} "
                    f"({winner.action.action_class}, score {winner.score:.4g})",
                    channel,
                )
            )
        elif len(chosen) >= max_actions:
            rejected.append(
                rejection(
                    action, ReasonCode.MAX_ACTIONS, f"max_actions={max_actions} already chosen", channel
                )
            )
        else:
            taken[channel] = candidate
            chosen.append(candidate)
    return chosen, rejected
