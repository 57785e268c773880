"""``nextbest analyze``: an experiment that nextbest did not run, analysed from the user's own files or
queries with nextbest's report (the same :func:`nextbest.reports.report_query`, the same statistics).

The assignment source gives ``unit``, ``arm`` and ``exposed_at`` (the first exposure, a timestamp with a
time zone); each metric source gives ``unit``, ``at`` and ``value``. Files are loaded into the engine;
queries run there as written (in the engine's own SQL). Before anything is analysed, each source is
checked in the engine: its columns, time zones, arms, and units assigned to more than one arm; a problem
is an error naming the source (the file, or the query) and the column.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Double,
    MetaData,
    String,
    Subquery,
    Table,
    cast,
    column,
    create_engine,
    func,
    literal,
    or_,
    select,
    text,
    type_coerce,
    union_all,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool

from nextbest.reports import (
    Design,
    LiftReport,
    MetricDefinition,
    QueryRunner,
    ReportRequest,
    ReportSource,
    SqlRunner,
    analysis_history,
    analyze_experiment,
)
from nextbest.store.schema import UTCDateTime
from nextbest.warehouse.config import (
    ASSIGNMENT_COLUMNS,
    METRIC_COLUMNS,
    AnalysisConfig,
    MetricConfig,
    SourceConfig,
)
from nextbest.warehouse.engines import SourceError, duckdb_connection, spark_session

__all__ = ["ExternalAnalysis", "SourceError", "analyze_config", "open_workspace"]

_ADD_ZONE = " (add Z or +01:00)"
_ZONED = re.compile(r"(Z|[+-]\d\d(:?\d\d)?)$")


@dataclass(frozen=True)
class ExternalAnalysis:
    """The report, and the moments of its cumulative history when asked for (HTML)."""

    report: LiftReport
    history: list[tuple[datetime, LiftReport]]


class Workspace:
    """An engine with the config's files loaded into it, and what the checks need to look at sources."""

    def __init__(self, runner: QueryRunner, conn: Connection | None = None, spark: Any = None) -> None:
        self.runner = runner
        self.conn = conn
        self.spark = spark
        self._folder = tempfile.TemporaryDirectory(prefix="nextbest-analyze-")

    @property
    def dialect(self) -> str:
        return self.runner.dialect_name

    def load(self, name: str, data: pa.Table) -> None:
        """Makes ``data`` a table called ``name`` in the engine, for this analysis only."""
        if self.spark is not None:
            path = Path(self._folder.name) / f"{name}.parquet"
            pq.write_table(data, path)
            self.spark.read.parquet(str(path)).createOrReplaceTempView(name)
            return
        assert self.conn is not None
        if self.dialect == "duckdb":
            self.conn.connection.dbapi_connection.register(name, data)  # type: ignore[union-attr]
            return
        table = Table(
            name,
            MetaData(),
            *[Column(f.name, _sql_type(f.type)) for f in data.schema],
            prefixes=["TEMPORARY"],
        )
        table.create(self.conn)
        rows = data.to_pylist()
        for start in range(0, len(rows), 10_000):
            self.conn.execute(table.insert(), rows[start : start + 10_000])

    def probe(self, sql: str) -> tuple[list[str], dict[str, str], dict[str, Any] | None]:
        """The query's column names, Spark's type names (empty elsewhere), and its first row."""
        if self.spark is not None:
            frame = self.spark.sql(sql)
            kinds = {f.name: f.dataType.typeName() for f in frame.schema.fields}
            first = frame.limit(1).collect()
            return list(frame.columns), kinds, first[0].asDict() if first else None
        assert self.conn is not None
        result = self.conn.execute(text(f"SELECT * FROM ({sql}) AS nextbest_probe LIMIT 1"))
        names = list(result.keys())
        row = result.first()
        return names, {}, dict(zip(names, row, strict=True)) if row is not None else None

    def close(self) -> None:
        self._folder.cleanup()


def _sql_type(kind: pa.DataType) -> Any:
    if pa.types.is_timestamp(kind):
        return UTCDateTime() if kind.tz else DateTime()
    if pa.types.is_integer(kind):
        return BigInteger()
    if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return Double()
    if pa.types.is_boolean(kind):
        return Boolean()
    return String()


@contextmanager
def open_workspace(engine: str) -> Iterator[Workspace]:
    """The engine named in the config or on the command line: ``duckdb`` (in memory), ``spark``
    (local), or a SQLAlchemy URL."""
    if engine == "spark":
        spark = spark_session(app="nextbest-analyze")
        from nextbest.reports import SparkRunner

        workspace = Workspace(SparkRunner(spark), spark=spark)
        try:
            yield workspace
        finally:
            workspace.close()
        return
    if engine == "duckdb":
        with duckdb_connection() as conn:
            workspace = Workspace(SqlRunner(conn), conn)
            try:
                yield workspace
            finally:
                workspace.close()
        return
    if "://" not in engine:
        raise SourceError(f"engine {engine!r}: give duckdb, spark or a SQLAlchemy URL (sqlite:///x.db, ...)")
    try:
        sql_engine = create_engine(engine, poolclass=StaticPool)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise SourceError(f"engine {engine!r}: {exc}") from None
    try:
        with sql_engine.connect() as conn:
            if sql_engine.dialect.name == "duckdb":
                conn.exec_driver_sql("SET TimeZone = 'UTC'")
            workspace = Workspace(SqlRunner(conn), conn)
            try:
                yield workspace
            finally:
                workspace.close()
    finally:
        sql_engine.dispose()


def analyze_config(
    config: AnalysisConfig, workspace: Workspace, request: ReportRequest, *, history: bool = False
) -> ExternalAnalysis:
    """Loads the config's files into the workspace, checks every source, and analyses the experiment."""
    # Every file goes in before the first query: DuckDB registers no table while a result is open.
    for name, path in config.tables.items():
        data = _read(path, f"tables.{name}")
        if "row_number" not in data.column_names:
            data = data.append_column("row_number", pa.array(range(1, data.num_rows + 1)))
        workspace.load(name, data)
    _load_file(workspace, config.assignments, "assignments", ASSIGNMENT_COLUMNS, "nb_assignments")
    for m in config.metrics:
        if m.source is not None:
            _load_file(workspace, m.source, f"metrics.{m.name}", METRIC_COLUMNS, f"nb_metric_{m.name}")
    assignments = _relation(
        workspace, config.assignments, "assignments", ASSIGNMENT_COLUMNS, "nb_assignments"
    )
    _check_assignments(workspace, config, assignments)
    sourced = [m for m in config.metrics if m.source is not None]
    outcomes = []
    for m in sourced:
        assert m.source is not None
        where = f"metrics.{m.name}"
        relation = _relation(workspace, m.source, where, METRIC_COLUMNS, f"nb_metric_{m.name}")
        _check_outcomes(workspace, where, m.source, relation)
        outcomes.append(
            select(
                relation.c.unit.label("user_id"),
                literal(m.name).label("type"),
                relation.c.at.label("occurred_at"),
                cast(relation.c.value, Double).label("value"),
            )
        )
    events = union_all(*outcomes).subquery("events")
    units = select(
        assignments.c.unit.label("user_id"),
        literal(config.experiment).label("experiment_id"),
        assignments.c.arm.label("arm_id"),
        assignments.c.exposed_at.label("occurred_at"),
    ).subquery("assignments")
    source = ReportSource(units, events, None)
    design = Design(config.experiment, tuple((a.id, a.weight) for a in config.arms), config.control)
    metrics = [_definition(m) for m in config.metrics]
    try:
        report = analyze_experiment(workspace.runner, design, metrics, request, source=source)
        moments = (
            analysis_history(workspace.runner, design, metrics, request, source=source) if history else []
        )
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise SourceError(f"the engine refused the report: {reason}") from None
    return ExternalAnalysis(report, moments)


def _definition(m: MetricConfig) -> MetricDefinition:
    if m.type == "ratio":
        assert m.numerator is not None and m.denominator is not None
        return MetricDefinition(m.name, ((m.numerator, "value"),), denominator=((m.denominator, "value"),))
    return MetricDefinition(m.name, ((m.name, "value"),), binary=m.type == "binary")


def _read(path: Path, where: str) -> pa.Table:
    try:
        if path.suffix.lower() == ".parquet":
            return pq.read_table(path)
        return pacsv.read_csv(path)
    except FileNotFoundError:
        raise SourceError(f"{where}: file {path} not found") from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"{where}: file {path} could not be read ({str(exc).splitlines()[0]})") from None


def _renamed(source: SourceConfig, where: str, expected: Sequence[str]) -> dict[str, str]:
    unknown = sorted(set(source.columns) - set(expected))
    if unknown:
        raise SourceError(f"{where}: columns: {', '.join(unknown)} is not one of {', '.join(expected)}")
    return {e: source.columns.get(e, e) for e in expected}


def _load_file(
    workspace: Workspace, source: SourceConfig, where: str, expected: Sequence[str], name: str
) -> None:
    """A file source, its columns and types checked, as the table ``name`` in the engine."""
    if source.file is None:
        return
    data = _read(source.file, where)
    _check_file(f"{where} ({source.describe()})", data, _renamed(source, where, expected), expected)
    workspace.load(name, data)


def _relation(
    workspace: Workspace, source: SourceConfig, where: str, expected: Sequence[str], name: str
) -> Subquery:
    """The source as a subquery with the expected column names (a query's columns and time zone are
    checked here; a file's were when it was loaded)."""
    renamed = _renamed(source, where, expected)
    time_column = renamed[_time_key(expected)]
    label = f"{where} ({source.describe()})"
    if source.file is not None:
        sql = f"SELECT * FROM {name}"
    else:
        assert source.query is not None
        sql = source.query.strip().rstrip(";")
        _check_query(workspace, label, sql, renamed, expected)
    raw = text(sql).columns(*[column(c) for c in renamed.values()]).subquery(f"{name}_source")
    moment: Any = raw.c[time_column]
    if workspace.dialect == "sqlite":  # text: normalised to the store's UTC form, so comparisons hold
        moment = func.strftime("%Y-%m-%d %H:%M:%f000", moment)
    return select(
        *[
            type_coerce(moment, UTCDateTime()).label(e)
            if e == _time_key(expected)
            else raw.c[renamed[e]].label(e)
            for e in expected
        ]
    ).subquery(name)


def _time_key(expected: Sequence[str]) -> str:
    return "exposed_at" if "exposed_at" in expected else "at"


def _missing(label: str, names: Sequence[str], renamed: dict[str, str], expected: Sequence[str]) -> None:
    for e in expected:
        own = renamed[e]
        if own not in names:
            meant = "" if own == e else f" (the {e} column)"
            raise SourceError(f"{label}: no column {own!r}{meant}; it has {', '.join(names) or 'none'}")


def _check_file(label: str, data: pa.Table, renamed: dict[str, str], expected: Sequence[str]) -> None:
    _missing(label, data.column_names, renamed, expected)
    time_column = renamed[_time_key(expected)]
    kind = data.schema.field(time_column).type
    if not pa.types.is_timestamp(kind):
        raise SourceError(
            f"{label}: column {time_column!r} is {kind}, not a timestamp (write e.g. 2026-11-02T09:00:00Z)"
        )
    if kind.tz is None:
        raise SourceError(
            f"{label}: column {time_column!r} has timestamps without a time zone (add Z or +01:00)"
        )
    if "value" in expected:
        value = renamed["value"]
        if not (
            pa.types.is_integer(data.schema.field(value).type)
            or pa.types.is_floating(data.schema.field(value).type)
        ):
            raise SourceError(f"{label}: column {value!r} is {data.schema.field(value).type}, not a number")


def _check_query(
    workspace: Workspace, label: str, sql: str, renamed: dict[str, str], expected: Sequence[str]
) -> None:
    try:
        names, kinds, first = workspace.probe(sql)
    except Exception as exc:  # the engine's own error (syntax, unknown table), in one line
        message = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise SourceError(
            f"{label}: the engine refused it: {message[0] if message else type(exc).__name__}"
        ) from None
    _missing(label, names, renamed, expected)
    time_column = renamed[_time_key(expected)]
    if kinds.get(time_column) == "timestamp_ntz":
        raise SourceError(f"{label}: column {time_column!r} has timestamps without a time zone")
    if first is None:
        return
    moment = first[time_column]
    if isinstance(moment, datetime):
        if moment.tzinfo is None and workspace.spark is None:
            raise SourceError(
                f"{label}: column {time_column!r} has timestamps without a time zone "
                "(use TIMESTAMPTZ / timestamp with time zone)"
            )
    elif isinstance(moment, str) and workspace.dialect == "sqlite":
        if not _ZONED.search(moment.strip()):
            raise SourceError(
                f"{label}: column {time_column!r} has timestamps without a time zone ({moment!r}){_ADD_ZONE}"
            )
    else:
        raise SourceError(f"{label}: column {time_column!r} is not a timestamp ({moment!r})")
    if "value" in expected:
        value = first[renamed["value"]]
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            raise SourceError(f"{label}: column {renamed['value']!r} is not a number ({value!r})")


def _check_assignments(workspace: Workspace, config: AnalysisConfig, relation: Subquery) -> None:
    label = f"assignments ({config.assignments.describe()})"
    own = {e: config.assignments.columns.get(e, e) for e in ASSIGNMENT_COLUMNS}
    runner = workspace.runner
    nulls = runner.scalar(
        select(func.count()).where(
            or_(relation.c.unit.is_(None), relation.c.arm.is_(None), relation.c.exposed_at.is_(None))
        )
    )
    if nulls:
        raise SourceError(
            f"{label}: {nulls} row(s) with no {own['unit']}, {own['arm']} or {own['exposed_at']}"
        )
    known = {a.id for a in config.arms}
    seen = [row["arm"] for row in runner.rows(select(relation.c.arm).distinct().limit(len(known) + 5))]
    unknown = sorted(str(a) for a in seen if a not in known)
    if unknown:
        raise SourceError(
            f"{label}: column {own['arm']!r} has arm(s) {', '.join(map(repr, unknown))} not among the "
            f"configured arms ({', '.join(sorted(known))})"
        )
    several = (
        select(relation.c.unit)
        .group_by(relation.c.unit)
        .having(func.min(relation.c.arm) != func.max(relation.c.arm))
        .subquery("several")
    )
    count = runner.scalar(select(func.count()).select_from(several))
    if count:
        example = runner.scalar(select(several.c.unit).limit(1))
        raise SourceError(
            f"{label}: column {own['unit']!r}: {count} unit(s) appear in more than one arm "
            f"(e.g. {example!r}); each unit must have one arm"
        )


def _check_outcomes(workspace: Workspace, where: str, source: SourceConfig, relation: Subquery) -> None:
    own = {e: source.columns.get(e, e) for e in METRIC_COLUMNS}
    nulls = workspace.runner.scalar(
        select(func.count()).where(
            or_(relation.c.unit.is_(None), relation.c.at.is_(None), relation.c.value.is_(None))
        )
    )
    if nulls:
        columns = f"{own['unit']}, {own['at']} or {own['value']}"
        raise SourceError(f"{where} ({source.describe()}): {nulls} row(s) with no {columns}")
