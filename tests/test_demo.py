"""The demo's printed decision ids tell decisions apart."""

from __future__ import annotations

from nextbest.decision.engine import new_decision_id
from nextbest.demo import _short_id


def test_decisions_made_together_print_different_ids() -> None:
    ids = [new_decision_id() for _ in range(100)]
    assert len({i[:8] for i in ids}) < 5  # the UUIDv7 time prefix: what the demo used to print
    assert len({_short_id(i) for i in ids}) == 100
