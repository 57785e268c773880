"""Campaign targeting: each member's dry-run decision, what the models expect of sending it, and the order
in which a targeting rule reaches the members.

One generator (:func:`dry_runs`) makes every member's decision dry, the way ``NextAction`` would now;
the plan tallies it and the ranked rules order by it. What a send is expected to earn
(:class:`MemberEstimate`) is read off the decision's actions (or, for a member an experiment holds out,
the actions it would have received) with the features the engine scored them on:

- P(convert | sent): the uplift model's treated arm where it covers the action (it learned from this
  flow's randomized sends), else the propensity model, else the action's declared base propensity;
- P(convert | not sent): the uplift model's control arm where its flows include the action's, else
  unknown (no incremental figure without an uplift model);
- incremental revenue ``P(sent) x value x kept - P(not sent) x value`` (the discount is paid on orders
  that would have come anyway), net of the action's cost: the engine's own score under an uplift model.

Targeting rules (``campaigns.<id>.targeting``): ``everyone`` (scan order), ``ranked`` (the decision's
score), ``propensity`` (P(sent) x value x kept) and ``uplift`` (positive expected incremental value only,
best first; it needs an uplift model covering the campaign's flow, or it is refused with
:class:`TargetingError`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from nextbest.catalog import Action, Campaign, Catalog
from nextbest.decision.engine import DecisionEngine
from nextbest.domain import ChosenAction, Decision, DecisionRequest
from nextbest.errors import NextbestError
from nextbest.models import ModelSet
from nextbest.models import features as feats
from nextbest.state import CustomerState

__all__ = [
    "TARGETING_RULES",
    "DryRun",
    "MemberEstimate",
    "TargetingError",
    "check_targeting",
    "dry_runs",
    "estimate",
    "interval",
    "model_error",
    "models_of",
    "target_value",
]

TARGETING_RULES = ("everyone", "ranked", "propensity", "uplift")
_NO_MODELS = ModelSet()
_AVERAGE_ORDER = feats.FEATURES.index("average_order")


class TargetingError(ValueError):
    """A campaign's targeting rule cannot be followed with the models loaded (names the catalog path)."""


@dataclass(frozen=True, slots=True)
class DryRun:
    """One member's dry-run outcome: a decision, an error, or ``decided`` (the run being resumed has
    already decided this member; nothing was dry-run)."""

    user_id: str
    decision: Decision | None = None
    error: NextbestError | None = None
    decided: bool = False


def dry_runs(
    engine: DecisionEngine,
    request: Callable[[str], DecisionRequest],
    members: Iterable[CustomerState],
    *,
    resumed: Callable[[str], DecisionRequest] | None = None,
) -> Iterator[DryRun]:
    """Each member's decision made dry (nothing written), streamed. With ``resumed`` (the request a run
    being resumed made for a member), a member that run already decided is yielded ``decided`` instead."""
    for state in members:
        if resumed is not None and engine.store.find_decision(resumed(state.user_id).request_id) is not None:
            yield DryRun(state.user_id, decided=True)
            continue
        try:
            yield DryRun(state.user_id, engine.dry_run(request(state.user_id)))
        except NextbestError as exc:
            yield DryRun(state.user_id, error=exc)


@dataclass(frozen=True, slots=True)
class MemberEstimate:
    """What sending a member's decision is expected to earn (sums over its actions). The incremental
    figures are ``None`` without an uplift model covering the actions' flow."""

    p_sent: float  # expected conversions if sent (summed over actions)
    propensity_value: float  # P(sent) x value x kept
    discount_spend: float  # P(sent) x value x (1 - kept): the discount expected to be given
    cost: float
    incremental_conversions: float | None = None
    incremental_revenue: float | None = None  # before cost
    # Variance of the realized incremental conversions and revenue (the sent and the not-sent outcome
    # are each a Bernoulli draw), for the plan's interval.
    variance_conversions: float = 0.0
    variance_revenue: float = 0.0
    # E[revenue^2] if sent (sum over actions of P(sent) x (value x kept)^2), for the holdout's power.
    revenue_square: float = 0.0
    value: float = 0.0  # the orders at stake (sum of the actions' values)

    @property
    def incremental_value(self) -> float | None:
        return None if self.incremental_revenue is None else self.incremental_revenue - self.cost


def models_of(engine: DecisionEngine) -> ModelSet:
    return engine.models.current if engine.models is not None else _NO_MODELS


def _actions(decision: Decision) -> tuple[ChosenAction, ...]:
    """What the decision sends, or for a member an experiment holds out, what it would have sent."""
    if decision.actions:
        return decision.actions
    return tuple(e.action for e in decision.exposures if e.held_out)


def estimate(
    models: ModelSet, actions_by_id: Mapping[str, Action], decision: Decision
) -> MemberEstimate | None:
    """The member's estimate, or ``None`` when the decision sends (and would send) nothing."""
    chosen = [a for a in _actions(decision) if a.action_id in actions_by_id]
    if not chosen:
        return None
    n = len(chosen)
    full = np.full((n, len(feats.FEATURES)), np.nan)
    for i, sent in enumerate(chosen):
        row = feats.decode(sent.features)
        if row is not None:
            full[i, : len(feats.LOGGED)] = row
    feats.fill_derived(full)
    # As the engine valued each action (``value_from: average_order``): NaN when never ordered.
    average_order = [None if math.isnan(v) else float(v) for v in full[:, _AVERAGE_ORDER]]
    ids = [a.action_id for a in chosen]
    declared = [actions_by_id[i] for i in ids]
    p_sent = np.array([a.base_propensity for a in declared], dtype=np.float64)
    if models.propensity is not None:
        p_sent = models.propensity.score(full, ids)
    p_not: list[float | None] = [None] * n
    uplift = models.uplift
    if uplift is not None:
        treated, control = uplift.score(full, ids)
        for i, a in enumerate(declared):
            if a.flow in uplift.flows and a.action_class.is_marketing:
                p_not[i] = float(control[i])
                if uplift.covers(a.id, a.flow):
                    p_sent[i] = treated[i]
    propensity_value = discount = cost = at_stake = 0.0
    conv = revenue = var_c = var_r = square = 0.0
    known = all(p is not None for p in p_not)
    for i, a in enumerate(declared):
        pt, value, kept = float(p_sent[i]), a.value_for(None, average_order[i]), 1.0 - a.discount
        propensity_value += pt * value * kept
        at_stake += value
        square += pt * (value * kept) ** 2
        discount += pt * value * (1.0 - kept)
        cost += a.cost
        pc = p_not[i]
        if pc is not None:
            conv += pt - pc
            revenue += pt * value * kept - pc * value
            var_c += pt * (1 - pt) + pc * (1 - pc)
            var_r += pt * (1 - pt) * (value * kept) ** 2 + pc * (1 - pc) * value**2
    return MemberEstimate(
        p_sent=float(np.sum(p_sent)),
        propensity_value=propensity_value,
        discount_spend=discount,
        cost=cost,
        incremental_conversions=conv if known else None,
        incremental_revenue=revenue if known else None,
        variance_conversions=var_c,
        variance_revenue=var_r,
        revenue_square=square,
        value=at_stake,
    )


def model_error(models: ModelSet) -> float | None:
    """How far the uplift model's uplift may be off per send, in conversion probability, from its own
    test on randomized exposures (the card's test split, later than what it learned from): the gap
    between the observed uplift (treated rate - control rate) and the mean predicted uplift, and the
    observed uplift's standard error, added in quadrature (conservative: the gap holds noise too).
    ``None`` without an uplift model or a card that does not say."""
    if models.uplift is None:
        return None
    test = models.uplift.card.metrics.get("test", {})
    try:
        observed = float(test["observed_uplift"])
        predicted = float(test["mean_predicted_uplift"])
        treated, control = test["treated_model"], test["control_model"]
        pt, nt = float(treated["base_rate"]), int(treated["rows"])
        pc, nc = float(control["base_rate"]), int(control["rows"])
    except (KeyError, TypeError, ValueError):
        return None
    if nt < 1 or nc < 1:
        return None
    standard_error = math.sqrt(pt * (1 - pt) / nt + pc * (1 - pc) / nc)
    return math.sqrt((observed - predicted) ** 2 + standard_error**2)


def target_value(campaign: Campaign, decision: Decision, member: MemberEstimate | None) -> float | None:
    """The key a ranked rule orders members by (higher first); ``None`` leaves the member out."""
    if campaign.targeting == "ranked":
        if decision.actions:
            return sum(a.score for a in decision.actions)
        held = [e.action.score for e in decision.exposures if e.held_out]
        return sum(held) if held else None
    if member is None:
        return None
    if campaign.targeting == "propensity":
        return member.propensity_value
    gain = member.incremental_value  # uplift
    return gain if gain is not None and gain > 0 else None


def check_targeting(catalog: Catalog, campaign: Campaign, models: ModelSet) -> None:
    """Refuses a rule the models loaded cannot follow: ``uplift`` needs an uplift model whose flows
    include every flow of the campaign's actions."""
    if campaign.targeting != "uplift":
        return
    flows = sorted({a.flow for a in catalog.actions_for(campaign.trigger)})
    covered = models.uplift.flows if models.uplift is not None else frozenset()
    missing = [f for f in flows if f not in covered]
    if missing:
        have = (
            f"the promoted uplift model covers {', '.join(sorted(covered)) or 'no flow'}"
            if models.uplift is not None
            else "no uplift model is promoted"
        )
        raise TargetingError(
            f"campaigns.{campaign.id}.targeting: uplift targeting needs an uplift model covering flow "
            f"{', '.join(missing)}, and {have}; train one on a run with a holdout (nextbest train uplift) "
            "or target 'everyone'"
        )


def interval(total: float, variance: float, z: float = 1.959964) -> tuple[float, float]:
    half = z * math.sqrt(max(variance, 0.0))
    return total - half, total + half
