"""Deadlines: how long a step takes now, and whether a caller's deadline leaves time for it.

The engine keeps two estimates (a whole decision, and its write with the queueing for the group commit);
the group commit keeps a third, of one transaction alone, and checks each member's deadline again when
its turn to be written comes (``nextbest.store.writer``): a call that waited in the queue behind other
commits longer than the engine's estimate foresaw is not written after its caller gave up.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from nextbest.errors import DeadlineExceededError

__all__ = ["Duration"]


class Duration:
    """How long a step takes now: a moving mean plus three mean deviations, updated after every run.
    The engine keeps two: a whole decision (reading the customer to the commit) and its write (queueing
    for the group commit included). A call with less time left before its deadline than a decision takes
    is not started (its work would be wasted on a caller who gives up), and one with less left than a
    write takes is not written (it would most likely commit after its caller gave up)."""

    _WEIGHT = 0.1
    # Without new runs the estimate halves every second: the calls it refuses run nothing, so they cannot
    # correct it, and one slow spell (a frozen database) must not refuse every call after it is over.
    _HALF_LIFE = 1.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._mean = 0.0
        self._deviation = 0.0
        self._clock = clock
        self._updated = clock()

    def estimate(self) -> float:
        return (self._mean + 3 * self._deviation) * self._decay(self._clock())

    def observe(self, seconds: float) -> None:
        # Unlocked on purpose: a lost update among concurrent writers only blurs a moving estimate.
        now = self._clock()
        idle = now - self._updated  # ``_decay``, inlined: twice per decision
        decay = 0.5 ** (idle / self._HALF_LIFE) if idle > 0 else 1.0
        mean, deviation = self._mean * decay, self._deviation * decay
        self._deviation = deviation + self._WEIGHT * (abs(seconds - mean) - deviation)
        self._mean = mean + self._WEIGHT * (seconds - mean)
        self._updated = now

    def _decay(self, now: float) -> float:
        idle = now - self._updated
        return 0.5 ** (idle / self._HALF_LIFE) if idle > 0 else 1.0

    @staticmethod
    def check(deadline: float | None, stage: str, needed: float) -> None:
        if deadline is None:
            return
        left = deadline - time.monotonic()
        if left <= needed:
            raise DeadlineExceededError(
                f"the caller's deadline leaves {max(left, 0.0) * 1000:.0f} ms {stage}, "
                f"which takes ~{needed * 1000:.0f} ms now; nothing was written"
            )
