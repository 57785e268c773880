"""A synthetic store with known ground truth, deterministic for a seed.

The simulator plays a population of customers (``world``) through nextbest the way a store's backend
would: each customer's own behaviour (browsing, abandoning carts, ordering) becomes events
(``RecordEvents``) and triggers (``NextAction``); the journey's later steps are triggered when due
(``scheduled``, a day and two days after an abandonment); each order is delivered two days after it is
placed (``order_delivered``), and the store's replenishment job asks about a customer four weeks after
their last order (``scheduled``, no cart); with ``campaigns``, the store's campaign job asks about every
customer at those moments (``scheduled``, no cart: one batch send at one hour for everyone, as
a store sends its win-back, VIP and promotional e-mails); chosen messages are delivered at their
``send_at`` unless a later answer cancelled them; opens, clicks, unsubscribes and orders go back as events
when they happen. Time only moves forward: nothing is recorded before its moment.

It keeps, for every abandoned cart and every non-urgent message (``Touch``: the review request,
cross-sell and replenishment flows, and the win-back, VIP and promotion e-mails, whose orders depend on
the hour they arrive), what was delivered,
when it was due and what an experiment held out, so the true
effect of anything — a decision, an experiment arm (``nextbest.simulate.truth``), a targeting policy — is
known exactly. Customers are independent, so they can be split across threads (``shards``) without
changing any outcome.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from nextbest.domain import Channel, EventType
from nextbest.simulate.backends import Backend, Decided, SimEvent, SimRequest
from nextbest.simulate.world import (
    HOUR_RESPONSIVE_FLOWS,
    RESPONSIVE_FLOWS,
    START,
    Activity,
    Cart,
    Customer,
    Message,
    Touch,
    activities,
)

__all__ = ["SimulationResult", "Simulator"]

STEPS = (timedelta(hours=24), timedelta(hours=48))  # the cart journey's scheduled steps
DELIVERY = timedelta(days=2)  # an order arrives two days after it is placed
REPLENISH = timedelta(days=28)  # the replenishment job asks four weeks after the last order
FLUSH_EVERY = 200
_WEEK = timedelta(days=7)


@dataclass
class SimulationResult:
    customers: list[Customer]
    start: datetime
    end: datetime
    decisions: int = 0
    events: int = 0
    messages: int = 0  # delivered (onsite placements are shown, not delivered)
    orders: int = 0
    unsubscribes: int = 0
    carts: list[Cart] = field(default_factory=list)
    # experiment id -> user id -> (first exposure, arm)
    units: dict[str, dict[str, tuple[datetime, str]]] = field(default_factory=dict)
    # the expected number of unsubscribes the delivered marketing messages caused (their probabilities)
    expected_unsubscribes: float = 0.0
    delivered_by_action: dict[str, int] = field(default_factory=dict)
    # the expected number of opens of each action's delivered messages (their true open probabilities at
    # the hour they were delivered): what a send time earns in engagement
    opens_by_action: dict[str, float] = field(default_factory=dict)
    # every non-urgent message delivered or held out, with when it was due: what its send hour earns
    touches: list[Touch] = field(default_factory=list)

    def merge(self, other: SimulationResult) -> None:
        for name in ("decisions", "events", "messages", "orders", "unsubscribes", "expected_unsubscribes"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.carts.extend(other.carts)
        self.touches.extend(other.touches)
        for experiment, units in other.units.items():
            self.units.setdefault(experiment, {}).update(units)
        for action, n in other.delivered_by_action.items():
            self.delivered_by_action[action] = self.delivered_by_action.get(action, 0) + n
        for action, opens in other.opens_by_action.items():
            self.opens_by_action[action] = self.opens_by_action.get(action, 0.0) + opens


@dataclass(slots=True)
class _Pending:
    """A message chosen for delivery at ``message.send_at``."""

    customer: Customer
    message: Message
    decision_id: str
    cart: Cart | None
    scope: frozenset[str]
    cancelled: bool = False
    # a non-urgent message: when it was due and the (experiment, arm) pairs covering it
    due: datetime | None = None
    arms: frozenset[tuple[str, str]] = frozenset()


class _Shard:
    """One thread's customers, played in time order."""

    def __init__(self, sim: Simulator, customers: Sequence[Customer]) -> None:
        self.sim = sim
        self.backend = sim.backend
        self.customers = customers
        self.result = SimulationResult(list(customers), sim.start, sim.end)
        self.queue: list[tuple[datetime, int, str, Any]] = []
        self.seq = itertools.count()
        self.buffer: list[SimEvent] = []
        self.buffered: set[str] = set()
        self.pending: dict[tuple[str, str], _Pending] = {}
        self.recent: dict[str, deque[datetime]] = {}
        self.unsubscribed: dict[str, set[Channel]] = {}
        self.counters: dict[str, itertools.count[int]] = {}
        self.rngs: dict[str, np.random.Generator] = {}
        self.order_rngs: dict[str, np.random.Generator] = {}
        self.last_order: dict[str, datetime] = {}
        self.now = sim.start  # the simulated time this shard has reached (read by progress reports)

    # --- plumbing ------------------------------------------------------------------------------------

    def push(self, at: datetime, kind: str, item: Any) -> None:
        heapq.heappush(self.queue, (at, next(self.seq), kind, item))

    def next_id(self, c: Customer) -> int:
        counter = self.counters.get(c.user_id)
        if counter is None:
            counter = self.counters[c.user_id] = itertools.count(1)
        return next(counter)

    def event(self, c: Customer, kind: EventType, at: datetime, **extra: Any) -> None:
        self.buffer.append(SimEvent(f"{c.user_id}-e{self.next_id(c)}", c.user_id, kind, at, **extra))
        self.buffered.add(c.user_id)
        self.result.events += 1
        if len(self.buffer) >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        batch, self.buffer = self.buffer, []
        self.buffered.clear()
        self.cancel(self.backend.record(batch))

    def cancel(self, keys: Sequence[tuple[str, str]]) -> None:
        for key in keys:
            pending = self.pending.pop(key, None)
            if pending is not None:
                pending.cancelled = True

    def decide(
        self, c: Customer, trigger: str, at: datetime, cart: Cart | None = None, **context: Any
    ) -> Decided:
        if c.user_id in self.buffered:  # the server must know everything up to now
            self.flush()
        channels = [Channel.EMAIL, Channel.ONSITE]
        if c.push:
            channels.append(Channel.PUSH)
        if c.sms:
            channels.append(Channel.SMS)
        request = SimRequest(
            f"{c.user_id}-r{self.next_id(c)}",
            c.user_id,
            trigger,
            at,
            tuple(channels),
            time_zone=c.time_zone,
            max_actions=self.sim.max_actions,
            **context,
        )
        if self.sim.before_decide is not None:
            self.sim.before_decide(c, request, cart)
        decided = self.backend.decide(request)
        self.result.decisions += 1
        self.cancel(decided.cancelled)
        for experiment, arm, _ in (*decided.scoped, *decided.held):  # the unit's first exposure
            self.result.units.setdefault(experiment, {}).setdefault(c.user_id, (at, arm))
        return decided

    def deliver_later(self, c: Customer, decided: Decided, cart: Cart | None, at: datetime) -> None:
        scopes: dict[str, set[tuple[str, str]]] = {}
        for experiment, arm, action_id in decided.scoped:
            scopes.setdefault(action_id, set()).add((experiment, arm))
        for message in decided.actions:
            if message.channel is Channel.ONSITE:
                continue  # shown on the site during the visit; not a delivery
            arms = frozenset(scopes.get(message.action_id, ()))
            pending = _Pending(
                c,
                message,
                decided.decision_id,
                cart if message.flow in RESPONSIVE_FLOWS else None,
                frozenset(e for e, _ in arms),
                due=decided.due.get(message.action_id, at),
                arms=arms,
            )
            self.pending[(decided.decision_id, message.action_id)] = pending
            self.push(max(message.send_at, at), "deliver", pending)
        for experiment, arm, message in decided.held:
            if cart is not None:
                cart.held.setdefault(experiment, []).append(message)
            if message.flow in HOUR_RESPONSIVE_FLOWS and message.channel is not Channel.ONSITE:
                due = decided.due.get(message.action_id, at)
                self.result.touches.append(Touch(c, message, due, frozenset({(experiment, arm)}), experiment))

    def rng(self, c: Customer) -> np.random.Generator:
        rng = self.rngs.get(c.user_id)
        if rng is None:
            rng = self.rngs[c.user_id] = np.random.default_rng([self.sim.seed, 2, c.index])
        return rng

    # --- the day ---------------------------------------------------------------------------------------

    def run(self) -> SimulationResult:
        for c in self.customers:
            self.onboard(c)
            for activity in activities(c, self.sim.days, self.sim.seed, self.sim.start):
                self.push(activity.at, activity.kind, (c, activity))
            for offset in self.sim.campaigns:
                self.push(self.sim.start + offset, "campaign", c)
        self.flush()
        while self.queue:
            at, _, kind, item = heapq.heappop(self.queue)
            if at >= self.sim.end:
                break
            self.now = at
            getattr(self, f"on_{kind}")(at, item)
        self.flush()
        return self.result

    def onboard(self, c: Customer) -> None:
        """The customer's history before the simulation: subscription, consents, past orders (the last
        one's replenishment reminder may fall in the simulation)."""
        self.event(c, EventType.SUBSCRIBED, c.first_seen_at, channel=Channel.EMAIL)
        for channel, granted in ((Channel.PUSH, c.push), (Channel.SMS, c.sms)):
            self.event(
                c, EventType.CONSENT_CHANGED, c.first_seen_at, channel=channel, consent_granted=granted
            )
        for n, at in enumerate(c.past_orders):
            value = round(c.cart_value, 2)
            self.event(c, EventType.ORDER_PLACED, at, value=value, order_id=f"{c.user_id}-past{n}")
        if c.past_orders:
            self.last_order[c.user_id] = last = c.past_orders[-1]
            if last + REPLENISH >= self.sim.start:
                self.push(last + REPLENISH, "replenish", (c, last))

    def on_browse(self, at: datetime, item: tuple[Customer, Activity]) -> None:
        c, activity = item
        self.event(c, EventType.PRODUCT_VIEWED, at, product_ids=activity.products)
        decided = self.decide(c, "product_viewed", at, product_ids=activity.products)
        self.deliver_later(c, decided, None, at)

    def on_cart(self, at: datetime, item: tuple[Customer, Activity]) -> None:
        c, activity = item
        products = activity.products
        self.event(c, EventType.PRODUCT_VIEWED, at - timedelta(minutes=12), product_ids=products)
        self.event(c, EventType.ADDED_TO_CART, at - timedelta(minutes=8), product_ids=products)
        self.event(c, EventType.CART_ABANDONED, at, product_ids=products)
        cart = Cart(
            f"{c.user_id}-c{self.next_id(c)}",
            c,
            at,
            activity.value,
            products,
            activity.u,
            at + activity.decide_after,
        )
        self.result.carts.append(cart)
        decided = self.decide(c, "cart_abandoned", at, cart, cart_value=cart.value, product_ids=products)
        self.deliver_later(c, decided, cart, at)
        for step in STEPS:
            self.push(at + step, "step", cart)
        self.push(cart.decide_at, "resolve", cart)

    def on_step(self, at: datetime, cart: Cart) -> None:
        if cart.bought:  # the store knows the cart was bought; its journey is over
            return
        c = cart.customer
        decided = self.decide(c, "scheduled", at, cart, cart_value=cart.value, product_ids=cart.products)
        self.deliver_later(c, decided, cart, at)

    def on_resolve(self, at: datetime, cart: Cart) -> None:
        cart.bought = cart.u < cart.probability(cart.delivered)
        if cart.bought:
            self.order(cart.customer, at, cart.order_value(cart.delivered), cart.id)

    def on_order(self, at: datetime, item: tuple[Customer, Activity]) -> None:
        c, activity = item
        self.order(c, at, activity.value, f"{c.user_id}-o{self.next_id(c)}")

    def order(self, c: Customer, at: datetime, value: float, tag: str) -> None:
        self.result.orders += 1
        self.event(c, EventType.ORDER_PLACED, at, value=value, order_id=tag)
        decided = self.decide(c, "order_placed", at)
        self.deliver_later(c, decided, None, at)
        self.last_order[c.user_id] = at
        self.push(at + DELIVERY, "delivered", c)
        self.push(at + REPLENISH, "replenish", (c, at))

    def on_delivered(self, at: datetime, c: Customer) -> None:
        decided = self.decide(c, "order_delivered", at)
        self.deliver_later(c, decided, None, at)

    def on_replenish(self, at: datetime, item: tuple[Customer, datetime]) -> None:
        c, ordered = item
        if self.last_order.get(c.user_id, ordered) > ordered:
            return  # ordered again since: that order's reminder will come
        decided = self.decide(c, "scheduled", at)
        self.deliver_later(c, decided, None, at)

    def on_campaign(self, at: datetime, c: Customer) -> None:
        decided = self.decide(c, "scheduled", at)
        self.deliver_later(c, decided, None, at)

    def on_induced(self, at: datetime, item: tuple[Customer, float]) -> None:
        c, value = item
        self.order(c, at, value, f"{c.user_id}-m{self.next_id(c)}")

    def on_deliver(self, at: datetime, pending: _Pending) -> None:
        c, message = pending.customer, pending.message
        if pending.cancelled or message.channel in self.unsubscribed.get(c.user_id, ()):
            return
        self.pending.pop((pending.decision_id, message.action_id), None)
        self.result.messages += 1
        by_action = self.result.delivered_by_action
        by_action[message.action_id] = by_action.get(message.action_id, 0) + 1
        if pending.cart is not None:
            pending.cart.delivered.append(message)
            pending.cart.scopes.append(pending.scope)
        if pending.due is not None and message.flow in HOUR_RESPONSIVE_FLOWS:
            touch = Touch(c, message, pending.due, pending.arms)
            self.result.touches.append(touch)
            order_rng = self.order_rngs.get(c.user_id)
            if order_rng is None:  # a stream of its own: the other draws stay what they were
                order_rng = self.order_rngs[c.user_id] = np.random.default_rng([self.sim.seed, 3, c.index])
            if float(order_rng.random()) < touch.probability():  # read at their hour, then bought
                bought = c.next_reading(at, 0.0) + timedelta(minutes=30)
                self.push(bought, "induced", (c, touch.value))
        p_open = c.open_probability(at, message.channel)
        self.result.opens_by_action[message.action_id] = (
            self.result.opens_by_action.get(message.action_id, 0.0) + p_open
        )
        rng = self.rng(c)
        draws = rng.random(4)
        if draws[0] < p_open:
            if message.channel is Channel.EMAIL:  # read at the customer's inbox hour
                opened = c.next_reading(at, float(draws[3] - 0.5) * 1.5)
            else:  # push and SMS are seen within minutes, or not at all
                opened = at + timedelta(minutes=2 + 20 * float(draws[3]))
            self.push(opened, "emit", (c, EventType.OPENED, message.channel, pending.decision_id))
            if draws[1] < 0.3:
                clicked = opened + timedelta(minutes=2)
                self.push(clicked, "emit", (c, EventType.CLICKED, message.channel, pending.decision_id))
        if not message.marketing:
            return
        recent = self.recent.setdefault(c.user_id, deque())
        while recent and recent[0] <= at - _WEEK:
            recent.popleft()
        p_unsubscribe = c.unsubscribe_probability(len(recent))
        recent.append(at)
        self.result.expected_unsubscribes += p_unsubscribe
        if draws[2] < p_unsubscribe:
            self.unsubscribed.setdefault(c.user_id, set()).add(message.channel)
            self.result.unsubscribes += 1
            self.push(at + timedelta(minutes=20), "emit", (c, EventType.UNSUBSCRIBED, message.channel, ""))

    def on_emit(self, at: datetime, item: tuple[Customer, EventType, Channel, str]) -> None:
        c, kind, channel, decision_id = item
        self.event(c, kind, at, channel=channel, decision_id=decision_id)


class Simulator:
    """Plays ``customers`` through ``backend`` for ``days`` days from ``start``.

    ``max_actions`` is what each request asks for. ``campaigns`` (offsets from ``start``) are the moments
    the store's campaign job asks about every customer (``scheduled``, no cart); none by default.
    ``before_decide`` (optional) sees each request, with
    the cart it is about, before it goes out — a policy benchmark uses it to tell an oracle whose
    decision it is."""

    def __init__(
        self,
        backend: Backend,
        customers: Sequence[Customer],
        *,
        days: int,
        seed: int,
        start: datetime = START,
        shards: int = 1,
        max_actions: int = 2,
        campaigns: Sequence[timedelta] = (),
        before_decide: Callable[[Customer, SimRequest, Cart | None], None] | None = None,
        progress: Callable[[int, datetime], None] | None = None,
        progress_every: float = 60.0,
    ) -> None:
        self.backend = backend
        self.customers = list(customers)
        self.days = days
        self.seed = seed
        self.start = start
        self.end = start + timedelta(days=days)
        self.shards = max(1, shards)
        self.max_actions = max_actions
        self.campaigns = tuple(campaigns)
        self.before_decide = before_decide
        # Called every ``progress_every`` seconds of a run with the decisions so far and the simulated
        # time every shard has reached.
        self.progress = progress
        self.progress_every = progress_every

    def run(self) -> SimulationResult:
        groups = [self.customers[i :: self.shards] for i in range(self.shards)]
        shards = [_Shard(self, g) for g in groups if g]
        if len(shards) == 1 and self.progress is None:
            return shards[0].run()
        errors: list[BaseException] = []

        def work(shard: _Shard) -> None:
            try:
                shard.run()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(s,), daemon=True) for s in shards]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(self.progress_every if self.progress is not None else None)
                if self.progress is not None and t.is_alive():
                    self.progress(sum(s.result.decisions for s in shards), min(s.now for s in shards))
        if errors:
            raise errors[0]
        result = SimulationResult(self.customers, self.start, self.end)
        for shard in shards:
            result.merge(shard.result)
        result.carts.sort(key=lambda cart: (cart.at, cart.customer.index))
        return result
