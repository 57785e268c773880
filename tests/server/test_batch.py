"""NextActionBatch end to end over loopback gRPC, on SQLite and PostgreSQL: answered in order, a poisoned
item failing alone beside good ones, replays item by item, and the whole call refused only as a whole."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.rpc import code_pb2

from nextbest.api.v1 import decision_service_pb2 as pb
from nextbest.client import NextbestClient, batch_errors, make_event, make_request
from nextbest.server import NextbestServer
from nextbest.server.process import free_port
from nextbest.settings import Settings
from nextbest.store.schema import decisions, exposures
from tests.conftest import uid
from tests.server.test_decision_service import bad_fields, chosen, count
from tests.server.test_metrics import scrape

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def subscribed(client: NextbestClient, n: int) -> list[str]:
    users = [uid() for _ in range(n)]
    reply = client.record_events([make_event("subscribed", u, at(0), channel="email") for u in users])
    assert reply.accepted == n
    return users


def cart(user: str, hours: float = 2, **kwargs: object) -> pb.NextActionRequest:
    return make_request(user, "cart_abandoned", occurred_at=at(hours), cart_value=80.0, **kwargs)  # type: ignore[arg-type]


def test_a_batch_is_answered_in_order_each_item_as_nextaction_would(
    client: NextbestClient, server: NextbestServer
) -> None:
    users = subscribed(client, 4)
    requests = [cart(u) for u in users]
    reply = client.next_action_batch(requests)
    assert (reply.answered, reply.failed) == (4, 0)
    assert [r.index for r in reply.results] == [0, 1, 2, 3]
    assert [r.request_id for r in reply.results] == [r.request_id for r in requests]
    for result in reply.results:
        assert result.WhichOneof("outcome") == "response"
        assert chosen(result.response) == ["cart_reminder_email"]
        assert result.response.actions[0].send_at.ToDatetime(tzinfo=UTC) == at(3)
        assert not result.response.replayed
    assert len({r.response.decision_id for r in reply.results}) == 4
    for request in requests:
        assert count(server, decisions, request_id=request.request_id) == 1
    # Each decision is the one NextAction returns for its request_id: the single call replays it.
    alone = client.call_next_action(requests[2])
    assert alone.replayed and alone.decision_id == reply.results[2].response.decision_id


def test_a_poisoned_item_fails_alone_naming_its_index_and_field(
    client: NextbestClient, server: NextbestServer
) -> None:
    users = subscribed(client, 3)
    no_id = cart(uid())
    no_id.request_id = ""
    requests = [
        cart(users[0]),
        cart("nul\x00user"),  # a NUL the database would refuse
        cart(users[1]),
        make_request(uid(), "teleported", occurred_at=at(2)),
        cart(users[2]),
        no_id,
    ]
    reply = client.next_action_batch(requests)
    outcomes = [r.WhichOneof("outcome") for r in reply.results]
    assert outcomes == ["response", "error", "response", "error", "response", "error"]
    assert (reply.answered, reply.failed) == (3, 3)
    errors = {r.index: r.error for r in reply.results if r.HasField("error")}
    assert {i: e.code for i, e in errors.items()} == {i: code_pb2.INVALID_ARGUMENT for i in (1, 3, 5)}
    assert [f for f, _ in batch_errors(errors[1])] == ["requests[1].user_id"]
    assert [f for f, _ in batch_errors(errors[3])] == ["requests[3].trigger"]
    assert [f for f, _ in batch_errors(errors[5])] == ["requests[5].request_id"]
    assert "user_id" in errors[1].message
    for i in (0, 2, 4):
        assert chosen(reply.results[i].response) == ["cart_reminder_email"]
        assert count(server, decisions, request_id=requests[i].request_id) == 1
    for i in (1, 3):
        assert count(server, decisions, request_id=requests[i].request_id) == 0


def test_a_replayed_batch_returns_the_stored_decisions_and_writes_nothing(
    client: NextbestClient, server: NextbestServer
) -> None:
    users = subscribed(client, 3)
    no_id = cart(uid())
    no_id.request_id = ""
    requests = [cart(u) for u in users]
    first = client.next_action_batch(requests)
    rows = [count(server, exposures, user_id=u) for u in users]
    again = client.next_action_batch(requests)
    assert all(r.response.replayed for r in again.results)
    assert [r.response.decision_id for r in again.results] == [r.response.decision_id for r in first.results]
    assert [count(server, exposures, user_id=u) for u in users] == rows == [1, 1, 1]
    # One item reusing a request_id with another payload is ALREADY_EXISTS; the others are answered.
    changed = cart(users[1], request_id=requests[1].request_id, hours=3)
    fresh = cart(subscribed(client, 1)[0])
    mixed = client.next_action_batch([requests[0], changed, fresh])
    assert mixed.results[0].response.replayed
    assert mixed.results[1].error.code == code_pb2.ALREADY_EXISTS
    assert requests[1].request_id in mixed.results[1].error.message
    assert chosen(mixed.results[2].response) == ["cart_reminder_email"]
    assert not mixed.results[2].response.replayed


def test_two_items_for_one_customer_are_decided_in_order(client: NextbestClient) -> None:
    (user,) = subscribed(client, 1)
    reply = client.next_action_batch([cart(user, hours=2), cart(user, hours=2.5, explain=True)])
    assert chosen(reply.results[0].response) == ["cart_reminder_email"]
    second = reply.results[1].response
    assert chosen(second) == []  # the first decision's reminder is pending: the second sees it
    assert {r.action_id for r in second.rejected} >= {"cart_reminder_email"}


def test_an_oversized_batch_fails_as_a_whole_and_writes_nothing(
    client: NextbestClient, server: NextbestServer
) -> None:
    requests = [cart(uid()) for _ in range(501)]
    with pytest.raises(grpc.RpcError) as info:
        client.next_action_batch(requests)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(info.value) == ["requests"]
    assert "501" in (info.value.details() or "")
    assert count(server, decisions, request_id=requests[0].request_id) == 0


def test_an_empty_batch_has_no_results(client: NextbestClient) -> None:
    reply = client.next_action_batch([])
    assert (len(reply.results), reply.answered, reply.failed) == (0, 0, 0)


@pytest.mark.slow
def test_metrics_count_each_item_by_its_own_status(migrated: str, plain_catalog: Path) -> None:
    settings = Settings(
        port=0,
        database_url=migrated,
        catalog=plain_catalog,
        workers=2,
        metrics_port=free_port(),
        health_interval=0.2,
    )
    srv = NextbestServer(settings)
    srv.start()
    try:
        with NextbestClient(srv.address, timeout=10.0) as c:
            c.wait_until_serving(timeout=10.0)
            users = subscribed(c, 2)
            reply = c.next_action_batch([cart(users[0]), cart(""), cart(users[1])])
            assert (reply.answered, reply.failed) == (2, 1)
        samples = scrape(srv)
        assert samples[("nextbest_batch_items_total", (("code", "OK"),))] == 2
        assert samples[("nextbest_batch_items_total", (("code", "INVALID_ARGUMENT"),))] == 1
        assert samples[("nextbest_decisions_total", (("trigger", "cart_abandoned"),))] == 2
        calls = ("nextbest_rpc_calls_total", (("code", "OK"), ("method", "NextActionBatch")))
        assert samples[calls] == 1
    finally:
        srv.stop(grace=1.0)
