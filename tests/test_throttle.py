"""Client-side adaptive throttling: refuses locally in proportion to what the server refused, forgets
after its window, and through the client never sends what it refuses."""

from __future__ import annotations

import random
from typing import Any

import grpc
import pytest

from nextbest.client import NextbestClient
from nextbest.throttle import AdaptiveThrottle, ThrottledError


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class Refused(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    """What a server at its limit answers."""

    def __init__(self, code: grpc.StatusCode = grpc.StatusCode.RESOURCE_EXHAUSTED) -> None:
        super().__init__()
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "the server is at its limit"


def test_nothing_is_refused_while_the_server_accepts() -> None:
    throttle = AdaptiveThrottle(k=1.5, rng=random.Random(1), clock=Clock())
    for _ in range(1_000):
        throttle.admit()
        throttle.record(True)
    assert throttle.probability() == 0.0


def test_refuses_in_proportion_to_what_the_server_refused() -> None:
    clock = Clock()
    throttle = AdaptiveThrottle(k=2.0, rng=random.Random(7), clock=clock)
    for i in range(100):  # 100 attempts, of which the server accepts 10
        try:
            throttle.admit()
        except ThrottledError:
            continue  # refused locally: still an attempt
        throttle.record(i < 10)
    expected = (
        100 - 2.0 * 10
    ) / 101  # every one of the first 10 attempts passes (p stays 0 while all accepted)
    assert throttle.probability() == pytest.approx(expected)
    refused = 0
    for _ in range(2_000):
        p = throttle.probability()
        try:
            throttle.admit()
        except ThrottledError as error:
            refused += 1
            assert error.probability == pytest.approx(p)
    # Every attempt counts as a request and none is accepted, so the probability climbs towards 1.
    assert refused > 1_800
    assert throttle.probability() > 0.95


def test_the_server_refusing_under_half_is_never_throttled_at_k_2() -> None:
    throttle = AdaptiveThrottle(k=2.0, rng=random.Random(3), clock=Clock())
    for i in range(3_000):
        throttle.admit()  # never raises: accepts stay above half the requests
        throttle.record(i % 5 != 4)  # the server refuses one call in five
    assert throttle.probability() == 0.0


def test_it_forgets_after_its_window() -> None:
    clock = Clock()
    throttle = AdaptiveThrottle(k=1.1, window=10.0, rng=random.Random(2), clock=clock)
    for _ in range(50):
        try:
            throttle.admit()
        except ThrottledError:
            continue
        throttle.record_error(Refused())
    assert throttle.probability() > 0.9
    clock.now += 5.0
    assert throttle.probability() > 0.9  # still inside the window
    clock.now += 6.0
    assert throttle.probability() == 0.0
    throttle.admit()  # sent again


def test_only_resource_exhausted_counts_as_refused() -> None:
    throttle = AdaptiveThrottle(k=1.0, rng=random.Random(4), clock=Clock())
    for code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ABORTED):
        throttle.admit()
        throttle.record_error(Refused(code))
    assert throttle.probability() == 0.0


def test_throttled_error_reads_like_the_servers_refusal() -> None:
    error = ThrottledError(0.25)
    assert isinstance(error, grpc.RpcError)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "25%" in error.details() and "nothing was sent" in error.details()


@pytest.mark.parametrize(
    ("k", "window"), [(0.5, 10.0), (float("nan"), 10.0), (2.0, 0.0), (2.0, float("inf"))]
)
def test_bad_settings_are_refused(k: float, window: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        AdaptiveThrottle(k=k, window=window)


class RefusingStub:
    """A DecisionService stub whose server refuses every call as overloaded."""

    def __init__(self) -> None:
        self.sent = 0

    def NextAction(self, request: Any, timeout: float, metadata: Any) -> Any:  # noqa: N802 - gRPC's name
        self.sent += 1
        raise Refused()


def test_the_client_does_not_send_what_it_throttles() -> None:
    throttle = AdaptiveThrottle(k=1.5, rng=random.Random(5), clock=Clock())
    client = NextbestClient("127.0.0.1:1", throttle=throttle)
    stub = RefusingStub()
    client._stub = stub  # type: ignore[assignment]
    outcomes: dict[str, int] = {"server": 0, "client": 0}
    try:
        for _ in range(200):
            try:
                client.next_action("u-1", "cart_abandoned")
            except ThrottledError:
                outcomes["client"] += 1
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                outcomes["server"] += 1
    finally:
        client.close()
    assert outcomes["server"] == stub.sent
    assert outcomes["server"] + outcomes["client"] == 200
    assert outcomes["client"] > 150  # most refusals stay on the caller's side once the server refuses
