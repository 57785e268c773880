"""The send-time model's slots, lazily ordered with numpy, against their definition (sort every send time
of the window by its hour's probability, earlier first on a tie) and its profile against the formula."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nextbest.domain import SendTimeSource
from nextbest.models.send_time import HOURS_OF_WEEK, SendTimeModel, Timing
from nextbest.training.send_time import train_send_time


def _definition(probs: np.ndarray, earliest: datetime, window: timedelta) -> list[datetime]:
    start = earliest.astimezone(UTC)
    top = start.replace(minute=0, second=0, microsecond=0)
    times = [start]
    t = top + timedelta(hours=1)
    while t <= start + window and len(times) <= HOURS_OF_WEEK:
        times.append(t)
        t += timedelta(hours=1)
    return sorted(times, key=lambda t: (-probs[t.weekday() * 24 + t.hour], t))


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    ties=st.booleans(),
    seconds=st.integers(0, 86400 * 14),
    window=st.integers(-120, 60 * 24 * 9),
    offset=st.integers(-12, 14),
)
def test_slots_follow_their_definition(seed: int, ties: bool, seconds: int, window: int, offset: int) -> None:
    rng = np.random.default_rng(seed)
    # With ties, many hours share a probability: the order among them is by time.
    probs = rng.integers(0, 3, HOURS_OF_WEEK).astype(float) if ties else rng.random(HOURS_OF_WEEK)
    zone = timezone(timedelta(hours=offset))
    earliest = datetime(2026, 11, 23, tzinfo=zone) + timedelta(seconds=seconds)
    span = timedelta(minutes=window)
    got = list(Timing(probs, SendTimeSource.PERSONAL).slots(earliest, span))
    assert got == _definition(probs, earliest, span)


def test_a_profile_is_the_customers_counts_shrunk_to_the_population() -> None:
    population = np.random.default_rng(1).dirichlet(np.ones(HOURS_OF_WEEK))
    model = SendTimeModel(population, 12.5)
    hours = {3: 2, 40: 5, 167: 1, 200: 9}  # an hour outside the week is ignored
    counts = np.zeros(HOURS_OF_WEEK)
    counts[[3, 40, 167]] = [2, 5, 1]
    timing = model.timing(hours)
    assert timing.source is SendTimeSource.PERSONAL
    np.testing.assert_array_equal(timing.probs, (counts + 12.5 * population) / (8 + 12.5))
    assert model.timing({}).probs is population


def test_day_pooling_counts_a_customers_hour_on_every_weekday() -> None:
    """Three opens on Mondays at 19:00 UTC: without pooling only Monday 19:00 rises above the population;
    pooled, 19:00 on every day does (a seventh each), and the profile still sums to 1."""
    population = np.full(HOURS_OF_WEEK, 1 / HOURS_OF_WEEK)
    monday_19, wednesday_19 = 19, 2 * 24 + 19
    plain = SendTimeModel(population, 5.0).timing({monday_19: 3}).probs
    pooled = SendTimeModel(population, 5.0, day_pooling=True).timing({monday_19: 3}).probs
    assert plain[wednesday_19] == pytest.approx(population[wednesday_19] * 5 / 8)
    assert pooled[wednesday_19] == pytest.approx((3 / 7 + 5 / HOURS_OF_WEEK) / 8)
    assert pooled[monday_19] == pooled[wednesday_19] < plain[monday_19]
    assert int(np.argmax(pooled)) == monday_19  # the earliest of the tied hours
    assert pooled.sum() == pytest.approx(1.0) and plain.sum() == pytest.approx(1.0)


def test_training_pools_the_days_when_customers_read_at_one_hour_of_the_day() -> None:
    """Customers who each read at their own hour of the day, on any weekday: pooling predicts their next
    hour better on the validation period, so training chooses it and the served model pools."""
    rng = np.random.default_rng(7)
    start = datetime(2026, 10, 5, tzinfo=UTC)
    rows = []
    for user in range(300):
        hour = int(rng.integers(0, 24))
        for day in sorted(rng.choice(56, size=6, replace=False)):
            rows.append((f"u{user}", start + timedelta(days=int(day), hours=hour, minutes=10)))
    trained = train_send_time(rows, {"store": "test"})
    assert trained.card.params["day_pooling"] is True
    spec = json.loads(trained.files["send_time.json"])
    assert spec["day_pooling"] is True
    ll = trained.card.params["validation_log_likelihood"]
    assert ll["day_pooled"] > ll["hour_of_week"]
