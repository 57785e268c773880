"""The true effect of each experiment arm in a simulation, in the terms of the lift report.

The report's unit is the customer, counted from their first exposure to the experiment, with outcomes
over the attribution window after it (up to the report's ``as_of``). For every unit the simulator knows
each cart's purchase probability under any set of delivered messages (``world``), so both potential
outcomes are computed, not sampled:

- holdout arm vs treated arm: the treated world delivers what was delivered plus what this experiment
  held out; the held-out world delivers what was delivered minus what this experiment covered;
- A/B arms (both send): the covered messages carry each arm's parameters (its discount);
- send-time arms (``fixed`` against ``optimize``): each covered non-urgent message (``Touch``) arrives
  at the hour it was sent in the optimize arm and when it was due in the fixed one. Both hours are known
  only for the optimize arm's units (the fixed arm's never learn their best hour), so the effect is the
  mean over those units — by randomization the same in expectation as over all units.

Non-urgent messages (review request, cross-sell, replenishment) and campaign e-mails (win-back, VIP
early access, promotion) bring an order with a probability that depends on their delivery hour
(``world``); in a holdout their held-out messages count in the treated world, at the hour they would
have been sent.

Per unit: P(convert) = 1 - P(no organic order) x prod(1 - P(buy cart)) x prod(1 - P(order | message)),
revenue = sum P(buy) x order value + sum P(order | message) x its value (the typical basket, less the
e-mail's discount), orders = the sum of the probabilities (organic orders are the same in both worlds
and cancel). The true effect is
the mean over the experiment's units of treated minus control. Knock-on effects (an unsubscribe caused by
a treated message changing later decisions) are not counted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from nextbest.catalog import Catalog
from nextbest.experiments import Experiment
from nextbest.reports.report import control_arm
from nextbest.simulate.simulator import SimulationResult
from nextbest.simulate.world import LAPSED_ACTIVITY, Cart, Customer, Message, Touch

__all__ = ["ArmTruth", "experiment_truth", "truths", "write_truth"]

METRICS = ("conversion", "revenue", "orders")


@dataclass(frozen=True)
class ArmTruth:
    experiment_id: str
    arm: str
    control: str
    units: int
    # metric -> the true mean difference per unit, arm minus control
    effects: dict[str, float]


def _organic_none(c: Customer, start: datetime, end: datetime) -> float:
    """P(no order without a cart between ``start`` and ``end``)."""
    if end <= start:
        return 1.0
    days = (end - start).total_seconds() / 86400
    if c.lapse_at is not None and c.lapse_at < end:
        active = max(0.0, (c.lapse_at - start).total_seconds() / 86400)
        days = min(days, active) + LAPSED_ACTIVITY * (days - min(days, active))
    return math.exp(-c.orders_per_day * days)


def _worlds(
    cart: Cart, experiment: Experiment, arm: str, control: str, parameters: Mapping[str, Mapping[str, str]]
) -> tuple[list[Message], list[Message]]:
    """The cart's messages with the unit in ``arm``, and in ``control``."""
    covered = [experiment.id in scope for scope in cart.scopes]
    arms = {a.id: a for a in experiment.arms}
    control_spec = arms.get(control)
    if control_spec is not None and control_spec.no_action:
        treated = cart.delivered + cart.held.get(experiment.id, [])
        untreated = [m for m, c in zip(cart.delivered, covered, strict=True) if not c]
        return treated, untreated
    worlds = []
    for arm_id in (arm, control):
        spec = arms.get(arm_id)
        params = dict(spec.parameters or {}) if spec is not None else {}
        worlds.append(
            [
                Message(
                    m.action_id,
                    m.flow,
                    m.channel,
                    m.send_at,
                    {**parameters.get(m.action_id, {}), **params},
                    m.marketing,
                )
                if c
                else m
                for m, c in zip(cart.delivered, covered, strict=True)
            ]
        )
    return worlds[0], worlds[1]


def _touch_worlds(
    touches: list[Touch], experiment: Experiment, arm: str, control: str
) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """The (P(order), value) of a unit's non-urgent messages with the unit in ``arm`` and in ``control``."""
    arms = {a.id: a for a in experiment.arms}
    control_spec, arm_spec = arms.get(control), arms.get(arm)
    treated: list[tuple[float, float]] = []
    untreated: list[tuple[float, float]] = []
    for t in touches:
        covered = any(e == experiment.id for e, _ in t.scope)
        if t.held_by is not None:  # held out: delivered only in the treated world of its own holdout
            if t.held_by == experiment.id and control_spec is not None and control_spec.no_action:
                treated.append((t.probability(), t.value))
            continue
        sent = (t.probability(), t.value)
        if covered and control_spec is not None and control_spec.no_action:
            treated.append(sent)
        elif covered and experiment.sets_send_time and arm_spec is not None and control_spec is not None:
            hours = {"optimize": t.message.send_at, "fixed": t.due}
            treated.append((t.probability(hours[arm_spec.send_time or "fixed"]), t.value))
            untreated.append((t.probability(hours[control_spec.send_time or "fixed"]), t.value))
        else:
            treated.append(sent)
            untreated.append(sent)
    return treated, untreated


def experiment_truth(
    result: SimulationResult,
    catalog: Catalog,
    experiment: Experiment,
    *,
    as_of: datetime,
    window: timedelta = timedelta(days=14),
) -> list[ArmTruth]:
    units = result.units.get(experiment.id, {})
    control = control_arm(experiment)
    carts_of: dict[str, list[Cart]] = {}
    for cart in result.carts:
        carts_of.setdefault(cart.customer.user_id, []).append(cart)
    touches_of: dict[str, list[Touch]] = {}
    for touch in result.touches:
        touches_of.setdefault(touch.customer.user_id, []).append(touch)
    # A send-time test's effect is known exactly for the units whose both hours are known.
    optimizing = {a.id for a in experiment.arms if a.send_time == "optimize"}
    customers = {c.user_id: c for c in result.customers}
    parameters = {a.id: a.parameters for a in catalog.actions}
    out = []
    for arm in (a.id for a in experiment.arms if a.id != control):
        totals = dict.fromkeys(METRICS, 0.0)
        n = 0
        for user_id, (first, unit_arm) in units.items():
            if first > as_of or unit_arm not in (arm, control):
                continue
            if experiment.sets_send_time and unit_arm not in optimizing:
                continue
            n += 1
            end = min(first + window, as_of)
            none = _organic_none(customers[user_id], first, end)
            no_order = {"treated": none, "control": none}
            for cart in carts_of.get(user_id, ()):
                if not first <= cart.decide_at < end:
                    continue
                treated, untreated = _worlds(cart, experiment, arm, control, parameters)
                for name, messages in (("treated", treated), ("control", untreated)):
                    p = cart.probability(messages)
                    sign = 1.0 if name == "treated" else -1.0
                    no_order[name] *= 1 - p
                    totals["revenue"] += sign * p * cart.order_value(messages)
                    totals["orders"] += sign * p
            in_window = [t for t in touches_of.get(user_id, ()) if first <= t.message.send_at < end]
            for name, orders in zip(
                ("treated", "control"), _touch_worlds(in_window, experiment, arm, control), strict=True
            ):
                sign = 1.0 if name == "treated" else -1.0
                for p, value in orders:
                    no_order[name] *= 1 - p
                    totals["revenue"] += sign * p * value
                    totals["orders"] += sign * p
            totals["conversion"] += no_order["control"] - no_order["treated"]
        effects = {m: (v / n if n else math.nan) for m, v in totals.items()}
        out.append(ArmTruth(experiment.id, arm, control, n, effects))
    return out


def truths(
    result: SimulationResult, catalog: Catalog, *, as_of: datetime, window: timedelta = timedelta(days=14)
) -> list[ArmTruth]:
    return [
        t
        for e in catalog.experiments
        for t in experiment_truth(result, catalog, e, as_of=as_of, window=window)
    ]


def summary(result: SimulationResult) -> dict[str, Any]:
    return {
        "customers": len(result.customers),
        "start": result.start.isoformat(),
        "end": result.end.isoformat(),
        "decisions": result.decisions,
        "events": result.events,
        "messages": result.messages,
        "orders": result.orders,
        "unsubscribes": result.unsubscribes,
        "carts": len(result.carts),
        "carts_bought": sum(1 for c in result.carts if c.bought),
    }


def _finite(row: dict[str, Any]) -> dict[str, Any]:
    """An arm's truth with ``null`` for an effect that has no units behind it (NaN is not JSON)."""
    effects = row.get("effects") or {}
    return {**row, "effects": {m: (None if math.isnan(v) else v) for m, v in effects.items()}}


def write_truth(
    path: Path,
    result: SimulationResult,
    arms: list[ArmTruth],
    *,
    as_of: datetime,
    window: timedelta,
    seed: int,
) -> Path:
    """The ground truth as JSON: the run, each arm's true effects, every customer's hidden traits and
    every cart's purchase probabilities with and without its messages."""

    def customer(c: Customer) -> Mapping[str, Any]:
        row = asdict(c)
        row["first_seen_at"] = c.first_seen_at.isoformat()
        row["lapse_at"] = c.lapse_at.isoformat() if c.lapse_at else None
        row["past_orders"] = len(c.past_orders)
        return row

    document = {
        "seed": seed,
        "as_of": as_of.isoformat(),
        "window_days": window.total_seconds() / 86400,
        "run": summary(result),
        "experiments": [_finite(asdict(a)) for a in arms],
        "customers": [customer(c) for c in result.customers],
        "carts": [
            {
                "id": cart.id,
                "user_id": cart.customer.user_id,
                "abandoned_at": cart.at.isoformat(),
                "decided_at": cart.decide_at.isoformat(),
                "value": cart.value,
                "p_without_messages": round(cart.probability([]), 6),
                "p_with_delivered": round(cart.probability(cart.delivered), 6),
                "delivered": [m.action_id for m in cart.delivered],
                "held_out": {e: [m.action_id for m in ms] for e, ms in cart.held.items()},
                "bought": cart.bought,
            }
            for cart in result.carts
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, separators=(",", ":"), allow_nan=False))
    return path
