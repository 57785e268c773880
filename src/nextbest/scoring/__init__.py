"""Scoring: the expected value of sending each eligible action.

Without a model an action is scored with its declared base propensity: ``P(convert) x value``. The model
registry (propensity, uplift) plugs in here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from nextbest.catalog import Action
from nextbest.domain import Channel
from nextbest.eligibility import Candidate

__all__ = ["ScoredCandidate", "score_candidates"]


@dataclass(frozen=True, slots=True)
class ScoredCandidate:
    candidate: Candidate
    score: float
    send_at: datetime

    @property
    def action(self) -> Action:
        return self.candidate.action

    @property
    def channel(self) -> Channel:
        return self.candidate.channel


def score_candidates(candidates: list[Candidate], now: datetime) -> list[ScoredCandidate]:
    return [ScoredCandidate(c, c.action.base_propensity * c.action.value, now + c.delay) for c in candidates]
