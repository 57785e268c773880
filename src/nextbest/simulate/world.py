"""The simulated store's customers, what they do, and how messages truly change what they buy.

Everything here is the ground truth the service never sees. A customer has an order history, a time
zone and a preferred local hour for reading messages, channel consents, a chance of buying an abandoned
cart anyway, a response to cart messages (persuaded, indifferent, or put off), a price sensitivity that
makes a bigger discount persuade more, and an annoyance that makes every marketing message a risk of
unsubscribing — rising with how many they got in the past week.

**The purchase model.** An abandoned cart is decided at a moment ``decide_at`` drawn when it is
abandoned (2 to 84 hours later). It is bought then iff its uniform draw ``u`` is below

    P(buy | messages) = clip(base + sum_k 0.6^k x effect(message_k), 0, 1)

over the cart's messages delivered before ``decide_at``, in delivery order, where
``effect = P(open at that local hour on that channel) x response`` and ``response = persuadability x
channel factor + price sensitivity x discount percent``. Cart-abandonment messages change the purchase
of their cart; every marketing message carries the unsubscribe risk. Because ``u`` and ``decide_at`` do
not depend on what was sent, each cart's outcome under any other set of messages is known: that is what
makes the true effect of a decision, of a policy or of an experiment arm computable exactly.

**Non-urgent messages and the send hour.** A review request, a cross-sell or a replenishment reminder
(``HOUR_RESPONSIVE_FLOWS``) brings an order of the customer's typical basket with probability

    P(order | message) = response(flow) x (HOUR_FLOOR + (1 - HOUR_FLOOR) x closeness)

where ``closeness = exp(-d^2 / (2 x 2.5^2))`` and ``d`` is the distance in hours between the local hour
it is delivered and the customer's own reading hour (the same curve as their opens). At the reading hour
the full response, 7 h or more away three quarters of it (``HOUR_FLOOR``): a message read at the
customer's hour converts a third more than one buried at the far side of their day, 23 % more than one
sent at a uniformly random hour — the order of the gains reported for send-time optimisation. The
responses (0.4 % for a review request, 3 % for a cross-sell, 6 % for a replenishment reminder, at the
reading hour) are in line with those flows' order rates per recipient. Its draw ``u`` comes from a
stream of its own, so the exact expected effect of any send hour is known (``Touch``).

**Campaign e-mails** (the win-back, VIP early-access and seasonal promotion flows) answer the hour they
arrive the same way: a campaign e-mail is read, or buried, like any other. Their responses at the reading
hour are 2 % (win-back), 5 % (VIP early access) and 2 % (promotion), and the order they bring carries the
e-mail's discount (``Touch.value``: the typical basket less ``discount_percent``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import numpy as np

from nextbest.domain import Channel

__all__ = [
    "HOUR_RESPONSIVE_FLOWS",
    "RESPONSIVE_FLOWS",
    "START",
    "Activity",
    "Cart",
    "Customer",
    "Message",
    "Touch",
    "population",
]

START = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday; the cart incentive A/B test runs from November 1

ZONES = ("America/Los_Angeles", "America/New_York", "Europe/London", "Europe/Berlin")
ZONE_WEIGHTS = (0.2, 0.35, 0.2, 0.25)
PEAK_HOURS = (7, 8, 12, 13, 19, 20, 21)  # local
RESPONSIVE_FLOWS = frozenset({"cart_abandonment"})
CHANNEL_RESPONSE = {Channel.EMAIL: 1.0, Channel.PUSH: 0.8, Channel.SMS: 0.9}
CHANNEL_OPENS = {Channel.EMAIL: 1.0, Channel.PUSH: 0.8, Channel.SMS: 1.4}
LATER_MESSAGE_WEIGHT = 0.6
# P(an order of the typical basket | a message of the flow delivered at the customer's reading hour):
# the non-urgent lifecycle flows, then the campaign flows (win-back, VIP early access, promotion).
HOUR_RESPONSIVE_FLOWS = {
    "post_purchase": 0.004,
    "cross_sell": 0.03,
    "replenishment": 0.06,
    "winback": 0.02,
    "vip": 0.05,
    "promo": 0.02,
}
HOUR_FLOOR = 0.75  # the share of that response left 7 h or more from the reading hour
LAPSED_ACTIVITY = 0.2


@cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@dataclass(frozen=True, slots=True)
class Message:
    """A message delivered (or, held out, that would have been delivered) for a cart."""

    action_id: str
    flow: str
    channel: Channel
    send_at: datetime
    parameters: Mapping[str, str] = field(default_factory=dict)
    marketing: bool = True

    @property
    def discount(self) -> float:
        try:
            return float(self.parameters.get("discount_percent", 0.0))
        except ValueError:
            return 0.0


@dataclass(frozen=True, slots=True)
class Customer:
    index: int
    user_id: str
    first_seen_at: datetime
    past_orders: tuple[datetime, ...]
    cart_value: float  # the customer's typical basket
    time_zone: str
    peak_hour: int  # local hour they read messages most
    carts_per_day: float
    browses_per_day: float
    orders_per_day: float  # orders without an abandoned cart (replenishment, habit)
    lapse_at: datetime | None  # from then on, activity drops to a fifth
    base_buy: float  # P(buy an abandoned cart without any message)
    persuadability: float  # response to an opened cart message; negative: put off
    price_sensitivity: float  # extra response per discount percentage point
    annoyance: float  # P(unsubscribe) per marketing message, times (1 + messages in the past week)
    push: bool
    sms: bool

    def local_hour(self, at: datetime) -> int:
        return at.astimezone(_zone(self.time_zone)).hour

    def closeness(self, at: datetime) -> float:
        """How near ``at`` is to the customer's reading hour: 1 at it, ~0 from 7 h away."""
        distance = abs(self.local_hour(at) - self.peak_hour)
        distance = min(distance, 24 - distance)
        return math.exp(-(distance**2) / (2 * 2.5**2))

    def open_probability(self, at: datetime, channel: Channel) -> float:
        p = 0.5 * self.closeness(at) + 0.06
        return min(0.95, p * CHANNEL_OPENS.get(channel, 1.0))

    def order_probability(self, message: Message) -> float:
        """P(an order) brought by a non-urgent message delivered at ``message.send_at`` (0 for others)."""
        response = HOUR_RESPONSIVE_FLOWS.get(message.flow, 0.0)
        if not response or not message.marketing:
            return 0.0
        return response * (HOUR_FLOOR + (1 - HOUR_FLOOR) * self.closeness(message.send_at))

    def next_reading(self, at: datetime, jitter_hours: float) -> datetime:
        """When an e-mail delivered at ``at`` gets read: at the customer's next peak hour (their inbox
        habit), give or take ``jitter_hours``."""
        local = at.astimezone(_zone(self.time_zone))
        peak = local.replace(hour=self.peak_hour, minute=0, second=0, microsecond=0)
        if peak <= local:
            peak += timedelta(days=1)
        read = peak.astimezone(UTC) + timedelta(hours=jitter_hours)
        return max(read, at + timedelta(minutes=2))

    def response(self, message: Message) -> float:
        if message.flow not in RESPONSIVE_FLOWS:
            return 0.0
        factor = CHANNEL_RESPONSE.get(message.channel, 0.0)
        return self.persuadability * factor + self.price_sensitivity * message.discount

    def effect(self, message: Message) -> float:
        """The message's true effect on P(buy) of its cart, as the first message."""
        return self.open_probability(message.send_at, message.channel) * self.response(message)

    def unsubscribe_probability(self, recent: int) -> float:
        return min(1.0, self.annoyance * (1 + recent))

    def activity(self, at: datetime) -> float:
        return LAPSED_ACTIVITY if self.lapse_at is not None and at >= self.lapse_at else 1.0


@dataclass(slots=True)
class Cart:
    """An abandoned cart, with what was (and, held out, would have been) delivered for it."""

    id: str
    customer: Customer
    at: datetime
    value: float
    products: tuple[str, ...]
    u: float
    decide_at: datetime
    delivered: list[Message] = field(default_factory=list)
    # experiment id -> the messages it held out (what the unit would have received)
    held: dict[str, list[Message]] = field(default_factory=dict)
    # for each delivered message, the experiments whose scope covered it
    scopes: list[frozenset[str]] = field(default_factory=list)
    bought: bool | None = None  # known at decide_at

    def probability(self, messages: Iterable[Message]) -> float:
        """P(buy) had exactly ``messages`` been delivered (only those before ``decide_at`` count)."""
        effects = [
            self.customer.effect(m)
            for m in sorted(messages, key=lambda m: m.send_at)
            if m.send_at < self.decide_at
        ]
        total = sum(e * LATER_MESSAGE_WEIGHT**k for k, e in enumerate(effects))
        return min(1.0, max(0.0, self.customer.base_buy + total))

    def order_value(self, messages: Iterable[Message]) -> float:
        """The order's value had ``messages`` been delivered: the largest delivered discount applies."""
        discount = max(
            (m.discount for m in messages if m.send_at < self.decide_at and m.flow in RESPONSIVE_FLOWS),
            default=0.0,
        )
        return round(self.value * (1 - discount / 100.0), 2)

    def expected_revenue(self, messages: list[Message]) -> float:
        return self.probability(messages) * self.order_value(messages)


@dataclass(frozen=True, slots=True)
class Touch:
    """A non-urgent or campaign message (``HOUR_RESPONSIVE_FLOWS``) delivered, or held out by
    ``held_by``. ``due`` is when it was due (its decision plus its delay): the hour a fixed-hour arm sends
    it. ``scope`` names the experiments covering it, each with the unit's arm."""

    customer: Customer
    message: Message
    due: datetime
    scope: frozenset[tuple[str, str]] = frozenset()
    held_by: str | None = None

    @property
    def value(self) -> float:
        """The order it brings: the customer's typical basket, less the message's discount if any."""
        return round(self.customer.cart_value * (1 - self.message.discount / 100.0), 2)

    def probability(self, at: datetime | None = None) -> float:
        """P(its order) delivered at ``at`` (default: when it was, or would have been, delivered)."""
        message = self.message if at is None else replace(self.message, send_at=at)
        return self.customer.order_probability(message)


@dataclass(frozen=True, slots=True)
class Activity:
    """Something a customer does on their own: browse, abandon a cart, or order."""

    at: datetime
    kind: str  # "browse" | "cart" | "order"
    value: float = 0.0
    products: tuple[str, ...] = ()
    u: float = 0.0
    decide_after: timedelta = timedelta(0)


def population(n: int, seed: int, start: datetime = START) -> list[Customer]:
    """``n`` customers, the same for the same seed. Who a message persuades is visible in the data, as
    in real stores: new customers and valuable carts respond; loyal customers buy anyway and a little
    less when pushed; one in ten is put off whatever they look like."""
    rng = np.random.default_rng([seed, 0])
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
        base = 0.10 + (0.35 if loyal else 0.04 * min(len(past), 3))
        persuadability = 0.30 * (cart_value > 60) + 0.10 * (len(past) <= 1) - (0.15 if loyal else 0.0)
        if rng.random() < 0.1:
            persuadability = -0.15
        lapse = start + timedelta(days=float(rng.uniform(0, 60))) if rng.random() < 0.3 else None
        customers.append(
            Customer(
                index=i,
                user_id=f"sim-{seed}-{i:06d}",
                first_seen_at=start - timedelta(days=tenure),
                past_orders=tuple(past),
                cart_value=cart_value,
                time_zone=str(rng.choice(ZONES, p=ZONE_WEIGHTS)),
                peak_hour=int(rng.choice(PEAK_HOURS)),
                carts_per_day=float(rng.gamma(1.2, 0.05)),
                browses_per_day=float(rng.gamma(1.0, 0.08)),
                orders_per_day=orders_rate / 365.0,
                lapse_at=lapse,
                base_buy=min(base, 0.9),
                persuadability=float(persuadability),
                price_sensitivity=float(rng.uniform(0.0, 0.006)) * (0.3 if loyal else 1.0),
                annoyance=float(rng.uniform(0.0, 0.006)),
                push=bool(rng.random() < 0.4),
                sms=bool(rng.random() < 0.2),
            )
        )
    return customers


def _moment(midnight: datetime, rng: np.random.Generator) -> datetime:
    """A waking moment of the customer's day (8:00 to 23:00 local), in UTC."""
    return (midnight + timedelta(hours=float(rng.uniform(8, 23)))).astimezone(UTC)


def activities(customer: Customer, days: int, seed: int, start: datetime = START) -> list[Activity]:
    """What ``customer`` does on their own over ``days`` days, in time order: the same whatever the
    service decides (its own random stream), so every policy faces the same carts."""
    rng = np.random.default_rng([seed, 1, customer.index])
    zone = _zone(customer.time_zone)
    out: list[Activity] = []
    for day in range(days):
        midnight = (start + timedelta(days=day)).astimezone(zone).replace(hour=0, minute=0, second=0)
        level = customer.activity(start + timedelta(days=day))
        draws = rng.random(3)
        if draws[0] < customer.browses_per_day * level:
            out.append(
                Activity(_moment(midnight, rng), "browse", products=(f"p{int(rng.integers(0, 200))}",))
            )
        if draws[1] < customer.carts_per_day * level:
            out.append(
                Activity(
                    _moment(midnight, rng),
                    "cart",
                    value=round(customer.cart_value * float(rng.uniform(0.8, 1.2)), 2),
                    products=(f"p{int(rng.integers(0, 200))}",),
                    u=float(rng.random()),
                    decide_after=timedelta(hours=float(rng.uniform(2, 84))),
                )
            )
        if draws[2] < customer.orders_per_day * level:
            value = round(customer.cart_value * float(rng.uniform(0.7, 1.3)), 2)
            out.append(Activity(_moment(midnight, rng), "order", value=value))
    out.sort(key=lambda a: a.at)
    return out
