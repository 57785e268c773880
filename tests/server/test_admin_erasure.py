"""AdminService.EraseCustomer over loopback gRPC on SQLite and PostgreSQL: the customer is gone from every
table, the call is audited with its principal, the lift report shows one unit fewer and one erased; bad
input is INVALID_ARGUMENT naming the field; model calls are audited with versions before and after."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import select

from nextbest.api.v1 import admin_service_pb2 as admin_pb
from nextbest.api.v1 import admin_service_pb2_grpc as admin_grpc
from nextbest.catalog import Catalog
from nextbest.client import NextbestClient, make_event
from nextbest.server import NextbestServer
from nextbest.settings import Settings
from nextbest.store import Database
from nextbest.store.audit import AuditLog
from nextbest.store.schema import metadata
from tests.conftest import find_unit

T0 = datetime(2026, 11, 25, 9, tzinfo=UTC)
# A server of its own (the bundled catalog, with experiments) takes over a second to start.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(migrated: str) -> Iterator[tuple[NextbestClient, admin_grpc.AdminServiceStub, Database]]:
    server = NextbestServer(Settings(port=0, database_url=migrated, workers=4, health_interval=0.2))
    server.start()
    db = Database(migrated)
    with (
        NextbestClient(server.address, timeout=10.0) as client,
        grpc.insecure_channel(server.address) as channel,
    ):
        client.wait_until_serving(timeout=10.0)
        yield client, admin_grpc.AdminServiceStub(channel), db
    db.dispose()
    server.stop(grace=1.0)


def _mentions(db: Database, needle: str) -> set[str]:
    with db.reader.connect() as conn:
        return {
            t.name
            for t in metadata.sorted_tables
            if any(needle in repr(tuple(r)) for r in conn.execute(select(t)))
        }


def _units(client: NextbestClient) -> tuple[int, int]:
    report = client.lift_report("global_holdout", as_of=T0 + timedelta(days=1))
    return sum(a.units for a in report.metrics[0].arms), report.erased_units


def test_erase_customer_over_grpc(
    served: tuple[NextbestClient, admin_grpc.AdminServiceStub, Database], catalog: Catalog
) -> None:
    client, admin, db = served
    # The target gets the cart reminder (treated by both holdouts); a held-out unit is the control.
    target = find_unit(catalog, {"global_holdout": "treated", "cart_flow_holdout": "treatment"})
    users = [target, find_unit(catalog, {"global_holdout": "holdout"})]
    for user in users:
        client.record_events([make_event("subscribed", user, T0 - timedelta(days=1), channel="email")])
        client.next_action(user, "cart_abandoned", request_id=f"{user}-r1", occurred_at=T0, cart_value=50.0)
    assert {"assignments", "customers", "decisions", "events", "exposures"} <= _mentions(db, target)
    units, erased = _units(client)

    reply = admin.EraseCustomer(admin_pb.EraseCustomerRequest(user_id=target, reason="ticket 9"), timeout=10)

    assert not reply.nothing_left and reply.deleted["decisions"] == 1 and reply.deleted["events"] == 1
    assert "global_holdout" in reply.experiments
    assert _mentions(db, target) == set()
    assert _units(client) == (units - 1, erased + 1)
    entry = AuditLog(db).read(limit=1)[-1]
    assert (entry.action, entry.principal, entry.detail["reason"]) == (
        "erase_customer",
        "anonymous",
        "ticket 9",
    )

    again = admin.EraseCustomer(admin_pb.EraseCustomerRequest(user_id=target), timeout=10)
    assert again.nothing_left and set(again.deleted.values()) == {0} and not again.experiments


@pytest.mark.parametrize(
    ("user_id", "reason", "field"),
    [("", "", "user_id"), ("u" * 129, "", "user_id"), ("u", "r" * 513, "reason")],
    ids=["missing", "long-id", "long-reason"],
)
def test_a_bad_erasure_is_invalid_argument_naming_the_field(
    served: tuple[NextbestClient, admin_grpc.AdminServiceStub, Database],
    user_id: str,
    reason: str,
    field: str,
) -> None:
    _, admin, _ = served
    with pytest.raises(grpc.RpcError) as caught:
        admin.EraseCustomer(admin_pb.EraseCustomerRequest(user_id=user_id, reason=reason), timeout=10)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    status.details[0].Unpack(bad)
    assert [v.field for v in bad.field_violations] == [field]


def test_model_calls_are_audited_with_versions(
    served: tuple[NextbestClient, admin_grpc.AdminServiceStub, Database],
) -> None:
    _, admin, db = served
    admin.ReloadModels(admin_pb.ReloadModelsRequest(), timeout=10)
    admin.GetModels(admin_pb.GetModelsRequest(), timeout=10)
    reload, get = AuditLog(db).read(limit=2)
    assert (reload.action, get.action) == ("reload_models", "get_models")
    assert reload.before is not None and "propensity=" in reload.before and reload.after is not None
    assert get.before == get.after


def test_the_audit_names_the_token_that_called(migrated: str) -> None:
    token = "ops-token-for-the-audit-test"
    server = NextbestServer(
        Settings(
            port=0, database_url=migrated, workers=2, health_interval=0.2, tokens=f"ops admin token:{token}"
        )
    )
    server.start()
    db = Database(migrated)
    try:
        with grpc.insecure_channel(server.address) as channel:
            admin = admin_grpc.AdminServiceStub(channel)
            request = admin_pb.EraseCustomerRequest(user_id="nobody-at-all", reason="audit test")
            with pytest.raises(grpc.RpcError) as refused:
                admin.EraseCustomer(request, timeout=10)
            assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
            reply = admin.EraseCustomer(request, timeout=10, metadata=(("authorization", f"Bearer {token}"),))
        assert reply.nothing_left
        entry = AuditLog(db).read(limit=1)[-1]
        assert (entry.principal, entry.action, entry.detail["reason"]) == (
            "ops",
            "erase_customer",
            "audit test",
        )
    finally:
        db.dispose()
        server.stop(grace=1.0)
