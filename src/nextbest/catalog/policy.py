"""The compiled contact policy of a catalog (see ``policy:`` in the catalog format). The checks that
apply it are in ``nextbest.decision.contact``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from types import MappingProxyType
from zoneinfo import ZoneInfo

from nextbest.domain import ActionClass, Channel

__all__ = ["Cap", "ContactPolicy", "Engagement", "QuietHours"]


@dataclass(frozen=True, slots=True)
class Cap:
    """At most ``limit`` sends in any rolling ``window`` among actions of ``classes`` on ``channels``
    (every channel when empty). Transactional actions are never capped."""

    id: str
    limit: int
    window: timedelta
    classes: frozenset[ActionClass]
    channels: frozenset[Channel] = frozenset()

    def applies(self, action_class: ActionClass, channel: Channel) -> bool:
        return (
            action_class is not ActionClass.TRANSACTIONAL
            and action_class in self.classes
            and (not self.channels or channel in self.channels)
        )

    def describe(self) -> str:
        what = "/".join(sorted(c.value for c in self.classes))
        on = f" {'/'.join(sorted(c.value for c in self.channels))}" if self.channels else ""
        return f"{what}{on} cap {self.limit}/{_duration(self.window)}"


@dataclass(frozen=True, slots=True)
class QuietHours:
    """No send from ``start`` to ``end`` local time (the interval may cross midnight)."""

    start: time
    end: time
    classes: frozenset[ActionClass]

    def applies(self, action_class: ActionClass) -> bool:
        return action_class in self.classes

    def end_of_quiet(self, local: datetime) -> datetime | None:
        """When the quiet period containing ``local`` ends, or None when ``local`` is not in one."""
        t = local.timetz().replace(tzinfo=None)
        if self.start == self.end:
            return None
        if self.start < self.end:
            inside = self.start <= t < self.end
            day = local.date()
        else:  # crosses midnight: [start, 24:00) and [00:00, end)
            inside = t >= self.start or t < self.end
            day = local.date() + timedelta(days=1) if t >= self.start else local.date()
        if not inside:
            return None
        naive = datetime.combine(day, self.end)
        zone = local.tzinfo
        return naive.replace(tzinfo=zone)

    def describe(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


@dataclass(frozen=True, slots=True)
class Engagement:
    window: timedelta
    classes: frozenset[ActionClass]


@dataclass(frozen=True)
class ContactPolicy:
    time_zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    caps: tuple[Cap, ...] = ()
    quiet_hours: Mapping[Channel, QuietHours] = field(default_factory=lambda: MappingProxyType({}))
    engagement: Engagement | None = None


def _duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
