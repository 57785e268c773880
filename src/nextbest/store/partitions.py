"""Monthly partitions of the append-only tables on PostgreSQL: exposures, assignments and events.

Each is declaratively partitioned by range on ``occurred_at`` (migration 0007): one partition a month,
named ``<table>_pYYYYMM`` in the schema ``nextbest_partitions`` (so that the application's schema shows
only the parent tables), and a ``<table>_default`` partition for rows outside every monthly one (an event
reported years late, say), so that no write ever fails for want of a partition. :func:`ensure_partitions`
creates the months ahead (at every migration, hence at server start, and from ``nextbest partitions``)
and moves rows that had landed in the default partition into the month created for them;
:func:`drop_partitions_before` is retention without ``DELETE``: a whole month goes at once.

SQLite has no partitions: every function here does nothing there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, text

__all__ = [
    "EVENT_IDS",
    "MONTHS_AHEAD",
    "PARTITIONED",
    "SCHEMA",
    "Partition",
    "compared",
    "drop_partitions_before",
    "ensure_partitions",
    "forget_event_ids_before",
    "is_partitioned",
    "month_start",
    "partitions",
]

# Partitioned table -> its partition key (a UTC timestamp column).
PARTITIONED: dict[str, str] = {
    "exposures": "occurred_at",
    "assignments": "occurred_at",
    "events": "occurred_at",
}
SCHEMA = "nextbest_partitions"
# Every stored event id, unique (migration 0008): what keeps events unique by id across their months.
EVENT_IDS = f"{SCHEMA}.event_ids"
# Months created ahead of the current one: a server that runs for months without a migration or a
# maintenance run still writes into monthly partitions, not into the default one.
MONTHS_AHEAD = 3
# Dropping a partition locks its table (and, for a foreign key, decisions) against writes: waiting for
# that lock behind a long report would hold every writer queued behind the wait, so give up after this.
_LOCK_TIMEOUT = "2s"
_BOUND = re.compile(r"FROM \('([^']+)'\) TO \('([^']+)'\)")


@dataclass(frozen=True, slots=True)
class Partition:
    """One partition: ``start`` <= occurred_at < ``end``; both None for the default partition."""

    table: str
    name: str
    start: datetime | None
    end: datetime | None

    @property
    def is_default(self) -> bool:
        return self.start is None


def month_start(moment: datetime) -> datetime:
    """The first instant (UTC) of ``moment``'s month."""
    moment = moment.astimezone(UTC)
    return datetime(moment.year, moment.month, 1, tzinfo=UTC)


def _next_month(month: datetime) -> datetime:
    return datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=UTC)


def _name(table: str, month: datetime) -> str:
    return f"{table}_p{month:%Y%m}"


def is_partitioned(conn: Connection, table: str) -> bool:
    """True when ``table`` is a partitioned table in the connection's schema (never on SQLite)."""
    if conn.dialect.name != "postgresql":
        return False
    found = conn.execute(
        text("SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(:t)"),
        {"t": table},
    ).first()
    return found is not None


def partitions(conn: Connection, table: str) -> list[Partition]:
    """``table``'s partitions, monthly ones by start, then the default one."""
    rows = conn.execute(
        text(
            "SELECT n.nspname || '.' || c.relname, pg_get_expr(c.relpartbound, c.oid) "
            "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE i.inhparent = to_regclass(:t)"
        ),
        {"t": table},
    ).all()
    out = []
    for name, bound in rows:
        match = _BOUND.search(bound)
        if match is None:
            out.append(Partition(table, name, None, None))
        else:
            start, end = (datetime.fromisoformat(b).astimezone(UTC) for b in match.groups())
            out.append(Partition(table, name, start, end))
    return sorted(out, key=lambda p: (p.start is None, p.start or datetime.min.replace(tzinfo=UTC)))


def ensure_partitions(
    conn: Connection, now: datetime, ahead: int = MONTHS_AHEAD, *, since: datetime | None = None
) -> list[str]:
    """Creates, for every partitioned table, the monthly partitions from the earliest of its first
    partition's month, its default partition's oldest row's and ``since``'s, through ``ahead`` months
    after ``now``'s, moving rows the default partition holds for a new month into it. Returns the
    partitions created. Does nothing on SQLite."""
    if conn.dialect.name != "postgresql":
        return []
    if ahead < 0:
        raise ValueError("ahead must be at least 0")
    conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT}'")
    created = []
    for table, column in PARTITIONED.items():
        if not is_partitioned(conn, table):
            continue
        existing = partitions(conn, table)
        have = {p.start for p in existing if not p.is_default}
        default = next((p for p in existing if p.is_default), None)
        last = month_start(now)
        for _ in range(ahead):
            last = _next_month(last)
        first = min([*(s for s in have if s is not None), month_start(since or now), month_start(now)])
        if default is not None:
            oldest = conn.execute(text(f"SELECT min({column}) FROM {default.name}")).scalar_one()
            if oldest is not None:
                first = min(first, month_start(oldest))
        month = first
        while month <= last:
            if month not in have:
                _create(conn, table, column, month, default)
                created.append(f"{SCHEMA}.{_name(table, month)}")
            month = _next_month(month)
        if default is None:
            conn.exec_driver_sql(f"CREATE TABLE {SCHEMA}.{table}_default PARTITION OF {table} DEFAULT")
            created.append(f"{SCHEMA}.{table}_default")
    return created


def _create(conn: Connection, table: str, column: str, month: datetime, default: Partition | None) -> None:
    """One month's partition, built beside the table and attached: ATTACH PARTITION locks the parent
    only against schema changes (SHARE UPDATE EXCLUSIVE), where CREATE TABLE ... PARTITION OF would stop
    every write to it; rows of that month the default partition holds move into it first."""
    name, end = _name(table, month), _next_month(month)
    conn.exec_driver_sql(
        f"CREATE TABLE {SCHEMA}.{name} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
    )
    # The bounds as a constraint, so that attaching need not scan the new table to check them.
    conn.exec_driver_sql(
        f"ALTER TABLE {SCHEMA}.{name} ADD CONSTRAINT {name}_bounds "
        f"CHECK ({column} >= '{month.isoformat()}' AND {column} < '{end.isoformat()}')"
    )
    if default is not None:
        conn.execute(
            text(
                f"WITH moved AS (DELETE FROM {default.name} WHERE {column} >= :s AND {column} < :e "
                f"RETURNING *) INSERT INTO {SCHEMA}.{name} SELECT * FROM moved"
            ),
            {"s": month, "e": end},
        )
    conn.exec_driver_sql(
        f"ALTER TABLE {table} ATTACH PARTITION {SCHEMA}.{name} "
        f"FOR VALUES FROM ('{month.isoformat()}') TO ('{end.isoformat()}')"
    )
    conn.exec_driver_sql(f"ALTER TABLE {SCHEMA}.{name} DROP CONSTRAINT {name}_bounds")


def drop_partitions_before(conn: Connection, table: str, before: datetime) -> tuple[int, list[str]]:
    """Drops ``table``'s monthly partitions that end at or before ``before`` (every row in them is
    older), in the caller's transaction. Returns the rows they held and their names."""
    if not is_partitioned(conn, table):
        return 0, []
    conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT}'")
    rows, dropped = 0, []
    for p in partitions(conn, table):
        if p.end is not None and p.end <= before:
            rows += int(conn.execute(text(f"SELECT count(*) FROM {p.name}")).scalar_one())
            conn.exec_driver_sql(f"DROP TABLE {p.name}")
            dropped.append(p.name)
    return rows, dropped


def forget_event_ids_before(conn: Connection, before: datetime, batch: int) -> int:
    """Deletes up to ``batch`` ids of events older than ``before`` from ``EVENT_IDS``: those of dropped
    partitions (deleting an event row forgets its id by trigger; dropping a partition fires none).
    Returns how many went; 0 on SQLite or before migration 0008."""
    if (
        conn.dialect.name != "postgresql"
        or conn.execute(text(f"SELECT to_regclass('{EVENT_IDS}')")).scalar() is None
    ):
        return 0
    done = conn.execute(
        text(
            f"DELETE FROM {EVENT_IDS} WHERE event_id IN "
            f"(SELECT event_id FROM {EVENT_IDS} WHERE occurred_at < :b LIMIT :n)"
        ),
        {"b": before, "n": batch},
    )
    return int(done.rowcount)


def compared(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """An Alembic ``include_object`` hook: leaves out of a schema comparison the one difference
    partitioning makes on PostgreSQL. A partitioned table's unique constraints must include the partition
    key, so there events are unique on (event_id, occurred_at) — and on event_id across partitions by
    the trigger of migration 0007 — where ``schema.events`` (and SQLite) declare event_id alone.
    (Primary keys differ the same way; Alembic does not compare them.)"""
    if type_ != "unique_constraint":
        return True
    if reflected:
        return name != "uq_events_event_id_occurred_at"
    # The declared constraint with nothing of its name in the database: PostgreSQL's partitioned events
    # (on SQLite the constraint is there under this name, so it is compared).
    return not (name == "uq_events_event_id" and compare_to is None)
