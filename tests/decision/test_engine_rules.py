"""The decision rules of ../shared/DESIGN.md ("The decision pipeline", "Rules that keep the numbers
honest"), pinned through ``DecisionEngine.decide`` and ``record_events`` on a real store (SQLite, and
PostgreSQL when configured) with a fixed clock: no gRPC. Each test states one rule, asserts the reason
code a refused candidate gets and what the caller and the log observe.

The catalog below is small on purpose: every number a test depends on is in it. The stages' own
arithmetic (cap windows, quiet hours, journeys, arbitration order) is pinned at unit level by the other
modules of tests/decision/; here the engine must wire each rule in, in the right order."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from nextbest.catalog import Catalog, parse_catalog
from nextbest.decision import DecisionEngine
from nextbest.domain import (
    ActionClass,
    BounceKind,
    Channel,
    ChosenAction,
    Decision,
    DecisionRequest,
    Event,
    EventOutcome,
    EventResult,
    EventType,
    ReasonCode,
    RequestContext,
)
from nextbest.errors import AlreadyExistsError, InvalidArgumentError
from nextbest.store import Store
from nextbest.store.schema import assignments, decisions, exposures
from tests.conftest import find_unit, uid

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # a Monday, 09:00 UTC

SPEC = """
version: 1
name: engine-rules
channels:
  email: {requires_consent: true}
  sms: {requires_consent: true}
  push: {requires_consent: true}
  onsite: {requires_consent: false}
policy:
  time_zone: UTC
  caps:
    - {id: promotional_daily, classes: [promotional], limit: 1, window: 1d}
    - {id: marketing_weekly, limit: 3, window: 7d}
  quiet_hours:
    sms: {start: "21:00", end: "08:00"}
  engagement: {window: 30d}
flows:
  notices: {priority: 100}
  cart:
    priority: 80
    entry_triggers: [cart_abandoned]
    exit_on: [order_placed]
    reentry: 3d
    steps:
      - {after: 1h, actions: [cart_email]}
      - {after: 24h, actions: [cart_sms], when: "!journey.opened"}
  browse:
    priority: 40
    entry_triggers: [product_viewed]
    exit_on: [order_placed]
  promo:
    priority: 10
    exit_on: [order_placed]
actions:
  - {id: shipping_email, flow: notices, channel: email, class: transactional, triggers: [order_shipped]}
  - {id: shipping_sms, flow: notices, channel: sms, class: transactional, triggers: [order_shipped]}
  - id: receipt_email
    flow: notices
    channel: email
    class: transactional
    triggers: [order_placed]
    delay: 2h
  - id: cart_email
    flow: cart
    channel: email
    class: triggered
    triggers: [cart_abandoned]
    rule: context.cart_value > 0.0
    inventory: in_stock
    value_from: cart_value
    base_propensity: 0.1
    parameters: {template: cart_v1}
  - {id: cart_sms, flow: cart, channel: sms, class: triggered, triggers: [scheduled], value: 80.0,
     base_propensity: 0.05}
  - id: browse_email
    flow: browse
    channel: email
    class: triggered
    triggers: [product_viewed]
    delay: 2h
    cooldown: 3d
    inventory: in_stock
    value: 50.0
    base_propensity: 0.04
  - id: browse_onsite
    flow: browse
    channel: onsite
    class: triggered
    triggers: [product_viewed]
    rule: size(context.attributes) == 0 || context.attributes["segment"] == "new"
    value: 50.0
    base_propensity: 0.02
  - {id: promo_email, flow: promo, channel: email, class: promotional, triggers: [scheduled],
     value: 50.0, base_propensity: 0.01}
  - {id: promo_sms, flow: promo, channel: sms, class: promotional, triggers: [scheduled],
     value: 50.0, base_propensity: 0.008}
  - {id: flash_sms, flow: promo, channel: sms, class: promotional, triggers: [flash_sale],
     send_window: 1h, value: 50.0, base_propensity: 0.02}
  - {id: promo_onsite, flow: promo, channel: onsite, class: promotional,
     triggers: [scheduled, product_viewed], value: 50.0, base_propensity: 0.001}
"""
HOLDOUT = """
experiments:
  - id: holdout
    scope: {}
    arms:
      - {id: control, weight: 0.5, no_action: true}
      - {id: treated, weight: 0.5}
"""
CATALOG = parse_catalog(SPEC, "engine-rules.yaml")
WITH_HOLDOUT = parse_catalog(SPEC + HOLDOUT, "engine-rules-holdout.yaml")


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Shop:
    """The engine on a real store, with a clock the test moves: each call happens at its own time."""

    engine: DecisionEngine
    store: Store
    clock: Clock

    def customer(self, *channels: Channel, since: float = -24.0, user: str | None = None) -> str:
        """A customer first seen ``since`` hours from T0, with consent on ``channels``."""
        user = user or uid()
        if channels:
            self.events(
                user,
                *[
                    (EventType.CONSENT_CHANGED, since, {"channel": ch, "consent_granted": True})
                    for ch in channels
                ],
            )
        return user

    def events(self, user: str, *events: tuple[EventType, float, dict[str, Any]]) -> list[EventResult]:
        batch = [Event(uid("e"), user, kind, at(hours), **extra) for kind, hours, extra in events]
        self.clock.now = max(e.occurred_at for e in batch if e.occurred_at is not None)
        results = self.engine.record_events(batch)
        assert all(r.outcome is EventOutcome.ACCEPTED for r in results), results
        return results

    def event(self, user: str, kind: EventType, hours: float, **extra: Any) -> EventResult:
        (result,) = self.events(user, (kind, hours, extra))
        return result

    def decide(
        self,
        user: str,
        trigger: str,
        hours: float,
        *channels: Channel,
        request_id: str | None = None,
        max_actions: int = 0,
        explain: bool = True,
        **context: Any,
    ) -> Decision:
        self.clock.now = at(hours)
        return self.engine.decide(
            DecisionRequest(
                request_id or uid("r"),
                user,
                trigger,
                at(hours),
                RequestContext(**context),
                channels=channels,
                max_actions=max_actions,
                explain=explain,
            )
        )

    def rows(self, table: Any, **where: Any) -> list[dict[str, Any]]:
        query = select(table)
        for column, value in where.items():
            query = query.where(table.c[column] == value)
        with self.store.db.reader.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def count(self, table: Any, **where: Any) -> int:
        query = select(func.count()).select_from(table)
        for column, value in where.items():
            query = query.where(table.c[column] == value)
        with self.store.db.reader.connect() as conn:
            return int(conn.execute(query).scalar_one())


def chosen(decision: Decision) -> list[str]:
    return [a.action_id for a in decision.actions]


def reasons(decision: Decision) -> dict[str, ReasonCode]:
    return {r.action_id: r.reason for r in decision.rejected}


def detail(decision: Decision, action_id: str) -> str:
    return next(r.detail for r in decision.rejected if r.action_id == action_id)


def sent(decision: Decision, action_id: str) -> ChosenAction:
    return next(a for a in decision.actions if a.action_id == action_id)


def _shop(catalog: Catalog, store: Store) -> Shop:
    clock = Clock()
    return Shop(DecisionEngine(catalog, store, clock=clock), store, clock)


@pytest.fixture
def shop(store: Store) -> Shop:
    return _shop(CATALOG, store)


@pytest.fixture
def holdout_shop(store: Store) -> Shop:
    return _shop(WITH_HOLDOUT, store)


EMAIL, SMS, ONSITE = Channel.EMAIL, Channel.SMS, Channel.ONSITE


# -- consent and suppression come before everything ----------------------------------------------------------


def test_marketing_needs_consent_on_its_channel_and_gets_it_when_given(shop: Shop) -> None:
    user = shop.customer()
    refused = shop.decide(user, "cart_abandoned", 0, EMAIL, cart_value=40.0)
    assert chosen(refused) == [] and reasons(refused) == {"cart_email": ReasonCode.NO_CONSENT}
    assert detail(refused, "cart_email") == "no email consent: never given"
    shop.event(user, EventType.CONSENT_CHANGED, 1, channel=EMAIL, consent_granted=True)
    assert chosen(shop.decide(user, "cart_abandoned", 2, EMAIL, cart_value=40.0)) == ["cart_email"]
    shop.event(user, EventType.CONSENT_CHANGED, 3, channel=EMAIL, consent_granted=False)
    revoked = shop.decide(user, "scheduled", 4, EMAIL)
    assert reasons(revoked)["promo_email"] is ReasonCode.NO_CONSENT
    assert detail(revoked, "promo_email").startswith("no email consent: revoked at 2026-11-02T12:00:00Z")


def test_a_channel_that_needs_no_consent_takes_marketing_without_it(shop: Shop) -> None:
    decision = shop.decide(shop.customer(), "product_viewed", 0, EMAIL, ONSITE, max_actions=2)
    assert chosen(decision) == ["browse_onsite"]
    assert reasons(decision)["browse_email"] is ReasonCode.NO_CONSENT


def test_unsubscribe_stops_marketing_but_not_transactional(shop: Shop) -> None:
    user = shop.customer(EMAIL)
    shop.event(user, EventType.UNSUBSCRIBED, 0, channel=EMAIL)
    promo = shop.decide(user, "scheduled", 1, EMAIL)
    assert chosen(promo) == [] and reasons(promo) == {"promo_email": ReasonCode.SUPPRESSED}
    assert detail(promo, "promo_email") == "email suppressed: unsubscribed at 2026-11-02T09:00:00Z"
    assert chosen(shop.decide(user, "order_shipped", 2, EMAIL)) == ["shipping_email"]


@pytest.mark.parametrize(
    ("kind", "extra", "said"),
    [
        pytest.param(EventType.BOUNCED, {"bounce_kind": BounceKind.HARD}, "hard bounce", id="hard-bounce"),
        pytest.param(EventType.COMPLAINED, {}, "complaint", id="complaint"),
    ],
)
def test_a_hard_bounce_or_complaint_stops_even_transactional_on_that_channel_only(
    shop: Shop, kind: EventType, extra: dict[str, Any], said: str
) -> None:
    user = shop.customer(EMAIL, SMS)
    shop.event(user, kind, 0, channel=EMAIL, **extra)
    shipped = shop.decide(user, "order_shipped", 1, EMAIL, SMS, max_actions=2)
    assert chosen(shipped) == ["shipping_sms"]  # the SMS channel is fine
    assert reasons(shipped) == {"shipping_email": ReasonCode.SUPPRESSED}
    assert detail(shipped, "shipping_email").startswith(f"email suppressed: {said}")


def test_a_soft_bounce_suppresses_nothing(shop: Shop) -> None:
    user = shop.customer(EMAIL)
    shop.event(user, EventType.BOUNCED, 0, channel=EMAIL, bounce_kind=BounceKind.SOFT)
    assert chosen(shop.decide(user, "order_shipped", 1, EMAIL)) == ["shipping_email"]
    assert chosen(shop.decide(user, "scheduled", 2, EMAIL)) == ["promo_email"]


def test_suppression_is_the_reason_even_where_the_flow_was_exited(shop: Shop) -> None:
    user = shop.customer(EMAIL, SMS)
    shop.decide(user, "cart_abandoned", 0, EMAIL, cart_value=40.0)
    shop.event(user, EventType.ORDER_PLACED, 3, value=40.0)  # leaves the cart flow
    shop.event(user, EventType.COMPLAINED, 4, channel=SMS)
    step = shop.decide(user, "scheduled", 25, SMS)
    assert reasons(step) == {"cart_sms": ReasonCode.SUPPRESSED, "promo_sms": ReasonCode.SUPPRESSED}


# -- exit conditions and journeys ----------------------------------------------------------------------------


def test_a_journey_goes_step_by_step_each_step_when_due(shop: Shop) -> None:
    user = shop.customer(EMAIL, SMS)
    entry = shop.decide(user, "cart_abandoned", 0, EMAIL, SMS, max_actions=2, cart_value=90.0)
    assert chosen(entry) == ["cart_email"]
    assert sent(entry, "cart_email").send_at == at(1)  # the first step, an hour after entry
    early = shop.decide(user, "scheduled", 10, SMS)
    assert reasons(early)["cart_sms"] is ReasonCode.NOT_DUE
    assert detail(early, "cart_sms") == "step 2 of cart is due at 2026-11-03T09:00:00Z"
    due = shop.decide(user, "scheduled", 25, SMS)
    assert chosen(due) == ["cart_sms"] and sent(due, "cart_sms").send_at == at(25)  # 10:00 UTC: not quiet
    again = shop.decide(user, "scheduled", 26, SMS)
    assert reasons(again)["cart_sms"] is ReasonCode.NOT_DUE
    assert detail(again, "cart_sms") == "step 2 of cart was already sent in this journey"


def test_a_cart_abandonment_decided_after_a_later_one_does_not_enter_the_journey_again(
    shop: Shop,
) -> None:
    """Calls for one customer can be decided out of their triggers' order (one waited on another, or ran
    on another replica): the later trigger's reminder, already committed, keeps the earlier one out."""
    user = shop.customer(EMAIL)
    later = shop.decide(user, "cart_abandoned", 0.01, EMAIL, cart_value=90.0)
    assert chosen(later) == ["cart_email"]
    earlier = shop.decide(user, "cart_abandoned", 0, EMAIL, cart_value=90.0)
    assert chosen(earlier) == [] and reasons(earlier)["cart_email"] is ReasonCode.NOT_DUE


def test_a_step_whose_condition_is_false_is_rule_false(shop: Shop) -> None:
    user = shop.customer(EMAIL, SMS)
    shop.decide(user, "cart_abandoned", 0, EMAIL, cart_value=90.0)
    shop.event(user, EventType.OPENED, 2, channel=EMAIL)
    nudge = shop.decide(user, "scheduled", 25, SMS)
    assert reasons(nudge)["cart_sms"] is ReasonCode.RULE_FALSE
    assert detail(nudge, "cart_sms") == "step condition is false: !journey.opened"


def test_a_follow_up_step_outside_a_journey_is_not_in_journey(shop: Shop) -> None:
    decision = shop.decide(shop.customer(SMS), "scheduled", 25, SMS)
    assert reasons(decision)["cart_sms"] is ReasonCode.NOT_IN_JOURNEY


def test_an_exit_event_ends_the_journey_and_the_reentry_window_holds_a_new_one(shop: Shop) -> None:
    user = shop.customer(EMAIL, SMS)
    shop.decide(user, "cart_abandoned", 0, EMAIL, cart_value=90.0)
    shop.event(user, EventType.ORDER_PLACED, 3, value=90.0)
    after = shop.decide(user, "scheduled", 25, SMS)
    assert reasons(after)["cart_sms"] is ReasonCode.EXITED_FLOW
    assert detail(after, "cart_sms") == (
        "left cart: order_placed at 2026-11-02T12:00:00Z after entering at 2026-11-02T09:00:00Z"
    )
    # Another abandonment within the 3-day re-entry window of the journey's start: no new journey yet.
    soon = shop.decide(user, "cart_abandoned", 30, EMAIL, cart_value=20.0)
    assert reasons(soon)["cart_email"] is ReasonCode.COOLDOWN
    assert "no new journey before 2026-11-05T09:00:00Z" in detail(soon, "cart_email")
    assert chosen(shop.decide(user, "cart_abandoned", 72, EMAIL, cart_value=20.0)) == ["cart_email"]


def test_a_customer_mid_journey_is_not_pulled_into_a_lower_flow(shop: Shop) -> None:
    user = shop.customer(EMAIL)
    shop.decide(user, "cart_abandoned", 0, EMAIL, cart_value=80.0)
    browse = shop.decide(user, "product_viewed", 2, EMAIL, ONSITE, max_actions=2, product_ids=("sku",))
    assert chosen(browse) == []
    assert reasons(browse) == {
        "browse_email": ReasonCode.IN_HIGHER_JOURNEY,
        "browse_onsite": ReasonCode.IN_HIGHER_JOURNEY,
        "promo_onsite": ReasonCode.IN_HIGHER_JOURNEY,
    }
    assert detail(browse, "browse_email") == (
        "mid-journey in cart (triggered, priority 80, entered at 2026-11-02T09:00:00Z); "
        "not entered into browse (triggered, priority 40)"
    )
    # Once the cart journey has ended (an order), the browse flow may start.
    shop.event(user, EventType.ORDER_PLACED, 3, value=80.0)
    assert chosen(shop.decide(user, "product_viewed", 4, EMAIL, product_ids=("sku",))) == ["browse_email"]


def test_a_lower_journey_does_not_keep_a_customer_out_of_a_higher_flow(shop: Shop) -> None:
    user = shop.customer(EMAIL)
    assert chosen(shop.decide(user, "product_viewed", 0, EMAIL, product_ids=("sku",))) == ["browse_email"]
    assert chosen(shop.decide(user, "cart_abandoned", 3, EMAIL, cart_value=30.0)) == ["cart_email"]


# -- inventory -----------------------------------------------------------------------------------------------


def test_an_out_of_stock_product_refuses_its_in_stock_actions(shop: Shop) -> None:
    user = shop.customer(EMAIL)
    sku = uid("sku")
    told = shop.decide(
        user, "cart_abandoned", 0, EMAIL, cart_value=60.0, product_ids=(sku,), out_of_stock_product_ids=(sku,)
    )
    assert reasons(told) == {"cart_email": ReasonCode.OUT_OF_STOCK}
    assert detail(told, "cart_email") == f"out of stock: {sku}"
    # As recorded by inventory events (about products, no customer), until it is back.
    other = uid("sku")
    shop.engine.record_events([Event(uid("e"), "", EventType.OUT_OF_STOCK, at(0), product_ids=(other,))])
    recorded = shop.decide(user, "product_viewed", 1, EMAIL, ONSITE, max_actions=2, product_ids=(other,))
    assert reasons(recorded)["browse_email"] is ReasonCode.OUT_OF_STOCK
    assert chosen(recorded) == ["browse_onsite"]  # an action that ignores inventory goes on
    shop.engine.record_events([Event(uid("e"), "", EventType.BACK_IN_STOCK, at(2), product_ids=(other,))])
    assert chosen(shop.decide(shop.customer(EMAIL), "product_viewed", 3, EMAIL, product_ids=(other,))) == [
        "browse_email"
    ]


# -- CEL rules -----------------------------------------------------------------------------------------------


def test_a_false_rule_refuses_its_action_only(shop: Shop) -> None:
    user = shop.customer(EMAIL)
    decision = shop.decide(user, "cart_abandoned", 0, EMAIL, cart_value=0.0)
    assert chosen(decision) == [] and reasons(decision) == {"cart_email": ReasonCode.RULE_FALSE}
    assert detail(decision, "cart_email") == "rule is false: context.cart_value > 0.0"


def test_a_rule_that_fails_to_evaluate_refuses_its_action_and_the_decision_goes_on(shop: Shop) -> None:
    user = shop.customer(EMAIL)
    request_id = uid("r")
    decision = shop.decide(
        user,
        "product_viewed",
        0,
        EMAIL,
        ONSITE,
        request_id=request_id,
        max_actions=2,
        product_ids=("sku",),
        attributes={"tier": "gold"},  # no "segment": the rule's map lookup fails
    )
    assert reasons(decision)["browse_onsite"] is ReasonCode.RULE_ERROR
    assert detail(decision, "browse_onsite").startswith(
        'rule \'size(context.attributes) == 0 || context.attributes["segment"] == "new"\' failed:'
    )
    assert chosen(decision) == ["browse_email", "promo_onsite"]  # onsite goes to the next candidate
    assert shop.store.find_decision(request_id) is not None  # decided and logged, not failed
    ok = shop.decide(shop.customer(), "product_viewed", 1, ONSITE, attributes={"segment": "new"})
    assert chosen(ok) == ["browse_onsite"]


# -- contact policy: caps, quiet hours, cooldowns, engagement ------------------------------------------------


def test_a_frequency_cap_counts_sends_in_an_exact_rolling_window(shop: Shop) -> None:
    user = shop.customer(EMAIL)
    assert chosen(shop.decide(user, "scheduled", 14, EMAIL)) == ["promo_email"]  # 23:00 UTC
    # 02:00 the next (calendar) day is inside the same rolling day: refused.
    next_day = shop.decide(user, "scheduled", 17, EMAIL)
    assert reasons(next_day) == {"promo_email": ReasonCode.FREQUENCY_CAP}
    assert detail(next_day, "promo_email") == "promotional cap 1/1d reached: 1 send since 2026-11-02 23:00Z"
    assert reasons(shop.decide(user, "scheduled", 14 + 23.99, EMAIL))["promo_email"] is (
        ReasonCode.FREQUENCY_CAP
    )
    # The window is half-open: the send at 23:00 no longer counts at 23:00 the next day.
    assert chosen(shop.decide(user, "scheduled", 14 + 24, EMAIL)) == ["promo_email"]


def test_a_cap_counts_pending_sends_not_only_past_ones(shop: Shop) -> None:
    user = shop.customer(EMAIL, SMS)
    night = shop.decide(user, "scheduled", 13, SMS)  # 22:00 UTC: deferred to 08:00, pending until then
    assert sent(night, "promo_sms").send_at == at(23)
    evening = shop.decide(user, "scheduled", 14, EMAIL)
    assert reasons(evening) == {"promo_email": ReasonCode.FREQUENCY_CAP}
    assert detail(evening, "promo_email") == "promotional cap 1/1d reached: 1 send since 2026-11-03 08:00Z"
    # An order exits the promotion: the pending SMS is cancelled, and what was never sent counts for nothing.
    (cancelled,) = shop.event(user, EventType.ORDER_PLACED, 14.5, value=20.0).cancelled
    assert (cancelled.decision_id, cancelled.action_id) == (night.decision_id, "promo_sms")
    assert chosen(shop.decide(user, "scheduled", 15, EMAIL)) == ["promo_email"]


def test_a_cap_without_classes_or_channels_counts_all_marketing_everywhere(shop: Shop) -> None:
    user = shop.customer(EMAIL, SMS)
    assert chosen(shop.decide(user, "cart_abandoned", 0, EMAIL, cart_value=50.0)) == ["cart_email"]  # at +1h
    # After the cart journey (48 h), one promotion a day: by SMS, then by e-mail.
    assert chosen(shop.decide(user, "scheduled", 49, SMS)) == ["promo_sms"]
    assert chosen(shop.decide(user, "scheduled", 73, EMAIL)) == ["promo_email"]
    fourth = shop.decide(user, "scheduled", 97, EMAIL)
    assert reasons(fourth) == {"promo_email": ReasonCode.FREQUENCY_CAP}
    assert detail(fourth, "promo_email") == (
        "promotional/triggered cap 3/1w reached: 3 sends since 2026-11-02 10:00Z"
    )
    assert chosen(shop.decide(user, "scheduled", 169, EMAIL)) == ["promo_email"]  # the reminder left the week


def test_transactional_actions_are_never_capped(shop: Shop) -> None:
    user = shop.customer(EMAIL)
    assert chosen(shop.decide(user, "scheduled", 0, EMAIL)) == ["promo_email"]
    assert reasons(shop.decide(user, "scheduled", 1, EMAIL))["promo_email"] is ReasonCode.FREQUENCY_CAP
    for hours in (2, 3, 4, 5):
        assert chosen(shop.decide(user, "order_shipped", hours, EMAIL)) == ["shipping_email"]


def test_quiet_hours_defer_a_send_within_its_window_in_the_customers_time_zone(shop: Shop) -> None:
    user = shop.customer(SMS)
    # 04:30 UTC is 23:30 in New York: quiet until 08:00 there (13:00 UTC), within the 12 h send window.
    new_york = shop.decide(user, "scheduled", 19.5, SMS, time_zone="America/New_York")
    assert sent(new_york, "promo_sms").send_at == datetime(2026, 11, 3, 13, 0, tzinfo=UTC)
    # Without a time zone in the request, the catalog's (UTC): 04:30 is quiet until 08:00 UTC.
    utc = shop.decide(shop.customer(SMS), "scheduled", 19.5, SMS)
    assert sent(utc, "promo_sms").send_at == datetime(2026, 11, 3, 8, 0, tzinfo=UTC)
    # Transactional messages are outside the quiet-hours classes: sent at once.
    shipped = shop.decide(shop.customer(), "order_shipped", 19.5, SMS)
    assert sent(shipped, "shipping_sms").send_at == at(19.5)


def test_quiet_hours_refuse_a_send_that_cannot_wait(shop: Shop) -> None:
    user = shop.customer(SMS)
    refused = shop.decide(user, "flash_sale", 13, SMS)  # 22:00 UTC, a one-hour send window
    assert chosen(refused) == [] and reasons(refused) == {"flash_sms": ReasonCode.QUIET_HOURS}
    assert detail(refused, "flash_sms") == (
        "sms quiet hours 21:00-08:00 (UTC) until 2026-11-03 08:00Z; the send window is 1h"
    )
    assert chosen(shop.decide(user, "flash_sale", 23.5, SMS)) == ["flash_sms"]  # 08:30


def test_an_action_waits_out_its_cooldown_between_send_times(shop: Shop) -> None:
    user = shop.customer(EMAIL)
    first = shop.decide(user, "product_viewed", 0, EMAIL, product_ids=("sku",))
    assert sent(first, "browse_email").send_at == at(2)
    again = shop.decide(user, "product_viewed", 24, EMAIL, product_ids=("sku",))
    assert reasons(again) == {"browse_email": ReasonCode.COOLDOWN}
    assert detail(again, "browse_email") == (
        "browse_email was sent for 2026-11-02T11:00:00Z; cooldown 3 days"
    )
    assert reasons(shop.decide(user, "product_viewed", 71.9, EMAIL, product_ids=("sku",))) == {
        "browse_email": ReasonCode.COOLDOWN
    }
    assert chosen(shop.decide(user, "product_viewed", 72, EMAIL, product_ids=("sku",))) == ["browse_email"]


def test_promotions_stop_for_an_unengaged_customer_and_resume_after_an_open(shop: Shop) -> None:
    known = shop.customer(EMAIL, since=-24 * 40)  # known for 40 days, never opened
    stale = shop.decide(known, "scheduled", 0, EMAIL)
    assert reasons(stale) == {"promo_email": ReasonCode.UNENGAGED}
    assert detail(stale, "promo_email").startswith("no opens or clicks in the last 30 days")
    # Triggered flows go on.
    assert chosen(shop.decide(known, "order_shipped", 1, EMAIL)) == ["shipping_email"]
    shop.event(known, EventType.CLICKED, 2, channel=EMAIL)
    assert chosen(shop.decide(known, "scheduled", 3, EMAIL)) == ["promo_email"]
    # A customer known for less than the window is not judged yet.
    recent = shop.customer(EMAIL, since=-24 * 10)
    assert chosen(shop.decide(recent, "scheduled", 0, EMAIL)) == ["promo_email"]


# -- arbitration: class, one action per channel, max_actions -------------------------------------------------


def test_one_action_per_channel_and_at_most_max_actions(shop: Shop) -> None:
    user = shop.customer(EMAIL)
    three = shop.decide(user, "product_viewed", 0, EMAIL, ONSITE, max_actions=3, product_ids=("sku",))
    assert chosen(three) == ["browse_email", "browse_onsite"]
    assert reasons(three) == {"promo_onsite": ReasonCode.LOWER_PRIORITY}
    assert detail(three, "promo_onsite").startswith("onsite already taken by browse_onsite")
    one = shop.decide(shop.customer(EMAIL), "product_viewed", 0, EMAIL, ONSITE, product_ids=("sku",))
    assert chosen(one) == ["browse_email"]  # max_actions 0 means 1; the higher score wins
    assert reasons(one) == {"browse_onsite": ReasonCode.MAX_ACTIONS, "promo_onsite": ReasonCode.MAX_ACTIONS}
    assert detail(one, "browse_onsite") == "max_actions=1 already chosen"


def test_transactional_outranks_marketing_whatever_the_scores(shop: Shop) -> None:
    user = shop.customer(EMAIL)
    decision = shop.decide(user, "order_placed", 0, EMAIL, max_actions=3)
    assert chosen(decision) == ["receipt_email"]
    assert [a.action_class for a in decision.actions] == [ActionClass.TRANSACTIONAL]


# -- the pending queue: preemption and cancellation ----------------------------------------------------------


def test_a_higher_priority_decision_preempts_a_pending_lower_one_on_its_channel(shop: Shop) -> None:
    user = shop.customer(EMAIL)
    browse = shop.decide(user, "product_viewed", 0, EMAIL, ONSITE, max_actions=2, product_ids=("sku",))
    assert chosen(browse) == ["browse_email", "browse_onsite"]  # the e-mail is pending until +2h
    request_id = uid("r")
    cart = shop.decide(user, "cart_abandoned", 0.5, EMAIL, request_id=request_id, cart_value=60.0)
    assert chosen(cart) == ["cart_email"]
    (cancelled,) = cart.cancelled  # the on-site banner, on another channel, stays
    assert (cancelled.decision_id, cancelled.action_id) == (browse.decision_id, "browse_email")
    assert cancelled.reason == f"preempted by cart_email (triggered, cart) in decision {cart.decision_id}"
    (row,) = shop.rows(exposures, decision_id=browse.decision_id, action_id="browse_email")
    assert (row["cancelled_at"], row["cancelled_by"]) == (at(0.5), cart.decision_id)
    # A retry replays the stored cancellation; a new decision finds nothing left to preempt.
    replay = shop.decide(user, "cart_abandoned", 0.5, EMAIL, request_id=request_id, cart_value=60.0)
    assert replay.replayed and replay.cancelled == cart.cancelled
    assert shop.decide(user, "cart_abandoned", 0.6, EMAIL, cart_value=60.0).cancelled == ()


def test_marketing_never_preempts_a_pending_transactional_action(shop: Shop) -> None:
    user = shop.customer(EMAIL)
    receipt = shop.decide(user, "order_placed", 0, EMAIL)
    assert sent(receipt, "receipt_email").send_at == at(2)
    cart = shop.decide(user, "cart_abandoned", 0.5, EMAIL, cart_value=60.0)
    assert chosen(cart) == ["cart_email"] and cart.cancelled == ()


def test_an_exit_event_cancels_the_flows_pending_actions_once(shop: Shop) -> None:
    user = shop.customer(EMAIL)
    cart = shop.decide(user, "cart_abandoned", 0, EMAIL, cart_value=60.0)  # due at +1h
    order = Event(uid("e"), user, EventType.ORDER_PLACED, at(0.5), value=60.0)
    (result,) = shop.engine.record_events([order])
    (cancelled,) = result.cancelled
    assert (cancelled.decision_id, cancelled.action_id) == (cart.decision_id, "cart_email")
    assert cancelled.reason == "order_placed at 2026-11-02 09:30Z exits cart"
    (row,) = shop.rows(exposures, decision_id=cart.decision_id)
    assert (row["cancelled_at"], row["cancelled_by"]) == (at(0.5), order.event_id)
    (again,) = shop.engine.record_events([order])
    assert again.outcome is EventOutcome.DUPLICATE and again.cancelled == ()


def test_an_exit_event_after_the_send_time_cancels_nothing(shop: Shop) -> None:
    user = shop.customer(EMAIL)
    shop.decide(user, "cart_abandoned", 0, EMAIL, cart_value=60.0)  # due at +1h
    assert shop.event(user, EventType.ORDER_PLACED, 2, value=60.0).cancelled == ()


def test_an_unsubscribe_cancels_pending_marketing_and_a_complaint_everything_on_the_channel(
    shop: Shop,
) -> None:
    user = shop.customer(EMAIL)
    receipt = shop.decide(user, "order_placed", 0, EMAIL)  # transactional, due at +2h
    cart = shop.decide(user, "cart_abandoned", 0.1, EMAIL, cart_value=60.0)  # triggered, due at +1.1h
    unsubscribed = shop.event(user, EventType.UNSUBSCRIBED, 0.2, channel=EMAIL)
    assert [(c.decision_id, c.reason) for c in unsubscribed.cancelled] == [
        (cart.decision_id, "unsubscribed from email")
    ]
    complaint = shop.event(user, EventType.COMPLAINED, 0.3, channel=EMAIL)
    assert [(c.decision_id, c.reason) for c in complaint.cancelled] == [
        (receipt.decision_id, "complaint on email")
    ]


# -- experiments: holdouts -----------------------------------------------------------------------------------


def test_a_held_out_unit_gets_nothing_and_its_counterfactual_is_logged(holdout_shop: Shop) -> None:
    shop = holdout_shop
    catalog = shop.engine.catalog
    held = shop.customer(EMAIL, user=find_unit(catalog, {"holdout": "control"}))
    treated = shop.customer(EMAIL, user=find_unit(catalog, {"holdout": "treated"}))
    decision = shop.decide(held, "cart_abandoned", 0, EMAIL, cart_value=80.0, explain=False)
    assert decision.actions == ()
    (reason,) = decision.rejected  # HELD_OUT is said even without explain: it is why nothing is sent
    assert (reason.action_id, reason.reason) == ("cart_email", ReasonCode.HELD_OUT)
    assert "held out by holdout" in reason.detail
    (exposure,) = decision.exposures
    assert (exposure.experiment_id, exposure.arm_id, exposure.held_out) == ("holdout", "control", True)
    assert exposure.probability == pytest.approx(0.5)
    # The counterfactual is exactly what a treated unit in the same situation is sent.
    got = shop.decide(treated, "cart_abandoned", 0, EMAIL, cart_value=80.0)
    (action,) = got.actions
    assert (action.action_id, action.send_at, action.parameters, action.score) == (
        exposure.action.action_id,
        exposure.action.send_at,
        exposure.action.parameters,
        exposure.action.score,
    )
    assert [(e.arm_id, e.held_out) for e in got.exposures] == [("treated", False)]
    # Logged in the assignment log; nothing enters the held-out unit's contact history.
    (logged,) = shop.rows(assignments, user_id=held)
    assert (logged["arm_id"], logged["held_out"], logged["action_id"]) == ("control", True, "cart_email")
    assert logged["send_at"] == at(1) and logged["decision_id"] == decision.decision_id
    assert shop.count(exposures, user_id=held) == 0 and shop.count(exposures, user_id=treated) == 1


def test_transactional_actions_are_never_held_out(holdout_shop: Shop) -> None:
    user = holdout_shop.customer(EMAIL, user=find_unit(holdout_shop.engine.catalog, {"holdout": "control"}))
    decision = holdout_shop.decide(user, "order_shipped", 0, EMAIL)
    assert chosen(decision) == ["shipping_email"] and decision.exposures == ()


def test_consent_and_suppression_come_before_any_assignment(holdout_shop: Shop) -> None:
    shop = holdout_shop
    catalog = shop.engine.catalog
    for arm in ("control", "treated"):
        never_asked = shop.customer(user=find_unit(catalog, {"holdout": arm}))
        decision = shop.decide(never_asked, "cart_abandoned", 0, EMAIL, cart_value=80.0)
        assert reasons(decision) == {"cart_email": ReasonCode.NO_CONSENT}
        assert decision.exposures == ()
        unsubscribed = shop.customer(EMAIL, user=find_unit(catalog, {"holdout": arm}))
        shop.event(unsubscribed, EventType.UNSUBSCRIBED, 0, channel=EMAIL)
        decision = shop.decide(unsubscribed, "cart_abandoned", 1, EMAIL, cart_value=80.0)
        assert reasons(decision) == {"cart_email": ReasonCode.SUPPRESSED}
        assert decision.exposures == ()
        assert (
            shop.count(assignments, user_id=never_asked) == shop.count(assignments, user_id=unsubscribed) == 0
        )


# -- idempotency and validation ------------------------------------------------------------------------------


def test_a_retried_request_id_replays_the_stored_decision_and_writes_nothing(shop: Shop) -> None:
    user, request_id = shop.customer(EMAIL), uid("r")

    def ask(explain: bool = True) -> Decision:
        return shop.decide(
            user,
            "product_viewed",
            0,
            EMAIL,
            ONSITE,
            request_id=request_id,
            product_ids=("sku",),
            explain=explain,
        )

    first = ask()
    assert not first.replayed and chosen(first) == ["browse_email"]
    assert reasons(first) == {"browse_onsite": ReasonCode.MAX_ACTIONS, "promo_onsite": ReasonCode.MAX_ACTIONS}
    stored = shop.store.find_decision(request_id)  # durable before the answer
    assert stored is not None and stored.decision.decision_id == first.decision_id
    # The customer unsubscribes meanwhile: the retry still answers what was decided, with its reasons.
    shop.event(user, EventType.UNSUBSCRIBED, 0.1, channel=EMAIL)
    again = ask()
    assert again.replayed and again.decision_id == first.decision_id
    assert again.actions == first.actions and again.rejected == first.rejected
    quiet = ask(explain=False)
    assert quiet.decision_id == first.decision_id and quiet.actions == first.actions and quiet.rejected == ()
    assert shop.count(decisions, request_id=request_id) == 1
    assert shop.count(exposures, user_id=user) == 1


def test_a_request_id_reused_for_another_question_is_already_exists(shop: Shop) -> None:
    user, request_id = shop.customer(EMAIL), uid("r")
    first = shop.decide(user, "cart_abandoned", 0, EMAIL, request_id=request_id, cart_value=50.0)
    with pytest.raises(AlreadyExistsError, match=request_id) as info:
        shop.decide(user, "cart_abandoned", 0, EMAIL, request_id=request_id, cart_value=51.0)
    assert first.decision_id in str(info.value)
    assert shop.count(decisions, request_id=request_id) == 1


def test_without_occurred_at_the_decision_happens_at_the_clocks_time(shop: Shop) -> None:
    user = shop.customer(EMAIL)
    shop.clock.now = at(5)
    decision = shop.engine.decide(
        DecisionRequest(uid("r"), user, "cart_abandoned", None, RequestContext(cart_value=10.0))
    )
    assert decision.occurred_at == at(5) and sent(decision, "cart_email").send_at == at(6)


@pytest.mark.parametrize(
    ("request_fields", "fields"),
    [
        pytest.param({"request_id": ""}, ["request_id"], id="missing-request-id"),
        pytest.param({"user_id": "x" * 129}, ["user_id"], id="long-user-id"),
        pytest.param({"trigger": "teleported"}, ["trigger"], id="unknown-trigger"),
        pytest.param({"channels": (None,)}, ["channels[0]"], id="unknown-channel"),
        pytest.param({"channels": (Channel.ADS,)}, ["channels[0]"], id="channel-not-enabled"),
        pytest.param({"channels": (EMAIL, EMAIL)}, ["channels[1]"], id="duplicate-channel"),
        pytest.param({"max_actions": 11}, ["max_actions"], id="too-many-actions"),
        pytest.param({"occurred_at": datetime(1990, 1, 1, tzinfo=UTC)}, ["occurred_at"], id="ancient"),
        pytest.param(
            {"context": RequestContext(cart_value=float("nan"), time_zone="Mars/Olympus")},
            ["context.cart_value", "context.time_zone"],
            id="bad-context",
        ),
        pytest.param(
            {"request_id": "", "user_id": "", "trigger": "nope", "max_actions": -1},
            ["request_id", "user_id", "trigger", "max_actions"],
            id="every-bad-field-named",
        ),
    ],
)
def test_a_bad_request_is_invalid_argument_naming_each_field_and_nothing_is_logged(
    shop: Shop, request_fields: dict[str, Any], fields: list[str]
) -> None:
    request_id = uid("r")
    values: dict[str, Any] = {
        "request_id": request_id,
        "user_id": uid(),
        "trigger": "cart_abandoned",
        "occurred_at": T0,
        **request_fields,
    }
    with pytest.raises(InvalidArgumentError) as info:
        shop.engine.decide(DecisionRequest(**values))
    assert [v.field for v in info.value.violations] == fields
    assert shop.store.find_decision(request_id) is None


def test_each_bad_event_is_rejected_on_its_own(shop: Shop) -> None:
    user = uid()
    good = Event(uid("e"), user, EventType.ORDER_PLACED, at(0), value=10.0)
    no_channel = Event(uid("e"), user, EventType.CONSENT_CHANGED, at(0), consent_granted=True)
    valued_open = Event(uid("e"), user, EventType.OPENED, None, value=3.0)
    results = shop.engine.record_events([no_channel, good, valued_open])
    assert [r.outcome for r in results] == [
        EventOutcome.REJECTED,
        EventOutcome.ACCEPTED,
        EventOutcome.REJECTED,
    ]
    assert [v.field for v in results[0].violations] == ["channel"]
    assert {v.field for v in results[2].violations} == {"occurred_at", "value"}
    assert shop.store.load_snapshot(user, at(1)).state.orders_count == 1
    with pytest.raises(InvalidArgumentError) as info:
        shop.engine.record_events([good] * 1001)
    assert [v.field for v in info.value.violations] == ["events"]
