"""Health, reflection and the error interceptor, as a generic gRPC client sees them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from nextbest.client import NextbestClient, make_event
from nextbest.errors import StoreUnavailableError
from nextbest.server import SERVICE_NAME, NextbestServer
from nextbest.settings import Settings


def test_health_reports_serving(server: NextbestServer, client: NextbestClient) -> None:
    # ``client`` waits for the first health check (on PostgreSQL, a fresh connection of its own).
    with grpc.insecure_channel(server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_a_generic_client_discovers_and_calls_the_service_by_reflection(server: NextbestServer) -> None:
    """What grpcurl does: no nextbest code, only the server's reflection service."""
    with grpc.insecure_channel(server.address) as channel:
        reflection_db = ProtoReflectionDescriptorDatabase(channel)
        services = reflection_db.get_services()
        assert SERVICE_NAME in services
        assert "grpc.health.v1.Health" in services
        pool = descriptor_pool.DescriptorPool(reflection_db)
        service = pool.FindServiceByName(SERVICE_NAME)
        method = service.methods_by_name["NextAction"]
        request_cls = message_factory.GetMessageClass(method.input_type)
        response_cls = message_factory.GetMessageClass(method.output_type)
        request = json_format.ParseDict(
            {
                "requestId": uuid.uuid4().hex,
                "userId": "reflection-user",
                "trigger": "order_placed",
                "occurredAt": "2026-11-02T09:00:00Z",
                "channels": ["CHANNEL_EMAIL"],
                "explain": True,
            },
            request_cls(),
        )
        call = channel.unary_unary(
            f"/{SERVICE_NAME}/NextAction",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_cls.FromString,
        )
        reply = json_format.MessageToDict(call(request, timeout=5))
        assert reply["actions"][0]["actionId"] == "order_confirmation_email"
        assert reply["actions"][0]["channel"] == "CHANNEL_EMAIL"


@pytest.fixture
def unreachable_server() -> Iterator[NextbestServer]:
    """A server whose PostgreSQL does not answer (nothing listens on port 1)."""
    settings = Settings(
        port=0,
        database_url="postgresql+psycopg://postgres@127.0.0.1:1/none",
        migrate=False,
        database_wait=0,
        health_interval=0.1,
    )
    srv = NextbestServer(settings)
    srv.start()
    yield srv
    srv.stop(grace=0.5)


@pytest.mark.slow
def test_unreachable_database_is_not_serving_and_calls_fail_unavailable(
    unreachable_server: NextbestServer,
) -> None:
    with NextbestClient(unreachable_server.address, timeout=10.0, max_attempts=1) as client:
        assert not client.is_serving()
        with pytest.raises(grpc.RpcError) as info:
            client.next_action("u1", "order_placed")
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "database" in info.value.details()
        with pytest.raises(grpc.RpcError) as info:
            client.record_events([make_event("opened", "u1", datetime(2026, 11, 2, tzinfo=UTC))])
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_health_turns_not_serving_with_the_first_failed_write_not_a_poll_later(
    migrated: str, plain_catalog: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk fails a decision's commit: health says NOT_SERVING then, not at its next poll (30 s
    here). The disk is simulated: the check's probe write refuses, as it does on a full disk."""
    srv = NextbestServer(
        Settings(port=0, database_url=migrated, catalog=plain_catalog, workers=2, health_interval=30)
    )
    srv.start()
    try:
        with grpc.insecure_channel(srv.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)

            def status() -> int:
                return stub.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5).status

            deadline = time.monotonic() + 10
            while status() != health_pb2.HealthCheckResponse.SERVING:
                assert time.monotonic() < deadline, "never SERVING"
                time.sleep(0.05)
            real_check = srv.store.db.check

            def full_disk_check(timeout: float) -> None:
                real_check(timeout)
                raise StoreUnavailableError("database refuses writes: OperationalError")

            monkeypatch.setattr(srv.store.db, "check", full_disk_check)
            srv.store.db.health.failed()  # what a decision whose commit failed for want of space reports
            started = time.monotonic()
            while status() != health_pb2.HealthCheckResponse.NOT_SERVING:
                assert time.monotonic() - started < 3, "health waited for its next poll"
                time.sleep(0.02)
    finally:
        srv.stop(grace=0.5)
