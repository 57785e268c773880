"""The report on Apache Spark SQL (PySpark, ``local[*]``): the same SQLAlchemy Core query compiled to Spark
SQL, over the Parquet export, gives the statistics and the report that SQLite gives over the store; and
``nextbest analyze`` runs on Spark. One Spark session for the module (a JVM takes seconds to start)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from nextbest.catalog import Catalog
from nextbest.cli import main
from nextbest.reports import Metric, ReportRequest, build_report
from nextbest.reports.aggregate import STORE, aggregate_many, report_query
from nextbest.reports.engines import spark_sql
from nextbest.reports.render import report_to_json
from nextbest.store import Database
from nextbest.warehouse import export
from nextbest.warehouse.engines import spark_runner, spark_session
from tests.warehouse.conftest import AS_OF, assert_close

pytest.importorskip("pyspark")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    session = spark_session(app="nextbest-tests", cores="2")
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def exported(simulated: tuple[str, datetime], tmp_path_factory: pytest.TempPathFactory) -> Path:
    url, as_of = simulated
    out = tmp_path_factory.mktemp("export") / "nextbest"
    db = Database(url)
    export(db, out, now=as_of + timedelta(days=1))
    db.dispose()
    return out


def test_the_report_query_compiles_to_spark_sql_with_every_value_inlined() -> None:
    query = report_query(
        STORE,
        "it's",
        [Metric.REVENUE.definition],
        as_of=AS_OF,
        window=timedelta(days=14),
        lookback=timedelta(days=14),
    )
    sql = spark_sql(query)
    assert "'it\\'s'" in sql and "TIMESTAMP '2026-11-12 00:00:00+00:00'" in sql
    # The window's edges: the first exposure moved by 14 days in microseconds, exactly.
    assert "timestamp_micros(unix_micros(clean.first_at) + 1209600000000)" in sql
    assert "timestamp_micros(unix_micros(clean.first_at) + -1209600000000)" in sql
    assert ":" not in sql.split("TIMESTAMP")[0]


def test_spark_gives_the_statistics_and_the_report_of_the_store(
    spark: Any, simulated: tuple[str, datetime], exported: Path, catalog: Catalog
) -> None:
    url, as_of = simulated
    runner = spark_runner(spark, exported)
    db = Database(url)
    metrics = list(Metric)
    for experiment in catalog.experiments:
        with db.reader.connect() as conn:
            live = aggregate_many(conn, experiment.id, metrics, as_of=as_of)
        assert_close(live, aggregate_many(runner, experiment.id, metrics, as_of=as_of), experiment.id)
    request = ReportRequest.validated("global_holdout", as_of=as_of)
    with db.reader.connect() as conn:
        expected = report_to_json(build_report(conn, catalog, request))
    db.dispose()
    assert_close(expected, report_to_json(build_report(runner, catalog, request)))


def test_report_cli_on_spark(spark: Any, exported: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "report",
        "--experiment",
        "cart_incentive_discount",
        "--as-of",
        AS_OF.isoformat(),
        "--format",
        "json",
    ]
    assert main([*args, "--engine", "duckdb", "--source", str(exported)]) == 0
    on_duckdb = json.loads(capsys.readouterr().out)
    assert main([*args, "--engine", "spark", "--source", str(exported)]) == 0
    assert_close(on_duckdb, json.loads(capsys.readouterr().out))


def test_analyze_on_spark_reproduces_hillstrom(spark: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.warehouse.test_analyze import CONFIG, assert_published

    # The bundled YAML's queries are DuckDB SQL; TIMESTAMPTZ literals are not Spark's, so the same
    # declaration is given with Spark's spelling.
    text = CONFIG.read_text().replace("TIMESTAMPTZ", "TIMESTAMP").replace("engine: duckdb", "engine: spark")
    config = CONFIG.parent / ".hillstrom_spark.yaml"
    config.write_text(text)
    try:
        assert main(["analyze", str(config), "--format", "json"]) == 0, capsys.readouterr().err
    finally:
        config.unlink()
    assert_published(json.loads(capsys.readouterr().out))
