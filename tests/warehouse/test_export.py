"""``nextbest export``: every row exactly once across runs, late rows into their day, nothing partial
visible after a crash, and files that pandas, polars and DuckDB read as they are."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest
from sqlalchemy import func, select, text

from nextbest.models.features import LOGGED
from nextbest.store import Database
from nextbest.store.schema import assignments, decisions, events, experiment_units, exposures
from nextbest.store.units import rebuild_units
from nextbest.warehouse import EXPORTED, ExportError, export, schema_document
from nextbest.warehouse import exporter as export_module
from nextbest.warehouse.engines import duckdb_connection
from nextbest.warehouse.tables import assignment_sends, unit_events
from tests.conftest import BACKENDS
from tests.warehouse.conftest import fresh_database

T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
SCHEMA_FILE = Path(__file__).resolve().parents[2] / "src" / "nextbest" / "warehouse" / "schema.json"


# A fresh PostgreSQL database per test takes a second or two to create and migrate.
@pytest.fixture(params=[b if b == "sqlite" else pytest.param(b, marks=pytest.mark.slow) for b in BACKENDS])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    for url in fresh_database(request.param, tmp_path):
        database = Database(url)
        yield database
        database.dispose()


def decide(
    db: Database, at: datetime, user: str = "u1", *, arm: str = "treated", action: str = "cart_reminder_email"
) -> str:
    """A decision with one experiment exposure, written as the store writes them (arm "holdout" is held
    out)."""
    decision_id = uuid.uuid4().hex
    with db.writer.begin() as conn:
        conn.execute(
            decisions.insert(),
            {
                "decision_id": decision_id,
                "request_id": decision_id,
                "user_id": user,
                "trigger": "cart_abandoned",
                "occurred_at": at,
                "decided_at": at,
                "catalog_version": "v",
                "fingerprint": "f",
                "payload": {"actions": ["cart_reminder_email"]},
            },
        )
        conn.execute(
            assignments.insert(),
            {
                "decision_id": decision_id,
                "user_id": user,
                "experiment_id": "exp",
                "arm_id": arm,
                "bucket": 0.3,
                "hash_version": 2,
                "seed": "exp",
                "probability": 0.95,
                "held_out": arm == "holdout",
                "action_id": action,
                "flow": "cart_abandonment",
                "channel": "email",
                "send_at": at,
                "parameters": {"discount": 10},
                "score": 0.2,
                "occurred_at": at,
                "catalog_version": "v",
                "features": bytes(8 * len(LOGGED)),  # float64 zeros, as logged
            },
        )
    return decision_id


def record(
    db: Database, at: datetime, user: str = "u1", kind: str = "order_placed", value: float = 10.0
) -> str:
    event_id = uuid.uuid4().hex
    with db.writer.begin() as conn:
        conn.execute(
            events.insert(),
            {
                "event_id": event_id,
                "user_id": user,
                "type": kind,
                "occurred_at": at,
                "received_at": T0 + timedelta(days=30),
                "value": value,
                "details": {"items": 1},
            },
        )
    return event_id


def exported(directory: Path, table: str) -> list[dict[str, Any]]:
    """The table's visible rows, read as a data scientist would (pyarrow's hive-partitioned dataset)."""
    if not (directory / table).exists():
        return []
    return ds.dataset(directory / table, format="parquet", partitioning="hive").to_table().to_pylist()


def visible_files(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*.parquet") if not p.name.startswith(".")}


def test_every_row_once_across_runs_and_late_rows_into_their_day(db: Database, tmp_path: Path) -> None:
    out = tmp_path / "export"
    decide(db, T0)
    first_order = record(db, T0 + timedelta(hours=2))
    result = export(db, out, now=T0 + timedelta(days=1))
    assert result.rows == {"decisions": 1, "exposures": 0, "assignments": 1, "events": 1}
    assert "events/day=2026-11-02/part-000001.parquet" in result.files

    again = export(db, out, now=T0 + timedelta(days=1))
    assert again.rows == {"decisions": 0, "exposures": 0, "assignments": 0, "events": 0}
    assert again.files == ["erasures/erasures.parquet"]  # the small table, rewritten whole

    # A late event: it happened three weeks ago and is recorded now, after the first export.
    late = record(db, T0 - timedelta(days=21), kind="product_viewed", value=0.0)
    fresh = record(db, T0 + timedelta(days=1))
    third = export(db, out, now=T0 + timedelta(days=2))
    assert third.rows["events"] == 2
    assert "events/day=2026-10-12/part-000003.parquet" in third.files
    rows = exported(out, "events")
    assert sorted(r["event_id"] for r in rows) == sorted([first_order, late, fresh])
    late_row = next(r for r in rows if r["event_id"] == late)
    assert str(late_row["day"]) == "2026-10-12" and late_row["occurred_at"] == T0 - timedelta(days=21)
    assert json.loads(rows[0]["details"]) == {"items": 1}
    [assignment] = exported(out, "assignments")
    assert assignment["probability"] == 0.95 and assignment["features"] == [0.0] * len(LOGGED)
    assert json.loads(assignment["parameters"]) == {"discount": 10}


def test_decisions_wait_for_the_settle_time(db: Database, tmp_path: Path) -> None:
    out = tmp_path / "export"
    decide(db, T0)
    early = export(db, out, now=T0 + timedelta(minutes=1), settle=timedelta(minutes=5))
    # Its assignment has a store id and goes now; the decision, by time only, once it has settled.
    assert early.rows["decisions"] == 0 and early.rows["assignments"] == 1
    later = export(db, out, now=T0 + timedelta(minutes=6), settle=timedelta(minutes=5))
    assert later.rows["decisions"] == 1
    assert export(db, out, now=T0 + timedelta(minutes=20)).rows["decisions"] == 0


def test_a_crash_while_writing_leaves_nothing_visible(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "export"
    record(db, T0 - timedelta(days=1))
    export(db, out, now=T0 - timedelta(days=1))  # a first run, before the rows below
    for day in range(3):
        decide(db, T0 + timedelta(days=day), user=f"u{day}")
        record(db, T0 + timedelta(days=day, hours=1), user=f"u{day}")
    before = visible_files(out)
    state = (out / export_module.STATE).read_bytes()
    real, calls = export_module._arrow, []

    def failing(*args: Any) -> Any:
        calls.append(1)
        if len(calls) == 4:  # mid-way: some day files of this run are written, hidden
            raise OSError("disk full")
        return real(*args)

    monkeypatch.setattr(export_module, "_arrow", failing)
    with pytest.raises(OSError, match="disk full"):
        export(db, out, now=T0 + timedelta(days=5))
    assert visible_files(out) == before
    assert (out / export_module.STATE).read_bytes() == state
    assert any(p.name.startswith(export_module.TEMP_PREFIX) for p in out.rglob("*"))

    monkeypatch.setattr(export_module, "_arrow", real)
    result = export(db, out, now=T0 + timedelta(days=5))
    assert result.rows == {"decisions": 3, "exposures": 0, "assignments": 3, "events": 3}
    assert not any(p.name.startswith(export_module.TEMP_PREFIX) for p in out.rglob("*"))
    assert len(exported(out, "decisions")) == len(exported(out, "assignments")) == 3
    assert len(exported(out, "events")) == 4


def test_a_crash_while_publishing_is_rolled_forward(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "export"
    for day in range(3):
        decide(db, T0 + timedelta(days=day), user=f"u{day}")
    real, calls = export_module._publish, []

    def failing(tmp: Path, final: Path) -> None:
        calls.append(1)
        if len(calls) == 3:
            raise OSError("killed")
        real(tmp, final)

    monkeypatch.setattr(export_module, "_publish", failing)
    with pytest.raises(OSError, match="killed"):
        export(db, out, now=T0 + timedelta(days=5))
    monkeypatch.setattr(export_module, "_publish", real)
    result = export(db, out, now=T0 + timedelta(days=5))
    assert result.recovered > 0 and result.rows["decisions"] == 0  # committed by the crashed run
    assert len(exported(out, "decisions")) == 3 and len(exported(out, "assignments")) == 3


def test_an_open_transaction_holds_the_watermark_back(db: Database, tmp_path: Path) -> None:
    """PostgreSQL hands out ids before commit: a run waits for the transactions writing the table, or
    fails saying so, rather than pass an id that commits later; a transaction writing elsewhere does not
    hold it back."""
    if db.writer.dialect.name != "postgresql":
        pytest.skip("SQLite assigns ids in commit order")
    out = tmp_path / "export"
    with db.writer.connect() as elsewhere:
        elsewhere.execute(text("CREATE TEMPORARY TABLE unrelated (x int)"))
        elsewhere.execute(text("INSERT INTO unrelated VALUES (1)"))  # open, writing another table
        decide(db, T0)
        assert export(db, out, now=T0 + timedelta(hours=1), in_flight_timeout=0.3).rows["assignments"] == 1
        elsewhere.rollback()
    with db.writer.connect() as slow:
        slow.execute(
            events.insert(),
            {
                "event_id": "slow",
                "user_id": "u1",
                "type": "order_placed",
                "occurred_at": T0,
                "received_at": T0,
                "value": 1.0,
                "details": {},
            },
        )  # not committed yet: its seq is taken
        fast = record(db, T0)  # a larger seq, committed
        with pytest.raises(ExportError, match="transaction writing events"):
            export(db, out, now=T0, in_flight_timeout=0.3)
        slow.commit()
    export(db, out, now=T0)
    assert sorted(r["event_id"] for r in exported(out, "events")) == sorted(["slow", fast])


@pytest.mark.slow  # simulates a store
def test_the_export_loads_in_pandas_polars_and_duckdb(
    simulated: tuple[str, datetime], tmp_path: Path
) -> None:
    import duckdb
    import pandas as pd
    import polars as pl

    url, as_of = simulated
    out = tmp_path / "export"
    db = Database(url)
    export(db, out, now=as_of + timedelta(days=1))
    with db.reader.connect() as conn:
        counts = {
            t.name: conn.execute(select(func.count()).select_from(t.table)).scalar_one()
            for t in EXPORTED
            if t.derived_from is None  # the export's own tables: checked below
        }
        revenue = conn.execute(select(func.sum(events.c.value))).scalar_one()
        features = conn.execute(select(func.count()).where(exposures.c.features.is_not(None))).scalar_one()
    db.dispose()
    assert counts["assignments"] > 100 and counts["events"] > 100 and features > 0
    for table, n in counts.items():
        assert len(pd.read_parquet(out / table)) == n, table
    frame = pl.read_parquet(out / "events" / "**" / "*.parquet", hive_partitioning=True)
    assert frame.height == counts["events"] and frame["value"].sum() == pytest.approx(revenue)
    assert frame.schema["occurred_at"] == pl.Datetime("us", "UTC")
    logged = pl.read_parquet(out / "exposures" / "**" / "*.parquet").drop_nulls("features")
    assert logged.height == features and logged["features"].list.len().unique().to_list() == [len(LOGGED)]
    glob = str(out / "assignments" / "*" / "*.parquet")
    [(n, arms)] = duckdb.sql(
        f"SELECT count(*), count(DISTINCT arm_id) FROM read_parquet('{glob}')"
    ).fetchall()
    assert n == counts["assignments"] and arms >= 4


def test_the_schema_file_is_the_export_schema() -> None:
    """A column added to or changed in the store changes the export: this test fails until
    src/nextbest/warehouse/schema.json (the documented schema) says so."""
    assert json.loads(SCHEMA_FILE.read_text()) == schema_document()
    for table in EXPORTED:
        assert list(schema_document()["tables"][table.name]["columns"]) == [
            c.name for c in table.table.columns
        ]


def test_an_export_directory_is_not_just_any_directory(db: Database, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        export(db, tmp_path)


def test_export_command(db: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nextbest.cli import main

    if db.writer.dialect.name != "sqlite":
        pytest.skip("the command is the same on every database")
    decide(db, T0)
    url = db.writer.url.render_as_string(hide_password=False)
    out = tmp_path / "warehouse"
    assert main(["export", "--to", str(out), "--database-url", url]) == 0
    assert "exported decisions 1, exposures 0, assignments 1, events 0" in capsys.readouterr().out
    assert main(["export", "--to", str(out), "--database-url", url]) == 0
    assert "exported decisions 0, exposures 0, assignments 0, events 0" in capsys.readouterr().out
    (tmp_path / "notes.txt").write_text("mine")
    for args, expected in (
        (["--to", str(tmp_path / "notes.txt")], "is a file; give a directory"),
        (["--to", str(tmp_path)], "is not empty and holds no _nextbest_export.json"),
        (["--to", str(out), "--settle-seconds", "-1"], "--settle-seconds must be 0 or more"),
    ):
        assert main(["export", *args, "--database-url", url]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected in err, err


def _units(db: Database) -> None:
    """``decide`` writes past the group commit: the units' first exposures from its rows."""
    with db.writer.begin() as conn:
        rebuild_units(conn)


def test_the_units_first_exposures_are_exported_when_assignments_are(db: Database, tmp_path: Path) -> None:
    out = tmp_path / "export"
    decide(db, T0 + timedelta(hours=1), "u1")
    decide(db, T0, "u1")  # an earlier exposure, written later
    decide(db, T0, "u2")
    _units(db)
    first = export(db, out, now=T0 + timedelta(days=1))
    assert "experiment_units/experiment_units.parquet" in first.files
    units = {r["user_id"]: r for r in exported(out, "experiment_units")}
    assert set(units) == {"u1", "u2"} and units["u1"]["first_at"] == T0 and units["u1"]["mixed_at"] is None
    # Nothing new: the file stays as it is.
    assert (
        "experiment_units/experiment_units.parquet" not in export(db, out, now=T0 + timedelta(days=1)).files
    )
    decide(db, T0 + timedelta(hours=2), "u3")
    _units(db)
    again = export(db, out, now=T0 + timedelta(days=1))
    assert "experiment_units/experiment_units.parquet" in again.files
    assert {r["user_id"] for r in exported(out, "experiment_units")} == {"u1", "u2", "u3"}
    # An export made before the units were exported: DuckDB computes them from the assignments.
    with duckdb_connection(out) as conn:
        from_file = sorted(conn.execute(select(experiment_units)).all())
    for path in (out / "experiment_units").iterdir():
        path.unlink()
    with duckdb_connection(out) as conn:
        assert sorted(conn.execute(select(experiment_units)).all()) == from_file


def _sends(directory: Path) -> dict[tuple[str, str, str, datetime], int]:
    """``assignment_sends`` as exported, added up per (experiment, arm, action, day_start)."""
    out: dict[tuple[str, str, str, datetime], int] = {}
    for r in exported(directory, "assignment_sends"):
        key = (r["experiment_id"], r["arm_id"], r["action_id"], r["day_start"])
        out[key] = out.get(key, 0) + r["sends"]
    return out


def _sends_of_assignments(directory: Path) -> dict[tuple[str, str, str, datetime], int]:
    """The same counted from the exported assignments."""
    out: dict[tuple[str, str, str, datetime], int] = {}
    for r in exported(directory, "assignments"):
        if not r["held_out"]:
            day = r["occurred_at"].replace(hour=0, minute=0, second=0, microsecond=0)
            key = (r["experiment_id"], r["arm_id"], r["action_id"], day)
            out[key] = out.get(key, 0) + 1
    return out


def test_sends_per_day_count_the_exported_assignments_across_runs(db: Database, tmp_path: Path) -> None:
    out = tmp_path / "export"
    decide(db, T0, "u1")
    decide(db, T0 + timedelta(hours=3), "u2", action="browse_reminder_email")
    decide(db, T0 + timedelta(hours=1), "u3", arm="holdout")  # held out: no send
    decide(db, T0 + timedelta(days=1, hours=2), "u1")
    first = export(db, out, now=T0 + timedelta(days=3))
    day0, day1 = T0.replace(hour=0), T0.replace(hour=0) + timedelta(days=1)
    assert _sends(out) == {
        ("exp", "treated", "cart_reminder_email", day0): 1,
        ("exp", "treated", "browse_reminder_email", day0): 1,
        ("exp", "treated", "cart_reminder_email", day1): 1,
    }
    assert sorted(f for f in first.files if f.startswith("assignment_sends/")) == [
        "assignment_sends/day=2026-11-02/part-000001.parquet",
        "assignment_sends/day=2026-11-03/part-000001.parquet",
    ]
    # Nothing new: no new counts. A late exposure (of day 0, written now): one more file in day 0's folder.
    assert not [f for f in export(db, out, now=T0 + timedelta(days=3)).files if "sends" in f]
    decide(db, T0 + timedelta(hours=5), "u4")
    decide(db, T0 + timedelta(hours=6), "u5", arm="holdout")
    late = export(db, out, now=T0 + timedelta(days=3))
    assert [f for f in late.files if "sends" in f] == ["assignment_sends/day=2026-11-02/part-000003.parquet"]
    assert _sends(out)[("exp", "treated", "cart_reminder_email", day0)] == 2
    assert _sends(out) == _sends_of_assignments(out)


def test_an_export_made_before_sends_were_counted_gets_them_counted(db: Database, tmp_path: Path) -> None:
    out = tmp_path / "export"
    for hour in range(0, 72, 7):
        decide(db, T0 + timedelta(hours=hour), f"u{hour % 5}", arm="holdout" if hour % 3 == 0 else "treated")
    export(db, out, now=T0 + timedelta(days=4))
    expected = _sends_of_assignments(out)
    assert len(expected) == 4 and _sends(out) == expected
    # As an export made by a version that did not count sends leaves it: no files, no watermark.
    for path in (out / "assignment_sends").rglob("*.parquet"):
        path.unlink()
    state = json.loads((out / export_module.STATE).read_text())
    del state["watermarks"]["assignment_sends"]
    (out / export_module.STATE).write_text(json.dumps(state))
    with duckdb_connection(out) as conn:  # meanwhile a report computes them from the assignments
        derived = sorted(conn.execute(select(assignment_sends)).all())
    assert {(e, a, act, d): n for e, a, act, d, n in derived} == expected
    decide(db, T0 + timedelta(days=5), "u9")  # and the next run counts what is there, and the new row
    export(db, out, now=T0 + timedelta(days=6))
    expected[("exp", "treated", "cart_reminder_email", T0.replace(hour=0) + timedelta(days=5))] = 1
    assert _sends(out) == expected == _sends_of_assignments(out)
    assert not [f for f in export(db, out, now=T0 + timedelta(days=6)).files if "sends" in f]


def _joined(directory: Path) -> list[tuple[Any, ...]]:
    """The exported units joined to the exported events by customer, as ``unit_events`` should hold them
    (each experiment's units numbered 1, 2, ... in user_id order)."""
    pairs = [
        (u, e)
        for u in exported(directory, "experiment_units")
        for e in exported(directory, "events")
        if e["user_id"] == u["user_id"]
    ]
    numbers: dict[tuple[str, str], int] = {}
    for experiment, user in sorted({(u["experiment_id"], u["user_id"]) for u, _ in pairs}):
        numbers[experiment, user] = 1 + sum(key[0] == experiment for key in numbers)
    return sorted(
        (
            u["experiment_id"],
            u["user_id"],
            numbers[u["experiment_id"], u["user_id"]],
            u["arm_id"],
            u["first_at"],
            u["mixed_at"],
            e["type"],
            e["occurred_at"],
            e["value"],
        )
        for u, e in pairs
    )


def _unit_events(directory: Path) -> list[tuple[Any, ...]]:
    return sorted(tuple(r[c.name] for c in unit_events.columns) for r in exported(directory, "unit_events"))


def test_unit_events_is_the_join_of_the_exported_units_and_events_across_runs(
    db: Database, tmp_path: Path
) -> None:
    out = tmp_path / "export"
    decide(db, T0, "u1")
    decide(db, T0 + timedelta(hours=1), "u2", arm="holdout")
    record(db, T0 - timedelta(days=3), "u1", value=7.0)  # before the unit existed (the lookback)
    record(db, T0 + timedelta(hours=2), "u1", kind="product_viewed", value=0.0)
    record(db, T0 + timedelta(hours=3), "u3")  # not a unit: no row
    _units(db)
    first = export(db, out, now=T0 + timedelta(days=1))
    assert "unit_events/unit_events.parquet" in first.files
    assert _unit_events(out) == _joined(out) and len(_joined(out)) == 2
    # Nothing new: left as it is.
    assert "unit_events/unit_events.parquet" not in export(db, out, now=T0 + timedelta(days=1)).files
    # New events only (one late, into an old day), then a new unit whose events were exported before,
    # then the first unit seen in the other arm: each time the join of what is exported.
    record(db, T0 + timedelta(hours=5), "u2", value=3.5)
    record(db, T0 - timedelta(days=1), "u1", kind="refunded", value=2.0)
    assert "unit_events/unit_events.parquet" in export(db, out, now=T0 + timedelta(days=1)).files
    assert _unit_events(out) == _joined(out) and len(_joined(out)) == 4
    decide(db, T0 + timedelta(hours=6), "u3")
    decide(db, T0 + timedelta(hours=7), "u1", arm="holdout")
    _units(db)
    assert "unit_events/unit_events.parquet" in export(db, out, now=T0 + timedelta(days=1)).files
    assert _unit_events(out) == _joined(out) and len(_joined(out)) == 5
    assert {r[5] for r in _unit_events(out) if r[1] == "u1"} == {T0 + timedelta(hours=7)}  # mixed_at
    # An export made before unit_events existed: DuckDB joins them meanwhile, the next run writes it.
    with duckdb_connection(out) as conn:
        from_file = sorted(tuple(r) for r in conn.execute(select(unit_events)).all())
    assert from_file == _joined(out)
    (out / "unit_events" / "unit_events.parquet").unlink()
    with duckdb_connection(out) as conn:
        assert sorted(tuple(r) for r in conn.execute(select(unit_events)).all()) == from_file
    assert "unit_events/unit_events.parquet" in export(db, out, now=T0 + timedelta(days=1)).files
    assert _unit_events(out) == from_file


def test_unit_events_of_an_export_without_units_or_events_is_empty(db: Database, tmp_path: Path) -> None:
    out = tmp_path / "export"
    record(db, T0, "u1")  # events, no units
    export(db, out, now=T0 + timedelta(days=1))
    assert exported(out, "unit_events") == [] and (out / "unit_events" / "unit_events.parquet").exists()
