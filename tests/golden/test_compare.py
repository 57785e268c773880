"""The golden replay fails when it should: its comparison, and the replay against engines changed on
purpose (a score off by one part in a million, another reason detail, an event outcome, a decision id
that a later event names)."""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import cache
from typing import Any

import pytest

from nextbest.domain import Decision, DecisionRequest, Event, EventOutcome, EventResult
from nextbest.store.memory import MemoryStore
from tests.golden.corpus import Corpus, differences, read_corpus
from tests.golden.record import CORPUS
from tests.golden.replay import format_mismatch, replay_segment
from tests.golden.test_golden import inputs

_OPERATIONS = 200


def _features(*values: float) -> str:
    import base64

    return base64.b64encode(struct.pack(f"<{len(values)}d", *values)).decode()


@pytest.mark.parametrize(
    ("expected", "got", "found"),
    [
        ({"score": 1.0}, {"score": 1.0 + 5e-10}, []),
        ({"score": 1.0}, {"score": 1.0 + 2e-9}, ["score: expected 1.0, got 1.000000002"]),
        ({"score": 4000.0}, {"score": 4000.0 + 1e-6}, []),  # relative above 1
        ({"score": 4000.0}, {"score": 4000.0 * (1 + 1e-8)}, ["score: expected 4000.0, got 4000.00004"]),
        ({"score": float("nan")}, {"score": float("nan")}, []),
        ({"max": 2}, {"max": 2.0}, []),
        ({"a": "x"}, {}, ["a: expected 'x', missing"]),
        ({}, {"a": "x"}, ["a: not expected, got 'x'"]),
        ({"features": _features(1.0, 2.0)}, {"features": _features(1.0, 2.0 + 1e-12)}, []),
        (
            {"features": _features(1.0, 2.0)},
            {"features": _features(1.0, 2.5)},
            ["features[1]: expected 2.0, got 2.5"],
        ),
        (
            {"rejected": [["a", "f", "email", "triggered", "COOLDOWN", "3 days"]]},
            {"rejected": [["a", "f", "email", "triggered", "COOLDOWN", "3 day(s)"]]},
            ["rejected[0].detail: expected '3 days', got '3 day(s)'"],
        ),
    ],
    ids=[
        "within-1e-9",
        "beyond-1e-9",
        "relative-within",
        "relative-beyond",
        "nan",
        "int-and-float",
        "missing",
        "unexpected",
        "features-within",
        "features-beyond",
        "rejection-detail",
    ],
)
def test_differences(expected: Any, got: Any, found: list[str]) -> None:
    assert differences(expected, got) == found


def test_a_reordered_list_is_named_as_such() -> None:
    a, b = (
        ["a", "f", "sms", "promotional", "LOWER_PRIORITY", ""],
        ["b", "f", "sms", "triggered", "COOLDOWN", ""],
    )
    (found,) = differences({"rejected": [a, b]}, {"rejected": [b, a]})
    assert found.startswith("rejected: the same 2 items in another order")
    (found,) = differences({"rejected": [a, b]}, {"rejected": [b]})
    assert found.startswith("rejected: expected 2 items, got 1; missing [{'action_id': 'a'")


@cache
def _start() -> Corpus:
    return read_corpus(CORPUS, lines=_OPERATIONS + 2)


class _Changed:
    """A decision engine whose answers ``change`` alters."""

    def __init__(self, engine: Any, decide: Callable[[Decision], Decision] | None, events: Any) -> None:
        self.engine = engine
        self.change_decision = decide
        self.change_results = events

    def decide(self, request: DecisionRequest, deadline: float | None = None) -> Decision:
        decision: Decision = self.engine.decide(request, deadline)
        return self.change_decision(decision) if self.change_decision else decision

    def record_events(self, events: Sequence[Event]) -> list[EventResult]:
        results: list[EventResult] = self.engine.record_events(events)
        return self.change_results(results) if self.change_results else results


def _replay_changed(
    decide: Callable[[Decision], Decision] | None = None,
    events: Callable[[list[EventResult]], list[EventResult]] | None = None,
) -> str:
    from nextbest.decision.engine import DecisionEngine

    def factory(*args: Any, **kwargs: Any) -> Any:
        return _Changed(DecisionEngine(*args, **kwargs), decide, events)

    segment = _start().segments[0]
    catalog, models = inputs(segment)
    result = replay_segment(segment, catalog, models, MemoryStore(), engine_factory=factory)
    assert result.mismatched, "the change went unnoticed"
    return format_mismatch(result.mismatches[0])


def _first_action(change: Callable[[Any], Any]) -> Callable[[Decision], Decision]:
    def changed(d: Decision) -> Decision:
        return replace(d, actions=(change(d.actions[0]), *d.actions[1:])) if d.actions else d

    return changed


def test_the_replay_is_exact_without_a_change() -> None:
    segment = _start().segments[0]
    catalog, models = inputs(segment)
    result = replay_segment(segment, catalog, models, MemoryStore())
    assert result.operations == _OPERATIONS and not result.mismatched


def test_a_score_off_by_a_millionth_is_caught() -> None:
    shown = _replay_changed(_first_action(lambda a: replace(a, score=a.score * (1 + 1e-6))))
    assert "actions[0].score: expected" in shown
    assert "what was asked" in shown and "expected (recorded)" in shown and "got (this working tree)" in shown


def test_another_send_time_is_caught() -> None:
    from datetime import timedelta

    shown = _replay_changed(_first_action(lambda a: replace(a, send_at=a.send_at + timedelta(seconds=1))))
    assert "actions[0].send_at: expected" in shown


def test_another_reason_detail_is_caught() -> None:
    def changed(d: Decision) -> Decision:
        if not d.rejected:
            return d
        first: Any = d.rejected[0]
        # A dataclass at 37685eb, a NamedTuple since: either way, one more character in its detail.
        changed = (
            first._replace(detail=first.detail + ".")
            if hasattr(first, "_replace")
            else replace(first, detail=first.detail + ".")
        )
        return replace(d, rejected=(changed, *d.rejected[1:]))

    assert "rejected[0].detail: expected" in _replay_changed(changed)


def test_another_event_outcome_is_caught() -> None:
    def changed(results: list[EventResult]) -> list[EventResult]:
        return [replace(results[0], outcome=EventOutcome.DUPLICATE), *results[1:]]

    assert "expected 'accepted', got 'duplicate'" in _replay_changed(events=changed)


def test_a_lost_exposure_is_caught() -> None:
    def changed(d: Decision) -> Decision:
        return replace(d, exposures=d.exposures[1:])

    assert "exposures: expected" in _replay_changed(changed)
