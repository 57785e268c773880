"""The client retries only what is safe to retry."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from nextbest.api.v1 import decision_service_pb2 as pb
from nextbest.api.v1 import decision_service_pb2_grpc as pb_grpc
from nextbest.client import NextbestClient, batch_errors, make_request


class Flaky(pb_grpc.DecisionServiceServicer):  # type: ignore[misc]
    """Fails the first ``failures`` calls with ``code``, then answers."""

    def __init__(self) -> None:
        self.code = grpc.StatusCode.UNAVAILABLE
        self.failures = 0
        self.requests: list[pb.NextActionRequest] = []
        self.batches: list[pb.NextActionBatchRequest] = []

    def NextAction(self, request: pb.NextActionRequest, context: Any) -> pb.NextActionResponse:  # noqa: N802
        self.requests.append(request)
        if len(self.requests) <= self.failures:
            context.abort(self.code, "try again")
        return pb.NextActionResponse(decision_id="d1")

    def NextActionBatch(  # noqa: N802
        self, request: pb.NextActionBatchRequest, context: Any
    ) -> pb.NextActionBatchResponse:
        self.batches.append(request)
        if len(self.batches) <= self.failures:
            context.abort(self.code, "try again")
        response = pb.NextActionBatchResponse(answered=len(request.requests))
        for index, item in enumerate(request.requests):
            response.results.add(index=index, request_id=item.request_id).response.decision_id = f"d{index}"
        return response


@pytest.fixture
def flaky() -> Iterator[tuple[Flaky, str]]:
    servicer = Flaky()
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_DecisionServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(0)


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED])
def test_unavailable_and_aborted_are_retried_with_the_same_request_id(
    flaky: tuple[Flaky, str], code: grpc.StatusCode
) -> None:
    """Neither wrote anything (ABORTED: the customer kept changing while the server decided)."""
    servicer, address = flaky
    servicer.failures, servicer.code = 2, code
    with NextbestClient(address, max_attempts=4) as client:
        assert client.next_action("u", "cart_abandoned").decision_id == "d1"
    assert len(servicer.requests) == 3
    assert len({r.request_id for r in servicer.requests}) == 1
    assert servicer.requests[0].request_id  # set by the client


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.INTERNAL]
)
def test_other_errors_are_not_retried(flaky: tuple[Flaky, str], code: grpc.StatusCode) -> None:
    servicer, address = flaky
    servicer.failures, servicer.code = 1, code
    with NextbestClient(address) as client, pytest.raises(grpc.RpcError) as info:
        client.next_action("u", "cart_abandoned")
    assert info.value.code() == code
    assert len(servicer.requests) == 1


def test_retries_give_up_after_max_attempts(flaky: tuple[Flaky, str]) -> None:
    servicer, address = flaky
    servicer.failures = 10
    with NextbestClient(address, max_attempts=3) as client, pytest.raises(grpc.RpcError) as info:
        client.next_action("u", "cart_abandoned")
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(servicer.requests) == 3


def test_max_attempts_is_checked(flaky: tuple[Flaky, str]) -> None:
    _, address = flaky
    with pytest.raises(ValueError, match="max_attempts"):
        NextbestClient(address, max_attempts=9)


def test_a_batch_is_retried_whole_with_every_items_request_id(flaky: tuple[Flaky, str]) -> None:
    servicer, address = flaky
    servicer.failures = 1
    batch = [make_request(f"u{i}", "cart_abandoned", cart_value=10.0) for i in range(3)]
    with NextbestClient(address, max_attempts=2) as client:
        reply = client.next_action_batch(batch)
    assert [r.response.decision_id for r in reply.results] == ["d0", "d1", "d2"]
    assert len(servicer.batches) == 2
    sent = [[r.request_id for r in b.requests] for b in servicer.batches]
    assert sent[0] == sent[1] == [r.request_id for r in batch]
    assert len(set(sent[0])) == 3 and all(sent[0])


def test_make_request_and_batch_errors() -> None:
    from datetime import UTC, datetime

    from google.protobuf import any_pb2
    from google.rpc import code_pb2, error_details_pb2, status_pb2

    request = make_request(
        "u1",
        "cart_abandoned",
        request_id="r1",
        occurred_at=datetime(2026, 11, 2, tzinfo=UTC),
        channels=["email"],
    )
    assert (request.request_id, request.user_id, list(request.channels)) == ("r1", "u1", [pb.CHANNEL_EMAIL])
    assert request.HasField("occurred_at") and not request.context.HasField("cart_value")
    detail = any_pb2.Any()
    detail.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field="requests[2].user_id", description="required"
                )
            ]
        )
    )
    error = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message="user_id: required", details=[detail])
    assert batch_errors(error) == [("requests[2].user_id", "required")]
    assert batch_errors(status_pb2.Status(code=code_pb2.ALREADY_EXISTS)) == []
