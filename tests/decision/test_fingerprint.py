"""The request fingerprint must never change: stored decisions are replayed by comparing it."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from types import MappingProxyType

import pytest

from nextbest.decision.engine import request_fingerprint
from nextbest.domain import Channel, DecisionRequest, RequestContext


def _as_first_written(request: DecisionRequest) -> str:
    """The fingerprint as it was first written (commit 31c3800), every field converted the long way."""
    ctx = request.context
    canonical = (
        request.user_id,
        request.trigger,
        request.occurred_at.isoformat() if request.occurred_at else None,
        ctx.cart_value,
        tuple(ctx.product_ids),
        ctx.page_category,
        ctx.time_zone,
        tuple(sorted(ctx.attributes.items())),
        tuple(ctx.out_of_stock_product_ids),
        tuple(c.value if c else None for c in request.channels),
        request.max_actions or 1,
    )
    return hashlib.sha256(repr(canonical).encode()).hexdigest()


REQUESTS = [
    DecisionRequest("r1", "u1", "cart_abandoned", None),
    DecisionRequest(
        "r2",
        "u2",
        "bench_trigger",
        datetime(2026, 12, 7, 8, 0, tzinfo=UTC),
        RequestContext(
            cart_value=59.5,
            product_ids=("p1", "p2"),
            page_category="shoes",
            time_zone="Europe/Paris",
            attributes=MappingProxyType({"b": "2", "a": "1"}),
            out_of_stock_product_ids=("p2",),
        ),
        channels=(Channel.EMAIL, None, Channel.SMS),
        max_actions=2,
        explain=True,
    ),
    DecisionRequest("r3", "u3", "t", None, RequestContext(attributes={}), channels=(), max_actions=0),
]


@pytest.mark.parametrize("request_", REQUESTS)
def test_the_fingerprint_is_the_one_first_written(request_: DecisionRequest) -> None:
    assert request_fingerprint(request_) == _as_first_written(request_)


def test_a_pinned_fingerprint() -> None:
    assert request_fingerprint(REQUESTS[1]) == PINNED


PINNED = "10e7fe35df630e02140c6c95d53c4678bff578aa0f52d0c3102bce23bf69abaf"
