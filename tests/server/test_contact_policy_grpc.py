"""Contact policy end to end over gRPC, on SQLite and PostgreSQL, with the bundled catalog's policy:
caps, quiet hours, engagement suppression, the conflict check, the cart-abandonment journey in steps,
preemption of pending actions, cancellation by exit events, and inventory."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from nextbest.api.v1 import decision_service_pb2 as pb
from nextbest.client import NextbestClient, make_event
from nextbest.server import NextbestServer
from nextbest.store.schema import exposures
from tests.conftest import uid

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # a Monday, 09:00 UTC
REASON = pb.ReasonCode.Name


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def reasons(response: pb.NextActionResponse) -> dict[str, str]:
    return {r.action_id: REASON(r.reason).removeprefix("REASON_CODE_") for r in response.rejected}


def details(response: pb.NextActionResponse) -> dict[str, str]:
    return {r.action_id: r.detail for r in response.rejected}


def chosen(response: pb.NextActionResponse) -> list[str]:
    return [a.action_id for a in response.actions]


def customer(
    client: NextbestClient, *, since_hours: float = -200, channels: tuple[str, ...] = ("email",)
) -> str:
    """A subscriber known since ``since_hours`` (by default past the welcome journey), with consent on
    ``channels``."""
    user = uid()
    batch = [make_event("subscribed", user, at(since_hours), channel="email")]
    batch += [
        make_event("consent_changed", user, at(since_hours), channel=ch, consent_granted=True)
        for ch in channels
        if ch != "email"
    ]
    assert client.record_events(batch).accepted == len(batch)
    return user


def promo(client: NextbestClient, user: str, hours: float) -> pb.NextActionResponse:
    return client.next_action(user, "scheduled", occurred_at=at(hours), channels=["email"], explain=True)


def test_promotional_caps_count_what_was_sent_in_rolling_windows(client: NextbestClient) -> None:
    user = customer(client)
    assert chosen(promo(client, user, 0)) == ["promo_black_friday_email"]
    capped = promo(client, user, 5)
    assert reasons(capped)["promo_black_friday_email"] == "FREQUENCY_CAP"
    assert details(capped)["promo_black_friday_email"] == (
        "promotional cap 1/1d reached: 1 send since 2026-11-02 09:00Z"
    )
    assert chosen(promo(client, user, 24)) == ["promo_black_friday_email"]  # [09:00, 09:00 next day)
    assert chosen(promo(client, user, 48)) == ["promo_black_friday_email"]
    weekly = promo(client, user, 72)
    assert details(weekly)["promo_black_friday_email"].startswith("promotional cap 3/1w reached: 3 sends")
    # Transactional actions are never capped.
    shipped = client.next_action(user, "order_shipped", occurred_at=at(73), channels=["email"])
    assert chosen(shipped) == ["shipping_notice_email"]
    assert chosen(promo(client, user, 24 * 7)) == ["promo_black_friday_email"]  # the first left the window


def test_sms_is_deferred_past_quiet_hours_in_the_customers_time_zone(client: NextbestClient) -> None:
    user = customer(client, channels=("email", "sms"))
    client.record_events([make_event("order_placed", user, at(-199), value=40.0, order_id=uid("o"))])
    # 23:30 in New York (04:30 UTC): quiet until 08:00 local = 13:00 UTC, within the 12 h send window.
    late = datetime(2026, 11, 3, 4, 30, tzinfo=UTC)
    reply = client.next_action(
        user, "scheduled", occurred_at=late, channels=["sms"], time_zone="America/New_York", explain=True
    )
    assert chosen(reply) == ["promo_black_friday_sms"]
    assert reply.actions[0].send_at.ToDatetime(UTC) == datetime(2026, 11, 3, 13, 0, tzinfo=UTC)
    # The same moment in Paris is 05:30, also quiet: deferred to 08:00 Paris = 07:00 UTC.
    other = customer(client, channels=("email", "sms"))
    client.record_events([make_event("order_placed", other, at(-199), value=40.0, order_id=uid("o"))])
    paris = client.next_action(
        other, "scheduled", occurred_at=late, channels=["sms"], time_zone="Europe/Paris"
    )
    assert paris.actions[0].send_at.ToDatetime(UTC) == datetime(2026, 11, 3, 7, 0, tzinfo=UTC)


def test_promotions_stop_for_unengaged_customers_and_resume_after_an_open(client: NextbestClient) -> None:
    user = customer(client, since_hours=-24 * 100)
    stale = promo(client, user, 0)
    assert reasons(stale)["promo_black_friday_email"] == "UNENGAGED"
    assert "no opens or clicks in the last 90 days" in details(stale)["promo_black_friday_email"]
    # Triggered flows continue.
    cart = client.next_action(user, "cart_abandoned", occurred_at=at(1), cart_value=50.0, channels=["email"])
    assert chosen(cart) == ["cart_reminder_email"]
    client.record_events([make_event("opened", user, at(2), channel="email")])
    # (the cart journey, which outranks promotions, ends 3 days after its last step)
    assert chosen(promo(client, user, 24 * 6)) == ["promo_black_friday_email"]


def test_a_customer_mid_journey_is_not_pulled_into_a_lower_priority_flow(client: NextbestClient) -> None:
    user = customer(client)
    client.next_action(user, "cart_abandoned", occurred_at=at(0), cart_value=80.0, channels=["email"])
    browse = client.next_action(
        user, "product_viewed", occurred_at=at(2), product_ids=["sku-1"], channels=["email"], explain=True
    )
    assert reasons(browse)["browse_reminder_email"] == "IN_HIGHER_JOURNEY"
    assert details(browse)["browse_reminder_email"].startswith(
        "mid-journey in cart_abandonment (triggered, priority 80"
    )
    # Once the cart journey has ended (an order), browse abandonment may start.
    client.record_events([make_event("order_placed", user, at(3), value=80.0, order_id=uid("o"))])
    later = client.next_action(
        user, "product_viewed", occurred_at=at(24 * 9), product_ids=["sku-1"], channels=["email"]
    )
    assert chosen(later) == ["browse_reminder_email"]


def test_the_cart_abandonment_journey_step_by_step_until_the_order(client: NextbestClient) -> None:
    user = customer(client, channels=("email", "sms"))
    entry = client.next_action(
        user, "cart_abandoned", occurred_at=at(0), cart_value=90.0, channels=["email", "sms"], max_actions=2
    )
    assert chosen(entry) == ["cart_reminder_email"]  # step 1, an hour after entry; the SMS is step 2
    assert entry.actions[0].send_at.ToDatetime(UTC) == at(1)
    early = client.next_action(user, "scheduled", occurred_at=at(10), channels=["email", "sms"], explain=True)
    assert chosen(early) == []
    assert reasons(early)["cart_nudge_sms"] == "NOT_DUE"
    assert "due at 2026-11-03T09:00:00Z" in details(early)["cart_nudge_sms"]
    assert "already sent" in details(early)["cart_reminder_email"]
    nudge = client.next_action(user, "scheduled", occurred_at=at(25), channels=["email", "sms"], explain=True)
    assert chosen(nudge) == ["cart_nudge_sms"]  # 21:00 local is quiet: 10:00 UTC is not
    assert reasons(nudge)["cart_incentive_email"] == "NOT_DUE"
    incentive = client.next_action(user, "scheduled", occurred_at=at(49), channels=["email", "sms"])
    assert chosen(incentive) == ["cart_incentive_email"]
    client.record_events([make_event("order_placed", user, at(50), value=90.0, order_id=uid("o"))])
    after = client.next_action(user, "scheduled", occurred_at=at(51), channels=["email", "sms"], explain=True)
    assert reasons(after)["cart_incentive_email"] == "EXITED_FLOW"


def test_an_opened_reminder_skips_the_sms_step(client: NextbestClient) -> None:
    user = customer(client, channels=("email", "sms"))
    client.next_action(user, "cart_abandoned", occurred_at=at(0), cart_value=90.0, channels=["email"])
    client.record_events([make_event("opened", user, at(2), channel="email")])
    nudge = client.next_action(user, "scheduled", occurred_at=at(25), channels=["sms"], explain=True)
    assert reasons(nudge)["cart_nudge_sms"] == "RULE_FALSE"
    assert "step condition is false" in details(nudge)["cart_nudge_sms"]


def test_a_higher_priority_decision_preempts_a_pending_lower_one(client: NextbestClient) -> None:
    user = customer(client)
    browse = client.next_action(
        user, "product_viewed", occurred_at=at(0), product_ids=["sku-1"], channels=["email"]
    )
    assert chosen(browse) == ["browse_reminder_email"]  # pending: sent two hours later
    request_id = uid("r")
    cart = client.next_action(
        user,
        "cart_abandoned",
        request_id=request_id,
        occurred_at=at(0.5),
        cart_value=60.0,
        channels=["email"],
    )
    assert chosen(cart) == ["cart_reminder_email"]
    (cancelled,) = cart.cancelled
    assert (cancelled.decision_id, cancelled.action_id) == (browse.decision_id, "browse_reminder_email")
    assert cancelled.reason.startswith("preempted by cart_reminder_email")
    # A retry replays the stored answer, with the same cancellation; nothing is cancelled again.
    replay = client.next_action(
        user,
        "cart_abandoned",
        request_id=request_id,
        occurred_at=at(0.5),
        cart_value=60.0,
        channels=["email"],
    )
    assert replay.replayed and [c.decision_id for c in replay.cancelled] == [browse.decision_id]
    # A new request finds nothing left to preempt.
    again = client.next_action(
        user, "cart_abandoned", occurred_at=at(0.6), cart_value=60.0, channels=["email"]
    )
    assert list(again.cancelled) == []


def test_an_exit_event_cancels_pending_actions_once(client: NextbestClient, server: NextbestServer) -> None:
    user = customer(client)
    cart = client.next_action(user, "cart_abandoned", occurred_at=at(0), cart_value=60.0, channels=["email"])
    order = make_event("order_placed", user, at(0.5), value=60.0, order_id=uid("o"))
    reply = client.record_events([order])
    (cancelled,) = reply.results[0].cancelled
    assert (cancelled.decision_id, cancelled.action_id) == (cart.decision_id, "cart_reminder_email")
    assert "order_placed" in cancelled.reason and "exits cart_abandonment" in cancelled.reason
    again = client.record_events([order])
    assert again.duplicates == 1 and list(again.results[0].cancelled) == []
    with server.engine.store.db.reader.connect() as conn:
        row = conn.execute(
            select(exposures.c.cancelled_at, exposures.c.cancelled_by).where(
                exposures.c.decision_id == cart.decision_id
            )
        ).one()
    assert row.cancelled_at == at(0.5) and row.cancelled_by == order.event_id


def test_unsubscribe_cancels_pending_marketing_on_that_channel(client: NextbestClient) -> None:
    user = customer(client)
    cart = client.next_action(user, "cart_abandoned", occurred_at=at(0), cart_value=60.0, channels=["email"])
    reply = client.record_events([make_event("unsubscribed", user, at(0.2), channel="email")])
    assert [c.decision_id for c in reply.results[0].cancelled] == [cart.decision_id]
    assert reply.results[0].cancelled[0].reason == "unsubscribed from email"


def test_out_of_stock_products_block_their_actions_but_not_back_in_stock(client: NextbestClient) -> None:
    user = customer(client)
    told = client.next_action(
        user,
        "cart_abandoned",
        occurred_at=at(0),
        cart_value=60.0,
        product_ids=["sku-a"],
        out_of_stock_product_ids=["sku-a"],
        channels=["email"],
        explain=True,
    )
    assert reasons(told)["cart_reminder_email"] == "OUT_OF_STOCK"
    assert details(told)["cart_reminder_email"] == "out of stock: sku-a"
    sku = uid("sku")
    gone = client.record_events([make_event("out_of_stock", "", at(0), product_ids=[sku])])
    assert gone.accepted == 1
    other = customer(client)
    blocked = client.next_action(
        other,
        "cart_abandoned",
        occurred_at=at(1),
        cart_value=60.0,
        product_ids=[sku],
        channels=["email"],
        explain=True,
    )
    assert reasons(blocked)["cart_reminder_email"] == "OUT_OF_STOCK"
    client.record_events([make_event("back_in_stock", "", at(2), product_ids=[sku])])
    back = client.next_action(
        other, "back_in_stock", occurred_at=at(3), product_ids=[sku], channels=["email"]
    )
    assert chosen(back) == ["back_in_stock_email"]


def test_an_inventory_event_needs_products(client: NextbestClient) -> None:
    reply = client.record_events([make_event("out_of_stock", "", at(0))])
    assert reply.rejected == 1
    assert [e.field for e in reply.results[0].errors] == ["product_ids"]
