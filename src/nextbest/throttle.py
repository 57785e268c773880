"""Client-side adaptive throttling, as Google's SRE book describes it ("Handling Overload"): a caller that
sees the server refuse work starts refusing some of its own calls locally, before they cost the server
anything.

Over the last ``window`` seconds the throttle counts ``requests`` (every call the application attempted,
those it refused itself included) and ``accepts`` (calls the server did not refuse as overloaded). While
``requests`` stays under ``k * accepts`` nothing is refused; beyond, a new call is refused locally with
probability ``(requests - k * accepts) / (requests + 1)``. With ``k = 2`` (the book's choice) callers send
at most about twice what the server accepts; a smaller ``k`` sheds more of the excess at the callers, at
the price of reacting later when the server recovers. A refusal by the server is a call answered
``RESOURCE_EXHAUSTED``; every other answer, errors included, counts as accepted.

Python's gRPC server spends about a fifth of a decision's CPU refusing a call it has no room for, so at
twice its capacity refusals alone take a third of its CPU; callers that throttle themselves keep that
CPU for decisions (figures in ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable

import grpc

__all__ = ["AdaptiveThrottle", "ThrottledError"]


class ThrottledError(grpc.RpcError):
    """A call the client refused itself, without sending it: read like the server's own refusal
    (``code()`` is ``RESOURCE_EXHAUSTED``). Nothing was sent, so nothing was done; retry after a backoff."""

    def __init__(self, probability: float) -> None:
        super().__init__()
        self.probability = probability

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.RESOURCE_EXHAUSTED

    def details(self) -> str:
        return (
            f"throttled by the client: the server refused much of the recent load, so this client refuses "
            f"{self.probability:.0%} of its calls itself; nothing was sent, retry after a backoff"
        )

    def __str__(self) -> str:
        return self.details()


class AdaptiveThrottle:
    """Thread-safe; one per client (per server it calls). ``rng`` and ``clock`` are for tests."""

    def __init__(
        self,
        k: float = 2.0,
        window: float = 120.0,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (math.isfinite(k) and k >= 1.0):
            raise ValueError("k must be a finite number >= 1 (k = 1 sheds everything the server refused)")
        if not (math.isfinite(window) and window > 0):
            raise ValueError("window must be a positive number of seconds")
        self.k = k
        self.window = window
        self._rng = rng or random.Random()
        self._clock = clock
        self._lock = threading.Lock()
        # One bucket a second: [second, requests, accepts]; totals kept alongside.
        self._buckets: deque[list[int]] = deque()
        self._requests = 0
        self._accepts = 0

    def _expire(self, now: float) -> int:
        second = int(now)
        oldest = second - math.ceil(self.window) + 1
        while self._buckets and self._buckets[0][0] < oldest:
            _, requests, accepts = self._buckets.popleft()
            self._requests -= requests
            self._accepts -= accepts
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append([second, 0, 0])
        return second

    def probability(self) -> float:
        """The chance that the next call is refused locally, as things stand."""
        with self._lock:
            self._expire(self._clock())
            return max(0.0, (self._requests - self.k * self._accepts) / (self._requests + 1))

    def admit(self) -> None:
        """Counts a call the application attempts; raises :class:`ThrottledError` when the throttle
        refuses it (then it must not be sent)."""
        with self._lock:
            self._expire(self._clock())
            refuse = max(0.0, (self._requests - self.k * self._accepts) / (self._requests + 1))
            self._requests += 1
            self._buckets[-1][1] += 1
            if refuse > 0.0 and self._rng.random() < refuse:
                raise ThrottledError(refuse)

    def record(self, accepted: bool) -> None:
        """What became of a call :meth:`admit` let through: ``accepted`` unless the server refused it as
        overloaded (``RESOURCE_EXHAUSTED``)."""
        if not accepted:
            return
        with self._lock:
            self._expire(self._clock())
            self._accepts += 1
            self._buckets[-1][2] += 1

    def record_error(self, error: BaseException) -> None:
        """:meth:`record` for a call that raised ``error``."""
        code = error.code() if isinstance(error, grpc.Call) else None
        self.record(code != grpc.StatusCode.RESOURCE_EXHAUSTED)
