"""``nextbest export``: the store's decisions, exposures, experiment exposures and events as Parquet,
partitioned by day, incrementally and exactly once.

How a run stays exactly-once and atomic:

- **Watermarks on insertion order, not event time.** Each table is read after its watermark: the id the
  store assigns as rows are inserted (``seq``, ``exposure_id``, ``assignment_id``). A late-arriving row
  (an event that happened last week, recorded now) gets a new id, so the next run exports it, into the
  partition of the day it happened (``day=`` of its ``occurred_at``) as a new file beside the old ones.
  On PostgreSQL an id can become visible after a larger one (transactions commit out of order), so a run
  reads up to the largest id it sees only once every transaction that was writing to the table at that
  moment has ended. Decisions carry no such id: they are exported by the server's decision time once it
  is older than the settle time (``--settle-seconds``, default 300 s, far beyond any decision's deadline).
- **Nothing partial is visible.** Files are written under hidden names (``.tmp-…``, which pandas,
  polars, DuckDB globs and Spark skip), then the new watermarks and the list of renames are committed
  in one atomic replace of ``_nextbest_export.json``, then the files are renamed into place. A crash
  before the commit leaves only hidden files, removed by the next run, which exports the same rows again;
  a crash after it is rolled forward by the next run before anything else.
- One export at a time per directory (a lock file).
- ``assignment_sends`` (the assignments not held out, per experiment, arm, action and day) is counted from
  the assignment rows the same run writes and committed with them, so it always counts exactly the
  exported assignments; a directory exported before it existed gets it counted from its assignment
  files by its next run.
- ``unit_events`` (each unit with each of its events) is computed, by an embedded DuckDB, from the
  ``experiment_units`` and ``events`` files the run leaves visible (its own new files included, still
  hidden) whenever the run writes either, or when it is missing, and committed with them: it is always
  exactly their join.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import JSON, Connection, DateTime, Text, cast, func, select, text, type_coerce

from nextbest.errors import NextbestError
from nextbest.models.features import LOGGED
from nextbest.store import Database
from nextbest.store.schema import UTCDateTime, assignments, experiment_units
from nextbest.store.schema import events as events_table
from nextbest.warehouse.tables import (
    EXPORTED,
    ExportedTable,
    arrow_schema,
    assignment_sends,
    schema_document,
    unit_events,
    unit_events_of,
)

__all__ = ["ExportError", "ExportResult", "export"]

logger = logging.getLogger(__name__)

STATE = "_nextbest_export.json"
LOCK = "_nextbest_export.lock"
SCHEMA = "_schema.json"
TEMP_PREFIX = ".tmp-"
_BATCH = 50_000
SENDS = str(assignment_sends.name)
SENDS_TABLE = next(t for t in EXPORTED if t.table is assignment_sends)
UNIT_EVENTS = str(unit_events.name)
UNIT_EVENTS_TABLE = next(t for t in EXPORTED if t.table is unit_events)
# Rows per row group of unit_events: DuckDB's own row group size, so that a report's scan of it spreads
# over every thread.
_UNIT_EVENTS_GROUP = 122_880


class ExportError(NextbestError):
    status = "FAILED_PRECONDITION"


@dataclass
class ExportResult:
    """What one run exported: rows per table, and the files it made visible."""

    rows: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    recovered: int = 0  # files of a crashed run's committed part that this run put in place


def export(
    db: Database,
    directory: Path,
    *,
    settle: timedelta = timedelta(minutes=5),
    now: datetime | None = None,
    in_flight_timeout: float = 60.0,
) -> ExportResult:
    """Exports what the store holds beyond the directory's watermarks; see the module's docstring."""
    directory.mkdir(parents=True, exist_ok=True)
    with _locked(directory):
        state = _load_state(directory)
        result = ExportResult()
        result.recovered = _recover(directory, state)
        run = int(state.get("runs", 0)) + 1
        marks: dict[str, Any] = dict(state.get("watermarks", {}))
        renames: list[tuple[str, str]] = []
        cut = (now or datetime.now(UTC)) - settle
        sends: Counter[tuple[str, str, str, str]] = Counter()  # (day, experiment, arm, action) -> sends
        if SENDS not in marks and marks.get("assignments") is not None:
            # A directory exported before the export counted sends: count the assignments it holds.
            sends.update(_sends_of_exported(directory))
        with db.reader.connect() as conn:
            for table in EXPORTED:
                if table.derived_from is not None:
                    continue
                if table.order is None:
                    if _unchanged(conn, directory, table, result):
                        continue
                    renames += _write_whole(conn, directory, table, run)
                    continue
                if table.order == "decided_at":
                    upper: Any = cut
                else:
                    upper = _settled_max(conn, table, in_flight_timeout)
                mark = marks.get(table.name)
                counter = sends if table.table is assignments else None
                written, count = _write_after(
                    conn, directory, table, run, mark=mark, upper=upper, sends=counter
                )
                renames += written
                result.rows[str(table.name)] = count
                marks[str(table.name)] = _advance(mark, upper)
        renames += _write_sends(directory, sends, run)
        if _unit_events_stale(directory, renames):
            renames += _write_unit_events(directory, renames, run)
        marks[SENDS] = marks.get("assignments")
        _write_json(directory / SCHEMA, schema_document())
        _durable([directory / tmp for tmp, _ in renames])
        # The commit point: the new watermarks and the renames still to do, in one atomic replace.
        _save_state(directory, {"runs": run, "watermarks": marks, "pending": renames})
        for tmp, final in renames:
            _publish(directory / tmp, directory / final)
        _durable({(directory / final).parent for _, final in renames})
        _save_state(directory, {"runs": run, "watermarks": marks, "pending": []})
        result.files = [final for _, final in renames]
        return result


def _advance(mark: Any, upper: Any) -> Any:
    """The new watermark: never backwards (retention may have deleted the newest rows)."""
    if upper is None:
        return mark
    if isinstance(upper, datetime):
        return max(upper, datetime.fromisoformat(mark)).isoformat() if mark else upper.isoformat()
    return upper if mark is None else max(int(mark), upper)


def _write_after(
    conn: Connection,
    directory: Path,
    table: ExportedTable,
    run: int,
    *,
    mark: Any,
    upper: Any,
    sends: Counter[tuple[str, str, str, str]] | None = None,
) -> tuple[list[tuple[str, str]], int]:
    """Writes the rows after ``mark`` up to ``upper`` (inclusive) as hidden files, one per day; returns
    the renames to do and the row count. ``sends`` (for assignments) gets the rows not held out counted
    per day, experiment, arm and action."""
    if upper is None or table.order is None or table.day is None:
        return [], 0
    day_column = table.day
    order = table.table.c[table.order]
    query = select(*_read_columns(table)).where(order <= upper).order_by(order)
    if mark is not None:
        query = query.where(order > (datetime.fromisoformat(mark) if table.order == "decided_at" else mark))
    schema = arrow_schema(table)
    writers: dict[str, tuple[pq.ParquetWriter, str, str]] = {}
    pending: dict[str, list[pa.Table]] = {}  # rows per day not yet written: a row group per _BATCH rows

    def flush(day: str) -> None:
        if day not in writers:
            partition = Path(table.name) / f"day={day}"
            (directory / partition).mkdir(parents=True, exist_ok=True)
            tmp = str(partition / f"{TEMP_PREFIX}{run:06d}-{uuid.uuid4().hex[:8]}.parquet")
            final = str(partition / f"part-{run:06d}.parquet")
            writers[day] = (pq.ParquetWriter(directory / tmp, schema), tmp, final)
        writers[day][0].write_table(pa.concat_tables(pending.pop(day)))

    count = 0
    try:
        result = conn.execute(query.execution_options(stream_results=True, yield_per=_BATCH))
        for rows in result.partitions(_BATCH):
            batch = _arrow(table, schema, rows)
            days = pc.strftime(batch[day_column], format="%Y-%m-%d")
            if sends is not None:
                sends.update(_count_sends(batch, days))
            for day in pc.unique(days).to_pylist():
                pending.setdefault(day, []).append(batch.filter(pc.equal(days, day)))
                if sum(t.num_rows for t in pending[day]) >= _BATCH:
                    flush(day)
            count += len(rows)
        for day in sorted(pending):
            flush(day)
    finally:
        for writer, _, _ in writers.values():
            writer.close()
    return [(tmp, final) for _, tmp, final in writers.values()], count


def _count_sends(batch: pa.Table, days: pa.Array) -> Counter[tuple[str, str, str, str]]:
    """The assignments of ``batch`` not held out, counted per (day, experiment, arm, action)."""
    keys = ["day", "experiment_id", "arm_id", "action_id"]
    sent = batch.select(keys[1:]).append_column("day", days).filter(pc.invert(batch["held_out"]))
    grouped = sent.group_by(keys).aggregate([("day", "count")]).to_pydict()
    return Counter(
        {
            key: int(n)
            for key, n in zip(
                zip(*(grouped[k] for k in keys), strict=True), grouped["day_count"], strict=True
            )
        }
    )


def _sends_of_exported(directory: Path) -> Counter[tuple[str, str, str, str]]:
    """The visible exported assignments not held out, counted per (day, experiment, arm, action): the
    day from each file's ``day=`` folder."""
    out: Counter[tuple[str, str, str, str]] = Counter()
    for path in sorted((directory / "assignments").glob("day=*/*.parquet")):
        rows = pq.read_table(path, columns=["experiment_id", "arm_id", "action_id", "held_out"])
        days = pa.array([path.parent.name.removeprefix("day=")] * rows.num_rows, type=pa.string())
        out.update(_count_sends(rows, days))
    return out


def _write_sends(
    directory: Path, sends: Counter[tuple[str, str, str, str]], run: int
) -> list[tuple[str, str]]:
    """``assignment_sends``: this run's counts as hidden files, one per day; returns the renames to do."""
    schema = arrow_schema(SENDS_TABLE)
    renames = []
    for day in sorted({key[0] for key in sends}):
        rows = sorted((key, n) for key, n in sends.items() if key[0] == day and n)
        start = datetime.fromisoformat(day).replace(tzinfo=UTC)
        columns = list(zip(*[(e, a, act, start, n) for (_, e, a, act), n in rows], strict=True))
        partition = Path(SENDS) / f"day={day}"
        (directory / partition).mkdir(parents=True, exist_ok=True)
        tmp = str(partition / f"{TEMP_PREFIX}{run:06d}-{uuid.uuid4().hex[:8]}.parquet")
        arrays = [pa.array(values, type=field.type) for field, values in zip(schema, columns, strict=True)]
        pq.write_table(pa.Table.from_arrays(arrays, schema=schema), directory / tmp)
        renames.append((tmp, str(partition / f"part-{run:06d}.parquet")))
    return renames


def _unit_events_stale(directory: Path, renames: Sequence[tuple[str, str]]) -> bool:
    """Whether ``unit_events`` must be computed again: this run writes units or events, or it is missing."""
    written = {final.split("/", 1)[0] for _, final in renames}
    missing = not (directory / UNIT_EVENTS / f"{UNIT_EVENTS}.parquet").exists()
    return missing or bool(written & {"experiment_units", "events"})


def _exported_files(directory: Path, table: str, renames: Sequence[tuple[str, str]]) -> list[str]:
    """The table's Parquet files as they will be once this run is committed: the visible ones not
    replaced by this run, and this run's own under their hidden names."""
    pending = {final: tmp for tmp, final in renames if final.startswith(f"{table}/")}
    visible = {
        str(path.relative_to(directory))
        for path in (directory / table).rglob("*.parquet")
        if not path.name.startswith(TEMP_PREFIX)
    }
    return [str(directory / f) for f in sorted(visible - set(pending))] + [
        str(directory / tmp) for _, tmp in sorted(pending.items())
    ]


def _write_unit_events(
    directory: Path, renames: Sequence[tuple[str, str]], run: int
) -> list[tuple[str, str]]:
    """``unit_events``: the units and events this run leaves exported, joined by an embedded DuckDB,
    in experiment and customer order, as a hidden file; returns the rename to do."""
    (directory / UNIT_EVENTS).mkdir(exist_ok=True)
    tmp = f"{UNIT_EVENTS}/{TEMP_PREFIX}{run:06d}.parquet"
    schema = arrow_schema(UNIT_EVENTS_TABLE)
    units = _exported_files(directory, "experiment_units", renames)
    events = _exported_files(directory, "events", renames)
    with pq.ParquetWriter(directory / tmp, schema) as writer:
        if not units or not events:
            writer.write_table(schema.empty_table())
            return [(tmp, f"{UNIT_EVENTS}/{UNIT_EVENTS}.parquet")]
        con = duckdb.connect(":memory:")
        try:
            con.execute("SET TimeZone = 'UTC'")
            for name, files in (("experiment_units", units), ("events", events)):
                listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
                con.execute(
                    f"CREATE VIEW {name} AS SELECT * FROM read_parquet([{listed}], "
                    "hive_partitioning = false, union_by_name = true)"
                )
            joined = str(unit_events_of(experiment_units, events_table).compile())
            query = f"SELECT * FROM ({joined}) ORDER BY experiment_id, user_id, occurred_at"
            relation = con.sql(query)
            # DuckDB 2 names it to_arrow_reader; 1.x, fetch_arrow_reader.
            reader = getattr(relation, "to_arrow_reader", None) or relation.fetch_arrow_reader
            for batch in reader(_UNIT_EVENTS_GROUP):
                writer.write_table(pa.Table.from_batches([batch]).cast(schema))
        finally:
            con.close()
    return [(tmp, f"{UNIT_EVENTS}/{UNIT_EVENTS}.parquet")]


def _read_columns(table: ExportedTable) -> list[Any]:
    """The table's columns as read for the export: JSON as its text (no decoding and re-encoding) and
    times without the store's per-value conversion (pyarrow takes them as UTC)."""
    out: list[Any] = []
    for c in table.table.columns:
        if isinstance(c.type, JSON):
            out.append(cast(c, Text).label(c.name))
        elif isinstance(c.type, UTCDateTime):
            out.append(type_coerce(c, DateTime(timezone=True)).label(c.name))
        else:
            out.append(c)
    return out


def _unchanged(conn: Connection, directory: Path, table: ExportedTable, result: ExportResult) -> bool:
    """True when a table written whole need not be written again: the units' first exposures when this
    run exported no new assignments and the store holds as many units as the file (an erasure removes
    some); small tables are always rewritten."""
    if table.name != "experiment_units":
        return False
    path = directory / table.name / f"{table.name}.parquet"
    if result.rows.get("assignments") or not path.exists():
        return False
    stored = conn.execute(select(func.count()).select_from(table.table)).scalar()
    return bool(pq.read_metadata(path).num_rows == stored)


def _write_whole(conn: Connection, directory: Path, table: ExportedTable, run: int) -> list[tuple[str, str]]:
    (directory / table.name).mkdir(exist_ok=True)
    tmp = f"{table.name}/{TEMP_PREFIX}{run:06d}.parquet"
    schema = arrow_schema(table)
    query = select(*_read_columns(table)).execution_options(stream_results=True, yield_per=_BATCH)
    with pq.ParquetWriter(directory / tmp, schema) as writer:
        written = False
        for rows in conn.execute(query).partitions(_BATCH):
            writer.write_table(_arrow(table, schema, rows))
            written = True
        if not written:
            writer.write_table(_arrow(table, schema, []))
    return [(tmp, f"{table.name}/{table.name}.parquet")]


def _arrow(table: ExportedTable, schema: pa.Schema, rows: Sequence[Any]) -> pa.Table:
    """The rows as an Arrow table, column by column."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    arrays = []
    for column, values in zip(schema, columns, strict=True):
        if column.name == "features" and pa.types.is_list(column.type):
            arrays.append(_features(values))
        else:
            arrays.append(pa.array(values, type=column.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _features(blobs: Sequence[bytes | None]) -> pa.Array:
    """Logged features (float64, little-endian, ``LOGGED`` order) as lists; a missing or malformed blob
    is null."""
    width = len(LOGGED)
    good = [b is not None and len(b) == width * 8 for b in blobs]
    flat = np.frombuffer(b"".join(b for b, ok in zip(blobs, good, strict=True) if ok and b), dtype="<f8")
    offsets = np.concatenate([[0], np.cumsum(np.array(good, dtype=np.int64) * width)]).astype(np.int32)
    mask = pa.array([not ok for ok in good], type=pa.bool_())
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=pa.float64()), mask=mask)


def _settled_max(conn: Connection, table: ExportedTable, timeout: float) -> int | None:
    """The largest id below which every row is committed or never will be. On SQLite one writer at a
    time assigns ids in commit order: the largest visible id is settled. On PostgreSQL a sequence hands
    ids out before commit, so a smaller id may still be on its way: the largest visible id is settled
    once the transactions that were writing to the table when it was read have ended. An INSERT holds
    the table's ROW EXCLUSIVE lock from before it draws its id until it commits, so those transactions
    are the lock's holders seen after the id was read; any later writer draws a larger id."""
    order = table.table.c[table.order]  # type: ignore[index]
    top = conn.execute(select(func.max(order))).scalar()
    if conn.dialect.name != "postgresql":
        return None if top is None else int(top)
    conn.commit()
    holders = text(
        "SELECT virtualtransaction FROM pg_locks WHERE locktype = 'relation'"
        " AND relation = CAST(:t AS regclass) AND mode = 'RowExclusiveLock' AND granted"
        " AND pid <> pg_backend_pid()"
    )
    writers = {row[0] for row in conn.execute(holders, {"t": table.name})}
    deadline = time.monotonic() + timeout
    while writers:
        conn.commit()
        if time.monotonic() > deadline:
            raise ExportError(
                f"a transaction writing {table.name} has been open for over {timeout:g} s; "
                "export again once it has ended"
            )
        time.sleep(0.05)
        writers &= {row[0] for row in conn.execute(holders, {"t": table.name})}
    conn.commit()
    return None if top is None else int(top)


def _recover(directory: Path, state: dict[str, Any]) -> int:
    """Rolls a committed run's renames forward and removes the hidden files of an uncommitted one."""
    done = 0
    for tmp, final in state.get("pending", []):
        if (directory / tmp).exists():
            _publish(directory / tmp, directory / final)
            done += 1
    if state.get("pending"):
        state["pending"] = []
        _save_state(directory, state)
    for stray in directory.rglob(f"{TEMP_PREFIX}*"):
        stray.unlink()
    return done


def _publish(tmp: Path, final: Path) -> None:
    if final.exists() and final.suffix == ".parquet" and final.parent.name.startswith("day="):
        raise ExportError(f"{final} exists already; is another tool writing into the export directory?")
    os.replace(tmp, final)


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    with (directory / LOCK).open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ExportError(f"another export into {directory} is running") from None
        yield


def _load_state(directory: Path) -> dict[str, Any]:
    path = directory / STATE
    if not path.exists():
        if any(p.name != LOCK for p in directory.iterdir()):
            raise ExportError(f"{directory} is not empty and holds no {STATE}: choose an empty directory")
        # Claimed before anything is written, so that a crash in the first run is recovered like any.
        _save_state(directory, {"runs": 0, "watermarks": {}, "pending": []})
        return {}
    try:
        state: dict[str, Any] = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        problem = f"{path} is not valid JSON ({exc}); restore it or export to a new directory"
        raise ExportError(problem) from None
    return state


def _save_state(directory: Path, state: dict[str, Any]) -> None:
    _write_json(directory / STATE, state)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f"{TEMP_PREFIX}{path.name}")
    with tmp.open("wb") as f:
        f.write(orjson.dumps(data, option=orjson.OPT_INDENT_2))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _durable(paths: Collection[Path]) -> None:
    """Flushes files (their data) or folders (their renames) to disk: one by one when they are few, with
    one ``sync`` of every file system when they are many (a first export writes a file per day of
    history)."""
    if len(paths) > 64:
        os.sync()
        return
    for path in paths:
        _fsync_dir(path) if path.is_dir() else _fsync_file(path)


def _fsync_file(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
