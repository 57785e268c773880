"""Replays the golden corpus through a decision engine and reports where its answers differ.

Each segment starts from a fresh store; its operations run in the recorded order, each with the engine's
clock at the recorded value, so caps, cooldowns, journeys and preemptions see the same history they
were recorded with.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nextbest.catalog import Catalog
from nextbest.decision.engine import DecisionEngine
from nextbest.domain import Decision
from nextbest.errors import NextbestError
from nextbest.models import ModelRegistry
from nextbest.store import DecisionStore
from tests.golden.corpus import (
    IdMap,
    Json,
    Segment,
    decision_json,
    differences,
    error_json,
    event_from_json,
    event_result_json,
    features_from_json,
    instant,
    request_from_json,
)

__all__ = ["Mismatch", "ReplayResult", "format_mismatch", "replay_segment"]

# How much of one side of a mismatch is printed.
_SHOWN = 6000
_DETAILED = 3


class _Clock:
    def __init__(self) -> None:
        self.at = datetime.fromisoformat("2000-01-01T00:00:00+00:00")

    def __call__(self) -> datetime:
        return self.at


@dataclass
class Mismatch:
    segment: str
    index: int
    operation: Json
    expected: Any
    got: Any
    differences: list[str]


@dataclass
class ReplayResult:
    operations: int = 0
    decisions: int = 0
    events: int = 0
    mismatched: int = 0
    # The first few mismatches in full (later ones may only follow from the first).
    mismatches: list[Mismatch] = field(default_factory=list)


def _decide(engine: DecisionEngine, op: Json, ids: IdMap) -> tuple[Any, Any]:
    try:
        answer: Decision | NextbestError = engine.decide(request_from_json(op["request"]))
    except NextbestError as exc:
        answer = exc
    return _answer(op, answer, ids)


def _answer(op: Json, answer: Decision | NextbestError, ids: IdMap) -> tuple[Any, Any]:
    """What was recorded for ``op``, and ``answer`` in the corpus's terms."""
    expected = op["decision"] if "decision" in op else {"error": op["error"]}
    if isinstance(answer, NextbestError):
        return expected, {"error": error_json(answer, ids.to_recorded)}
    recorded = op.get("decision", {}).get("decision_id")
    if recorded is not None and recorded not in ids.to_replayed:
        ids.learn(recorded, answer.decision_id)
    return expected, decision_json(answer, ids.to_recorded)


def _events(engine: DecisionEngine, op: Json, ids: IdMap) -> tuple[Any, Any]:
    events = [event_from_json(e, ids.to_replayed) for e in op["events"]]
    try:
        results = engine.record_events(events)
    except NextbestError as exc:
        return op["results"], {"error": error_json(exc, ids.to_recorded)}
    got: list[Any] = [event_result_json(r, ids.to_recorded) for r in results]
    for position, (event, r) in enumerate(zip(events, results, strict=False)):
        if r.index != position or r.event_id != event.event_id:  # the compact form leaves them out
            got[position] = {"index": r.index, "event_id": r.event_id, "result": got[position]}
    return op["results"], got


def replay_segment(
    segment: Segment,
    catalog: Catalog,
    models: ModelRegistry,
    store: DecisionStore,
    *,
    limit: int | None = None,
    batch: int = 1,
    engine_factory: Callable[..., DecisionEngine] = DecisionEngine,
) -> ReplayResult:
    """Replays ``segment`` (its first ``limit`` operations) on ``store``, which must be fresh.

    With ``batch`` > 1, consecutive NextAction calls (up to ``batch`` of them, no events between them)
    go to ``decide_batch`` together, at the clock of the first: a batch must answer each item as the
    item alone would have been answered in its turn."""
    clock = _Clock()
    engine = engine_factory(catalog, store, clock=clock, models=models)
    ids = IdMap()
    result = ReplayResult()
    operations = segment.operations[:limit] if limit is not None else segment.operations
    index = 0
    while index < len(operations):
        op = operations[index]
        at = instant(op["clock"])
        assert at is not None
        clock.at = at
        if op["kind"] == "events":
            answered = [(op, _events(engine, op, ids))]
            result.events += len(op["events"])
        elif batch > 1:
            group = list(itertools.takewhile(lambda o: o["kind"] == "decide", operations[index:]))[:batch]
            answers = engine.decide_batch([request_from_json(o["request"]) for o in group])
            answered = [(o, _answer(o, a, ids)) for o, a in zip(group, answers, strict=True)]
        else:
            answered = [(op, _decide(engine, op, ids))]
        for op, (expected, got) in answered:
            result.decisions += op["kind"] == "decide"
            result.operations += 1
            found = differences(expected, got)
            if found:
                result.mismatched += 1
                if len(result.mismatches) < _DETAILED:
                    result.mismatches.append(Mismatch(segment.name, index, op, expected, got, found))
            index += 1
    return result


def _abbreviated(value: Any) -> Any:
    """``value`` with features shown as their count (their values are in the differences)."""
    if isinstance(value, dict):
        return {
            k: f"<{len(features_from_json(v))} float64>" if k == "features" and isinstance(v, str) else
            _abbreviated(v)
            for k, v in value.items()
        }  # fmt: skip
    if isinstance(value, list):
        return [_abbreviated(v) for v in value]
    return value


def _shown(value: Any) -> str:
    text = json.dumps(_abbreviated(value), indent=1, sort_keys=True)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + f"\n... ({len(text) - _SHOWN:,} more characters)"


def format_mismatch(m: Mismatch) -> str:
    what = {key: m.operation[key] for key in ("kind", "clock", "request", "events") if key in m.operation}
    lines = [
        f"segment {m.segment!r}, operation {m.index} ({m.operation['kind']} at {m.operation['clock']}):",
        "  what was asked:",
        "    " + json.dumps(what, sort_keys=True)[:_SHOWN],
        f"  {len(m.differences)} difference(s) (expected != got):",
        *(f"    {d}" for d in m.differences[:40]),
    ]
    if len(m.differences) > 40:
        lines.append(f"    ... and {len(m.differences) - 40} more")
    lines += [
        "  expected (recorded):",
        "    " + _shown(m.expected).replace("\n", "\n    "),
        "  got (this working tree):",
        "    " + _shown(m.got).replace("\n", "\n    "),
    ]
    return "\n".join(lines)


def summary(result: ReplayResult) -> str:
    if not result.mismatched:
        return f"{result.operations:,} operations reproduced"
    first = format_mismatch(result.mismatches[0])
    return (
        f"{result.mismatched:,} of {result.operations:,} operations differ from the golden corpus "
        f"(later ones may only follow from the first). The first:\n{first}\n\n"
        "If this change of behaviour is intended, regenerate the corpus (tests/golden/README.md)."
    )
