"""Event ids on PostgreSQL: a narrow table of every stored event id (nextbest_partitions.event_ids,
primary key event_id) keeps events unique by id across their monthly partitions. The trigger of 0007
took an advisory lock per inserted event and held it to the end of the transaction, so a batch of a few
thousand events filled the server's lock table ("out of shared memory") and failed other transactions;
a unique index waits on the one conflicting row instead and holds nothing in shared memory.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from alembic import op

from nextbest.store.partitions import EVENT_IDS, SCHEMA

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# An insert of an id already stored (committed, or by a transaction it then waits for) is skipped, as
# ON CONFLICT DO NOTHING would skip it on an unpartitioned table.
_INSERT = f"""
CREATE OR REPLACE FUNCTION events_unique_event_id() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {EVENT_IDS} (event_id, occurred_at) VALUES (NEW.event_id, NEW.occurred_at)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END $$
"""
# An erased or purged event frees its id (an id may be built from a customer id).
_DELETE = f"""
CREATE FUNCTION events_forget_event_id() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM {EVENT_IDS} WHERE event_id = OLD.event_id;
    RETURN NULL;
END $$
"""
_ADVISORY = """
CREATE OR REPLACE FUNCTION events_unique_event_id() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(28258, hashtext(NEW.event_id));
    IF EXISTS (SELECT 1 FROM events WHERE event_id = NEW.event_id) THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END $$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    op.execute(
        f"CREATE TABLE {EVENT_IDS} (event_id varchar(128) PRIMARY KEY, occurred_at timestamptz NOT NULL)"
    )
    op.execute(f"INSERT INTO {EVENT_IDS} SELECT event_id, min(occurred_at) FROM events GROUP BY event_id")
    op.execute(f"CREATE INDEX event_ids_occurred_at ON {EVENT_IDS} (occurred_at)")
    op.execute(_INSERT)
    op.execute(_DELETE)
    op.execute(
        "CREATE TRIGGER events_forget_event_id AFTER DELETE ON events "
        "FOR EACH ROW EXECUTE FUNCTION events_forget_event_id()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS events_forget_event_id ON events")
    op.execute("DROP FUNCTION IF EXISTS events_forget_event_id()")
    op.execute(_ADVISORY)
    op.execute(f"DROP TABLE IF EXISTS {EVENT_IDS}")
