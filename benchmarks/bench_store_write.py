"""The durable write: CPU per decision committed, and events per second, against the bare driver.

Decisions: real decisions of the 20-candidate benchmark catalog (``benchmarks/catalog_20.yaml``, as
``bench_next_action.py`` sends them: 19 rejections and one chosen on-site action with its features),
written through ``Store.save_decisions`` (one group commit per batch) at batch sizes 1, 8, 32, 100 and
500, on SQLite (WAL, ``synchronous=FULL``) and PostgreSQL. Two store figures per size: without the
customer version check (the rows alone) and with it (as ``NextAction`` writes: a customer row moved to
its next version). The baseline, in the same run and the same database: the bare driver (``sqlite3``,
psycopg) inserting the very rows the store wrote — the decision row (its payload as the JSON text the
store stores), its exposure and assignment rows — with ``executemany``, one transaction per batch, the
rows built before the clock starts.

Events: ``Store.record_events`` (what ``RecordEvents`` calls, with the catalog's cancellation rule) in
batches of 100 events, each for a customer first seen, by one caller and by four concurrent callers,
against the bare driver's ``executemany`` into the same tables (same indexes and triggers), one
transaction per batch, of the rows the store writes: the ``events`` rows alone, and the ``events`` and
``customers`` rows (each customer created with its event folded in). Several rounds (``--rounds``), the
paths alternating batch by batch, each round its own ratios: the spread says how noisy the host was.

CPU is this process's (``time.process_time``: the client's side; PostgreSQL's own work is in its server
processes, so its wall time is reported too). The machine is shared: compare the ratios within a run.

    .venv/bin/python benchmarks/bench_store_write.py [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from nextbest.catalog import load_catalog
from nextbest.decision.contact import cancel_reason
from nextbest.decision.engine import DecisionEngine, request_fingerprint
from nextbest.domain import Channel, Decision, DecisionRequest, Event, EventType, RequestContext
from nextbest.state import CustomerSnapshot, CustomerState, fold_events
from nextbest.store import Database, FrozenStore, Store, ToSave, codec, upgrade

BENCH_DIR = Path(__file__).resolve().parent
T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
SIZES = (1, 8, 32, 100, 500)


@dataclass
class Row:
    database: str
    batch: int
    decisions: int
    store_cpu_us: float
    store_wall_us: float
    guarded_cpu_us: float
    guarded_wall_us: float
    bare_cpu_us: float
    bare_wall_us: float


def template_decisions(count: int) -> list[tuple[Decision, str]]:
    """``count`` decisions of the benchmark catalog, with their request fingerprints."""
    catalog = load_catalog(BENCH_DIR / "catalog_20.yaml")

    def empty(user_id: str, _now: datetime, _products: Sequence[str]) -> CustomerSnapshot:
        return CustomerSnapshot(CustomerState(user_id=user_id), (), frozenset(), 0)

    engine = DecisionEngine(catalog, FrozenStore(empty), clock=lambda: T0)
    out = []
    for i in range(count):
        request = DecisionRequest(
            f"tpl-{i}",
            f"user-{i}",
            "bench_trigger",
            T0 + timedelta(seconds=i),
            RequestContext(cart_value=80.0, product_ids=("sku-1", "sku-2"), time_zone="Europe/Paris"),
            explain=True,
        )
        out.append((engine.decide(request), request_fingerprint(request)))
    return out


def fresh(templates: list[tuple[Decision, str]], n: int, tag: str) -> list[tuple[Decision, str]]:
    """``n`` decisions with ids never used before."""
    out = []
    for i in range(n):
        d, fp = templates[i % len(templates)]
        key = uuid.uuid4().hex
        out.append(
            (replace(d, decision_id=key, request_id=f"{tag}-{key}", user_id=f"{tag}-u-{key[:16]}"), fp)
        )
    return out


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


# -- the bare driver ---------------------------------------------------------------------------------------


class Bare:
    """Plain DBAPI inserts of prepared tuples into the store's own tables."""

    def __init__(self, url: str, dialect: str) -> None:
        self.dialect = dialect
        if dialect == "sqlite":
            path = url.removeprefix("sqlite:///")
            self.conn: Any = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.execute("PRAGMA busy_timeout=30000")
            self.marker = "?"
        else:
            import psycopg

            self.conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))
            self.marker = "%s"

    def sql(self, table: str, columns: Sequence[str]) -> str:
        marks = ", ".join([self.marker] * len(columns))
        return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"

    def write(self, statements: Sequence[tuple[str, list[tuple[Any, ...]]]]) -> None:
        conn = self.conn
        if self.dialect == "sqlite":
            conn.execute("BEGIN IMMEDIATE")
        cursor = conn.cursor()
        for sql, rows in statements:
            if rows:
                cursor.executemany(sql, rows)
        conn.commit() if self.dialect != "sqlite" else conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


def _value(value: Any, dialect: str) -> Any:
    """A value as the bare driver is given it: documents as JSON text; SQLite times as ISO text."""
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    if isinstance(value, datetime) and dialect == "sqlite":  # the text SQLAlchemy stores
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    return value


def bare_decision_statements(
    bare: Bare, batch: Sequence[tuple[Decision, str]]
) -> list[tuple[str, list[tuple[Any, ...]]]]:
    rows: dict[str, list[dict[str, Any]]] = {"decisions": [], "exposures": [], "assignments": []}
    for d, fp in batch:
        rows["decisions"].append(codec.decision_row(d, fp, T0))
        rows["exposures"] += codec.exposure_rows(d)
        rows["assignments"] += codec.assignment_rows(d)
    out = []
    for table, table_rows in rows.items():
        if table_rows:
            columns = list(table_rows[0])
            out.append(
                (
                    bare.sql(table, columns),
                    [tuple(_value(r[c], bare.dialect) for c in columns) for r in table_rows],
                )
            )
    return out


# -- the runs ----------------------------------------------------------------------------------------------


def bench_decisions(
    name: str, url: str, templates: list[tuple[Decision, str]], per_size: int, sizes: Sequence[int]
) -> list[Row]:
    db = Database(url)
    upgrade(db)
    store = Store(db, max_batch=max(sizes))
    bare = Bare(url, db.dialect)
    rows = []
    try:
        # Warm-up: statements compiled, caches and connections in place.
        store.save_decisions([ToSave(d, fp, T0) for d, fp in fresh(templates, 50, "warm")])
        bare.write(bare_decision_statements(bare, fresh(templates, 50, "warmb")))
        for size in sizes:
            n = max(size, per_size // size * size)
            totals = dict.fromkeys(("store", "guarded", "bare"), (0.0, 0.0))
            for start in range(0, n, size):
                plain = [ToSave(d, fp, T0) for d, fp in fresh(templates, size, f"s{size}")]
                guarded = [ToSave(d, fp, T0, 0) for d, fp in fresh(templates, size, f"g{size}")]
                statements = bare_decision_statements(bare, fresh(templates, size, f"b{size}"))
                for key, fn in (
                    ("store", partial(_save_all, store, plain)),
                    ("guarded", partial(_save_all, store, guarded)),
                    ("bare", partial(bare.write, statements)),
                ):
                    cpu, wall = timed(fn)
                    totals[key] = (totals[key][0] + cpu, totals[key][1] + wall)
                del start
            us = {k: (c / n * 1e6, w / n * 1e6) for k, (c, w) in totals.items()}
            row = Row(name, size, n, *us["store"], *us["guarded"], *us["bare"])
            rows.append(row)
            print(
                f"[{name}] batch {size:>3}: store {row.store_cpu_us:6.0f} µs CPU "
                f"(with version check {row.guarded_cpu_us:6.0f}), bare {row.bare_cpu_us:5.0f} µs "
                f"-> {row.store_cpu_us / row.bare_cpu_us:4.1f}x",
                file=sys.stderr,
            )
    finally:
        bare.close()
        store.close()
    return rows


def _save_all(store: Store, items: Sequence[ToSave]) -> None:
    results = store.save_decisions(items)
    bad = [r for r in results if isinstance(r, Exception) or not r]
    if bad:
        raise RuntimeError(f"{len(bad)} decisions not saved: {bad[0]!r}")


def make_events(n: int, tag: str) -> list[Event]:
    kinds = (EventType.PRODUCT_VIEWED, EventType.OPENED, EventType.CLICKED, EventType.ADDED_TO_CART)
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        channel = Channel.EMAIL if kind in (EventType.OPENED, EventType.CLICKED) else None
        out.append(
            Event(
                f"{tag}-{uuid.uuid4().hex}",
                f"{tag}-u-{i}",
                kind,
                T0 + timedelta(seconds=i),
                channel=channel,
                product_ids=("sku-1",) if kind is EventType.PRODUCT_VIEWED else (),
            )
        )
    return out


def bare_event_statements(
    bare: Bare, batch: Sequence[Event], with_customers: bool
) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """The rows ``record_events`` writes for ``batch`` (events of customers first seen), as the bare
    driver is given them: the ``events`` rows and, ``with_customers``, the ``customers`` rows the store
    creates (each customer's state with its event folded in, at version 1)."""
    event_columns = list(codec.EVENT_COLUMNS)
    out = [
        (
            bare.sql("events", event_columns),
            [tuple(_value(v, bare.dialect) for v in codec.event_values(e, T0)) for e in batch],
        )
    ]
    if with_customers:
        customer_columns = ["user_id", *codec.STATE_COLUMNS, "version"]
        out.append(
            (
                bare.sql("customers", customer_columns),
                [
                    (
                        e.user_id,
                        *(
                            _value(v, bare.dialect)
                            for v in codec.state_values(fold_events(CustomerState(e.user_id), [e]), T0)
                        ),
                        1,
                    )
                    for e in batch
                ],
            )
        )
    return out


def _spread(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def bench_events(
    name: str, url: str, count: int, *, size: int = 100, callers: int = 4, rounds: int = 3
) -> dict[str, Any]:
    """Events/s of ``Store.record_events`` in batches of ``size`` (each event a customer first seen),
    called in turn by one caller and concurrently by ``callers`` (as a server's callers do: the group
    commit shares their transactions), against the bare driver's ``executemany`` in turn (one caller,
    one transaction per batch) of the same rows: the ``events`` rows alone, and the ``events`` and
    ``customers`` rows (all the rows the store writes). ``rounds`` rounds of ``count`` events per path,
    the paths alternating batch by batch within a round; each round gives its own ratios."""
    catalog = load_catalog(BENCH_DIR / "catalog_20.yaml")
    rule = partial(cancel_reason, catalog)
    db = Database(url)
    upgrade(db)
    store = Store(db)
    bare = Bare(url, db.dialect)
    paths = ("store", "bare_events", "bare_rows")
    batches = count // size
    n = batches * size
    per_round: list[dict[str, float]] = []
    try:
        store.record_events(make_events(size, "warm"), T0, rule)
        bare.write(bare_event_statements(bare, make_events(size, "warmb"), with_customers=True))
        for _ in range(rounds):
            totals = {k: [0.0, 0.0] for k in paths}
            for _ in range(batches):
                mine = make_events(size, f"e{secrets.token_hex(4)}")
                events_only = bare_event_statements(
                    bare, make_events(size, f"b{secrets.token_hex(4)}"), False
                )
                all_rows = bare_event_statements(bare, make_events(size, f"r{secrets.token_hex(4)}"), True)
                for key, fn in (
                    ("store", partial(store.record_events, mine, T0, rule)),
                    ("bare_events", partial(bare.write, events_only)),
                    ("bare_rows", partial(bare.write, all_rows)),
                ):
                    cpu, wall = timed(fn)
                    totals[key][0] += cpu
                    totals[key][1] += wall
            work = [make_events(size, f"c{secrets.token_hex(4)}") for _ in range(batches)]
            writer = store.customers.writer
            commits = writer.batches

            def caller(k: int, work: list[list[Event]] = work) -> None:
                for batch in work[k::callers]:
                    store.record_events(batch, T0, rule)

            threads = [threading.Thread(target=caller, args=(k,)) for k in range(callers)]
            cpu, wall = time.process_time(), time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            concurrent_cpu, concurrent_wall = time.process_time() - cpu, time.perf_counter() - wall
            r = {f"{k}_events_per_s": n / totals[k][1] for k in paths}
            r |= {f"{k}_cpu_us_per_event": totals[k][0] / n * 1e6 for k in paths}
            r["concurrent_events_per_s"] = n / concurrent_wall
            r["concurrent_cpu_us_per_event"] = concurrent_cpu / n * 1e6
            r["concurrent_calls_per_commit"] = batches / max(1, writer.batches - commits)
            for base in ("bare_events", "bare_rows"):
                r[f"ratio_{base}"] = r["store_events_per_s"] / r[f"{base}_events_per_s"]
                r[f"concurrent_ratio_{base}"] = r["concurrent_events_per_s"] / r[f"{base}_events_per_s"]
                r[f"cpu_ratio_{base}"] = r[f"{base}_cpu_us_per_event"] / r["store_cpu_us_per_event"]
            per_round.append(r)
            print(
                f"[{name}] events in batches of {size}: store {r['store_events_per_s']:,.0f}/s "
                f"({callers} callers: {r['concurrent_events_per_s']:,.0f}/s); bare, events rows "
                f"{r['bare_events_events_per_s']:,.0f}/s, events + customers rows "
                f"{r['bare_rows_events_per_s']:,.0f}/s"
                f" -> {r['ratio_bare_events']:.2f}x / {r['ratio_bare_rows']:.2f}x "
                f"({callers} callers {r['concurrent_ratio_bare_events']:.2f}x / "
                f"{r['concurrent_ratio_bare_rows']:.2f}x); CPU us/event store "
                f"{r['store_cpu_us_per_event']:.1f}, "
                f"bare {r['bare_events_cpu_us_per_event']:.1f} / {r['bare_rows_cpu_us_per_event']:.1f}",
                file=sys.stderr,
            )
        return {
            "database": name,
            "events": n,
            "batch": size,
            "callers": callers,
            "rounds": per_round,
            "spread": {k: _spread([r[k] for r in per_round]) for k in per_round[0]},
        }
    finally:
        bare.close()
        store.close()


def bench_batch_reads(name: str, url: str, rounds: int = 5, size: int = 100) -> dict[str, float]:
    """CPU per decision of ``DecisionEngine.decide_batch`` (batches of ``size`` distinct customers with
    three earlier decisions each) with the round's customers read together (``load_snapshots``) and
    read one by one, alternated twice, on the same store."""
    catalog = load_catalog(BENCH_DIR / "catalog_20.yaml")
    db = Database(url)
    upgrade(db)
    store = Store(db, max_batch=500)
    engine = DecisionEngine(catalog, store, clock=lambda: T0)
    users = [f"br-{secrets.token_hex(6)}" for _ in range(size)]

    def requests(hours: int) -> list[DecisionRequest]:
        return [
            DecisionRequest(
                f"br-{secrets.token_hex(8)}",
                user,
                "bench_trigger",
                T0 + timedelta(hours=hours),
                RequestContext(cart_value=80.0, product_ids=("sku-1", "sku-2"), time_zone="Europe/Paris"),
            )
            for user in users
        ]

    together = store.load_snapshots
    one_by_one = lambda wanted: [store.load_snapshot(*w) for w in wanted]  # noqa: E731
    try:
        for hours in range(3):
            engine.decide_batch(requests(hours))
        cpu = {"together": 0.0, "one_by_one": 0.0}
        hours = 10
        for mode in ("together", "one_by_one") * 2:
            store.load_snapshots = together if mode == "together" else one_by_one  # type: ignore[method-assign]
            for _ in range(rounds):
                batch = requests(hours)
                hours += 1
                started = time.process_time()
                results = engine.decide_batch(batch)
                cpu[mode] += time.process_time() - started
                _all_decided(results)
        out = {k: v / (2 * rounds * size) * 1e6 for k, v in cpu.items()}
        print(
            f"[{name}] decide_batch of {size}: {out['together']:.0f} µs CPU/decision read together, "
            f"{out['one_by_one']:.0f} one by one",
            file=sys.stderr,
        )
        return {"database": name, **out}  # type: ignore[dict-item]
    finally:
        store.close()


def _all_decided(results: Sequence[object]) -> None:
    failed = [r for r in results if isinstance(r, Exception)]
    if failed:
        raise RuntimeError(f"{len(failed)} items failed: {failed[0]!r}")


@contextlib.contextmanager
def postgres_database(url: str) -> Iterator[str]:
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    base = make_url(url)
    name = f"nb_bench_write_{secrets.token_hex(4)}"
    admin = base.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", help="a PostgreSQL URL (a fresh database is created beside it)")
    parser.add_argument("--decisions", type=int, default=2000, help="decisions per batch size and path")
    parser.add_argument("--events", type=int, default=20_000, help="events per path")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--callers", type=int, default=4, help="concurrent RecordEvents callers")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the events comparison")
    parser.add_argument(
        "--what", default="decisions,events,batch", help="any of decisions, events, batch (comma-separated)"
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    templates = template_decisions(200)
    payload = len(orjson.dumps(codec.decision_row(*templates[0], T0)["payload"]))
    print(f"payload: {payload} bytes of JSON per decision", file=sys.stderr)
    rows: list[Row] = []
    events: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="nb-bench-write-") as tmp:
        url = f"sqlite:///{tmp}/write.db"
        if "decisions" in args.what:
            rows += bench_decisions("sqlite", url, templates, args.decisions, sizes)
        if "events" in args.what:
            events.append(
                bench_events(
                    "sqlite",
                    f"sqlite:///{tmp}/events.db",
                    args.events,
                    callers=args.callers,
                    rounds=args.rounds,
                )
            )
    reads: list[dict[str, Any]] = []
    if "batch" in args.what:
        with tempfile.TemporaryDirectory(prefix="nb-bench-batch-") as tmp:
            reads.append(bench_batch_reads("sqlite", f"sqlite:///{tmp}/batch.db"))
    if args.postgres:
        with postgres_database(args.postgres) as url:
            if "batch" in args.what:
                reads.append(bench_batch_reads("postgresql", url))
            if "decisions" in args.what:
                rows += bench_decisions("postgresql", url, templates, args.decisions, sizes)
            if "events" in args.what:
                events.append(
                    bench_events("postgresql", url, args.events, callers=args.callers, rounds=args.rounds)
                )
    print("\n| database | batch | store µs CPU/decision | with version check | bare driver | store ÷ bare |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r.database} | {r.batch} | {r.store_cpu_us:,.0f} | {r.guarded_cpu_us:,.0f} | "
            f"{r.bare_cpu_us:,.0f} | {r.store_cpu_us / r.bare_cpu_us:.1f} |"
        )
    print(
        "\n| database | events/s: store, 1 caller / concurrent | bare: events rows / events + customers rows "
        "| store ÷ bare events rows (1 caller / concurrent) | store ÷ bare all rows (1 caller / concurrent) "
        "| CPU µs/event: store / bare events / bare all rows |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for e in events:
        for rd in e["rounds"]:
            print(
                f"| {e['database']} | {rd['store_events_per_s']:,.0f} / {rd['concurrent_events_per_s']:,.0f} "
                f"| {rd['bare_events_events_per_s']:,.0f} / {rd['bare_rows_events_per_s']:,.0f} "
                f"| {rd['ratio_bare_events']:.2f} / {rd['concurrent_ratio_bare_events']:.2f} "
                f"| {rd['ratio_bare_rows']:.2f} / {rd['concurrent_ratio_bare_rows']:.2f} "
                f"| {rd['store_cpu_us_per_event']:.1f} / {rd['bare_events_cpu_us_per_event']:.1f} / "
                f"{rd['bare_rows_cpu_us_per_event']:.1f} |"
            )
    if reads:
        print("\n| database | decide_batch of 100: µs CPU/decision, read together | one by one |")
        print("|---|---:|---:|")
        for read in reads:
            print(f"| {read['database']} | {read['together']:,.0f} | {read['one_by_one']:,.0f} |")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "payload_bytes": payload,
                    "decisions": [vars(r) for r in rows],
                    "events": events,
                    "reads": reads,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
