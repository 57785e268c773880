"""A small typed client for nextbest.

Example::

    from nextbest.client import NextbestClient

    with NextbestClient("127.0.0.1:50051") as client:
        response = client.next_action("user-42", "cart_abandoned", cart_value=84.5, channels=["email"])
        for action in response.actions:
            print(action.action_id, action.send_at.ToDatetime())

Every call carries a deadline. Only UNAVAILABLE and ABORTED (nothing was written: the customer kept
changing while the server decided) are retried, by gRPC's own retry policy, with backoff. Every call is
idempotent — a NextAction retry carries the same ``request_id`` (so does each item of a NextActionBatch)
and events are deduplicated by ``event_id`` — so a retry never creates a second decision or counts an
event twice. Errors such as INVALID_ARGUMENT or ALREADY_EXISTS are never retried.

Under overload the server refuses calls beyond its limit (RESOURCE_EXHAUSTED), and each refusal still
costs it CPU. ``NextbestClient(..., throttle=AdaptiveThrottle())`` makes the client refuse part of its own
calls while the server refuses many (client-side adaptive throttling, :mod:`nextbest.throttle`): a call it
refuses raises :class:`~nextbest.throttle.ThrottledError`, whose ``code()`` is RESOURCE_EXHAUSTED too.

Many decisions at once (up to 500 a call, each answered or failed on its own)::

    from nextbest.client import NextbestClient, make_request

    with NextbestClient("127.0.0.1:50051") as client:
        batch = [make_request(f"user-{i}", "cart_abandoned", cart_value=50.0) for i in range(100)]
        for result in client.next_action_batch(batch).results:
            print(result.index, result.response.actions if result.HasField("response") else result.error)
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from nextbest.api.v1 import admin_service_pb2 as admin_pb
from nextbest.api.v1 import admin_service_pb2_grpc as admin_grpc
from nextbest.api.v1 import decision_service_pb2 as pb
from nextbest.api.v1 import decision_service_pb2_grpc as pb_grpc
from nextbest.throttle import AdaptiveThrottle

if TYPE_CHECKING:
    from nextbest.settings import Settings

__all__ = [
    "BATCH_TIMEOUT",
    "LOAD_BALANCING",
    "RETRYABLE",
    "NextbestClient",
    "batch_errors",
    "make_event",
    "make_request",
    "timestamp",
    "tls_credentials",
]

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


def tls_credentials(
    ca: Path | None = None, cert: Path | None = None, key: Path | None = None
) -> grpc.ChannelCredentials:
    """TLS to the server: trust ``ca`` (default: the system's roots); with ``cert`` and ``key``, present
    that client certificate (mutual TLS)."""
    if (cert is None) != (key is None):
        raise ValueError("a client certificate needs both --tls-client-cert and --tls-client-key")

    def read(path: Path | None, flag: str) -> bytes | None:
        if path is None:
            return None
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read {flag} {path}: {exc.strerror}") from None

    return grpc.ssl_channel_credentials(
        root_certificates=read(ca, "--tls-ca"),
        private_key=read(key, "--tls-client-key"),
        certificate_chain=read(cert, "--tls-client-cert"),
    )


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


def make_request(
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
) -> pb.NextActionRequest:
    """Builds a NextActionRequest (for :meth:`NextbestClient.next_action_batch`); the arguments are
    :meth:`NextbestClient.next_action`'s. ``request_id`` defaults to a new UUID."""
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
    return request


#: The default deadline of a batch call, in seconds: 500 decisions take longer than one.
BATCH_TIMEOUT = 10.0

#: The codes of a batch item worth sending again with the same request (nothing was written).
RETRYABLE = frozenset({code_pb2.UNAVAILABLE, code_pb2.ABORTED, code_pb2.DEADLINE_EXCEEDED})


def batch_errors(error: status_pb2.Status) -> list[tuple[str, str]]:
    """The (field, description) pairs of a batch item's INVALID_ARGUMENT (fields such as
    ``requests[3].user_id``); empty for other errors."""
    out = []
    for detail in error.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            out += [(v.field, v.description) for v in bad.field_violations]
    return out


#: gRPC's client-side load-balancing policies: ``pick_first`` (gRPC's default: one server at a time)
#: and ``round_robin`` (every call to the next ready server of the target's addresses).
LOAD_BALANCING = ("pick_first", "round_robin")


class NextbestClient:
    """``token``: a bearer token sent with every call (roles decide, events, report). ``credentials``:
    TLS, e.g. from :func:`tls_credentials`; a token needs TLS off loopback, where it would travel in clear
    text. ``server_name``: the name the server's certificate must carry when ``target`` is not it.

    Several replicas: give a ``target`` that resolves to several addresses — ``ipv4:10.0.0.1:50051,
    10.0.0.2:50051`` or a DNS name with several A records (``dns:///nextbest.internal:50051``) — and
    ``load_balancing="round_robin"``; gRPC then spreads calls over every replica that is up and routes
    around one that is not.

    ``throttle``: an :class:`~nextbest.throttle.AdaptiveThrottle` through which NextAction,
    NextActionBatch and RecordEvents calls pass (none by default)."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float = 2.0,
        max_attempts: int = 4,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        server_name: str | None = None,
        load_balancing: str | None = None,
        throttle: AdaptiveThrottle | None = None,
    ) -> None:
        if load_balancing is not None and load_balancing not in LOAD_BALANCING:
            raise ValueError(f"load_balancing must be one of {', '.join(LOAD_BALANCING)}")
        if not 1 <= max_attempts <= 5:
            raise ValueError("max_attempts must be between 1 (no retries) and 5 (gRPC's limit)")
        if token is not None and (not token or any(c.isspace() for c in token)):
            raise ValueError("the token must be non-empty and hold no spaces or new lines")
        options: list[tuple[str, str | int]] = [("grpc.enable_retries", int(max_attempts > 1))]
        if max_attempts > 1:
            options.append(("grpc.service_config", _service_config(max_attempts)))
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        if load_balancing is not None:
            options.append(("grpc.lb_policy_name", load_balancing))
        self._channel = (
            grpc.secure_channel(target, credentials, options=options)
            if credentials is not None
            else grpc.insecure_channel(target, options=options)
        )
        self._stub = pb_grpc.DecisionServiceStub(self._channel)
        self._admin = admin_grpc.AdminServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self.timeout = timeout
        self.throttle = throttle

    def _call(self, method: Any, request: Any, timeout: float) -> Any:
        """``method(request)`` with the deadline and token, through the throttle when there is one."""
        throttle = self.throttle
        if throttle is None:
            return method(request, timeout=timeout, metadata=self._metadata)
        throttle.admit()
        try:
            response = method(request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            throttle.record_error(error)
            raise
        throttle.record(True)
        return response

    @classmethod
    def from_settings(cls, target: str, settings: Settings, **kwargs: Any) -> NextbestClient:
        """A client with the token and TLS of ``settings`` (``--token-file``, ``NEXTBEST_TOKEN``,
        ``--tls-ca``, ``--tls-client-cert``/``--tls-client-key``, ``--tls-server-name``)."""
        token = settings.token.get_secret_value() if settings.token is not None else None
        if settings.token_file is not None:
            try:
                token = settings.token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"cannot read --token-file {settings.token_file}: {exc.strerror}") from None
        credentials = None
        if settings.tls or settings.tls_ca or settings.tls_client_cert or settings.tls_client_key:
            credentials = tls_credentials(settings.tls_ca, settings.tls_client_cert, settings.tls_client_key)
        return cls(
            target, credentials=credentials, token=token, server_name=settings.tls_server_name, **kwargs
        )

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
        request = make_request(
            user_id,
            trigger,
            request_id=request_id,
            occurred_at=occurred_at,
            cart_value=cart_value,
            product_ids=product_ids,
            page_category=page_category,
            time_zone=time_zone,
            attributes=attributes,
            out_of_stock_product_ids=out_of_stock_product_ids,
            channels=channels,
            max_actions=max_actions,
            explain=explain,
        )
        return self.call_next_action(request, timeout=timeout)

    def call_next_action(
        self, request: pb.NextActionRequest, timeout: float | None = None
    ) -> pb.NextActionResponse:
        response: pb.NextActionResponse = self._call(self._stub.NextAction, request, timeout or self.timeout)
        return response

    def next_action_batch(
        self, requests: Iterable[pb.NextActionRequest], timeout: float | None = None
    ) -> pb.NextActionBatchResponse:
        """Sends up to 500 requests (see :func:`make_request`) in one ``NextActionBatch`` call. Each
        result holds its request's ``response`` or its own ``error`` (a ``google.rpc.Status``: read it
        with :func:`batch_errors`); a bad item fails alone. The client retries the whole call on
        UNAVAILABLE and ABORTED, which is safe: every item is idempotent on its ``request_id``. An item
        whose own error is retryable (see :data:`RETRYABLE`) can be sent again with the same request."""
        response: pb.NextActionBatchResponse = self._call(
            self._stub.NextActionBatch,
            pb.NextActionBatchRequest(requests=list(requests)),
            timeout or max(self.timeout, BATCH_TIMEOUT),
        )
        return response

    def record_events(
        self, events: Iterable[pb.Event], timeout: float | None = None
    ) -> pb.RecordEventsResponse:
        request = pb.RecordEventsRequest(events=list(events))
        response: pb.RecordEventsResponse = self._call(
            self._stub.RecordEvents, request, timeout or self.timeout
        )
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
            request, timeout=timeout or max(self.timeout, 30.0), metadata=self._metadata
        )
        return response

    def run_campaign(
        self,
        campaign_id: str,
        *,
        run_id: str = "",
        batch_size: int = 0,
        timeout: float | None = None,
    ) -> Iterator[admin_pb.CampaignProgress]:
        """Runs a catalog campaign on the server (``RunCampaign``, role ``admin``) and yields its progress
        after each batch; the last message has ``done`` set. ``run_id`` defaults to the campaign's start
        (``20261101T000000Z``); ``batch_size`` to 500. No deadline unless ``timeout`` is given: a campaign
        may run for hours. Leaving the loop early (``break``, an exception, closing the iterator) cancels
        the run after the batch being decided; what was committed stays, and the same ``run_id`` resumes
        it, replaying what was decided. Not retried: run it again with the same ``run_id``::

            for progress in client.run_campaign("winback"):
                print(progress.decided, progress.sent, "done" if progress.done else "")
        """
        call = self._admin.RunCampaign(
            admin_pb.RunCampaignRequest(campaign_id=campaign_id, run_id=run_id, batch_size=batch_size),
            timeout=timeout,
            metadata=self._metadata,
        )
        try:
            yield from call
        finally:
            call.cancel()  # a no-op once the stream has ended

    def plan_campaign(self, campaign_id: str, *, timeout: float | None = None) -> admin_pb.CampaignPlan:
        """A catalog campaign's dry run on the server (``PlanCampaign``, role ``admin``): what a run would
        send now, by channel and hour, and the refusals by reason; nothing is written. It reads every
        stored customer: the deadline defaults to a minute (the server stops when it passes)."""
        plan: admin_pb.CampaignPlan = self._admin.PlanCampaign(
            admin_pb.PlanCampaignRequest(campaign_id=campaign_id),
            timeout=timeout or max(self.timeout, 60.0),
            metadata=self._metadata,
        )
        return plan

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
