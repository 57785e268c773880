"""Training the send-time model from open and click events (see ``nextbest.models.send_time``).

The events are split by time: the first 60 % give each customer's counts and the population pattern,
the next 20 % choose the shrinkage strength and whether a customer's counts are pooled across the days
of the week (the pair that best predicts the hour of the customers' next engagements), and the last
20 % — with counts from everything before — measure it against the population pattern alone and a
uniform guess: log-likelihood per event and how often the hour of an engagement is among the customer's
three best predicted hours.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
from sqlalchemy import select

from nextbest.models.artifacts import ModelCard, ModelKind
from nextbest.models.send_time import HOURS_OF_WEEK, SendTimeModel
from nextbest.state import hour_of_week
from nextbest.store import Database
from nextbest.store.schema import events
from nextbest.training.fit import TrainedModel, libraries

__all__ = ["engagement_events", "train_send_time"]

STRENGTHS = np.logspace(-1, 3, 49)
FEATURES = [f"hour_of_week_{h}" for h in range(HOURS_OF_WEEK)]


def engagement_events(db: Database, as_of: datetime) -> list[tuple[str, datetime]]:
    query = (
        select(events.c.user_id, events.c.occurred_at)
        .where(events.c.type.in_(("opened", "clicked")), events.c.occurred_at <= as_of)
        .order_by(events.c.occurred_at, events.c.seq)
    )
    with db.reader.connect() as conn:
        return [(u, at) for u, at in conn.execute(query)]


def _counts(
    rows: Sequence[tuple[str, int]],
) -> tuple[dict[tuple[str, int], int], dict[str, int], npt.NDArray[np.float64]]:
    by_hour: dict[tuple[str, int], int] = {}
    by_user: dict[str, int] = {}
    population = np.zeros(HOURS_OF_WEEK)
    for user, hour in rows:
        by_hour[(user, hour)] = by_hour.get((user, hour), 0) + 1
        by_user[user] = by_user.get(user, 0) + 1
        population[hour] += 1
    return by_hour, by_user, population


def _log_likelihood(
    past: Sequence[tuple[str, int]],
    future: Sequence[tuple[str, int]],
    population: npt.NDArray[np.float64],
    day_pooling: bool = False,
) -> npt.NDArray[np.float64]:
    """Mean log-likelihood of ``future`` events' hours for each strength in ``STRENGTHS`` (with a
    customer's counts pooled across the days of the week when ``day_pooling``)."""
    by_hour, by_user, _ = _counts(past)
    if day_pooling:
        by_day_hour: dict[tuple[str, int], float] = {}
        for (user, hour), count in by_hour.items():
            by_day_hour[(user, hour % 24)] = by_day_hour.get((user, hour % 24), 0) + count / 7
        n_uh = np.array([by_day_hour.get((u, h % 24), 0.0) for u, h in future], dtype=np.float64)
    else:
        n_uh = np.array([by_hour.get(e, 0) for e in future], dtype=np.float64)
    n_u = np.array([by_user.get(u, 0) for u, _ in future], dtype=np.float64)
    p_h = population[[h for _, h in future]]
    k = STRENGTHS[None, :]
    ll = np.log((n_uh[:, None] + k * p_h[:, None]) / (n_u[:, None] + k))
    return np.asarray(ll.mean(axis=0), dtype=np.float64)


def _top3_hit_rate(
    past: Sequence[tuple[str, int]], future: Sequence[tuple[str, int]], model: SendTimeModel | None
) -> float:
    by_hour, _, _ = _counts(past)
    hours_of: dict[str, dict[int, int]] = {}
    for (user, hour), count in by_hour.items():
        hours_of.setdefault(user, {})[hour] = count
    best: dict[str, set[int]] = {}
    hits = 0
    for user, hour in future:
        if user not in best:
            probs = (
                model.timing(hours_of.get(user, {})).probs
                if model is not None
                else np.ones(HOURS_OF_WEEK) / HOURS_OF_WEEK
            )
            best[user] = set(np.argsort(-probs, kind="stable")[:3].tolist())
        hits += hour in best[user]
    return hits / len(future) if future else 0.0


# Pseudo-events of the hour-of-day pattern in the hour-of-week one: with little data the population
# pattern is the daily rhythm; with a lot, each day of the week its own.
DAILY_PRIOR = 2.0 * HOURS_OF_WEEK


def _population(rows: Sequence[tuple[str, int]]) -> npt.NDArray[np.float64]:
    """The population's hour-of-week pattern, shrunk to its hour-of-day pattern (itself smoothed by half
    an event per hour, so no hour has probability 0)."""
    weekly = _counts(rows)[2]
    daily = weekly.reshape(7, 24).sum(axis=0) + 0.5
    prior = np.tile(daily / daily.sum(), 7) / 7
    pattern = (weekly + DAILY_PRIOR * prior) / (weekly.sum() + DAILY_PRIOR)
    return np.asarray(pattern / pattern.sum(), dtype=np.float64)


def train_send_time(
    rows: Sequence[tuple[str, datetime]], source: dict[str, object], command: str = ""
) -> TrainedModel:
    if len(rows) < 200:
        raise ValueError(f"send-time: {len(rows)} opens and clicks is too few (need at least 200)")
    ordered = sorted(rows, key=lambda r: r[1])
    hours = [(u, hour_of_week(at)) for u, at in ordered]
    a, b = int(len(hours) * 0.6), int(len(hours) * 0.8)
    fit, valid, test = hours[:a], hours[a:b], hours[b:]
    valid_ll = {pool: _log_likelihood(fit, valid, _population(fit), pool) for pool in (False, True)}
    pooling = bool(valid_ll[True].max() > valid_ll[False].max())
    strength = float(STRENGTHS[int(np.argmax(valid_ll[pooling]))])
    # Final model: everything before the test period, then everything.
    before = hours[:b]
    population_before = _population(before)
    ll = _log_likelihood(before, test, population_before, pooling)
    chosen = int(np.argmin(np.abs(STRENGTHS - strength)))
    # The population alone is the limit of an infinite strength.
    ll_population = float(np.mean(np.log(population_before[[h for _, h in test]])))
    evaluated = SendTimeModel(population_before, strength, pooling)
    population_only = SendTimeModel(population_before, 1e12)
    metrics = {
        "test": {
            "events": len(test),
            "customers": len({u for u, _ in test}),
            "log_likelihood_per_event": {
                "personal": float(ll[chosen]),
                "population": ll_population,
                "uniform": float(np.log(1 / HOURS_OF_WEEK)),
            },
            "top3_hour_hit_rate": {
                "personal": _top3_hit_rate(before, test, evaluated),
                "population": _top3_hit_rate(before, test, population_only),
                "uniform": 3 / HOURS_OF_WEEK,
            },
        }
    }
    final = SendTimeModel(_population(hours), strength, pooling)
    blob = json.dumps(
        {"population": final.population.tolist(), "strength": strength, "day_pooling": pooling}
    ).encode()

    def stamp(i: int) -> str:
        return ordered[i][1].astimezone(UTC).isoformat()

    card = ModelCard(
        kind=ModelKind.SEND_TIME,
        version="pending",
        feature_set="engagement-hours-utc",
        features=FEATURES,
        files={"model": "send_time.json"},
        sha256={},
        outcome="open or click",
        data={
            **source,
            "split": "time (60 % counts, 20 % choose strength, 20 % test)",
            "rows": {"fit": len(fit), "valid": len(valid), "test": len(test)},
            "window": {"start": stamp(0), "test_start": stamp(b), "end": stamp(len(ordered) - 1)},
        },
        params={
            "strength": strength,
            "strengths_searched": [float(STRENGTHS[0]), float(STRENGTHS[-1])],
            "day_pooling": pooling,
            "validation_log_likelihood": {
                "hour_of_week": float(valid_ll[False].max()),
                "day_pooled": float(valid_ll[True].max()),
            },
        },
        metrics=metrics,
        libraries=libraries(),
        command=command,
    )
    return TrainedModel(card, {"send_time.json": blob}, {})
