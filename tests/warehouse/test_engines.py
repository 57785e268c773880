"""One report definition, every engine: the same simulated store analysed on SQLite, on PostgreSQL (when
configured) and on DuckDB over its Parquet export gives the same sufficient statistics (to 1e-9
relative: engines add floats in their own order) and the same report. (Spark: test_spark.py.)"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from nextbest.catalog import Catalog
from nextbest.reports import Metric, ReportRequest, build_report, report_history
from nextbest.reports.aggregate import aggregate_many
from nextbest.reports.engines import runner_for
from nextbest.reports.render import report_to_json
from nextbest.reports.report import source_of
from nextbest.store import Database
from nextbest.store.units import rebuild_units
from nextbest.warehouse import export
from nextbest.warehouse.engines import duckdb_connection
from nextbest.warehouse.tables import EXPORT_SOURCE
from tests.warehouse.conftest import AS_OF, assert_close

pytestmark = pytest.mark.slow  # simulates a store, exports it


@pytest.fixture(scope="module")
def exported(simulated: tuple[str, datetime], tmp_path_factory: pytest.TempPathFactory) -> Path:
    url, as_of = simulated
    out = tmp_path_factory.mktemp("export") / "nextbest"
    db = Database(url)
    export(db, out, now=as_of + timedelta(days=1))
    db.dispose()
    return out


@pytest.mark.parametrize(
    "spans",
    [
        {"as_of": AS_OF, "window": timedelta(days=14), "lookback": timedelta(days=14)},
        {
            "as_of": AS_OF - timedelta(days=3, hours=5, microseconds=7),
            "window": timedelta(days=2),
            "lookback": timedelta(hours=30),
        },
    ],
    ids=["defaults", "earlier-moment-short-windows"],
)
def test_sufficient_statistics_agree_on_every_engine(
    simulated_copies: dict[str, str], exported: Path, catalog: Catalog, spans: dict[str, Any]
) -> None:
    """DuckDB twice: as a report over the export reads it (per-unit sums from ``unit_events``), and with
    the units joined to their events instead."""
    metrics = list(Metric)
    compared = 0
    for experiment in catalog.experiments:
        results = {}
        for backend, url in simulated_copies.items():
            db = Database(url)
            with db.reader.connect() as conn:
                results[backend] = aggregate_many(conn, experiment.id, metrics, **spans)
            db.dispose()
        with duckdb_connection(exported) as conn:
            assert source_of(runner_for(conn)).unit_events is not None
            results["duckdb"] = aggregate_many(conn, experiment.id, metrics, **spans, source=EXPORT_SOURCE)
            joining = replace(EXPORT_SOURCE, unit_events=None)
            results["duckdb, joined"] = aggregate_many(conn, experiment.id, metrics, **spans, source=joining)
        live = results.pop("sqlite")
        for engine, other in results.items():
            assert_close(live, other, f"{experiment.id} on {engine}")
        # An experiment whose action the simulation never chose (the review request) has no units.
        compared += sum(row.n for row in live[0]["conversion"].values()) > 20
    assert compared >= 3


def test_export_then_duckdb_gives_the_live_report(
    simulated: tuple[str, datetime], exported: Path, catalog: Catalog
) -> None:
    url, as_of = simulated
    db = Database(url)
    for experiment in catalog.experiments:
        request = ReportRequest.validated(experiment.id, [m.value for m in Metric], as_of=as_of)
        with db.reader.connect() as conn:
            live = report_to_json(build_report(conn, catalog, request))
            live_history = report_history(conn, catalog, request, points=4)
        with duckdb_connection(exported) as conn:
            warehouse = report_to_json(build_report(conn, catalog, request))
            history = report_history(conn, catalog, request, points=4)
        assert_close(json.loads(json.dumps(live)), json.loads(json.dumps(warehouse)), experiment.id)
        assert [m for m, _ in history] == [m for m, _ in live_history]
        for (_, a), (_, b) in zip(live_history, history, strict=True):
            assert_close(report_to_json(a), report_to_json(b), f"{experiment.id} history")
    db.dispose()


def test_the_cost_per_arm_from_the_sends_per_day_is_the_stores_at_any_moment(
    simulated: tuple[str, datetime], exported: Path, catalog: Catalog
) -> None:
    """On the export, the cost per arm adds the days before the moment from ``assignment_sends`` and the
    moment's own day from the assignments: the same as the store's count, at midnight and in the day."""
    url, as_of = simulated
    db = Database(url)
    with duckdb_connection(exported) as conn:
        assert source_of(runner_for(conn)) is EXPORT_SOURCE
    costs = 0
    for experiment in catalog.experiments:
        for moment in (as_of, as_of - timedelta(days=3, hours=7, microseconds=5), as_of - timedelta(days=6)):
            request = ReportRequest.validated(experiment.id, ["revenue"], as_of=moment)
            with db.reader.connect() as conn:
                live = [(i.arm, i.cost) for i in build_report(conn, catalog, request).incremental]
            with duckdb_connection(exported) as conn:
                warehouse = [(i.arm, i.cost) for i in build_report(conn, catalog, request).incremental]
            assert live == warehouse, (experiment.id, moment)
            costs += sum(cost > 0 for _, cost in live)
    assert costs >= 6
    db.dispose()


def test_a_duckdb_file_of_the_export_gives_the_same_statistics(
    simulated: tuple[str, datetime], exported: Path, tmp_path: Path, catalog: Catalog
) -> None:
    file = tmp_path / "store.duckdb"
    with duckdb_connection(exported) as conn:
        conn.exec_driver_sql(f"ATTACH '{file}' AS copy")
        for table in ("assignments", "events", "erasures"):
            conn.exec_driver_sql(f"CREATE TABLE copy.{table} AS SELECT * FROM {table}")
        conn.commit()
        conn.exec_driver_sql("DETACH copy")
        over_parquet = aggregate_many(conn, "global_holdout", list(Metric), as_of=AS_OF)
    with duckdb_connection(file) as conn:
        assert_close(over_parquet, aggregate_many(conn, "global_holdout", list(Metric), as_of=AS_OF))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--engine", "duckdb"], "--engine duckdb needs --source DIR"),
        (["--engine", "duckdb", "--source", "/nonexistent"], "--source /nonexistent: no such directory"),
        (["--engine", "spark", "--source", "x.duckdb"], "Spark reads a `nextbest export` directory"),
        (["--source", "/tmp"], "--engine store reads the database"),
    ],
    ids=["no-source", "no-directory", "spark-on-a-duckdb-file", "store-with-source"],
)
def test_report_engine_errors_are_one_line(
    args: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from nextbest.cli import main

    assert main(["report", "--experiment", "global_holdout", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err, err


def test_unit_events_give_the_stores_statistics_at_the_edges(tmp_path: Path) -> None:
    """Units seen in both arms (before and after the moment), events exactly on the window's and the
    lookback's edges, refunds, views and events of customers who are no unit: the store's statistics and
    DuckDB's over the export, from ``unit_events`` and from the units joined to their events, agree at
    every moment and span. (Several spans in one process: a statement cached for one window was once
    reused for the next on SQLite and PostgreSQL.)"""
    from tests.warehouse.conftest import fresh_database
    from tests.warehouse.test_export import T0, decide, record

    url = next(fresh_database("sqlite", tmp_path))
    db = Database(url)
    day = timedelta(days=1)
    for i in range(12):
        decide(db, T0 + i * timedelta(hours=5), f"u{i}", arm="holdout" if i % 4 == 0 else "treated")
        record(db, T0 + i * timedelta(hours=5) + (i % 3) * day, f"u{i}", value=10.0 + i)
        record(db, T0 - (i % 5) * day, f"u{i}", value=3.0 + i)  # in or before the lookback
    decide(db, T0 + 2 * day, "u1", arm="holdout")  # u1 in both arms from day 2
    decide(db, T0 + 9 * day, "u2", arm="holdout")  # u2 from day 9
    record(db, T0 + 7 * day, "u3")  # exactly at the end of a 7-day window: out
    record(db, T0 + 15 * timedelta(hours=1) - 2 * day, "u3", value=4.0)  # exactly at a 2-day lookback: in
    record(db, T0 + 15 * timedelta(hours=1), "u3", kind="refunded", value=5.0)  # at first exposure: in
    record(db, T0 + 3 * day, "u4", kind="product_viewed", value=0.0)
    record(db, T0 + day, "nobody", value=99.0)
    with db.writer.begin() as conn:
        rebuild_units(conn)
    out = tmp_path / "export"
    export(db, out, now=T0 + 30 * day)
    metrics = list(Metric)
    for as_of, window, lookback in (
        (T0 + 20 * day, timedelta(days=14), timedelta(days=14)),
        (T0 + 5 * day, timedelta(days=7), timedelta(days=2)),
        (T0 + day + timedelta(hours=3), timedelta(days=1), timedelta(hours=12)),
    ):
        spans = {"as_of": as_of, "window": window, "lookback": lookback}
        with db.reader.connect() as conn:
            store = aggregate_many(conn, "exp", metrics, **spans)
        with duckdb_connection(out) as conn:
            read = aggregate_many(conn, "exp", metrics, **spans, source=EXPORT_SOURCE)
            joined = aggregate_many(
                conn, "exp", metrics, **spans, source=replace(EXPORT_SOURCE, unit_events=None)
            )
        assert_close(store, read, f"unit_events {as_of}")
        assert_close(store, joined, f"joined {as_of}")
        assert store[1] == sum(mixed <= as_of for mixed in (T0 + 2 * day, T0 + 9 * day))
    db.dispose()
