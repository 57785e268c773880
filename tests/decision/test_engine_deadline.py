"""A call whose deadline has passed, or would pass before its decision is written, writes nothing."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from nextbest.catalog import bundled_catalog_path, load_catalog
from nextbest.deadlines import Duration
from nextbest.decision.engine import DecisionEngine
from nextbest.domain import Decision, DecisionRequest
from nextbest.errors import DeadlineExceededError
from nextbest.store import SavedDecision
from nextbest.store.memory import MemoryStore

NOW = datetime(2026, 11, 2, 9, tzinfo=UTC)


class SlowStore(MemoryStore):
    """Writes take ``delay`` seconds, as a busy group commit does."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def save_decision(
        self,
        decision: Decision,
        fingerprint: str,
        decided_at: datetime,
        version: int | None = None,
        deadline: float | None = None,
    ) -> SavedDecision:
        time.sleep(self.delay)
        return super().save_decision(decision, fingerprint, decided_at, version, deadline)


def _request(request_id: str) -> DecisionRequest:
    return DecisionRequest(request_id, "u-1", "cart_abandoned", NOW)


def test_a_passed_deadline_decides_and_writes_nothing() -> None:
    store = MemoryStore()
    engine = DecisionEngine(load_catalog(bundled_catalog_path()), store)
    with pytest.raises(DeadlineExceededError, match="nothing was written"):
        engine.decide(_request("r-late"), deadline=time.monotonic() - 0.001)
    assert store.find_decision("r-late") is None


def test_no_deadline_and_a_distant_one_decide() -> None:
    store = MemoryStore()
    engine = DecisionEngine(load_catalog(bundled_catalog_path()), store)
    engine.decide(_request("r-none"))
    engine.decide(_request("r-far"), deadline=time.monotonic() + 60)
    assert store.find_decision("r-none") is not None
    assert store.find_decision("r-far") is not None


def test_a_deadline_shorter_than_a_write_takes_now_is_not_written() -> None:
    store = SlowStore(delay=0.05)
    engine = DecisionEngine(load_catalog(bundled_catalog_path()), store)
    for index in range(5):  # the engine learns how long writes take
        engine.decide(_request(f"r-{index}"), deadline=time.monotonic() + 5)
    with pytest.raises(DeadlineExceededError):
        engine.decide(_request("r-short"), deadline=time.monotonic() + 0.02)
    assert store.find_decision("r-short") is None


def test_a_duration_follows_recent_runs() -> None:
    duration = Duration()
    assert duration.estimate() == 0.0
    for _ in range(50):
        duration.observe(0.010)
    assert 0.009 < duration.estimate() < 0.012
    for _ in range(50):
        duration.observe(0.100)
    assert duration.estimate() > 0.09


def test_an_estimate_left_high_by_a_slow_spell_decays_while_nothing_runs() -> None:
    now = [0.0]
    duration = Duration(clock=lambda: now[0])
    for _ in range(20):
        duration.observe(40.0)  # a frozen database: every write took 40 s
    stuck = duration.estimate()
    assert stuck > 30
    now[0] += 1.0
    assert duration.estimate() == pytest.approx(stuck / 2)
    now[0] += 9.0  # ten seconds without a write: calls with ordinary deadlines get through again
    assert duration.estimate() < 0.1
    duration.observe(0.01)
    assert duration.estimate() < 0.1  # the decay is kept: a fresh run does not bring the spell back
