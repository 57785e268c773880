"""Partitions: on PostgreSQL, exposures, assignments and events become tables partitioned by month on
occurred_at (the rows they hold are copied over, in this one transaction), and the report's per-unit
grouping gets a covering index. SQLite is unchanged.

A partitioned table's primary key and unique constraints must include the partition key: the primary
keys become (id, occurred_at) (the ids still come from their sequences, so they stay unique), and events'
(event_id) becomes (event_id, occurred_at), with a trigger that keeps an event id unique across
partitions (an insert of an id already stored is skipped, as ON CONFLICT DO NOTHING skips it).

The experiment-exposure index (experiment_id, user_id, occurred_at) INCLUDEs arm_id, so that grouping an
experiment's exposures by customer is an index-only scan that streams in customer order; events' (user_id,
type, occurred_at) INCLUDEs value, so that joining them per customer reads the index alone.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from datetime import UTC, datetime

from alembic import op

from nextbest.store.partitions import SCHEMA, ensure_partitions

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# table: (id column, its sequence, (constraint or index name, definition) for everything but the PK)
_TABLES: dict[str, tuple[str, str, list[tuple[str, str]]]] = {
    "exposures": (
        "exposure_id",
        "exposures_exposure_id_seq",
        [
            (
                "fk_exposures_decision_id_decisions",
                "FOREIGN KEY (decision_id) REFERENCES decisions (decision_id)",
            ),
            ("ix_exposures_user_id_occurred_at", "INDEX (user_id, occurred_at)"),
            ("ix_exposures_decision_id", "INDEX (decision_id)"),
        ],
    ),
    "assignments": (
        "assignment_id",
        "assignments_assignment_id_seq",
        [
            (
                "fk_assignments_decision_id_decisions",
                "FOREIGN KEY (decision_id) REFERENCES decisions (decision_id)",
            ),
            (
                "ix_assignments_experiment_id_user_id_occurred_at",
                "INDEX (experiment_id, user_id, occurred_at) INCLUDE (arm_id)",
            ),
            ("ix_assignments_decision_id", "INDEX (decision_id)"),
        ],
    ),
    "events": (
        "seq",
        "events_seq_seq",
        [
            ("uq_events_event_id_occurred_at", "UNIQUE (event_id, occurred_at)"),
            ("ix_events_user_id_type_occurred_at", "INDEX (user_id, type, occurred_at) INCLUDE (value)"),
        ],
    ),
}
# Serialises inserts of one event id (two-key advisory locks: this class is nextbest's events).
_EVENT_LOCK_CLASS = 0x6E62
_DEDUPE = f"""
CREATE FUNCTION events_unique_event_id() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock({_EVENT_LOCK_CLASS}, hashtext(NEW.event_id));
    IF EXISTS (SELECT 1 FROM events WHERE event_id = NEW.event_id) THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END $$
"""


def _create(table: str, source: str) -> None:
    key, sequence, others = _TABLES[table]
    op.execute(
        f"CREATE TABLE {table} (LIKE {source} INCLUDING DEFAULTS INCLUDING STORAGE) "
        "PARTITION BY RANGE (occurred_at)"
    )
    op.execute(f"ALTER TABLE {table} ADD CONSTRAINT pk_{table} PRIMARY KEY ({key}, occurred_at)")
    for name, definition in others:
        if definition.startswith("INDEX"):
            op.execute(f"CREATE INDEX {name} ON {table} {definition.removeprefix('INDEX ')}")
        else:
            op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}")
    op.execute(f"ALTER SEQUENCE {sequence} OWNED BY {table}.{key}")


def _set_aside(table: str) -> str:
    """Renames ``table`` and its constraints and indexes out of the way; returns its new name."""
    old = f"{table}_unpartitioned"
    bind = op.get_bind()
    _, sequence, _ = _TABLES[table]
    names = [
        r[0]
        for r in bind.exec_driver_sql(
            "SELECT conname FROM pg_constraint WHERE conrelid = %(t)s::regclass "
            "UNION SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
            "WHERE x.indrelid = %(t)s::regclass",
            {"t": table},
        )
    ]
    op.execute(f"ALTER TABLE {table} RENAME TO {old}")
    for name in sorted(set(names)):
        is_constraint = bind.exec_driver_sql(
            "SELECT 1 FROM pg_constraint WHERE conrelid = %(t)s::regclass AND conname = %(n)s",
            {"t": old, "n": name},
        ).first()
        if is_constraint:
            op.execute(f"ALTER TABLE {old} RENAME CONSTRAINT {name} TO {name}_old")
        else:
            op.execute(f"ALTER INDEX {name} RENAME TO {name}_old")
    op.execute(f"ALTER SEQUENCE {sequence} OWNED BY NONE")
    return old


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    oldest = [bind.exec_driver_sql(f"SELECT min(occurred_at) FROM {table}").scalar_one() for table in _TABLES]
    for table in _TABLES:
        _create(table, _set_aside(table))
    now = datetime.now(UTC)
    ensure_partitions(bind, now, since=min([now, *(t for t in oldest if t is not None)]))
    for table in _TABLES:
        op.execute(f"INSERT INTO {table} SELECT * FROM {table}_unpartitioned")
        op.execute(f"DROP TABLE {table}_unpartitioned")
        op.execute(f"ANALYZE {table}")
    # After the copy: the old table's event ids were unique already.
    op.execute(_DEDUPE)
    op.execute(
        "CREATE TRIGGER events_unique_event_id BEFORE INSERT ON events "
        "FOR EACH ROW EXECUTE FUNCTION events_unique_event_id()"
    )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS events_unique_event_id ON events")
    op.execute("DROP FUNCTION IF EXISTS events_unique_event_id()")
    for table, (key, sequence, others) in _TABLES.items():
        op.execute(f"ALTER TABLE {table} RENAME TO {table}_partitioned")
        for name, definition in others:
            if not definition.startswith("INDEX"):
                op.execute(f"ALTER TABLE {table}_partitioned DROP CONSTRAINT {name}")
            else:
                op.execute(f"DROP INDEX {name}")
        op.execute(f"ALTER TABLE {table}_partitioned DROP CONSTRAINT pk_{table}")
        op.execute(f"ALTER SEQUENCE {sequence} OWNED BY NONE")
        op.execute(f"CREATE TABLE {table} (LIKE {table}_partitioned INCLUDING DEFAULTS INCLUDING STORAGE)")
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT pk_{table} PRIMARY KEY ({key})")
        op.execute(f"INSERT INTO {table} SELECT * FROM {table}_partitioned")
        op.execute(f"DROP TABLE {table}_partitioned")
        op.execute(f"ALTER SEQUENCE {sequence} OWNED BY {table}.{key}")
    for table in ("exposures", "assignments"):
        op.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT fk_{table}_decision_id_decisions "
            "FOREIGN KEY (decision_id) REFERENCES decisions (decision_id)"
        )
        op.execute(f"CREATE INDEX ix_{table}_decision_id ON {table} (decision_id)")
    op.execute("CREATE INDEX ix_exposures_user_id_occurred_at ON exposures (user_id, occurred_at)")
    op.execute(
        "CREATE INDEX ix_assignments_experiment_id_user_id_occurred_at "
        "ON assignments (experiment_id, user_id, occurred_at)"
    )
    op.execute("ALTER TABLE events ADD CONSTRAINT uq_events_event_id UNIQUE (event_id)")
    op.execute("CREATE INDEX ix_events_user_id_type_occurred_at ON events (user_id, type, occurred_at)")
    op.execute(f"DROP SCHEMA IF EXISTS {SCHEMA}")
