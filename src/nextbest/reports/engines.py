"""Where a report's query runs: a SQLAlchemy connection (SQLite, PostgreSQL, DuckDB through
``duckdb-engine``, any dialect) or a Spark session.

Spark has no SQLAlchemy dialect that runs in-process (the maintained ones talk to a Thrift server or to
Databricks), so the report's SQLAlchemy Core query is compiled to Spark SQL text by :class:`SparkDialect`
(backquoted identifiers, literals inlined, timestamps as UTC ``TIMESTAMP`` literals) and run with
``spark.sql``: the same definition, not a second one written by hand. Only the per-arm rows come back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import Connection
from sqlalchemy.engine.default import DefaultDialect
from sqlalchemy.sql import compiler
from sqlalchemy.sql.expression import Executable

__all__ = [
    "SOURCE_INFO",
    "QueryRunner",
    "SparkDialect",
    "SparkRunner",
    "SqlRunner",
    "runner_for",
    "spark_sql",
]


@runtime_checkable
class QueryRunner(Protocol):
    """Runs a SQLAlchemy Core query on an engine and returns its (few) rows."""

    @property
    def dialect_name(self) -> str: ...

    def rows(self, query: Executable) -> Sequence[Mapping[str, Any]]: ...

    def scalar(self, query: Executable) -> Any: ...


# The key under which a connection's ``info`` holds the ReportSource its tables make up, when they are
# not the store's own (a DuckDB connection over the export sets it): reports then read that source.
SOURCE_INFO = "nextbest.report_source"


class SqlRunner:
    """A query runner over a SQLAlchemy connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    @property
    def dialect_name(self) -> str:
        return self.conn.dialect.name

    @property
    def source(self) -> Any:
        """The ReportSource the connection was opened on (``SOURCE_INFO``), or None: the store's."""
        return self.conn.info.get(SOURCE_INFO)

    def rows(self, query: Executable) -> Sequence[Mapping[str, Any]]:
        return [dict(m) for m in self.conn.execute(query).mappings()]

    def scalar(self, query: Executable) -> Any:
        return self.conn.execute(query).scalar()


def runner_for(conn: Connection | QueryRunner) -> QueryRunner:
    """``conn`` as a query runner (a SQLAlchemy connection is wrapped)."""
    return SqlRunner(conn) if isinstance(conn, Connection) else conn


class _SparkIdentifiers(compiler.IdentifierPreparer):
    def __init__(self, dialect: DefaultDialect) -> None:
        super().__init__(dialect, initial_quote="`", escape_quote="`")


class _SparkCompiler(compiler.SQLCompiler):
    def render_literal_value(self, value: Any, type_: Any) -> str:
        # Spark reads a bare 1.0 as DECIMAL(2,1): doubles get their suffix so that sums stay doubles.
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int):
            return str(value)
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError(f"no Spark SQL literal for {value!r}")
            return f"{value!r}D"
        if isinstance(value, str):
            return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
        if isinstance(value, datetime):
            if value.tzinfo is None:
                raise ValueError("naive datetime in a Spark query; use UTC-aware datetimes")
            return f"TIMESTAMP '{value.astimezone(UTC).replace(tzinfo=None).isoformat(' ')}+00:00'"
        if isinstance(value, date):
            return f"DATE '{value.isoformat()}'"
        if value is None:
            return "NULL"
        raise ValueError(f"no Spark SQL literal for {type(value).__name__}")


class SparkDialect(DefaultDialect):
    """Enough of Spark SQL to compile the report's queries to text for ``spark.sql``."""

    name = "spark"
    preparer = _SparkIdentifiers  # type: ignore[assignment]  # its __init__ takes only the dialect
    statement_compiler = _SparkCompiler
    supports_native_boolean = True
    supports_statement_cache = False


def spark_sql(query: Executable) -> str:
    """The Spark SQL text of a SQLAlchemy Core query, every parameter inlined as a literal."""
    compiled = query.compile(dialect=SparkDialect(), compile_kwargs={"literal_binds": True})  # type: ignore[attr-defined]
    return str(compiled)


class SparkRunner:
    """A query runner over a ``pyspark.sql.SparkSession`` (its session time zone should be UTC)."""

    def __init__(self, spark: Any, source: Any = None) -> None:
        self.spark = spark
        # The ReportSource its views make up (the export's, from ``spark_runner``), or None: the store's.
        self.source = source

    @property
    def dialect_name(self) -> str:
        return SparkDialect.name

    def rows(self, query: Executable) -> Sequence[Mapping[str, Any]]:
        return [_utc(row.asDict()) for row in self.spark.sql(spark_sql(query)).collect()]

    def scalar(self, query: Executable) -> Any:
        rows = self.spark.sql(spark_sql(query)).collect()
        return _utc(rows[0].asDict()).popitem()[1] if rows else None


def _utc(row: dict[str, Any]) -> dict[str, Any]:
    # PySpark hands timestamps back as naive datetimes in the Python process's local time.
    naive = {k for k, v in row.items() if isinstance(v, datetime) and v.tzinfo is None}
    return {k: v.astimezone(UTC) if k in naive else v for k, v in row.items()}
