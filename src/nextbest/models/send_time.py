"""Send time: the probability that a customer engages in each hour of the week.

The model is empirical Bayes over a Dirichlet-multinomial: the population's pattern ``p`` (168 hours of the
week, UTC) is the prior, worth ``strength`` pseudo-events; a customer with counts ``n_h`` (opens and
clicks in hour ``h``, kept in customer state) gets ``(n_h + strength * p_h) / (n + strength)``. A customer
with no history gets the population pattern; one with a long history gets their own. With
``day_pooling`` a customer's count in an hour counts a seventh on each day of the week at that hour (a
reading habit is daily, and a send window rarely holds the weekday of one of a customer's few opens).
Training fits ``p``, ``strength`` and ``day_pooling`` (see ``nextbest.training.send_time``). Scoring is
one vector operation per decision.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt

from nextbest.domain import SendTimeSource

__all__ = ["HOURS_OF_WEEK", "SendTimeModel", "Timing"]

HOURS_OF_WEEK = 168
_HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class SendTimeModel:
    population: npt.NDArray[np.float64]  # sums to 1
    strength: float
    day_pooling: bool = False
    _prior: npt.NDArray[np.float64] = field(init=False, repr=False, compare=False)  # the pseudo-counts

    def __post_init__(self) -> None:
        if self.population.shape != (HOURS_OF_WEEK,) or not np.all(np.isfinite(self.population)):
            raise ValueError(f"the population pattern must be {HOURS_OF_WEEK} finite numbers")
        if np.any(self.population < 0) or not np.isclose(self.population.sum(), 1.0):
            raise ValueError("the population pattern must be a probability distribution")
        if not (self.strength > 0 and np.isfinite(self.strength)):
            raise ValueError("strength must be a positive number")
        object.__setattr__(self, "_prior", self.strength * self.population)

    def timing(self, hours: Mapping[int, int]) -> Timing:
        """The customer's engagement probabilities by hour of the week."""
        if not hours:
            return Timing(self.population, SendTimeSource.POPULATION)
        counts = np.zeros(HOURS_OF_WEEK)
        for hour, count in hours.items():
            if 0 <= hour < HOURS_OF_WEEK:
                counts[hour] += count
        if self.day_pooling:
            counts = np.tile(counts.reshape(7, 24).sum(axis=0) / 7, 7)
        total = counts.sum()
        probs = (counts + self._prior) / (total + self.strength)
        return Timing(probs, SendTimeSource.PERSONAL)


@dataclass(frozen=True)
class Timing:
    probs: npt.NDArray[np.float64]
    source: SendTimeSource

    def slots(self, earliest: datetime, window: timedelta) -> Iterator[datetime]:
        """Send times inside ``[earliest, earliest + window]``, best first: ``earliest`` itself and the
        start of each later hour (at most a week of them), ordered by the probability of their hour of
        the week (earlier first on a tie). Lazily: the caller usually takes the first."""
        start = earliest.astimezone(UTC)
        top = start.replace(minute=0, second=0, microsecond=0)
        later = max(0, min(HOURS_OF_WEEK, (start + window - top) // _HOUR))
        # Slot k is ``start`` for k = 0, else ``top`` + k hours; its hour of the week follows top's.
        first = top.weekday() * 24 + top.hour
        hours = (first + np.arange(later + 1)) % HOURS_OF_WEEK
        for k in np.argsort(-self.probs[hours], kind="stable").tolist():
            yield start if k == 0 else top + k * _HOUR
