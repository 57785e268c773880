"""The scoring stage: the expected value of sending each eligible action.

All candidates of a decision are scored in one batch. ``value`` is the order at stake: the action's
declared value, or the request's cart value for an action declared ``value_from: cart_value`` (the
customer's average order for ``value_from: average_order``, once they have ordered); an
action with a ``discount_parameter`` keeps ``(1 - discount)`` of it (``kept``; the declared discount,
never an experiment arm's, so that an A/B test's arms face the same decision to send). With a promoted
propensity model the score is ``P(convert | customer, action) x value x kept``; without one,
``base_propensity x value x kept``. With a promoted uplift model covering the action's flow (marketing
actions only) it is the expected incremental value ``P(convert | treated) x value x kept -
P(convert | untreated) x value - cost`` (the discount is paid on orders that would have come anyway),
and an action whose expected incremental value is not positive is rejected (``NO_EXPECTED_LIFT``); for
an action of the flow the uplift model did not see randomized, P(convert | treated) is its propensity
score.
Actions that optimize their send time (as declared, or as their experiment arm says) carry the
customer's engagement profile for the send-time stage to pick the hour. The features of each candidate as
it is sent travel with it to the exposure log; an experiment arm that moved its channel or delay, or set
its send time, does not change its score (it is ranked as declared).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from nextbest.catalog import Action
from nextbest.decision.candidates import Candidate, rejection
from nextbest.domain import Channel, DecisionRequest, ReasonCode, Rejection, SendTimeSource
from nextbest.models import features as feats
from nextbest.models.registry import ModelSet, UpliftModel
from nextbest.models.send_time import Timing
from nextbest.state import CustomerSnapshot

__all__ = ["ScoredCandidate", "score_candidates"]

_NO_MODELS = ModelSet()
_CHANNEL_CODE = {c: feats.channel_code(c) for c in Channel}


@dataclass(slots=True)  # not frozen: built for every candidate of every decision, and frozen init is slow
class ScoredCandidate:
    candidate: Candidate
    score: float
    send_at: datetime
    # Its features as logged (``features``), unless ``logged`` holds them.
    encoded: bytes = b""
    # When the action optimizes its send time and a send-time model is loaded: the customer's profile.
    timing: Timing | None = None
    send_time: SendTimeSource = SendTimeSource.FIXED
    # The decision's logged feature matrix and this candidate's row, encoded only when read: only the
    # winners' features are logged, and most candidates lose.
    logged: tuple[npt.NDArray[np.float64], int] | None = None

    @property
    def features(self) -> bytes:
        """The candidate's feature row as the exposure log keeps it (``features.encode_rows``)."""
        if self.logged is None:
            return self.encoded
        matrix, row = self.logged
        return feats.encode_row(matrix, row)

    @property
    def action(self) -> Action:
        return self.candidate.action

    @property
    def channel(self) -> Channel:
        return self.candidate.channel


def score_candidates(
    candidates: list[Candidate],
    now: datetime,
    *,
    snapshot: CustomerSnapshot,
    request: DecisionRequest,
    zone: ZoneInfo,
    models: ModelSet = _NO_MODELS,
) -> tuple[list[ScoredCandidate], list[Rejection]]:
    """Scores every candidate; returns them, and the ones rejected for no expected lift."""
    if not candidates:
        return [], []
    customer = feats.customer_row(snapshot, request, now, zone)
    cart = request.context.cart_value
    # The derived columns once per decision: both matrices below take them, and an action valued by the
    # customer's average order (``value_from: average_order``) reads it here (NaN: no order yet).
    derived = feats.derived(customer)
    average_order = None if math.isnan(derived[0]) else derived[0]
    code = _CHANNEL_CODE
    # One pass over the candidates for what each adds to the feature matrix and to its value; the
    # matrix itself is built in one step.
    sent: list[tuple[float, float, float, float, float]] = []
    values: list[float] = []
    kept: list[float] = []
    ids: list[str] = []
    declared = False
    for c in candidates:
        action = c.action
        rank, value, propensity = action.scoring_constants
        sent.append((code[c.channel], rank, value, propensity, c.delay.total_seconds() / 3600.0))
        values.append(action.value if action.value_from is None else action.value_for(cart, average_order))
        # What an order is worth to the store once the action's declared discount is given away (not
        # an arm's: whether to send must not depend on the arm, or an A/B test would compare different
        # units).
        kept.append(1.0 - action.discount)
        ids.append(action.id)
        declared = declared or c.declared is not None
    full = logged = feats.candidate_matrix(customer, sent, derived)
    # Ranked as declared: an arm that moves the channel or the delay must not change whether the action
    # wins, or the arms would compare different units. The log keeps what is sent.
    if declared:
        full = feats.candidate_matrix(
            customer,
            [feats.action_columns(c.action, *(c.declared or (c.channel, c.delay))) for c in candidates],
            derived,
        )
    if models.propensity is not None:
        p = models.propensity.score(full, ids).tolist()
    else:
        p = [c.action.base_propensity for c in candidates]
    # P x value x kept, multiplied in that order as float64 (what numpy's element-wise products give,
    # without their per-call cost on ten rows).
    scores = [pi * v * k for pi, v, k in zip(p, values, kept, strict=True)]
    no_lift = (
        {}
        if models.uplift is None
        else _uplift(models.uplift, candidates, full, ids=ids, p=p, values=values, kept=kept, scores=scores)
    )
    profile = None
    scored: list[ScoredCandidate] = []
    rejected: list[Rejection] = []
    fixed = SendTimeSource.FIXED
    for i, c in enumerate(candidates):
        if no_lift and i in no_lift:
            rejected.append(rejection(c.action, ReasonCode.NO_EXPECTED_LIFT, no_lift[i], c.channel))
            continue
        timing, source = None, fixed
        if (c.send_time or c.action.send_time) == "optimize":  # the action's send time, or its arm's
            if models.send_time is not None:
                if profile is None:  # once per decision
                    profile = models.send_time.timing(snapshot.state.engagement_hours)
                timing, source = profile, profile.source
            else:
                source = SendTimeSource.FALLBACK
        scored.append(ScoredCandidate(c, scores[i], now + c.delay, b"", timing, source, (logged, i)))
    return scored, rejected


def _uplift(
    uplift: UpliftModel,
    candidates: list[Candidate],
    full: npt.NDArray[np.float64],
    *,
    ids: list[str],
    p: list[float],
    values: list[float],
    kept: list[float],
    scores: list[float],
) -> dict[int, str]:
    """Rescores the candidates the uplift model covers with their expected incremental value (in
    ``scores``); returns why each one without a positive gain is rejected, by index."""
    no_lift: dict[int, str] = {}
    covered = [
        i
        for i, c in enumerate(candidates)
        if c.action.flow in uplift.flows and c.action.action_class.is_marketing
    ]
    if not covered:
        return no_lift
    rows = full if len(covered) == len(candidates) else full[covered]
    treated, control = uplift.score(rows, [ids[i] for i in covered])
    for i, model_pt, pc in zip(covered, treated, control, strict=True):
        action = candidates[i].action
        pt = model_pt
        if not uplift.covers(action.id, action.flow):
            # Not seen randomized: P(convert | sent) from the propensity score; P(convert | not sent) is
            # the customer's, whatever the action — so every action of the flow is ranked in the same
            # currency, incremental value.
            pt = p[i]
        value, keep = values[i], kept[i]
        # A discount is given on every order the action touches, also the ones that would have come
        # anyway: the treated order is worth value x keep, the untreated one value.
        gain = pt * value * keep - pc * value - action.cost
        scores[i] = float(gain)
        if not gain > 0:
            off = f" less {100 * (1 - keep):g} % off" if keep < 1 else ""
            no_lift[i] = (
                f"uplift {100 * (pt - pc):+.2f} pp x value {value:g}{off} - cost "
                f"{action.cost:g} = {gain:+.4g} (P(convert) {pt:.4f} if sent, {pc:.4f} if not)"
            )
    return no_lift
