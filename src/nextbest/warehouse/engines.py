"""Analytical engines over the Parquet export (or a DuckDB file): each exported table becomes a view
named as the store's table, with the store's columns, so the report's one query
(:func:`nextbest.reports.report_query`) runs on it unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
from sqlalchemy import Connection, create_engine, func, select
from sqlalchemy.pool import StaticPool

from nextbest.errors import NextbestError
from nextbest.reports.engines import SOURCE_INFO, SparkDialect, SparkRunner
from nextbest.store.schema import assignments, events, experiment_units
from nextbest.store.units import units_from
from nextbest.warehouse.exporter import SENDS, STATE, UNIT_EVENTS
from nextbest.warehouse.tables import (
    EXPORT_SOURCE,
    EXPORTED,
    ExportedTable,
    arrow_schema,
    assignment_sends,
    unit_events,
    unit_events_of,
)

__all__ = ["SourceError", "duckdb_connection", "spark_runner", "spark_session"]


class SourceError(NextbestError):
    status = "INVALID_ARGUMENT"


def _duckdb_type(kind: pa.DataType) -> str:
    if pa.types.is_timestamp(kind):
        return "TIMESTAMPTZ"
    if pa.types.is_list(kind):
        return f"{_duckdb_type(kind.value_type)}[]"
    names = {pa.string(): "VARCHAR", pa.float64(): "DOUBLE", pa.int64(): "BIGINT", pa.bool_(): "BOOLEAN"}
    return names.get(kind, "BLOB")


def _spark_type(kind: pa.DataType) -> str:
    if pa.types.is_timestamp(kind):
        return "TIMESTAMP"
    if pa.types.is_list(kind):
        return f"ARRAY<{_spark_type(kind.value_type)}>"
    names = {pa.string(): "STRING", pa.float64(): "DOUBLE", pa.int64(): "BIGINT", pa.bool_(): "BOOLEAN"}
    return names.get(kind, "BINARY")


def _files(directory: Path, table: ExportedTable) -> str | None:
    """The glob of the table's visible Parquet files, or None when it has none yet."""
    pattern = "day=*/*.parquet" if table.day else "*.parquet"
    if not any((directory / table.name).glob(pattern)):
        return None
    return str(directory / table.name / pattern)


def _check_export(directory: Path) -> None:
    if not directory.is_dir():
        raise SourceError(f"--source {directory}: no such directory (make one with `nextbest export --to`)")
    if not (directory / STATE).exists():
        raise SourceError(f"--source {directory}: not a nextbest export (no {STATE}); see `nextbest export`")


@contextmanager
def duckdb_connection(source: Path | None = None, *, threads: int | None = None) -> Iterator[Connection]:
    """A SQLAlchemy connection (``duckdb-engine``) to an in-memory DuckDB with the export under
    ``source`` as views, or to the DuckDB file ``source`` (its own tables), or to an empty in-memory
    DuckDB when ``source`` is None."""
    path = ":memory:"
    if source is not None and source.suffix == ".duckdb":
        if not source.is_file():
            raise SourceError(f"--source {source}: no such DuckDB file")
        path = str(source)
    elif source is not None:
        _check_export(source)
    engine = create_engine(f"duckdb:///{path}", poolclass=StaticPool)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SET TimeZone = 'UTC'")
            if threads:
                conn.exec_driver_sql(f"SET threads = {int(threads)}")
            if source is not None and path == ":memory:":
                for table in EXPORTED:
                    conn.exec_driver_sql(_duckdb_view(source, table, conn.dialect))
            elif path != ":memory:":
                # A DuckDB file loaded without the units' first exposures, the sends per day or the units'
                # events: computed from its assignments and events.
                for name, derived in (
                    ("experiment_units", _derived_units),
                    (SENDS, _derived_sends),
                    (UNIT_EVENTS, _derived_unit_events),
                ):
                    if not _has_table(conn, name):
                        conn.exec_driver_sql(f"CREATE TEMP VIEW {name} AS {derived(conn.dialect)}")
            if source is not None:
                conn.info[SOURCE_INFO] = EXPORT_SOURCE
            conn.commit()
            yield conn
    finally:
        engine.dispose()


def _derived_units(dialect: Any) -> str:
    """The units' first exposures computed from the exported assignments, for an export made before
    ``experiment_units`` was exported (slower: it groups every exposure)."""
    query = units_from(assignments)
    return str(query.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def _derived_sends(dialect: Any) -> str:
    """``assignment_sends`` computed from the exported assignments, for an export made before the export
    counted sends (slower: it groups every exposure)."""
    a = assignments.c
    day = func.date_trunc("day", a.occurred_at)
    query = (
        select(a.experiment_id, a.arm_id, a.action_id, day.label("day_start"), func.count().label("sends"))
        .where(a.held_out.is_(False))
        .group_by(a.experiment_id, a.arm_id, a.action_id, day)
    )
    return str(query.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def _derived_unit_events(dialect: Any) -> str:
    """``unit_events`` as the join of the units with their events, for an export made before the export
    wrote it (slower: every report joins them)."""
    query = unit_events_of(experiment_units, events)
    return str(query.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def _has_table(conn: Connection, name: str) -> bool:
    found = conn.exec_driver_sql(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND NOT temporary", (name,)
    ).scalar()
    return bool(found)


def _duckdb_view(directory: Path, table: ExportedTable, dialect: Any) -> str:
    schema = arrow_schema(table)
    files = _files(directory, table)
    if files is None and table.table is experiment_units:
        return f'CREATE VIEW "{table.name}" AS {_derived_units(dialect)}'
    if files is None and table.table is assignment_sends:
        return f'CREATE VIEW "{table.name}" AS {_derived_sends(dialect)}'
    if files is None and table.table is unit_events:
        return f'CREATE VIEW "{table.name}" AS {_derived_unit_events(dialect)}'
    if files is None:
        nulls = ", ".join(f'CAST(NULL AS {_duckdb_type(f.type)}) AS "{f.name}"' for f in schema)
        return f'CREATE VIEW "{table.name}" AS SELECT {nulls} WHERE false'
    columns = ", ".join(f'"{f.name}"' for f in schema)
    quoted = files.replace("'", "''")
    # hive_partitioning adds the day column; the view keeps the store's columns only.
    return (
        f'CREATE VIEW "{table.name}" AS SELECT {columns} '
        f"FROM read_parquet('{quoted}', hive_partitioning = true, union_by_name = true)"
    )


def spark_session(*, app: str = "nextbest", cores: str = "*") -> Any:
    """A local Spark session (``local[cores]``) in UTC, without its web UI. Needs pyspark (the
    ``nextbest[spark]`` extra) and Java 17."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise SourceError("--engine spark needs pyspark: pip install 'nextbest[spark]'") from None
    session = (
        SparkSession.builder.master(f"local[{cores}]")
        .appName(app)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.driver.memory", "2g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")  # Spark's INFO and WARN lines are not the report
    return session


def spark_runner(spark: Any, source: Path) -> SparkRunner:
    """A report runner on ``spark`` with the export under ``source`` as temporary views."""
    _check_export(source)
    for table in EXPORTED:
        schema = arrow_schema(table)
        files = _files(source, table)
        if files is None and table.table is experiment_units:
            frame = spark.sql(str(_derived_units(SparkDialect())))
        elif files is None and table.table is assignment_sends:
            frame = spark.sql(_derived_sends(SparkDialect()))
        elif files is None and table.table is unit_events:
            frame = spark.sql(_derived_unit_events(SparkDialect()))
        elif files is None:
            ddl = ", ".join(f"`{f.name}` {_spark_type(f.type)}" for f in schema)
            frame = spark.createDataFrame([], ddl)
        else:
            frame = spark.read.parquet(str(source / table.name)).select(*[f.name for f in schema])
        frame.createOrReplaceTempView(table.name)
    return SparkRunner(spark, EXPORT_SOURCE)
