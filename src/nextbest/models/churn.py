"""Customer scores: churn risk and purchase propensity, predicted from customer state alone.

Unlike the propensity and uplift models, which score a (customer, action) pair at a trigger, these score
a customer, with no request: what segments and campaigns read as ``customer.churn_risk`` and
``customer.purchase_propensity``. The features are a function of :class:`CustomerState` and a time, the
same function at training (each customer's events folded up to a cut-off, ``training.churn``) and at
scoring (the stored state), so the two cannot drift apart.

A churn artifact holds two LightGBM classifiers on these features:

- ``churn``: P(no order in the ``horizon_days`` after now) — ``customer.churn_risk``;
- ``purchase``: P(an order in the ``window_days`` after now) — ``customer.purchase_propensity``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import numpy as np
import numpy.typing as npt

from nextbest.domain import EventType
from nextbest.state import MESSAGING_CHANNELS, CustomerState

__all__ = [
    "CHURN_FEATURES",
    "CHURN_FEATURE_SET",
    "SCORE_FIELDS",
    "CustomerScorer",
    "customer_features",
    "feature_matrix",
]

CHURN_FEATURE_SET = "customer-v1"
CHURN_FEATURES: tuple[str, ...] = (
    "tenure_days",
    "orders_count",
    "refunds_count",
    "revenue_total",
    "average_order_value",
    "days_since_order",  # NaN: never ordered
    "days_since_engagement",  # last open or click
    "days_since_view",
    "days_since_cart",  # added to cart or abandoned one
    "days_since_event",  # anything at all
    "engagements",  # opens and clicks ever
    "consents",  # messaging channels with consent
    "suppressed",  # messaging channels suppressed
)
# The CEL fields (``customer.<name>``) these scores fill, and the model file each comes from.
SCORE_FIELDS: dict[str, str] = {"churn_risk": "churn", "purchase_propensity": "purchase"}

_DAY = 86400.0
_NAN = math.nan
_CART = (EventType.ADDED_TO_CART, EventType.CART_ABANDONED)


def _days(now: datetime, then: datetime | None) -> float:
    return max((now - then).total_seconds() / _DAY, 0.0) if then is not None else _NAN


def customer_features(state: CustomerState, now: datetime) -> list[float]:
    """The customer's features at ``now``, in ``CHURN_FEATURES`` order."""
    last = state.last_events
    carts = [last[t] for t in _CART if t in last]
    channels = [state.channel(c) for c in MESSAGING_CHANNELS]
    return [
        _days(now, state.first_seen_at),
        float(state.orders_count),
        float(state.refunds_count),
        float(state.revenue_total),
        state.revenue_total / state.orders_count if state.orders_count else _NAN,
        _days(now, state.last_order_at),
        _days(now, state.last_engagement_at),
        _days(now, last.get(EventType.PRODUCT_VIEWED)),
        _days(now, max(carts)) if carts else _NAN,
        _days(now, max(last.values())) if last else _NAN,
        float(sum(state.engagement_hours.values())),
        float(sum(1 for c in channels if c.consent)),
        float(sum(1 for c in channels if c.suppression is not None)),
    ]


def feature_matrix(states: Sequence[CustomerState], now: datetime) -> npt.NDArray[np.float64]:
    """One row of ``customer_features`` per state."""
    if not states:
        return np.empty((0, len(CHURN_FEATURES)))
    return np.asarray([customer_features(s, now) for s in states], dtype=np.float64)


class _Predictor(Protocol):
    def predict(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]: ...


@dataclass(frozen=True)
class CustomerScorer:
    """The promoted churn artifact's two classifiers; ``version`` is written with every stored score."""

    churn: _Predictor
    purchase: _Predictor
    version: str
    horizon_days: float
    window_days: float

    def score(self, states: Sequence[CustomerState], now: datetime) -> dict[str, npt.NDArray[np.float64]]:
        """``SCORE_FIELDS`` -> one score per state, at ``now``."""
        x = feature_matrix(states, now)
        if x.shape[0] == 0:
            return {name: np.empty(0) for name in SCORE_FIELDS}
        return {"churn_risk": self.churn.predict(x), "purchase_propensity": self.purchase.predict(x)}
