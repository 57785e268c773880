"""Unary calls are counted in per-thread tallies and folded into the metrics at each collection."""

from __future__ import annotations

import threading
from bisect import bisect_left
from typing import Any

import grpc
import pytest

from nextbest.api.v1 import decision_service_pb2 as pb
from nextbest.server.metrics import Metrics, MetricsInterceptor

PATH = "/nextbest.api.v1.DecisionService/NextAction"


class _Context:
    def __init__(self) -> None:
        self._code: Any = None

    def code(self) -> Any:
        return self._code


def _response(*actions: tuple[str, int]) -> pb.NextActionResponse:
    return pb.NextActionResponse(
        decision_id="d", actions=[pb.ChosenAction(action_id=a, channel=c) for a, c in actions]
    )


def _value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_counts_from_many_threads_are_all_folded_in_once() -> None:
    metrics = Metrics()
    response = _response(("banner", pb.CHANNEL_ONSITE), ("mail", pb.CHANNEL_EMAIL))
    handler = MetricsInterceptor(metrics).wrap_unary(lambda request, context: response, PATH)
    request = pb.NextActionRequest(trigger="cart")

    def calls(n: int) -> None:
        for _ in range(n):
            handler(request, _Context())

    threads = [threading.Thread(target=calls, args=(250,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    calls(1)  # this thread too
    for _ in range(2):  # a second collection adds nothing already folded in
        assert _value(metrics, "nextbest_rpc_calls_total", method="NextAction", code="OK") == 1001
        assert _value(metrics, "nextbest_rpc_seconds_count", method="NextAction") == 1001
        assert _value(metrics, "nextbest_decisions_total", trigger="cart") == 1001
        assert _value(metrics, "nextbest_actions_total", action="mail", channel="CHANNEL_EMAIL") == 1001
        seconds = _value(metrics, "nextbest_rpc_seconds_sum", method="NextAction")
        assert seconds is not None and seconds > 0
    calls(9)
    # A scrape naming its metrics (``?name[]=...``) goes through a restricted registry: folded in too.
    restricted = metrics.registry.restricted_registry(["nextbest_decisions_total"])
    assert [
        s.value for m in restricted.collect() for s in m.samples if s.name == "nextbest_decisions_total"
    ] == [1010]
    assert _value(metrics, "nextbest_decisions_total", trigger="cart") == 1010
    # Every call fell in some bucket, the cumulative +Inf one holds them all.
    assert _value(metrics, "nextbest_rpc_seconds_bucket", method="NextAction", le="+Inf") == 1010


def test_a_failed_call_is_counted_by_its_code_and_timed() -> None:
    metrics = Metrics()

    def failing(request: Any, context: _Context) -> Any:
        context._code = grpc.StatusCode.INVALID_ARGUMENT
        raise RuntimeError("aborted")

    handler = MetricsInterceptor(metrics).wrap_unary(failing, PATH)
    with pytest.raises(RuntimeError):
        handler(pb.NextActionRequest(), _Context())
    assert _value(metrics, "nextbest_rpc_calls_total", method="NextAction", code="INVALID_ARGUMENT") == 1
    assert _value(metrics, "nextbest_rpc_calls_total", method="NextAction", code="OK") == 0
    assert _value(metrics, "nextbest_rpc_seconds_count", method="NextAction") == 1
    assert _value(metrics, "nextbest_decisions_total", trigger="") is None


def test_latency_lands_in_the_bucket_observe_would_choose() -> None:
    metrics = Metrics()
    reference = Metrics()
    latency = metrics.latency.labels("NextAction")
    tally = metrics.tally()
    for elapsed in (0.0, 0.0005, 0.00051, 0.003, 0.25, 7.0):
        bucket = latency._buckets[bisect_left(latency._upper_bounds, elapsed)]
        tally[bucket] = tally.get(bucket, 0) + 1
        reference.latency.labels("NextAction").observe(elapsed)
    metrics.flush()
    ours = {
        s.labels["le"]: s.value for s in next(iter(metrics.latency.collect())).samples if "le" in s.labels
    }
    theirs = {
        s.labels["le"]: s.value for s in next(iter(reference.latency.collect())).samples if "le" in s.labels
    }
    assert ours == theirs
