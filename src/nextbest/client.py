"""A small typed client for nextbest.

Example::

    from nextbest.client import NextbestClient

    with NextbestClient("127.0.0.1:50051") as client:
        response = client.next_action("user-42", "cart_abandoned", cart_value=84.5, channels=["email"])
        for action in response.actions:
            print(action.action_id, action.send_at.ToDatetime())

Every call carries a deadline. Only UNAVAILABLE and ABORTED (nothing was written: the customer kept
changing while the server decided) are retried, by gRPC's own retry policy, with backoff. Both RPCs are
idempotent — a NextAction retry carries the same ``request_id`` and events are deduplicated by
``event_id`` — so a retry never creates a second decision or counts an event twice. Errors such as
INVALID_ARGUMENT or ALREADY_EXISTS are never retried.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from nextbest.api.v1 import decision_service_pb2 as pb
from nextbest.api.v1 import decision_service_pb2_grpc as pb_grpc

__all__ = ["NextbestClient", "make_event", "timestamp"]

_SERVICE = "nextbest.api.v1.DecisionService"


def _service_config(max_attempts: int) -> str:
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": [{"service": _SERVICE}],
                    "retryPolicy": {
                        "maxAttempts": max_attempts,
                        "initialBackoff": "0.05s",
                        "maxBackoff": "1s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE", "ABORTED"],
                    },
                }
            ]
        }
    )


def timestamp(value: datetime) -> Timestamp:
    """A protobuf Timestamp from an aware datetime."""
    if value.tzinfo is None:
        raise ValueError("use a timezone-aware datetime")
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def _channel(name: str | int) -> Any:
    return name if isinstance(name, int) else pb.Channel.Value(f"CHANNEL_{name.upper()}")


def make_event(
    event_type: str,
    user_id: str,
    occurred_at: datetime,
    *,
    event_id: str | None = None,
    channel: str | None = None,
    **fields: Any,
) -> pb.Event:
    """Builds an Event: ``make_event("order_placed", "u1", now, value=42.0, order_id="o-1")``.
    ``event_id`` defaults to a new UUID; pass your own stable id so retries deduplicate."""
    event = pb.Event(
        event_id=event_id or uuid.uuid4().hex,
        user_id=user_id,
        type=pb.EventType.Value(f"EVENT_TYPE_{event_type.upper()}"),  # type: ignore[arg-type]
        occurred_at=timestamp(occurred_at),
        **fields,
    )
    if channel is not None:
        event.channel = _channel(channel)
    return event


class NextbestClient:
    def __init__(
        self,
        target: str,
        *,
        timeout: float = 2.0,
        max_attempts: int = 4,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        if not 1 <= max_attempts <= 5:
            raise ValueError("max_attempts must be between 1 (no retries) and 5 (gRPC's limit)")
        options: list[tuple[str, str | int]] = [("grpc.enable_retries", int(max_attempts > 1))]
        if max_attempts > 1:
            options.append(("grpc.service_config", _service_config(max_attempts)))
        self._channel = (
            grpc.secure_channel(target, credentials, options=options)
            if credentials is not None
            else grpc.insecure_channel(target, options=options)
        )
        self._stub = pb_grpc.DecisionServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self.timeout = timeout

    def __enter__(self) -> NextbestClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def next_action(
        self,
        user_id: str,
        trigger: str,
        *,
        request_id: str | None = None,
        occurred_at: datetime | None = None,
        cart_value: float | None = None,
        product_ids: Sequence[str] = (),
        page_category: str = "",
        time_zone: str = "",
        attributes: Mapping[str, str] | None = None,
        out_of_stock_product_ids: Sequence[str] = (),
        channels: Iterable[str | int] = (),
        max_actions: int = 1,
        explain: bool = False,
        timeout: float | None = None,
    ) -> pb.NextActionResponse:
        """Asks what to send. ``request_id`` defaults to a new UUID: pass your own (e.g. derived from the
        trigger event) so that a retry after a crash returns the same decision."""
        context = pb.RequestContext(
            product_ids=list(product_ids),
            page_category=page_category,
            time_zone=time_zone,
            attributes=dict(attributes or {}),
            out_of_stock_product_ids=list(out_of_stock_product_ids),
        )
        if cart_value is not None:
            context.cart_value = cart_value
        request = pb.NextActionRequest(
            request_id=request_id or uuid.uuid4().hex,
            user_id=user_id,
            trigger=trigger,
            context=context,
            channels=[_channel(c) for c in channels],
            max_actions=max_actions,
            explain=explain,
        )
        if occurred_at is not None:
            request.occurred_at.CopyFrom(timestamp(occurred_at))
        return self.call_next_action(request, timeout=timeout)

    def call_next_action(
        self, request: pb.NextActionRequest, timeout: float | None = None
    ) -> pb.NextActionResponse:
        response: pb.NextActionResponse = self._stub.NextAction(request, timeout=timeout or self.timeout)
        return response

    def record_events(
        self, events: Iterable[pb.Event], timeout: float | None = None
    ) -> pb.RecordEventsResponse:
        request = pb.RecordEventsRequest(events=list(events))
        response: pb.RecordEventsResponse = self._stub.RecordEvents(request, timeout=timeout or self.timeout)
        return response

    def lift_report(
        self,
        experiment_id: str,
        *,
        as_of: datetime | None = None,
        window_days: float = 0.0,
        metrics: Sequence[str] = (),
        sequential: bool = False,
        alpha: float = 0.0,
        timeout: float | None = None,
    ) -> pb.GetLiftReportResponse:
        """The experiment's lift report as of ``as_of`` (default now); 0 means the server's default
        window (14 days) and alpha (0.05)."""
        request = pb.GetLiftReportRequest(
            experiment_id=experiment_id,
            metrics=list(metrics),
            window_days=window_days,
            sequential=sequential,
            alpha=alpha,
        )
        if as_of is not None:
            request.as_of.CopyFrom(timestamp(as_of))
        response: pb.GetLiftReportResponse = self._stub.GetLiftReport(
            request, timeout=timeout or max(self.timeout, 30.0)
        )
        return response

    def is_serving(self, timeout: float | None = None) -> bool:
        try:
            reply = self._health.Check(
                health_pb2.HealthCheckRequest(service=_SERVICE), timeout=timeout or self.timeout
            )
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def wait_until_serving(self, timeout: float = 30.0) -> None:
        """Blocks until the server reports SERVING; raises TimeoutError otherwise."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_serving(timeout=1.0):
                return
            time.sleep(0.05)
        raise TimeoutError(f"nextbest did not report SERVING within {timeout:.0f}s")
