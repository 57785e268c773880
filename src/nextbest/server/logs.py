"""The server's log: nothing a caller sent, and no flood a caller can trigger.

- Exception messages are withheld from tracebacks: a driver error quotes the SQL parameters (customer
  ids), a parse error the caller's text. The frames and the exception types stay, enough to find the
  line; the message is one ``repr``-free marker.
- Every line is rate-limited by where it comes from (logger and message template): at most ``burst`` in
  ``period`` seconds, then one line says how many were dropped. A caller who can make the server log a
  warning per call cannot fill the disk or bury other lines.

Log calls themselves never pass a raw customer id, token or context value (STYLE, Logging).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from types import TracebackType
from typing import Any

__all__ = ["RateLimit", "SafeFormatter", "configure_logging"]

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
WITHHELD = "(message withheld from the log)"

_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


class SafeFormatter(logging.Formatter):
    """Formats tracebacks with each exception's type and frames but without its message."""

    def formatException(self, ei: _ExcInfo) -> str:  # noqa: N802 - logging's name
        _type, exc, _tb = ei
        if exc is None:
            return ""
        lines: list[str] = []
        seen: set[int] = set()
        chain: list[BaseException] = []
        while exc is not None and id(exc) not in seen:
            seen.add(id(exc))
            chain.append(exc)
            exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        for index, item in enumerate(reversed(chain)):
            if index:
                lines.append("\nThe above exception led to the following one:\n\n")
            lines.append("Traceback (most recent call last):\n")
            lines.extend(traceback.format_tb(item.__traceback__))
            kind = type(item)
            lines.append(f"{kind.__module__}.{kind.__qualname__}: {WITHHELD}\n")
        return "".join(lines).rstrip("\n")


class RateLimit(logging.Filter):
    """At most ``burst`` records per (logger, template) in ``period`` seconds; the first record after a
    suppressed spell carries the count of those dropped. Other libraries' lines below WARNING (the
    migrations at start) are not limited: no caller triggers them."""

    def __init__(self, burst: int = 10, period: float = 60.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.burst = burst
        self.period = period
        self._clock = clock
        self._lock = threading.Lock()
        # key -> [window start, records let through in it, records dropped]
        self._windows: dict[tuple[str, str], list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING and not record.name.startswith("nextbest"):
            return True
        key = (record.name, str(record.msg))
        now = self._clock()
        with self._lock:
            window = self._windows.get(key)
            if window is None or now - window[0] >= self.period:
                dropped = int(window[2]) if window is not None else 0
                self._windows[key] = [now, 1.0, 0.0]
                if len(self._windows) > 10_000:  # templates are few; this bounds a pathological caller
                    self._windows = {key: self._windows[key]}
                if dropped:
                    record.msg = (
                        f"{record.msg} [{dropped} similar line(s) dropped in the last {self.period:g} s]"
                    )
                return True
            if window[1] < self.burst:
                window[1] += 1
                return True
            window[2] += 1
            return False


class _Stderr(logging.StreamHandler[Any]):
    """Writes to ``sys.stderr`` as it is when a record is logged, not as it was when logging was set up:
    a caller that swaps standard error (a test capturing it, then closing the capture) never leaves the
    root handler writing to a closed stream ("--- Logging error ---" on every later record)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging(level: str | int, burst: int = 10, period: float = 60.0) -> None:
    """The root handler on standard error with :class:`SafeFormatter` and :class:`RateLimit`."""
    handler = _Stderr()
    handler.setFormatter(SafeFormatter(FORMAT))
    handler.addFilter(RateLimit(burst, period))
    logging.basicConfig(level=level, handlers=[handler], force=True)
