"""Training and evaluation: ``nextbest train`` and ``nextbest evaluate``.

Sources: the store (the exposure log with its logged features, events for labels) or, for propensity and
uplift, a CSV with a declared schema (see ``datasets.CsvSchema``). Models are written under
``<models>/<kind>/<version>/`` with their card; ``promote`` makes a version the one the server loads.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from nextbest.models.artifacts import ModelCard, ModelKind, promote, read_card, write_artifact
from nextbest.models.registry import load_binary, load_uplift
from nextbest.store import Database
from nextbest.training.churn import churn_set, train_churn, train_churn_csv
from nextbest.training.datasets import TrainingSet, from_csv, load_schema, propensity_set, uplift_set
from nextbest.training.fit import recode, split, train_propensity, train_uplift, uplift_metrics
from nextbest.training.metrics import binary_metrics
from nextbest.training.send_time import engagement_events, train_send_time

__all__ = ["Source", "evaluate", "train"]


@dataclass(frozen=True)
class Source:
    """Where training data comes from: a database URL, or a CSV and its schema."""

    database_url: str | None = None
    csv: Path | None = None
    schema: Path | None = None
    outcome: str | None = None  # CSV: the label column (default: the schema's)
    window: timedelta = timedelta(days=7)  # store: the attribution window of a conversion
    as_of: datetime | None = None  # store: ignore what happened later (default: now)
    horizon: timedelta = timedelta(days=30)  # churn: no order in this long after a cut-off
    cutoffs: int = 8  # churn: cut-offs a week apart, the latest ``horizon`` before ``as_of``
    # uplift from the store: the holdout experiments whose first exposures are pooled (default: the one
    # with the most held-out units); see ``datasets.uplift_set``
    experiments: tuple[str, ...] = ()

    def describe(self) -> str:
        return str(self.csv) if self.csv is not None else str(self.database_url)


def _dataset(kind: ModelKind, source: Source) -> TrainingSet:
    if source.csv is not None:
        if source.schema is None:
            raise ValueError("--csv needs --schema: a YAML file declaring features, label and treatment")
        return from_csv(source.csv, load_schema(source.schema), source.outcome)
    if source.database_url is None:
        raise ValueError("give --database-url, or --csv with --schema")
    db = Database(source.database_url, pool_size=2)
    try:
        as_of = source.as_of or datetime.now(UTC)
        if kind is ModelKind.PROPENSITY:
            data = propensity_set(db, source.window, as_of)
        else:
            data = uplift_set(db, source.window, as_of, source.experiments)
    finally:
        db.dispose()
    data.source["attribution_window_days"] = source.window.total_seconds() / 86400
    return data


def train(
    kind: ModelKind,
    source: Source,
    models_dir: Path,
    seed: int = 7,
    *,
    promote_it: bool = False,
    command: str = "",
    learner: str | None = None,
) -> tuple[Path, ModelCard]:
    """Trains ``kind`` on ``source``; returns the version directory and its card. ``learner``: the
    uplift learner to keep (default: the best Qini on the validation slice)."""
    if kind is ModelKind.SEND_TIME:
        if source.database_url is None:
            raise ValueError("send-time trains from the store's opens and clicks: give --database-url")
        db = Database(source.database_url, pool_size=2)
        try:
            rows = engagement_events(db, source.as_of or datetime.now(UTC))
        finally:
            db.dispose()
        trained = train_send_time(rows, {"store": source.describe(), "table": "events"}, command)
    elif kind is ModelKind.CHURN:
        trained = _train_churn(source, seed, command)
    else:
        data = _dataset(kind, source)
        outcome = str(data.source.get("label", "order_placed within the attribution window"))
        if kind is ModelKind.PROPENSITY:
            trained = train_propensity(data, seed, outcome, command)
        else:
            trained = train_uplift(data, seed, outcome, command, learner)
    directory = write_artifact(models_dir, trained.card, trained.files)
    card = read_card(directory)
    if promote_it:
        promote(models_dir, kind, card.version)
    return directory, card


def _train_churn(source: Source, seed: int, command: str) -> Any:
    if source.csv is not None:
        return train_churn_csv(_dataset(kind=ModelKind.CHURN, source=source), seed, command)
    if source.database_url is None:
        raise ValueError("churn trains from the store's events: give --database-url, or --csv with --schema")
    if source.window > source.horizon:
        raise ValueError("churn: --window-days (purchase propensity) must not exceed --horizon-days")
    db = Database(source.database_url, pool_size=2)
    try:
        data = churn_set(
            db, source.as_of or datetime.now(UTC), source.horizon, source.window, count=source.cutoffs
        )
    finally:
        db.dispose()
    return train_churn(data, source.horizon, source.window, seed, command)


def evaluate(kind: ModelKind, version: str, source: Source, models_dir: Path) -> dict[str, Any]:
    """Re-scores a stored version on ``source``: on the rows newer than its training data when there
    are any (data it never saw), else on the same held-out split it was evaluated on."""
    directory = models_dir / kind.value / version
    card = read_card(directory)
    if kind in (ModelKind.SEND_TIME, ModelKind.CHURN):
        raise ValueError(f"{kind.value} is evaluated when trained; retrain it to measure it on new events")
    if kind is ModelKind.UPLIFT and source.csv is None and not source.experiments:
        # the experiments it was trained on, as its card names them (see datasets.uplift_set)
        named = str(card.data.get("experiment", ""))
        source = replace(source, experiments=tuple(e for e in named.split(",") if e))
    data = recode(_dataset(kind, source), card.categories)
    if data.features != card.features:
        raise ValueError(f"the data has features {data.features}, the model {card.features}")
    rows, rows_from = _evaluation_rows(data, card)
    x, y = data.x[rows], data.y[rows]
    if kind is ModelKind.PROPENSITY:
        p = load_binary(directory, card, "model").predict(x)
        return {"rows_from": rows_from, **binary_metrics(y, p)}
    assert data.treated is not None
    t = data.treated[rows]
    p_t, p_c = load_uplift(directory, card).predict(x)  # an effect learner's as served
    seed = int(card.params.get("seed", 7))
    return {"rows_from": rows_from, **uplift_metrics(p_t - p_c, p_t, y, t, seed)}


def _evaluation_rows(data: TrainingSet, card: ModelCard) -> tuple[Any, str]:
    end = card.data.get("window", {}).get("test_end")
    if data.times is not None and end:
        newer = np.flatnonzero(data.times > datetime.fromisoformat(end).timestamp())
        if newer.size >= 100:
            return newer, f"{newer.size} rows newer than its training data"
    test = split(data, int(card.params.get("seed", 7))).test
    return test, f"its held-out split ({test.size} of {len(data)} rows)"
