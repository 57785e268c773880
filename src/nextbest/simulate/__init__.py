"""A synthetic store with known ground truth, deterministic for a seed.

Customers have an order history, channel consent, a preferred hour of the day to read messages, a
chance of buying an abandoned cart anyway, and a true, heterogeneous response to the cart messages:
some are persuaded, some would buy anyway (no effect), and some are put off (a negative effect, larger
when they were messaged a lot lately). The simulator plays days of behaviour through the decision engine
as a backend would — events to ``record_events``, triggers to ``decide``, messages delivered at their
``send_at`` — and keeps each decision's true effect, so a lift report or a model can be checked against
the truth.

Each abandoned cart draws one uniform number ``u``: it is bought if ``u < base + effect`` when a message
was opened and ``u < base`` otherwise, so the counterfactual outcome of every unit is known.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from nextbest.domain import Channel, DecisionRequest, Event, EventType, RequestContext

__all__ = ["Customer", "SimulationResult", "Simulator", "population"]

START = datetime(2026, 9, 7, tzinfo=UTC)  # a Monday


@dataclass(frozen=True)
class Customer:
    user_id: str
    first_seen_at: datetime
    past_orders: tuple[datetime, ...]
    order_value: float
    peak_hour: int  # UTC hour of the day they read messages most
    carts_per_day: float
    base_buy: float  # P(buy the abandoned cart without a message)
    persuadability: float  # added to the buying chance by an opened message (negative: put off)
    annoyance: float  # P(unsubscribe) per message received
    push: bool
    sms: bool

    def open_probability(self, at: datetime) -> float:
        distance = abs(at.hour - self.peak_hour)
        distance = min(distance, 24 - distance)
        return 0.55 * math.exp(-(distance**2) / (2 * 2.5**2)) + 0.05

    def effect(self, at: datetime, recent_messages: int) -> float:
        """The true effect on P(buy) of a cart message sent at ``at``: opened x persuaded, and a
        saturation penalty for customers messaged often in the past week."""
        return self.open_probability(at) * self.persuadability - 0.02 * max(0, recent_messages - 2)


def population(n: int, seed: int, start: datetime = START) -> list[Customer]:
    rng = np.random.default_rng(seed)
    customers = []
    for i in range(n):
        tenure = 2.0 + float(rng.exponential(300))
        orders_rate = float(rng.gamma(1.5, 2.0))  # orders per year
        past = sorted(
            start - timedelta(days=float(d))
            for d in rng.uniform(1, tenure, rng.poisson(orders_rate * tenure / 365))
        )
        loyal = len(past) >= 4
        cart_value = float(rng.lognormal(4.1, 0.5))
        # Who is persuadable is visible in the data: new-ish customers with valuable carts; loyal
        # customers buy anyway; a minority is put off.
        base = 0.12 + (0.35 if loyal else 0.04 * min(len(past), 3))
        persuadability = 0.18 * (cart_value > 60) + 0.06 * (len(past) <= 1) - (0.12 if loyal else 0.0)
        if rng.random() < 0.1:
            persuadability = -0.1
        customers.append(
            Customer(
                user_id=f"sim-{seed}-{i:06d}",
                first_seen_at=start - timedelta(days=tenure),
                past_orders=tuple(past),
                order_value=cart_value,
                peak_hour=int(rng.choice([7, 8, 12, 13, 19, 20, 21])),
                carts_per_day=float(rng.gamma(1.2, 0.08)),
                base_buy=min(base, 0.9),
                persuadability=float(persuadability),
                annoyance=float(rng.uniform(0.0, 0.01)),
                push=bool(rng.random() < 0.4),
                sms=bool(rng.random() < 0.2),
            )
        )
    return customers


@dataclass
class SimulationResult:
    decisions: int = 0
    carts: int = 0
    messages: int = 0
    orders: int = 0
    unsubscribes: int = 0
    # Per abandoned cart in an experiment-covered flow: the true effect of what was decided for it.
    true_effects: list[dict[str, Any]] = field(default_factory=list)


class Simulator:
    """Drives ``decide`` and ``record_events`` (the engine's, or a gRPC client's) through ``days`` days."""

    def __init__(
        self,
        decide: Callable[[DecisionRequest], Any],
        record: Callable[[list[Event]], Any],
        customers: list[Customer],
        seed: int,
        start: datetime = START,
    ) -> None:
        self.decide = decide
        self.record = record
        self.customers = customers
        self.rng = np.random.default_rng(seed + 1)
        self.start = start
        self._events = 0
        self._requests = 0
        self._sent: dict[str, list[datetime]] = {}
        self._unsubscribed: set[str] = set()

    def _event(self, c: Customer, kind: EventType, at: datetime, **extra: Any) -> Event:
        self._events += 1
        return Event(f"e{self._events}-{c.user_id}", c.user_id, kind, at, **extra)

    def onboard(self) -> None:
        """Each customer's history before the simulation: subscription, consents, past orders."""
        batch: list[Event] = []
        for c in self.customers:
            batch.append(self._event(c, EventType.SUBSCRIBED, c.first_seen_at, channel=Channel.EMAIL))
            for channel, granted in ((Channel.PUSH, c.push), (Channel.SMS, c.sms)):
                batch.append(
                    self._event(
                        c,
                        EventType.CONSENT_CHANGED,
                        c.first_seen_at,
                        channel=channel,
                        consent_granted=granted,
                    )
                )
            for at in c.past_orders:
                batch.append(self._event(c, EventType.ORDER_PLACED, at, value=c.order_value))
            if len(batch) >= 400:
                self.record(batch)
                batch = []
        if batch:
            self.record(batch)

    def run(self, days: int) -> SimulationResult:
        result = SimulationResult()
        for day in range(days):
            base = self.start + timedelta(days=day)
            for c in self.customers:
                if c.user_id in self._unsubscribed or self.rng.random() >= c.carts_per_day:
                    continue
                at = base + timedelta(hours=float(self.rng.uniform(6, 23)))
                self._cart(c, at, result)
        return result

    def _cart(self, c: Customer, at: datetime, result: SimulationResult) -> None:
        cart_value = round(c.order_value * float(self.rng.uniform(0.8, 1.2)), 2)
        products = (f"p{int(self.rng.integers(0, 200))}",)
        self.record(
            [
                self._event(c, EventType.PRODUCT_VIEWED, at - timedelta(minutes=12), product_ids=products),
                self._event(c, EventType.ADDED_TO_CART, at - timedelta(minutes=8), product_ids=products),
                self._event(c, EventType.CART_ABANDONED, at, product_ids=products),
            ]
        )
        result.carts += 1
        u = float(self.rng.random())
        decision = self._decide(c, "cart_abandoned", at, cart_value, products)
        result.decisions += 1
        messages = [a for a in decision.actions if a.channel is not Channel.ONSITE]
        recent = sum(1 for t in self._sent.get(c.user_id, ()) if at - timedelta(days=7) < t <= at)
        effect = 0.0
        events: list[Event] = []
        for action in messages:
            send_at = action.send_at
            self._sent.setdefault(c.user_id, []).append(send_at)
            result.messages += 1
            effect = max(effect, c.effect(send_at, recent))
            if self.rng.random() < c.open_probability(send_at):
                events.append(
                    self._event(c, EventType.OPENED, send_at + timedelta(minutes=7), channel=action.channel)
                )
                if self.rng.random() < 0.3:
                    events.append(
                        self._event(
                            c, EventType.CLICKED, send_at + timedelta(minutes=9), channel=action.channel
                        )
                    )
            if self.rng.random() < c.annoyance * (1 + recent):
                events.append(
                    self._event(
                        c, EventType.UNSUBSCRIBED, send_at + timedelta(minutes=20), channel=action.channel
                    )
                )
                self._unsubscribed.add(c.user_id)
                result.unsubscribes += 1
        held = [a for a in decision.exposures if a.held_out]
        counterfactual = 0.0
        for exposure in held:  # what the message would have done
            counterfactual = max(counterfactual, c.effect(exposure.action.send_at, recent))
        bought = u < c.base_buy + effect
        result.true_effects.append(
            {
                "user_id": c.user_id,
                "at": at.isoformat(),
                "treated": bool(messages),
                "held_out": bool(held),
                "effect": effect if messages else counterfactual,
                "base": c.base_buy,
                "bought": bought,
            }
        )
        if bought:
            first = min((a.send_at for a in messages), default=at)
            order_at = first + timedelta(hours=float(self.rng.uniform(0.5, 48)))
            events.append(self._event(c, EventType.ORDER_PLACED, order_at, value=cart_value))
            result.orders += 1
        if events:
            self.record(events)

    def _decide(
        self, c: Customer, trigger: str, at: datetime, cart_value: float, products: tuple[str, ...]
    ) -> Any:
        self._requests += 1
        channels = [Channel.EMAIL, Channel.ONSITE]
        if c.push:
            channels.append(Channel.PUSH)
        if c.sms:
            channels.append(Channel.SMS)
        return self.decide(
            DecisionRequest(
                request_id=f"r{self._requests}-{c.user_id}",
                user_id=c.user_id,
                trigger=trigger,
                occurred_at=at,
                context=RequestContext(cart_value=cart_value, product_ids=products),
                channels=tuple(channels),
                max_actions=2,
            )
        )
