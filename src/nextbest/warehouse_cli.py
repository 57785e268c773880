"""``nextbest export | analyze`` and the engines of ``nextbest report --engine``: the warehouse's command
line. Errors are one line (a :class:`~nextbest.errors.NextbestError`, exit 2). Nothing heavy (pyarrow,
DuckDB, Spark) is imported until a command needs it, so that other commands start as fast as before."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nextbest.errors import InvalidArgumentError, NextbestError

if TYPE_CHECKING:
    from nextbest.reports import QueryRunner

__all__ = [
    "REPORT_ENGINES",
    "UsageError",
    "add_analyze_command",
    "add_export_command",
    "add_report_engine_args",
    "add_warehouse_commands",
    "report_runner",
    "run_analyze",
    "run_export",
]

REPORT_ENGINES = ("store", "duckdb", "spark")


class UsageError(NextbestError):
    status = "INVALID_ARGUMENT"


def add_warehouse_commands(sub: Any) -> None:
    """``export`` and ``analyze``, and ``--engine``/``--source`` on the ``report`` command already there."""
    add_export_command(sub)
    add_analyze_command(sub)
    add_report_engine_args(sub.choices["report"])


def add_export_command(sub: Any) -> None:
    export = sub.add_parser(
        "export",
        help="write decisions, exposures, experiment exposures and events as day-partitioned Parquet "
        "(incremental, exactly once)",
    )
    export.add_argument("--to", required=True, help="the export directory (created; later runs add to it)")
    export.add_argument(
        "--settle-seconds",
        type=float,
        default=300.0,
        help="decisions are exported once this old (they carry no insertion id; default 300)",
    )
    export.add_argument(
        "--database-url",
        help="sqlite:///path.db or postgresql+psycopg://user@host/db [NEXTBEST_DATABASE_URL]",
    )


def add_report_engine_args(report: argparse.ArgumentParser) -> None:
    report.add_argument(
        "--engine",
        choices=REPORT_ENGINES,
        default="store",
        help="where the report is computed: the store's database (default), DuckDB or Spark (local) "
        "over --source",
    )
    report.add_argument(
        "--source",
        help="--engine duckdb|spark: a `nextbest export` directory (or, for duckdb, a .duckdb file)",
    )


def add_analyze_command(sub: Any) -> None:
    analyze = sub.add_parser(
        "analyze", help="analyse an experiment nextbest did not run, from files or queries declared in YAML"
    )
    analyze.add_argument("config", help="the experiment's YAML (see README: External experiments)")
    analyze.add_argument(
        "--engine", help="duckdb, spark or a SQLAlchemy URL; overrides the YAML's engine (default duckdb)"
    )
    analyze.add_argument("--format", choices=["table", "json", "html"], default="table")
    analyze.add_argument("--output", help="file for --format html (default: reports/EXPERIMENT.html)")
    analyze.add_argument(
        "--window-days", type=float, help="attribution window in days (default: YAML, else 14)"
    )
    analyze.add_argument(
        "--alpha", type=float, help="significance level, below 0.5 (default: YAML, else 0.05)"
    )
    analyze.add_argument("--as-of", help="ISO time with a zone to report as of (default: YAML, else now)")
    analyze.add_argument("--sequential", action="store_true", help="always-valid intervals (for daily looks)")


@contextmanager
def report_runner(engine: str, source: str | None) -> Iterator[QueryRunner]:
    """A query runner on ``engine`` over the export (or DuckDB file) at ``source``."""
    from nextbest.warehouse.engines import duckdb_connection, spark_runner, spark_session

    if engine == "store":
        raise UsageError("--engine store reads the database (--database-url); it takes no --source")
    if not source:
        raise UsageError(f"--engine {engine} needs --source DIR (a `nextbest export --to DIR` directory)")
    path = Path(source)
    if engine == "duckdb":
        from nextbest.reports import SqlRunner

        with duckdb_connection(path) as conn:
            yield SqlRunner(conn)
        return
    if path.suffix == ".duckdb":
        raise UsageError(f"--source {source}: Spark reads a `nextbest export` directory, not a DuckDB file")
    spark = spark_session(app="nextbest-report")
    yield spark_runner(spark, path)


def run_export(args: argparse.Namespace, database_url: str) -> int:
    from nextbest.store import Database
    from nextbest.warehouse.exporter import export

    if not args.settle_seconds >= 0:
        print("nextbest export: --settle-seconds must be 0 or more", file=sys.stderr)
        return 2
    target = Path(args.to)
    if target.exists() and not target.is_dir():
        print(f"nextbest export: --to {args.to} is a file; give a directory", file=sys.stderr)
        return 2
    db = Database(database_url)
    try:
        result = export(db, target, settle=timedelta(seconds=args.settle_seconds))
    except OSError as exc:  # permissions, a full disk: the run left nothing visible (see exporter)
        print(f"nextbest export: {args.to}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    finally:
        db.dispose()
    if result.recovered:
        print(f"completed {result.recovered} file(s) of an interrupted export")
    rows = ", ".join(f"{name} {n:,}" for name, n in result.rows.items())
    print(f"exported {rows} into {len(result.files)} file(s) under {args.to}")
    return 0


def moment_arg(text: str | None, flag: str) -> datetime | None:
    """A command line's ISO time with its zone (``--as-of``), None when not given; else UsageError."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{flag} {text!r} is not an ISO time such as 2026-11-23T09:00:00Z") from None
    if moment.tzinfo is None:
        raise UsageError(f"{flag} {text!r} has no time zone; add Z or +01:00")
    return moment


def run_analyze(args: argparse.Namespace) -> int:
    from nextbest.reports import ReportRequest
    from nextbest.reports.html import write_html
    from nextbest.reports.render import report_to_json, report_to_table
    from nextbest.warehouse.config import load_config
    from nextbest.warehouse.external import analyze_config, open_workspace

    config = load_config(Path(args.config))
    as_of = moment_arg(args.as_of, "--as-of") or config.as_of
    try:
        request = ReportRequest.validated(
            config.experiment,
            window_days=args.window_days if args.window_days is not None else config.window_days,
            as_of=as_of,
            sequential=args.sequential,
            alpha=args.alpha if args.alpha is not None else config.alpha,
        )
    except InvalidArgumentError as exc:
        for v in exc.violations:
            print(f"nextbest analyze: {v.field}: {v.description}", file=sys.stderr)
        return 2
    with open_workspace(args.engine or config.engine) as workspace:
        analysis = analyze_config(config, workspace, request, history=args.format == "html")
    if args.format == "json":
        print(json.dumps(report_to_json(analysis.report), indent=2, allow_nan=False))
    elif args.format == "html":
        print(f"report written to {write_html(analysis.report, analysis.history, args.output)}")
    else:
        print(report_to_table(analysis.report))
    return 0
