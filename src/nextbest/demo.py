"""``nextbest demo``: the whole loop on the embedded default.

First one customer's story through the real gRPC client, every decision printed with its reasons; then a
simulated store — a few thousand customers over three weeks, with the global holdout, the cart-flow
holdout and the cart incentive A/B test of the bundled catalog — played through a server over gRPC, and
each experiment's lift report printed beside the simulator's true effects, with the HTML reports written
to disk."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from nextbest.api.v1 import decision_service_pb2 as pb
from nextbest.client import NextbestClient, make_event
from nextbest.server import NextbestServer
from nextbest.settings import Settings
from nextbest.simulate.command import SimulationOptions, run_simulation

__all__ = ["run_demo"]

USER = "demo-customer-1"
START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def _name(enum: Callable[[int], str], value: int, prefix: str) -> str:
    return enum(value).removeprefix(prefix).lower()


def _short_id(decision_id: str) -> str:
    """The random tail of a decision id: its head is a UUIDv7's time prefix, the same for decisions made
    within a second or so of each other."""
    return decision_id[-8:]


def _print_decision(step: str, at: datetime, response: pb.NextActionResponse) -> None:
    print(f"\n{at:%a %d %b %H:%M}  {step}")
    tag = " (replayed)" if response.replayed else ""
    if not response.actions:
        print(f"  -> send nothing{tag}  [decision {_short_id(response.decision_id)}]")
    for action in response.actions:
        send_at = action.send_at.ToDatetime(tzinfo=UTC)
        when = "now" if send_at <= at else f"at {send_at:%a %H:%M}"
        source = _name(pb.SendTimeSource.Name, action.send_time, "SEND_TIME_SOURCE_")
        if source not in ("fixed", "unspecified"):
            when += f" ({source} send time)"
        print(
            f"  -> {action.action_id} on {_name(pb.Channel.Name, action.channel, 'CHANNEL_')}, "
            f"{_name(pb.ActionClass.Name, action.action_class, 'ACTION_CLASS_')}, {when}, "
            f"score {action.score:.2f}{tag}  [decision {_short_id(response.decision_id)}]"
        )
    for rejected in response.rejected:
        print(
            f"     x {rejected.action_id}: {pb.ReasonCode.Name(rejected.reason).removeprefix('REASON_CODE_')}"
            f" — {rejected.detail}"
        )
    for a in response.assignments:
        what = f"would have got {a.action_id} (logged, not sent)" if a.held_out else f"got {a.action_id}"
        print(f"     ~ experiment {a.experiment_id}: arm {a.arm_id} (p={a.probability:g}); {what}")


def _story(client: NextbestClient) -> None:
    def at(hours: float) -> datetime:
        return START + timedelta(hours=hours)

    def events(*items: pb.Event) -> None:
        reply = client.record_events(items)
        kinds = ", ".join(_name(pb.EventType.Name, e.type, "EVENT_TYPE_") for e in items)
        print(
            f"\n{items[0].occurred_at.ToDatetime(tzinfo=UTC):%a %d %b %H:%M}  events: {kinds}"
            f" ({reply.accepted} accepted, {reply.duplicates} duplicate)"
        )

    def decide(step: str, hours: float, trigger: str, **kwargs: object) -> pb.NextActionResponse:
        response = client.next_action(USER, trigger, occurred_at=at(hours), explain=True, **kwargs)  # type: ignore[arg-type]
        _print_decision(step, at(hours), response)
        return response

    print(f"A customer's story, as a backend would tell it to nextbest ({USER}):")
    signup = make_event("subscribed", USER, at(0), event_id="evt-signup", channel="email")
    events(signup)
    decide("signs up for the newsletter", 0, "subscribed")
    events(make_event("product_viewed", USER, at(30), event_id="evt-view", product_ids=["sku-boots-42"]))
    decide(
        "views a product",
        30,
        "product_viewed",
        product_ids=["sku-boots-42"],
        page_category="shoes",
        channels=["email", "onsite"],
        max_actions=2,
    )
    events(make_event("cart_abandoned", USER, at(31), event_id="evt-cart", product_ids=["sku-boots-42"]))
    cart = decide(
        "abandons a cart worth 84.50", 31, "cart_abandoned", request_id="req-cart-1", cart_value=84.5
    )
    again = client.next_action(
        USER, "cart_abandoned", request_id="req-cart-1", occurred_at=at(31), cart_value=84.5
    )
    print(
        f"  (the caller retries the same request: same decision {_short_id(again.decision_id)}, "
        f"replayed={again.replayed}, nothing new written)"
    )
    if again.decision_id != cart.decision_id:
        raise RuntimeError("an idempotent retry returned a different decision")
    events(
        make_event(
            "opened", USER, at(32.5), event_id="evt-open", channel="email", decision_id=cart.decision_id
        )
    )
    events(
        make_event(
            "order_placed",
            USER,
            at(40),
            event_id="evt-order",
            value=84.5,
            order_id="order-1001",
            items=[pb.OrderItem(product_id="sku-boots-42", quantity=1, unit_price=84.5)],
        ),
        signup,
    )
    decide("places the order", 40, "order_placed", max_actions=2)
    decide("a day after abandoning: the cart flow's next step", 55, "scheduled", cart_value=84.5)
    decide("the order ships", 62, "order_shipped")
    events(make_event("unsubscribed", USER, at(70), event_id="evt-unsub", channel="email"))
    decide("Black Friday campaign run, after unsubscribing", 72, "scheduled", channels=["email"])
    decide("a second order ships (transactional still goes)", 80, "order_shipped")

    print("\nAnother subscriber, in the 5% global holdout, abandons a cart:")
    held = "demo-customer-10"
    client.record_events([make_event("subscribed", held, at(0), event_id="evt-signup-10", channel="email")])
    response = client.next_action(held, "cart_abandoned", occurred_at=at(31), cart_value=120.0, explain=True)
    _print_decision("abandons a cart worth 120.00", at(31), response)

    print("\nA malformed request is refused with every bad field named:")
    try:
        client.next_action(
            "", "teleported", channels=["email", "email"], max_actions=99, time_zone="Mars/Olympus"
        )
    except grpc.RpcError as err:
        status = rpc_status.from_call(err)
        print(f"  {err.code().name}")
        for detail in status.details if status else ():
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(bad):
                for violation in bad.field_violations:
                    print(f"    {violation.field}: {violation.description}")


def run_demo(database_url: str | None = None, customers: int = 2000, days: int = 21) -> int:
    started = time.perf_counter()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    story_url = database_url or f"sqlite:///{Path('var') / f'demo-{stamp}.db'}"
    _run_story(story_url)
    print(
        f"\n\nThe whole loop: {customers:,} simulated customers over {days} days, decided by nextbest over "
        "gRPC, measured by its lift reports and checked against the simulator's ground truth.\n"
    )
    outcome = run_simulation(
        SimulationOptions(
            customers=customers,
            days=days,
            seed=1,
            database_url=database_url,
            truth=Path("var") / f"demo-{stamp}-truth.json",
            html_dir=Path("var") / f"demo-{stamp}-reports",
        )
    )
    checked = [c for c in outcome.comparisons if c.covered is not None]
    covered = sum(1 for c in checked if c.covered)
    print(
        f"\n{covered} of {len(checked)} 95% intervals cover the true effect. "
        f"Open {outcome.html[0] if outcome.html else 'the reports'} in a browser for the charts."
        f"\nDemo finished in {time.perf_counter() - started:.0f}s."
    )
    return 0


def _run_story(database_url: str) -> None:
    server = NextbestServer(Settings(port=0, database_url=database_url, log_level="WARNING"))
    server.start()
    try:
        with NextbestClient(server.address) as client:
            client.wait_until_serving()
            print(
                f"nextbest serving on {server.address}, database {database_url}, "
                f"catalog version {server.engine.catalog.version}"
            )
            print(
                "models: "
                + ", ".join(
                    f"{m.kind.value} {m.state.value} {m.version}".rstrip() for m in server.models.statuses
                )
                + "\n"
            )
            _story(client)
    finally:
        server.stop(grace=1.0)
    print(f"\nEvery decision above is in the exposure log at {database_url}.")
