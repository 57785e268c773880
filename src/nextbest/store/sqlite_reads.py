"""SQLite's hot-path read of a decision: the contact history decoded straight into ``PastExposure``.

A decision reads its customer's row and contact history (``CustomerLog.load_snapshot``). On SQLite, in
process, the two queries cost ~28 µs of CPU and their decoding through ``PreparedSelect`` (SQLAlchemy's
result processors, a tuple per row, then ``codec.past_exposure``) about as much again per history of five
rows, and a history grows by a row per action chosen. Here each history row becomes its ``PastExposure``
in one step: the times as SQLAlchemy reads them on SQLite (``datetime.fromisoformat``, what its DATETIME
type calls) made UTC as ``schema.UTCDateTime`` makes them, the enums by a dictionary look-up. Tested equal
to the generic decoding (``tests/store/test_sqlite_reads.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from nextbest.domain import ActionClass, Channel
from nextbest.state import PastExposure

__all__ = ["past_exposures", "utc_time"]

_CHANNELS = {member.value: member for member in Channel}
_CLASSES = {member.value: member for member in ActionClass}
_fromisoformat = datetime.fromisoformat


def utc_time(text: str) -> datetime:
    """A time column's text as ``UTCDateTime`` returns it on SQLite: aware, in UTC."""
    moment = _fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def past_exposures(rows: Iterable[tuple[Any, ...]]) -> tuple[PastExposure, ...]:
    """The raw rows of the history query (``codec.PAST_EXPOSURE_COLUMNS``, in order) as the snapshot's
    history, as ``codec.past_exposure`` of SQLAlchemy's decoded rows would give it."""
    channels, classes, time = _CHANNELS, _CLASSES, utc_time
    out = []
    for decision_id, action_id, flow, channel, cls, trigger, at, send_at, exposure_id, cancelled_at in rows:
        out.append(
            PastExposure(
                decision_id,
                action_id,
                flow,
                channels.get(channel) or Channel(channel),  # an unknown value raises as Channel() does
                classes.get(cls) or ActionClass(cls),
                trigger,
                time(at),
                time(send_at),
                exposure_id,
                cancelled_at is not None,
            )
        )
    return tuple(out)
