"""The exported tables: which store tables, in which Arrow types, partitioned by which day and exported
after which watermark. Derived from :mod:`nextbest.store.schema`, so a column added or changed there
changes the export (and fails ``tests/warehouse/test_schema.py`` until ``schema.json`` says so)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from sqlalchemy import JSON, Boolean, Column, Float, Integer, LargeBinary, String, Table

from nextbest.models.features import LOGGED
from nextbest.store.schema import (
    UTCDateTime,
    assignments,
    decisions,
    erasures,
    events,
    experiment_units,
    exposures,
)

__all__ = ["EXPORTED", "ExportedTable", "arrow_schema", "schema_document"]


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
                "watermark": t.order,
                "columns": {
                    str(f.name): str(f.type) + ("" if f.nullable else " not null") for f in arrow_schema(t)
                },
            }
            for t in EXPORTED
        },
    }
