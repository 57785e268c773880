"""Segments: named, dynamic audiences declared in the catalog as a CEL condition over ``customer`` (the
fields rules see: orders, refunds, revenue, recency, first seen, engagement, consents; and the predicted
``churn_risk`` and ``purchase_propensity``, which the scan reads from the stored scores, see
``campaigns.scores``).

A segment is request-free: it is evaluated over stored customers as they are at ``now`` (``nextbest
segment count`` and ``sample``; the campaigns built on it). A condition that fails to evaluate for one
customer (a type error on an unusual value) leaves that customer out and is counted, never stops the scan.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from nextbest.catalog import RuleEvaluationError, Segment
from nextbest.catalog.rules import score_reads
from nextbest.decision.rules import customer_variables
from nextbest.state import CustomerState
from nextbest.state.scored import scores_of

__all__ = ["SegmentCount", "count_segment", "in_segment", "segment_members"]


def in_segment(segment: Segment, state: CustomerState, now: datetime) -> bool:
    """Whether the customer is in the segment now; ``RuleEvaluationError`` when the condition fails."""
    condition = segment.condition
    fields = condition.reads.get("customer", frozenset())
    variables = customer_variables(state, now, fields)
    for name in sorted(score_reads(condition.reads)):
        score = scores_of(state).get(name)
        if score is None:
            raise RuleEvaluationError(f"no {name} score: run `nextbest score --all` (or --stale)")
        variables[name] = score
    return condition.evaluate({"customer": variables})


@dataclass
class SegmentCount:
    """A scan's outcome: customers scanned, members, and conditions that failed (by error)."""

    segment: str
    scanned: int = 0
    members: int = 0
    failed: Counter[str] = field(default_factory=Counter)


def segment_members(
    segment: Segment, states: Iterable[CustomerState], now: datetime, tally: SegmentCount | None = None
) -> Iterator[CustomerState]:
    """The members among ``states``, streamed; ``tally`` (when given) counts as it goes."""
    for state in states:
        if tally is not None:
            tally.scanned += 1
        try:
            member = in_segment(segment, state, now)
        except RuleEvaluationError as exc:
            if tally is not None:
                tally.failed[str(exc)] += 1
            continue
        if member:
            if tally is not None:
                tally.members += 1
            yield state


def count_segment(segment: Segment, states: Iterable[CustomerState], now: datetime) -> SegmentCount:
    tally = SegmentCount(segment.id)
    for _ in segment_members(segment, states, now, tally):
        pass
    return tally
