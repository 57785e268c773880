"""A customer's state with their predicted scores (``churn_risk``, ``purchase_propensity``), as a segment
scan reads them beside the state (``nextbest.store.scan``). The scores are not folded from events and
never written with the state; ``CustomerState`` itself stays as the event path builds it, so loading a
customer for an event or a decision costs nothing more."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType

from nextbest.state.customer import CustomerState

__all__ = ["ScoredState", "scores_of", "with_scores"]

_NONE: Mapping[str, float] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ScoredState(CustomerState):
    scores: Mapping[str, float] = field(default_factory=lambda: _NONE)


def with_scores(state: CustomerState, scores: Mapping[str, float]) -> ScoredState:
    """``state`` carrying ``scores``."""
    values = {f.name: getattr(state, f.name) for f in fields(CustomerState)}
    return ScoredState(**values, scores=MappingProxyType(dict(scores)))


def scores_of(state: CustomerState) -> Mapping[str, float]:
    """The scores ``state`` carries (none for a plain ``CustomerState``)."""
    return state.scores if isinstance(state, ScoredState) else _NONE
