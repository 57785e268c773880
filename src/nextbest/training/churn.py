"""Training the customer scores (``nextbest train churn``): churn risk and purchase propensity.

**Rows.** The store keeps every event, and customer state is a fold over events
(``state.customer.apply_event``), so each customer's state at any past moment can be rebuilt. A row is a
(customer, cut-off): the customer's features (``models.churn.customer_features``) from their events up to
the cut-off, and what they did after it — ``churn``: no order in the ``horizon`` after the cut-off;
``purchase``: an order in the ``window`` after it. Serving computes the same features from the stored
state, so training sees what scoring sees.

**Time split.** Cut-offs every ``step`` going back from ``as_of - horizon``. The latest cut-off is the test
period; training uses only cut-offs whose horizon ends before it (no label of a training row overlaps the
test period), the latest of those for early stopping. The card says which cut-offs went where.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import brier_score_loss
from sqlalchemy import select
from sqlalchemy.engine import make_url

from nextbest.domain import BounceKind, Channel, Event, EventType
from nextbest.models.artifacts import ModelCard, ModelKind
from nextbest.models.churn import CHURN_FEATURE_SET, CHURN_FEATURES, customer_features
from nextbest.state import CustomerState, apply_event
from nextbest.store import Database
from nextbest.store.schema import events
from nextbest.training.datasets import TrainingSet
from nextbest.training.fit import DEFAULT_PARAMS, Split, TrainedModel, fit_binary, libraries, split
from nextbest.training.metrics import binary_metrics

__all__ = [
    "ChurnSet",
    "calibration_metrics",
    "churn_set",
    "cutoffs",
    "time_split",
    "train_churn",
    "train_churn_csv",
]

Index = npt.NDArray[np.intp]
_DAY = timedelta(days=1)


@dataclass
class ChurnSet:
    """Customer rows at each cut-off: features, both labels, and the cut-off (POSIX seconds)."""

    x: npt.NDArray[np.float64]
    churn: npt.NDArray[np.float64]
    purchase: npt.NDArray[np.float64]
    cutoff: npt.NDArray[np.float64]
    cutoffs: list[datetime]
    source: dict[str, Any]

    def head(self, y: npt.NDArray[np.float64]) -> TrainingSet:
        return TrainingSet(
            x=self.x,
            y=y,
            features=list(CHURN_FEATURES),
            feature_set=CHURN_FEATURE_SET,
            times=self.cutoff,
            source=dict(self.source),
        )


def cutoffs(as_of: datetime, horizon: timedelta, step: timedelta, count: int) -> list[datetime]:
    """``count`` cut-offs, oldest first, the latest ``horizon`` before ``as_of``."""
    latest = as_of - horizon
    return [latest - k * step for k in range(count - 1, -1, -1)]


def _event(user: str, row: Any) -> Event | None:
    kind, at, value, channel, details = row
    try:
        event_type = EventType(kind)
    except ValueError:
        return None
    if event_type.is_inventory:
        return None
    details = details or {}
    bounce = details.get("bounce_kind")
    return Event(
        event_id="",
        user_id=user,
        type=event_type,
        occurred_at=at,
        value=float(value or 0.0),
        channel=Channel(channel) if channel else None,
        consent_granted=bool(details.get("consent_granted", False)),
        bounce_kind=BounceKind(bounce) if bounce else None,
    )


def _customers(db: Database, until: datetime) -> Iterator[tuple[str, list[Event]]]:
    """Each customer's events up to ``until``, in time order, one customer at a time (streamed)."""
    query = (
        select(
            events.c.user_id,
            events.c.type,
            events.c.occurred_at,
            events.c.value,
            events.c.channel,
            events.c.details,
        )
        .where(events.c.occurred_at <= until)
        .order_by(events.c.user_id, events.c.occurred_at, events.c.seq)
    )
    current: str | None = None
    batch: list[Event] = []
    with db.reader.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=5000).execute(query)
        for user, *row in result:
            if user != current:
                if current is not None and batch:
                    yield current, batch
                current, batch = user, []
            event = _event(user, row)
            if event is not None:
                batch.append(event)
    if current is not None and batch:
        yield current, batch


def churn_set(
    db: Database,
    as_of: datetime,
    horizon: timedelta,
    window: timedelta,
    *,
    step: timedelta = timedelta(days=7),
    count: int = 8,
) -> ChurnSet:
    """A row per customer seen by each cut-off (``cutoffs``), labels from the events after it."""
    if window > horizon:
        raise ValueError("churn: --window-days (purchase propensity) must not exceed --horizon-days")
    cuts = cutoffs(as_of, horizon, step, count)
    rows: list[list[float]] = []
    churn: list[float] = []
    purchase: list[float] = []
    at: list[float] = []
    customers = 0
    for user, history in _customers(db, as_of):
        customers += 1
        orders = [e.occurred_at for e in history if e.type is EventType.ORDER_PLACED]
        state = CustomerState(user_id=user)
        i = 0
        for cut in cuts:
            while i < len(history) and history[i].occurred_at <= cut:  # type: ignore[operator]
                state = apply_event(state, history[i])
                i += 1
            if state.first_seen_at is None:
                continue
            rows.append(customer_features(state, cut))
            churn.append(0.0 if any(cut < o <= cut + horizon for o in orders) else 1.0)  # type: ignore[operator]
            purchase.append(1.0 if any(cut < o <= cut + window for o in orders) else 0.0)  # type: ignore[operator]
            at.append(cut.timestamp())
    return ChurnSet(
        x=np.asarray(rows, dtype=np.float64).reshape(-1, len(CHURN_FEATURES)),
        churn=np.asarray(churn),
        purchase=np.asarray(purchase),
        cutoff=np.asarray(at),
        cutoffs=cuts,
        source={
            "store": make_url(db.url).render_as_string(hide_password=True),
            "table": "events (each customer's state folded up to every cut-off)",
            "as_of": as_of.isoformat(),
            "customers": customers,
            "cutoffs": [c.isoformat() for c in cuts],
        },
    )


def time_split(data: ChurnSet, horizon: timedelta) -> Split:
    """Test: the latest cut-off. Train: cut-offs whose horizon ends by the test cut-off (the latest of
    them validates, for early stopping)."""
    test_cut = data.cutoffs[-1]
    usable = [c for c in data.cutoffs if c + horizon <= test_cut]
    if len(usable) < 2:
        raise ValueError(
            f"churn: the store's events do not reach back far enough for a time split with a "
            f"{horizon / _DAY:g}-day horizon (need two cut-offs whose horizon ends by the test cut-off "
            f"{test_cut.isoformat()}); give a shorter --horizon-days or more --cutoffs"
        )
    valid_cut = usable[-1].timestamp()
    train_until = usable[-2].timestamp()
    index = np.arange(data.cutoff.size)
    return Split(
        train=index[data.cutoff <= train_until],
        valid=index[data.cutoff == valid_cut],
        test=index[data.cutoff == test_cut.timestamp()],
        how="time (customer cut-offs; training labels end before the test cut-off)",
    )


def calibration_metrics(y: npt.NDArray[np.float64], p: npt.NDArray[np.float64]) -> dict[str, Any]:
    """``binary_metrics`` (AUC, log loss, ECE, reliability table) with the Brier score beside that of the
    constant base rate."""
    out = binary_metrics(y, p)
    if "auc" in out:
        rate = out["base_rate"]
        out["brier"] = float(brier_score_loss(y, p))
        out["base_brier"] = rate * (1.0 - rate)
    return out


def _require(y: npt.NDArray[np.float64], part: Index, what: str) -> None:
    labels = y[part]
    if part.size < 50 or labels.min() == labels.max():
        raise ValueError(
            f"churn: the {what} rows ({part.size}) are too few or all of one outcome; the store needs more "
            "customers or a longer history"
        )


def _card(source: dict[str, Any], parts: dict[str, Any], **extra: Any) -> ModelCard:
    return ModelCard(
        kind=ModelKind.CHURN,
        version="pending",
        feature_set=extra.pop("feature_set", CHURN_FEATURE_SET),
        features=extra.pop("features", list(CHURN_FEATURES)),
        sha256={},
        data={**source, **parts},
        libraries=libraries(),
        **extra,
    )


def train_churn(
    data: ChurnSet, horizon: timedelta, window: timedelta, seed: int = 7, command: str = ""
) -> TrainedModel:
    """Both classifiers on the time split, each evaluated on the test cut-off it never saw."""
    parts = time_split(data, horizon)
    files: dict[str, bytes] = {}
    metrics: dict[str, Any] = {}
    predictions: dict[str, npt.NDArray[np.float64]] = {}
    for role, y in (("churn", data.churn), ("purchase", data.purchase)):
        for part, what in ((parts.train, "training"), (parts.valid, "validation"), (parts.test, "test")):
            _require(y, part, f"{role} {what}")
        head = data.head(y)
        booster = fit_binary(head, parts.train, parts.valid, seed)
        p = np.asarray(booster.predict(data.x[parts.test], num_threads=1), dtype=np.float64)
        metrics[role] = {**calibration_metrics(y[parts.test], p), "trees": booster.num_trees()}
        files[f"{role}.txt"] = booster.model_to_string().encode()
        predictions[role] = p
    days = _DAY.total_seconds()
    card = _card(
        data.source,
        {
            **parts.describe(data.head(data.churn)),
            "test_cutoff": data.cutoffs[-1].isoformat(),
            "rows_per_cutoff": {
                datetime.fromtimestamp(c, UTC).date().isoformat(): int((data.cutoff == c).sum())
                for c in np.unique(data.cutoff)
            },
        },
        files={"churn": "churn.txt", "purchase": "purchase.txt"},
        outcome=(
            f"churn: no order_placed in the {horizon.total_seconds() / days:g} days after the cut-off; "
            f"purchase: an order_placed in the {window.total_seconds() / days:g} days after it"
        ),
        params={
            **{k: v for k, v in DEFAULT_PARAMS.items() if k != "verbose"},
            "seed": seed,
            "horizon_days": horizon.total_seconds() / days,
            "window_days": window.total_seconds() / days,
        },
        metrics={"test": metrics},
        command=command,
    )
    return TrainedModel(card, files, predictions)


def train_churn_csv(data: TrainingSet, seed: int = 7, command: str = "") -> TrainedModel:
    """A churn classifier on a CSV's features (P(not label)), evaluated on its held-out split: for model
    cards on public data sets. It reads the CSV's columns, not customer state, so it is never served."""
    if len(data) < 200:
        raise ValueError(f"churn: {len(data)} rows is too few to train and evaluate (need at least 200)")
    y = 1.0 - data.y
    if y.min() == y.max():
        raise ValueError("churn: every row has the same outcome; nothing to learn")
    flipped = data.subset(np.arange(len(data)))
    flipped.y = y
    parts = split(flipped, seed)
    booster = fit_binary(flipped, parts.train, parts.valid, seed)
    p = np.asarray(booster.predict(data.x[parts.test], num_threads=1), dtype=np.float64)
    label = data.source.get("label", "label")
    card = _card(
        data.source,
        parts.describe(flipped),
        feature_set=data.feature_set,
        features=data.features,
        categorical=data.categorical,
        categories=data.categories,
        files={"churn": "churn.txt"},
        outcome=f"churn: {label} = 0 (the CSV's label column, negated)",
        params={**{k: v for k, v in DEFAULT_PARAMS.items() if k != "verbose"}, "seed": seed},
        metrics={"test": {"churn": {**calibration_metrics(y[parts.test], p), "trees": booster.num_trees()}}},
        command=command,
    )
    return TrainedModel(card, {"churn.txt": booster.model_to_string().encode()}, {"churn": p})
