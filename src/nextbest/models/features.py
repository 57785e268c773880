"""The scoring features: one definition shared by serving, the exposure log and training.

A decision builds one row per candidate action: the customer and context part once, then each action's
own columns. The logged part (``LOGGED``, float64) is stored with the exposure; training adds the action
identity (``action``, a categorical coded by the model card's vocabulary) from the exposure's
``action_id`` column, exactly as serving does. Missing values are NaN, which LightGBM treats as missing.

Changing a feature's meaning or order means a new ``FEATURE_SET``: a model card names the set it was
trained on and the registry refuses a model built for another.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from nextbest.catalog import Action
from nextbest.domain import Channel, DecisionRequest
from nextbest.state import CustomerSnapshot

__all__ = [
    "ACTION",
    "CATEGORICAL",
    "CUSTOMER",
    "DERIVED",
    "FEATURES",
    "FEATURE_SET",
    "LOGGED",
    "Layout",
    "action_codes",
    "action_columns",
    "action_ids",
    "candidate_matrix",
    "channel_code",
    "customer_row",
    "decode",
    "derived",
    "encode_rows",
    "fill_derived",
    "logged_matrix",
    "matrix",
]

FEATURE_SET = "v1"

CUSTOMER: tuple[str, ...] = (
    "tenure_days",  # since the customer's first event
    "orders_count",
    "revenue_total",
    "days_since_order",
    "days_since_engagement",  # last open or click
    "sends_7d",  # actions sent or pending in the last 7 days
    "sends_30d",
    "cart_value",
    "context_products",
    "local_hour",  # in the customer's time zone
    "local_weekday",  # Monday = 0
)
ACTION_COLUMNS: tuple[str, ...] = (
    "channel",  # categorical: the index of the channel in nextbest.domain.Channel
    "action_class",  # 0 transactional, 1 triggered, 2 promotional
    "action_value",
    "base_propensity",
    "delay_hours",
)
LOGGED: tuple[str, ...] = CUSTOMER + ACTION_COLUMNS
# Computed from the logged customer columns at training and serving time alike (never logged: a model
# trained before they existed is served from the same log), NaN for a customer who has not ordered.
DERIVED: tuple[str, ...] = (
    "average_order",  # revenue_total / orders_count: the customer's usual basket
    "order_gap_ratio",  # days_since_order / (tenure_days / orders_count): past 1 once overdue
)
# Added at training and serving time from the action id and the model card's vocabulary.
ACTION = "action"
FEATURES: tuple[str, ...] = (*LOGGED, *DERIVED, ACTION)
CATEGORICAL: tuple[str, ...] = ("channel", ACTION)

_CHANNEL_CODE = {c: float(i) for i, c in enumerate(Channel)}
_DERIVED_SLICE = slice(len(LOGGED), len(LOGGED) + len(DERIVED))
_ACTION_INDEX = len(LOGGED) + len(DERIVED)
_TENURE, _ORDERS, _REVENUE, _SINCE_ORDER = (
    CUSTOMER.index(name) for name in ("tenure_days", "orders_count", "revenue_total", "days_since_order")
)
_DAY = 86400.0
_NAN = math.nan
# The log's float64 (little-endian), and whether this machine stores float64 that way.
_LOGGED_F8 = np.dtype("<f8")
_LITTLE = sys.byteorder == "little"


def customer_row(
    snapshot: CustomerSnapshot, request: DecisionRequest, now: datetime, zone: ZoneInfo
) -> list[float]:
    """The customer and context columns, in ``CUSTOMER`` order."""
    state = snapshot.state
    week, month = now - timedelta(days=7), now - timedelta(days=30)
    sends_7d = sends_30d = 0
    for past in snapshot.history:  # newest first
        if past.cancelled or past.send_at > now:
            continue
        if past.send_at <= month:
            break
        sends_30d += 1
        if past.send_at > week:
            sends_7d += 1
    local = now.astimezone(zone)
    cart = request.context.cart_value
    return [
        _days(now, state.first_seen_at),
        float(state.orders_count),
        state.revenue_total,
        _days(now, state.last_order_at),
        _days(now, state.last_engagement_at),
        float(sends_7d),
        float(sends_30d),
        _NAN if cart is None else cart,
        float(len(request.context.product_ids)),
        local.hour + local.minute / 60.0,
        float(local.weekday()),
    ]


def derived(customer: Sequence[float]) -> tuple[float, float]:
    """The ``DERIVED`` columns of one customer row (``CUSTOMER`` order)."""
    orders = customer[_ORDERS]
    if not orders > 0:
        return _NAN, _NAN
    gap = customer[_TENURE] / orders  # NaN when the first event is unknown
    return customer[_REVENUE] / orders, customer[_SINCE_ORDER] / gap if gap > 0 else _NAN


def fill_derived(x: npt.NDArray[np.float64]) -> None:
    """Fills the ``DERIVED`` columns of rows of ``FEATURES`` whose logged columns are set, in place:
    the same values ``derived`` gives row by row."""
    orders = x[:, _ORDERS]
    known = orders > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        average = x[:, _REVENUE] / orders
        gap = x[:, _TENURE] / orders
        ratio = x[:, _SINCE_ORDER] / gap
    x[:, _DERIVED_SLICE.start] = np.where(known, average, _NAN)
    x[:, _DERIVED_SLICE.start + 1] = np.where(known & (gap > 0), ratio, _NAN)


def action_columns(action: Action, channel: Channel, delay: timedelta) -> list[float]:
    """The action's columns, in ``ACTION_COLUMNS`` order (an experiment arm may move the channel or
    change the delay)."""
    rank, value, propensity = action.scoring_constants
    return [_CHANNEL_CODE[channel], rank, value, propensity, delay.total_seconds() / 3600.0]


def channel_code(channel: Channel) -> float:
    return _CHANNEL_CODE[channel]


def candidate_matrix(
    customer: Sequence[float],
    actions: Sequence[Sequence[float]],
    customer_derived: tuple[float, float] | None = None,
) -> npt.NDArray[np.float64]:
    """All candidates' rows of ``FEATURES`` in one array: the customer part broadcast, each action's
    columns, and an action column left for ``Layout.select`` to fill with a model's codes.
    ``customer_derived``: ``derived(customer)``, when the caller has it already."""
    out = np.empty((len(actions), len(FEATURES)), dtype=np.float64)
    out[:, : len(CUSTOMER)] = customer
    out[:, len(CUSTOMER) : len(LOGGED)] = actions
    out[:, _DERIVED_SLICE] = derived(customer) if customer_derived is None else customer_derived
    return out


def logged_matrix(customer: Sequence[float], actions: Sequence[Sequence[float]]) -> npt.NDArray[np.float64]:
    """The logged columns of a decision's candidates: the customer part repeated, then each action's."""
    out = np.empty((len(actions), len(LOGGED)), dtype=np.float64)
    out[:, : len(CUSTOMER)] = customer
    out[:, len(CUSTOMER) :] = actions
    return out


def encode_rows(logged: npt.NDArray[np.float64]) -> list[bytes]:
    """The logged form of each row: float64, little-endian, ``LOGGED`` order (the first ``LOGGED``
    columns of ``logged``; a ``candidate_matrix``'s action column is left out)."""
    blob = logged[:, : len(LOGGED)].astype("<f8", copy=False).tobytes()
    width = len(LOGGED) * 8
    return [blob[i : i + width] for i in range(0, len(blob), width)]


def encode_row(matrix: npt.NDArray[np.float64], row: int) -> bytes:
    """``encode_rows(matrix[row : row + 1])[0]``, without its slices and list: one row of a native
    little-endian float64 matrix is its first ``LOGGED`` values' bytes as they are."""
    if not _LITTLE or matrix.dtype != _LOGGED_F8:
        return encode_rows(matrix[row : row + 1])[0]
    return matrix[row, : len(LOGGED)].tobytes()


def decode(blob: bytes | None) -> npt.NDArray[np.float64] | None:
    if not blob:
        return None
    values = np.frombuffer(blob, dtype="<f8")
    return values if values.size == len(LOGGED) else None


def action_codes(vocabulary: Sequence[str]) -> dict[str, float]:
    return {a: float(i) for i, a in enumerate(vocabulary)}


def action_ids(column: npt.NDArray[np.float64], vocabulary: Sequence[str]) -> list[str]:
    """The action ids of an action column coded by ``action_codes(vocabulary)``; "" for a code outside
    it (NaN: an action the model never saw)."""
    return [vocabulary[int(c)] if math.isfinite(c) and 0 <= int(c) < len(vocabulary) else "" for c in column]


def matrix(
    logged: Sequence[Sequence[float]] | npt.NDArray[np.float64],
    action_ids: Sequence[str],
    codes: Mapping[str, float],
) -> npt.NDArray[np.float64]:
    """The model input, in ``FEATURES`` order: the logged columns, the derived ones, and the action's
    code (NaN for an action the model never saw)."""
    x = np.empty((len(action_ids), len(FEATURES)), dtype=np.float64)
    if len(action_ids):
        x[:, : len(LOGGED)] = logged
        fill_derived(x)
        x[:, -1] = [codes.get(a, _NAN) for a in action_ids]
    return x


@dataclass(frozen=True, eq=False)
class Layout:
    """Where each input of a model comes from, worked out once per model from its card's feature names:
    a column of the logged matrix (``LOGGED``), a derived column (``DERIVED``) or the action's code. A
    model trained on other features of the set, or in another order, is served from the same logged
    matrix."""

    features: tuple[str, ...]
    columns: npt.NDArray[np.intp]  # per model input: its index in FEATURES
    identity: bool  # the model's inputs are FEATURES, in order

    @classmethod
    def of(cls, features: Sequence[str]) -> Layout:
        unknown = [f for f in features if f not in FEATURES]
        if unknown:
            raise ValueError(f"features the server does not build: {', '.join(unknown)}")
        columns = np.array([FEATURES.index(f) for f in features], dtype=np.intp)
        return cls(tuple(features), columns, tuple(features) == FEATURES)

    def select(
        self, full: npt.NDArray[np.float64], action_ids: Sequence[str], codes: Mapping[str, float]
    ) -> npt.NDArray[np.float64]:
        """The model's input from a ``candidate_matrix`` (its action column is overwritten with this
        model's codes): the matrix itself when the model takes ``FEATURES`` in order, else a copy of
        the model's columns."""
        full[:, _ACTION_INDEX] = [codes.get(a, _NAN) for a in action_ids]
        return full if self.identity else np.ascontiguousarray(full.take(self.columns, axis=1))


def _days(now: datetime, then: datetime | None) -> float:
    return _NAN if then is None else (now - then).total_seconds() / _DAY
