"""The exported tables: which store tables, in which Arrow types, partitioned by which day and exported
after which watermark. Derived from :mod:`nextbest.store.schema`, so a column added or changed there
changes the export (and fails ``tests/warehouse/test_schema.py`` until ``schema.json`` says so)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    Select,
    String,
    Table,
    func,
    select,
)
from sqlalchemy.sql import FromClause

from nextbest.models.features import LOGGED
from nextbest.reports.aggregate import ReportSource
from nextbest.store.schema import (
    UTCDateTime,
    assignments,
    decisions,
    erasures,
    events,
    experiment_units,
    exposures,
)

__all__ = [
    "EXPORTED",
    "EXPORT_SOURCE",
    "ExportedTable",
    "arrow_schema",
    "assignment_sends",
    "schema_document",
    "unit_events",
    "unit_events_of",
]

# A table of the export alone (the store has no such table): per experiment, arm, action and UTC day of
# ``occurred_at``, the assignments not held out (the sends the cost per arm counts). Written by the same
# run, from the same rows, as the assignments, so that it always counts exactly the exported assignments.
assignment_sends = Table(
    "assignment_sends",
    MetaData(),
    Column("experiment_id", String(128), nullable=False),
    Column("arm_id", String(128), nullable=False),
    Column("action_id", String(128), nullable=False),
    Column("day_start", UTCDateTime(), nullable=False),
    Column("sends", BigInteger, nullable=False),
)

# A table of the export alone: each experiment unit (``experiment_units``) with each of its events, of any
# type and time (``events`` joined by customer). Rewritten by every run that exports new events or new
# units' first exposures, from the units and events that run leaves exported, so that it always holds
# exactly their join: a report over the export reads its per-unit sums from it instead of joining them.
unit_events = Table(
    "unit_events",
    MetaData(),
    Column("experiment_id", experiment_units.c.experiment_id.type, nullable=False),
    Column("user_id", experiment_units.c.user_id.type, nullable=False),
    # The unit's number in its experiment (1, 2, ... in user_id order), renumbered by each rewrite: a
    # report groups each unit's events by it (an integer) instead of by user_id.
    Column("unit", BigInteger, nullable=False),
    Column("arm_id", experiment_units.c.arm_id.type, nullable=False),
    Column("first_at", UTCDateTime(), nullable=False),
    Column("mixed_at", UTCDateTime()),
    Column("type", events.c.type.type, nullable=False),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("value", Float, nullable=False),
)


def unit_events_of(units: FromClause, events_: FromClause) -> Select[Any]:
    """``unit_events``'s rows from relations with the columns of ``experiment_units`` and ``events``:
    each unit with each of its events (the one definition: the export writes it, an engine over an export
    made before it existed reads it as a view)."""
    u, e = units.c, events_.c
    unit = func.dense_rank().over(partition_by=u.experiment_id, order_by=u.user_id)
    return select(
        u.experiment_id,
        u.user_id,
        unit.label("unit"),
        u.arm_id,
        u.first_at,
        u.mixed_at,
        e.type,
        e.occurred_at,
        e.value,
    ).select_from(units.join(events_, e.user_id == u.user_id))


@dataclass(frozen=True, slots=True)
class ExportedTable:
    """A store table as exported. ``order`` is the watermark column: an id the store assigns in commit
    order (``seq``-like), or for decisions, which have none, the server's decision time (exported only
    once it is older than the settle time). ``day`` is the time column of the ``day=`` partition;
    ``None`` means a small table written whole each run."""

    table: Table
    order: str | None
    day: str | None
    description: str
    # A table computed by the export from another exported table's rows, in the same run (its name).
    derived_from: str | None = None

    @property
    def name(self) -> str:
        return str(self.table.name)


EXPORTED: tuple[ExportedTable, ...] = (
    ExportedTable(
        decisions,
        "decided_at",
        "occurred_at",
        "one row per NextAction decision; payload is the whole answer as JSON text",
    ),
    ExportedTable(
        exposures,
        "exposure_id",
        "occurred_at",
        "one row per action chosen for a customer (the contact history); features: the scoring features",
    ),
    ExportedTable(
        assignments,
        "assignment_id",
        "occurred_at",
        "experiment exposures: one row per decision, experiment and in-scope action, held-out units "
        "included with the action they would have received; probability: of the arm served",
    ),
    ExportedTable(
        assignment_sends,
        None,
        "day_start",
        "per experiment, arm, action and UTC day (day_start, its midnight), the assignments not held out "
        "(sends), counted from the assignments each run exports, a file per day and run (add them up); "
        "the cost per arm of a report reads these instead of every exposure",
        derived_from="assignments",
    ),
    ExportedTable(
        experiment_units,
        None,
        None,
        "each experiment unit's first exposure (arm_id and first_at of its first assignment; mixed_at: "
        "first seen in another arm); rewritten whole by each export that exports new assignments",
    ),
    ExportedTable(
        events,
        "seq",
        "occurred_at",
        "customer events (orders with revenue, refunds, views, ...); details as JSON text",
    ),
    ExportedTable(
        unit_events,
        None,
        None,
        "each experiment unit of experiment_units (its arm_id, first_at, mixed_at) with each of its "
        "events (type, occurred_at, value): the two tables as exported, joined by user_id; unit numbers "
        "the units of an experiment 1, 2, ... in user_id order; rewritten whole by each export that "
        "exports new assignments or events; a report reads its per-unit sums from it",
        derived_from="experiment_units and events",
    ),
    ExportedTable(
        erasures,
        None,
        None,
        "units erased from each experiment (counts, no customer ids); rewritten whole by each export",
    ),
)


def _arrow_type(column: Column[Any]) -> pa.DataType:
    kind = column.type
    if column.name == "features" and isinstance(kind, LargeBinary):
        return pa.list_(pa.float64())  # decoded: float64 in the order of nextbest.models.features.LOGGED
    if isinstance(kind, UTCDateTime):
        return pa.timestamp("us", tz="UTC")
    if isinstance(kind, Boolean):
        return pa.bool_()
    if isinstance(kind, Integer):  # BigInteger too
        return pa.int64()
    if isinstance(kind, Float):
        return pa.float64()
    if isinstance(kind, JSON):
        return pa.string()  # JSON text
    if isinstance(kind, String):
        return pa.string()
    if isinstance(kind, LargeBinary):
        return pa.binary()
    raise TypeError(f"no Arrow type for {column.table.name}.{column.name} ({kind!r}); add one to the export")


def arrow_schema(exported: ExportedTable) -> pa.Schema:
    """The Parquet schema of an exported table: every store column, in order, nullable as in the store."""
    return pa.schema(
        [pa.field(c.name, _arrow_type(c), nullable=bool(c.nullable)) for c in exported.table.columns]
    )


def schema_document() -> dict[str, Any]:
    """The export's schema as data (written to ``DIR/_schema.json`` and kept in ``schema.json``)."""
    return {
        "format": "parquet, hive-partitioned by day=YYYY-MM-DD (UTC) of the day column",
        "features": list(LOGGED),
        "tables": {
            str(t.name): {
                "description": t.description,
                "partition": f"day of {t.day}" if t.day else "none (rewritten whole)",
                "watermark": t.order if t.derived_from is None else f"that of {t.derived_from}",
                "columns": {
                    str(f.name): str(f.type) + ("" if f.nullable else " not null") for f in arrow_schema(t)
                },
            }
            for t in EXPORTED
        },
    }


# What a report reads on an engine over the export: the store's tables under their names, each unit's
# first exposure from ``experiment_units``, each unit's events from ``unit_events`` and the cost per arm
# from ``assignment_sends``.
EXPORT_SOURCE = ReportSource(units=experiment_units, sends=assignment_sends, unit_events=unit_events)
