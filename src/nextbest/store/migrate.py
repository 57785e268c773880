"""Schema migrations with Alembic, driven from code (``nextbest migrate``, and at server start)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from nextbest.store.database import Database
from nextbest.store.partitions import ensure_partitions

__all__ = ["current_revision", "head_revision", "upgrade"]

_SCRIPTS = Path(__file__).resolve().parent / "migrations"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    return config


def upgrade(db: Database, revision: str = "head") -> None:
    """Brings the schema to ``revision``, and on PostgreSQL creates the monthly partitions ahead (see
    ``nextbest.store.partitions``); safe to run on an up-to-date database."""
    config = _config()
    with db.begin_write() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
    with db.begin_write() as conn:
        ensure_partitions(conn, datetime.now(UTC))


def current_revision(db: Database) -> str | None:
    with db.reader.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_config()).get_current_head()
