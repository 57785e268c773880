"""Decision ids: UUIDv7, so decisions append to the decision-id indexes in time order."""

from __future__ import annotations

import time
import uuid

from nextbest.decision.engine import new_decision_id


def test_decision_ids_are_uuid7_hex_and_unique() -> None:
    ids = [new_decision_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    for value in ids[:100]:
        parsed = uuid.UUID(value)
        assert (len(value), parsed.version, parsed.variant) == (32, 7, uuid.RFC_4122)


def test_decision_ids_are_ordered_by_creation_time() -> None:
    before = time.time_ns() // 1_000_000
    first = new_decision_id()
    time.sleep(0.002)
    second = new_decision_id()
    after = time.time_ns() // 1_000_000
    assert first < second
    assert before <= int(first[:12], 16) <= int(second[:12], 16) <= after
