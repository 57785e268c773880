"""``nextbest analyze``: an experiment nextbest did not run, from files or queries declared in YAML. The
Hillstrom e-mail test reproduces its published arm table to the last digit on every engine; a malformed
source is one line naming the source and the column."""

from __future__ import annotations

import csv
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from nextbest.cli import main
from tests.conftest import PG_URL
from tests.warehouse.conftest import assert_close

REPO = Path(__file__).resolve().parents[2]
HILLSTROM = REPO / "tests" / "data" / "hillstrom.csv"
CONFIG = REPO / "benchmarks" / "hillstrom_analyze.yaml"
SENT = datetime(2008, 3, 1, 9, tzinfo=UTC)
ARMS = {"Mens E-Mail": "mens", "Womens E-Mail": "womens", "No E-Mail": "no_email"}
PUBLISHED = {  # arm: customers, visit rate %, conversion rate %, spend per customer $
    "mens": (21_307, "18.28", "1.253", "1.4226"),
    "womens": (21_387, "15.14", "0.884", "1.0772"),
    "no_email": (21_306, "10.62", "0.573", "0.6528"),
}


def analyze(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main(["analyze", *args, "--format", "json"]) == 0, capsys.readouterr().err
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    return data


def assert_published(data: dict[str, Any]) -> None:
    metrics = data["analysis"]["metrics"]
    assert data["units"] == {arm: n for arm, (n, *_) in PUBLISHED.items()}
    assert data["control"] == "no_email" and data["excluded_units"] == 0
    for arm, (_, visit, conversion, spend) in PUBLISHED.items():
        assert f"{metrics['visit']['arms'][arm]['mean'] * 100:.2f}" == visit
        assert f"{metrics['conversion']['arms'][arm]['mean'] * 100:.3f}" == conversion
        assert f"{metrics['revenue']['arms'][arm]['mean']:.4f}" == spend
    for arm in ("mens", "womens"):
        assert metrics["revenue"]["comparisons"][arm]["absolute"]["p_value"] < 0.05


@pytest.mark.slow
def test_hillstrom_by_queries_on_duckdb_reproduces_the_published_table(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert_published(analyze(capsys, str(CONFIG)))


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@pytest.fixture(scope="module")
def hillstrom_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Hillstrom as a user would export it: an assignments file and one file per metric, with ids and
    zoned times, and the YAML that declares them."""
    folder = tmp_path_factory.mktemp("hill")
    units, visits, orders, spend = [], [], [], []
    with HILLSTROM.open() as f:
        for i, row in enumerate(csv.DictReader(f)):
            customer = f"c{i:05d}"
            units.append([customer, ARMS[row["segment"]], iso(SENT)])
            if row["visit"] == "1":
                visits.append([customer, iso(SENT + timedelta(days=1)), 1])
            if row["conversion"] == "1":
                orders.append([customer, iso(SENT + timedelta(days=2)), 1])
                spend.append([customer, iso(SENT + timedelta(days=2)), float(row["spend"])])
    write_csv(folder / "assignments.csv", ["customer_id", "arm", "exposed_at"], units)
    write_csv(folder / "visits.csv", ["unit", "at", "value"], visits)
    write_csv(folder / "orders.csv", ["unit", "at", "value"], orders)
    write_csv(folder / "spend.csv", ["unit", "at", "value"], spend)
    config = {
        "experiment": "hillstrom_files",
        "arms": [
            {"id": "no_email", "weight": 0.333333334, "control": True},
            {"id": "mens", "weight": 0.333333333},
            {"id": "womens", "weight": 0.333333333},
        ],
        "assignments": {"file": "assignments.csv", "columns": {"unit": "customer_id"}},
        "metrics": [
            {"name": "visit", "type": "binary", "source": {"file": "visits.csv"}},
            {"name": "conversion", "type": "binary", "source": {"file": "orders.csv"}},
            {"name": "revenue", "source": {"file": "spend.csv"}},
            {"name": "orders", "source": {"file": "orders.csv"}},
            {"name": "revenue_per_order", "type": "ratio", "numerator": "revenue", "denominator": "orders"},
        ],
        "as_of": "2008-04-01T00:00:00Z",
    }
    (folder / "hill.yaml").write_text(yaml.safe_dump(config))
    return folder / "hill.yaml"


@pytest.mark.slow
def test_hillstrom_from_files_gives_the_same_report_on_every_engine(
    hillstrom_files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    engines = ["duckdb", f"sqlite:///{tmp_path / 'analysis.db'}"] + ([PG_URL] if PG_URL else [])
    reports = {engine: analyze(capsys, str(hillstrom_files), "--engine", engine) for engine in engines}
    first = reports.pop("duckdb")
    assert_published(first)
    ratio = first["analysis"]["metrics"]["revenue_per_order"]["arms"]["mens"]["mean"]
    assert 90 < ratio < 130  # spend per order: the ratio metric is computed, not copied
    for engine, report in reports.items():
        assert_close(first, report, engine.split(":")[0])


def malformed(folder: Path, assignments: list[list[Any]], header: list[str] | None = None) -> Path:
    write_csv(folder / "units.csv", header or ["unit", "arm", "exposed_at"], assignments)
    write_csv(folder / "orders.csv", ["unit", "at", "value"], [["u1", "2026-11-03T10:00:00Z", 12.5]])
    config = {
        "experiment": "outside",
        "arms": [{"id": "a", "weight": 0.5, "control": True}, {"id": "b", "weight": 0.5}],
        "assignments": {"file": "units.csv"},
        "metrics": [{"name": "revenue", "source": {"file": "orders.csv"}}],
    }
    (folder / "x.yaml").write_text(yaml.safe_dump(config))
    return folder / "x.yaml"


GOOD = [["u1", "a", "2026-11-02T09:00:00Z"], ["u2", "b", "2026-11-02T09:30:00+01:00"]]


@pytest.mark.parametrize(
    ("rows", "header", "expected"),
    [
        (
            GOOD,
            ["unit", "arm", "first_seen"],
            r"units.csv\): no column 'exposed_at'; it has unit, arm, first_seen",
        ),
        (
            [*GOOD, ["u3", "c", "2026-11-02T10:00:00Z"]],
            None,
            "units.csv.*column 'arm' has arm.*'c' not among",
        ),
        (
            [*GOOD, ["u1", "b", "2026-11-02T10:00:00Z"]],
            None,
            "units.csv.*column 'unit': 1 unit.* more than one arm",
        ),
        (
            [["u1", "a", "2026-11-02 09:00:00"]],
            None,
            "units.csv.*column 'exposed_at' has timestamps without a time zone",
        ),
        ([["u1", "a", "soon"]], None, "units.csv.*column 'exposed_at' is string, not a timestamp"),
    ],
    ids=["missing-column", "unknown-arm", "unit-in-two-arms", "no-time-zone", "not-a-time"],
)
def test_a_malformed_file_is_one_line_naming_the_file_and_the_column(
    rows: list[list[Any]],
    header: list[str] | None,
    expected: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = malformed(tmp_path, rows, header)
    assert main(["analyze", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nextbest: assignments (file "), err
    assert re.search(expected, err), err


def test_the_same_report_from_good_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = analyze(capsys, str(malformed(tmp_path, GOOD)), "--as-of", "2026-11-20T00:00:00Z")
    assert data["units"] == {"a": 1, "b": 1}
    assert data["analysis"]["metrics"]["revenue"]["arms"]["a"]["mean"] == 12.5


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (
            "SELECT 'u1' AS unit, 'a' AS arm, TIMESTAMP '2026-11-02 09:00:00' AS exposed_at",
            "assignments \\(query\\): column 'exposed_at' has timestamps without a time zone",
        ),
        ("SELECT 'u1' AS unit, 'a' AS arm", "assignments \\(query\\): no column 'exposed_at'"),
        ("SELECT * FROM nowhere", "assignments \\(query\\): the engine refused it: .*nowhere"),
    ],
    ids=["no-time-zone", "missing-column", "bad-sql"],
)
def test_a_malformed_query_is_one_line_naming_the_query_and_the_column(
    query: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = malformed(tmp_path, GOOD)
    data = yaml.safe_load(config.read_text())
    data["assignments"] = {"query": query}
    config.write_text(yaml.safe_dump(data))
    assert main(["analyze", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(expected, err), err


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"colour": "red"}, "colour: Extra inputs are not permitted"),
        (
            {"arms": [{"id": "a", "weight": 0.5}, {"id": "b", "weight": 0.5}]},
            "mark exactly one arm with control",
        ),
        (
            {"metrics": [{"name": "r", "type": "ratio", "numerator": "x", "denominator": "y"}]},
            "'x' is not a metric",
        ),
        ({"engine": "oracle"}, "engine 'oracle': give duckdb, spark or a SQLAlchemy URL"),
        ({"as_of": "2026-11-20T00:00:00"}, "as_of: give a time zone"),
    ],
    ids=["unknown-key", "no-control", "ratio-of-nothing", "unknown-engine", "naive-as-of"],
)
def test_a_bad_config_names_the_key(
    change: dict[str, Any], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = malformed(tmp_path, GOOD)
    config.write_text(yaml.safe_dump({**yaml.safe_load(config.read_text()), **change}))
    assert main(["analyze", str(config)]) == 2
    err = capsys.readouterr().err
    assert (err.count("\n") == 1 and expected in err and str(config) in err) or "engine" in expected, err
