"""DecisionService end to end over loopback gRPC, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import func, select

from nextbest.api.v1 import decision_service_pb2 as pb
from nextbest.client import NextbestClient, make_event, timestamp
from nextbest.errors import ConflictError
from nextbest.server import NextbestServer
from nextbest.store.schema import decisions, events, exposures
from tests.conftest import uid

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
REASON = pb.ReasonCode.Name


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def reasons(response: pb.NextActionResponse) -> dict[str, str]:
    return {r.action_id: REASON(r.reason).removeprefix("REASON_CODE_") for r in response.rejected}


def chosen(response: pb.NextActionResponse) -> list[str]:
    return [a.action_id for a in response.actions]


def subscribe(client: NextbestClient, user: str, hours: float = 0, channel: str = "email") -> None:
    reply = client.record_events([make_event("subscribed", user, at(hours), channel=channel)])
    assert reply.accepted == 1


def count(server: NextbestServer, table, **where) -> int:  # type: ignore[no-untyped-def]
    with server.store.db.reader.connect() as conn:
        query = select(func.count()).select_from(table)
        for column, value in where.items():
            query = query.where(table.c[column] == value)
        return int(conn.execute(query).scalar_one())


def bad_fields(err: grpc.RpcError) -> list[str]:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    fields = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        assert detail.Unpack(bad)
        fields += [v.field for v in bad.field_violations]
    return fields


# -- NextAction --------------------------------------------------------------------------------------------


def test_cart_abandoned_subscriber_gets_the_reminder_an_hour_later(client: NextbestClient) -> None:
    user = uid()
    subscribe(client, user)
    response = client.next_action(user, "cart_abandoned", occurred_at=at(5), cart_value=80.0, explain=True)
    assert chosen(response) == ["cart_reminder_email"]
    action = response.actions[0]
    assert action.channel == pb.CHANNEL_EMAIL
    assert action.action_class == pb.ACTION_CLASS_TRIGGERED
    assert action.send_at.ToDatetime(tzinfo=UTC) == at(6)
    assert action.parameters["template"] == "cart_reminder_v4"
    assert action.score == pytest.approx(0.08 * 80.0)  # base propensity x the cart at stake
    assert reasons(response) == {"cart_reminder_push": "NO_CONSENT"}
    assert response.occurred_at.ToDatetime(tzinfo=UTC) == at(5)
    assert len(response.catalog_version) == 12


def test_without_explain_no_rejections_are_returned(client: NextbestClient) -> None:
    response = client.next_action(uid(), "cart_abandoned", occurred_at=at(1), cart_value=80.0)
    assert chosen(response) == []
    assert list(response.rejected) == []


def test_idempotent_replay_returns_the_stored_decision_and_writes_nothing(
    client: NextbestClient, server: NextbestServer
) -> None:
    user, request_id = uid(), uid("req")
    subscribe(client, user)
    first = client.next_action(
        user, "cart_abandoned", request_id=request_id, occurred_at=at(1), cart_value=50.0
    )
    rows = count(server, exposures, user_id=user)
    again = client.next_action(
        user, "cart_abandoned", request_id=request_id, occurred_at=at(1), cart_value=50.0, explain=True
    )
    assert again.replayed and not first.replayed
    assert again.decision_id == first.decision_id
    assert chosen(again) == chosen(first)
    assert reasons(again) == {"cart_reminder_push": "NO_CONSENT"}  # the stored reasons, on request
    assert count(server, decisions, request_id=request_id) == 1
    assert count(server, exposures, user_id=user) == rows == 1


def test_same_request_id_with_another_payload_is_already_exists(client: NextbestClient) -> None:
    user, request_id = uid(), uid("req")
    client.next_action(user, "cart_abandoned", request_id=request_id, occurred_at=at(1), cart_value=50.0)
    with pytest.raises(grpc.RpcError) as info:
        client.next_action(user, "cart_abandoned", request_id=request_id, occurred_at=at(1), cart_value=51.0)
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert request_id in info.value.details()


def test_concurrent_retries_of_one_request_yield_one_decision(
    client: NextbestClient, server: NextbestServer
) -> None:
    user, request_id = uid(), uid("req")
    subscribe(client, user)
    results: list[str] = []

    def call() -> None:
        r = client.next_action(
            user, "cart_abandoned", request_id=request_id, occurred_at=at(2), cart_value=60.0
        )
        results.append(r.decision_id)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and len(set(results)) == 1
    assert count(server, decisions, request_id=request_id) == 1
    assert count(server, exposures, user_id=user) == 1


def test_no_consent_then_consent_granted(client: NextbestClient) -> None:
    user = uid()
    response = client.next_action(user, "subscribed", occurred_at=at(0), channels=["email"], explain=True)
    assert chosen(response) == []
    assert reasons(response) == {"welcome_email": "NO_CONSENT"}
    assert "never given" in response.rejected[0].detail
    reply = client.record_events(
        [make_event("consent_changed", user, at(1), channel="email", consent_granted=True)]
    )
    assert reply.accepted == 1
    response = client.next_action(user, "subscribed", occurred_at=at(2), channels=["email"])
    assert chosen(response) == ["welcome_email"]


def test_unsubscribe_suppresses_marketing_but_not_transactional(client: NextbestClient) -> None:
    user = uid()
    subscribe(client, user)
    client.record_events([make_event("unsubscribed", user, at(1), channel="email")])
    promo = client.next_action(user, "scheduled", occurred_at=at(2), channels=["email"], explain=True)
    assert chosen(promo) == []
    assert reasons(promo)["promo_black_friday_email"] == "SUPPRESSED"
    assert "unsubscribed" in {r.action_id: r.detail for r in promo.rejected}["promo_black_friday_email"]
    shipped = client.next_action(user, "order_shipped", occurred_at=at(3), channels=["email"])
    assert chosen(shipped) == ["shipping_notice_email"]


@pytest.mark.parametrize(
    ("kind", "extra"),
    [
        pytest.param("bounced", {"bounce_kind": pb.BOUNCE_KIND_HARD}, id="hard-bounce"),
        pytest.param("complained", {}, id="complaint"),
    ],
)
def test_hard_bounce_and_complaint_suppress_even_transactional(
    client: NextbestClient, kind: str, extra: dict[str, int]
) -> None:
    user = uid()
    subscribe(client, user)
    client.record_events([make_event(kind, user, at(1), channel="email", **extra)])
    shipped = client.next_action(user, "order_shipped", occurred_at=at(2), channels=["email"], explain=True)
    assert chosen(shipped) == []
    assert reasons(shipped) == {"shipping_notice_email": "SUPPRESSED"}


def test_soft_bounce_does_not_suppress(client: NextbestClient) -> None:
    user = uid()
    subscribe(client, user)
    client.record_events(
        [make_event("bounced", user, at(1), channel="email", bounce_kind=pb.BOUNCE_KIND_SOFT)]
    )
    assert chosen(client.next_action(user, "order_shipped", occurred_at=at(2), channels=["email"])) == [
        "shipping_notice_email"
    ]


def test_order_exits_the_cart_flow(client: NextbestClient) -> None:
    user = uid()
    subscribe(client, user)
    first = client.next_action(user, "cart_abandoned", occurred_at=at(1), cart_value=90.0)
    assert chosen(first) == ["cart_reminder_email"]
    # Without an order, the incentive step is due two days after entry.
    control = uid()
    subscribe(client, control)
    client.next_action(control, "cart_abandoned", occurred_at=at(1), cart_value=90.0)
    step = client.next_action(control, "scheduled", occurred_at=at(50), cart_value=90.0, channels=["email"])
    assert chosen(step) == ["cart_incentive_email"]
    # With an order in between, the customer has left the flow.
    client.record_events([make_event("order_placed", user, at(3), value=90.0, order_id=uid("o"))])
    after = client.next_action(
        user, "scheduled", occurred_at=at(50), cart_value=90.0, channels=["email"], explain=True
    )
    assert reasons(after)["cart_incentive_email"] == "EXITED_FLOW"
    assert "order_placed" in {r.action_id: r.detail for r in after.rejected}["cart_incentive_email"]
    # Within the re-entry window (3 days) a new abandonment does not restart the flow; after it, it does.
    soon = client.next_action(user, "cart_abandoned", occurred_at=at(30), cart_value=20.0, explain=True)
    assert reasons(soon)["cart_reminder_email"] == "COOLDOWN"
    again = client.next_action(user, "cart_abandoned", occurred_at=at(80), cart_value=20.0)
    assert chosen(again) == ["cart_reminder_email"]


def test_follow_up_step_without_journey_is_not_in_journey(client: NextbestClient) -> None:
    user = uid()
    subscribe(client, user)
    response = client.next_action(user, "scheduled", occurred_at=at(30), channels=["email"], explain=True)
    assert reasons(response)["cart_incentive_email"] == "NOT_IN_JOURNEY"


def test_rule_false_and_one_action_per_channel(client: NextbestClient) -> None:
    user = uid()
    subscribe(client, user, hours=-200)  # the welcome journey (7 days) is over
    response = client.next_action(
        user, "product_viewed", occurred_at=at(1), product_ids=["sku-1"], max_actions=3, explain=True
    )
    assert chosen(response) == ["browse_reminder_email", "browse_recommendations_onsite"]
    got = reasons(response)
    assert got["welcome_onsite_banner"] == "NOT_IN_JOURNEY"
    assert got["promo_onsite_banner"] == "LOWER_PRIORITY"
    again = client.next_action(user, "product_viewed", occurred_at=at(2), product_ids=["sku-2"], explain=True)
    assert reasons(again)["browse_reminder_email"] == "COOLDOWN"  # 3 days between browse reminders
    other = uid()
    subscribe(client, other, hours=-200)
    no_products = client.next_action(
        other, "product_viewed", occurred_at=at(2), channels=["email"], explain=True
    )
    assert reasons(no_products) == {"browse_reminder_email": "RULE_FALSE"}


def test_transactional_outranks_triggered(client: NextbestClient) -> None:
    user = uid()
    subscribe(client, user, hours=-200)
    response = client.next_action(user, "order_placed", occurred_at=at(1), max_actions=2, explain=True)
    # Transactional notices need no marketing consent and rank before the triggered cross-sell.
    assert chosen(response) == ["order_confirmation_email", "order_confirmation_push"]
    assert reasons(response) == {"cross_sell_onsite": "MAX_ACTIONS"}
    response = client.next_action(user, "order_placed", occurred_at=at(2), max_actions=3)
    assert [a.action_class for a in response.actions] == [
        pb.ACTION_CLASS_TRANSACTIONAL,
        pb.ACTION_CLASS_TRANSACTIONAL,
        pb.ACTION_CLASS_TRIGGERED,
    ]


def test_exposures_record_what_was_chosen(client: NextbestClient, server: NextbestServer) -> None:
    user = uid()
    subscribe(client, user)
    response = client.next_action(user, "order_placed", occurred_at=at(1), max_actions=3)
    with server.store.db.reader.connect() as conn:
        rows = conn.execute(select(exposures).where(exposures.c.user_id == user)).mappings().all()
    assert sorted(r["action_id"] for r in rows) == sorted(chosen(response))
    assert {r["decision_id"] for r in rows} == {response.decision_id}
    assert all(r["occurred_at"] == at(1) and r["trigger"] == "order_placed" for r in rows)


# -- RecordEvents -------------------------------------------------------------------------------------------


def test_events_are_deduplicated_and_bad_events_reported_per_index(
    client: NextbestClient, server: NextbestServer
) -> None:
    user = uid()
    order = make_event("order_placed", user, at(1), value=42.0, order_id=uid("o"))
    broken = pb.Event(event_id=uid("e"), user_id=user, type=pb.EVENT_TYPE_CONSENT_CHANGED)
    unknown = pb.Event(event_id="", user_id=user, type=999, occurred_at=timestamp(at(1)))
    reply = client.record_events([order, broken, order, unknown])
    assert [r.status for r in reply.results] == [
        pb.EVENT_STATUS_ACCEPTED,
        pb.EVENT_STATUS_REJECTED,
        pb.EVENT_STATUS_DUPLICATE,
        pb.EVENT_STATUS_REJECTED,
    ]
    assert (reply.accepted, reply.duplicates, reply.rejected) == (1, 1, 2)
    assert {e.field for e in reply.results[1].errors} == {"occurred_at", "channel"}
    assert {e.field for e in reply.results[3].errors} == {"event_id", "type"}
    again = client.record_events([order])
    assert again.results[0].status == pb.EVENT_STATUS_DUPLICATE
    assert count(server, events, event_id=order.event_id) == 1
    # The order was counted once in the customer's state.
    with server.store.db.reader.connect() as conn:
        from nextbest.store.schema import customers

        row = conn.execute(select(customers).where(customers.c.user_id == user)).mappings().one()
    assert row["orders_count"] == 1 and row["revenue_total"] == pytest.approx(42.0)


def test_too_many_events_is_invalid_argument(client: NextbestClient) -> None:
    batch = [make_event("opened", "u", at(1)) for _ in range(1001)]
    with pytest.raises(grpc.RpcError) as info:
        client.record_events(batch)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(info.value) == ["events"]


# -- bad input ----------------------------------------------------------------------------------------------


def _request(**overrides: object) -> pb.NextActionRequest:
    fields: dict[str, object] = {"request_id": uid("req"), "user_id": uid(), "trigger": "cart_abandoned"}
    return pb.NextActionRequest(**{**fields, **overrides})


@pytest.mark.parametrize(
    ("request_msg", "fields"),
    [
        pytest.param(_request(request_id=""), ["request_id"], id="missing-request-id"),
        pytest.param(_request(user_id=""), ["user_id"], id="missing-user-id"),
        pytest.param(_request(user_id="x" * 129), ["user_id"], id="long-user-id"),
        pytest.param(_request(trigger=""), ["trigger"], id="missing-trigger"),
        pytest.param(_request(trigger="teleported"), ["trigger"], id="unknown-trigger"),
        pytest.param(_request(channels=[pb.CHANNEL_UNSPECIFIED]), ["channels[0]"], id="unspecified-channel"),
        pytest.param(_request(channels=[pb.CHANNEL_EMAIL, 42]), ["channels[1]"], id="unknown-channel"),
        pytest.param(_request(channels=[pb.CHANNEL_ADS]), ["channels[0]"], id="channel-not-enabled"),
        pytest.param(_request(channels=[1, 1]), ["channels[1]"], id="duplicate-channel"),
        pytest.param(_request(max_actions=-1), ["max_actions"], id="negative-max-actions"),
        pytest.param(_request(max_actions=11), ["max_actions"], id="too-many-actions"),
        pytest.param(
            _request(context=pb.RequestContext(cart_value=-1.0)), ["context.cart_value"], id="negative-cart"
        ),
        pytest.param(
            _request(context=pb.RequestContext(cart_value=float("nan"))),
            ["context.cart_value"],
            id="nan-cart",
        ),
        pytest.param(
            _request(context=pb.RequestContext(time_zone="Mars/Olympus")),
            ["context.time_zone"],
            id="bad-zone",
        ),
        pytest.param(
            _request(context=pb.RequestContext(product_ids=["ok", ""])),
            ["context.product_ids[1]"],
            id="empty-sku",
        ),
        pytest.param(
            _request(occurred_at=timestamp(datetime(1990, 1, 1, tzinfo=UTC))), ["occurred_at"], id="ancient"
        ),
        pytest.param(
            _request(request_id="", user_id="", trigger="nope", max_actions=99),
            ["request_id", "user_id", "trigger", "max_actions"],
            id="every-bad-field-named",
        ),
    ],
)
def test_bad_requests_are_invalid_argument_naming_the_field(
    client: NextbestClient, server: NextbestServer, request_msg: pb.NextActionRequest, fields: list[str]
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        client.call_next_action(request_msg)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(info.value) == fields
    if request_msg.request_id:
        assert count(server, decisions, request_id=request_msg.request_id) == 0  # nothing logged


def test_a_decision_that_keeps_losing_races_is_aborted_with_nothing_written(
    client: NextbestClient, server: NextbestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's ConflictError (tests/store/test_replicas.py) reaches the caller as ABORTED."""

    def keeps_losing(request: Any, deadline: float | None = None) -> Any:
        raise ConflictError(f"customer {request.user_id!r} kept changing while this call decided")

    monkeypatch.setattr(server.engine, "decide", keeps_losing)
    once = NextbestClient(server.address, timeout=10.0, max_attempts=1)
    with once, pytest.raises(grpc.RpcError) as info:
        once.next_action(uid(), "order_placed", channels=["email"])
    assert info.value.code() == grpc.StatusCode.ABORTED
    assert "kept changing" in (info.value.details() or "")
