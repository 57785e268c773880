"""The checks themselves, as pure functions over times: exact rolling-window caps and quiet hours."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from nextbest.policy.model import Cap, QuietHours

__all__ = ["CapViolation", "cap_violation", "defer_for_quiet_hours", "fits_cap"]


@dataclass(frozen=True, slots=True)
class CapViolation:
    cap: Cap
    count: int  # sends already in the fullest window that the new send would join
    since: datetime  # the first of them

    def detail(self) -> str:
        return (
            f"{self.cap.describe()} reached: {self.count} send{'s' if self.count != 1 else ''} "
            f"since {self.since:%Y-%m-%d %H:%M}Z"
        )


def cap_violation(sends: Iterable[datetime], at: datetime, cap: Cap) -> CapViolation | None:
    """Whether a send at ``at`` would put more than ``cap.limit`` sends in some window ``[a, a + W)``.

    Exact, not a fixed calendar bucket: only windows containing ``at`` change, and the fullest of them
    starts at ``at`` or at one of the existing sends in ``(at - W, at]``."""
    w = cap.window
    near = sorted(s for s in sends if at - w < s < at + w)
    if len(near) < cap.limit:
        return None
    for start in [s for s in near if s <= at] + [at]:
        inside = [s for s in near if start <= s < start + w]
        if len(inside) + 1 > cap.limit:
            return CapViolation(cap, len(inside), inside[0])
    return None


def fits_cap(sends: Iterable[datetime], at: datetime, cap: Cap) -> bool:
    return cap_violation(sends, at, cap) is None


def defer_for_quiet_hours(
    at: datetime, quiet: QuietHours, zone: ZoneInfo, send_window: timedelta
) -> tuple[datetime | None, datetime | None]:
    """``(send_at, quiet_end)``: ``at`` itself when outside quiet hours; the end of the quiet period
    when that is within ``send_window`` of ``at``; ``(None, quiet_end)`` when the action cannot wait."""
    end = quiet.end_of_quiet(at.astimezone(zone))
    if end is None:
        return at, None
    end_utc = end.astimezone(at.tzinfo)
    if end_utc - at <= send_window:
        return end_utc, end_utc
    return None, end_utc
