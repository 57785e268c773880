"""Decision ids: UUIDv7, so decisions append to the decision-id indexes in time order; the answer
without ``explain``."""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any, cast

from nextbest.decision.engine import _without_explanations, new_decision_id
from nextbest.domain import ActionClass, Channel, Decision, ReasonCode, Rejection


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


def test_without_explanations_keeps_every_field_but_the_rejections() -> None:
    """``_without_explanations`` builds the decision field by field: a field added to ``Decision`` and
    not copied there would be lost from every answer without ``explain``. Each field holds a value of
    its own (its name), so one not copied shows."""
    fields = {f.name: f"<{f.name}>" for f in dataclasses.fields(Decision)}
    kept = Rejection("b", "f", Channel.EMAIL, ActionClass.TRIGGERED, ReasonCode.HELD_OUT, "y")
    dropped = Rejection("a", "f", Channel.EMAIL, ActionClass.TRIGGERED, ReasonCode.NO_CONSENT, "x")
    full = Decision(**cast(Any, {**fields, "rejected": (dropped, kept)}))
    assert _without_explanations(full) == dataclasses.replace(full, rejected=(kept,))
