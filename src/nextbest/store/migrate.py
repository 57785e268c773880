"""Schema migrations with Alembic, driven from code (``nextbest migrate``, and at server start).

Alembic is imported only when there is something to migrate: importing it costs ~0.2-0.3 s of every start,
and a database already at the head needs one query to tell. The head is read off the migration files'
names (``NNNN_*.py``, revision ``NNNN``, each revising the one before: tests/store/test_migrate.py
checks that Alembic agrees).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.exc import OperationalError, ProgrammingError

from nextbest.store.database import Database
from nextbest.store.partitions import ensure_partitions

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["current_revision", "head_revision", "upgrade"]

_SCRIPTS = Path(__file__).resolve().parent / "migrations"


def _config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    return config


def upgrade(db: Database, revision: str = "head") -> None:
    """Brings the schema to ``revision``, and on PostgreSQL creates the monthly partitions ahead (see
    ``nextbest.store.partitions``); safe to run on an up-to-date database."""
    if revision != "head" or current_revision(db) != head_revision():
        from alembic import command

        config = _config()
        with db.begin_write() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
    with db.begin_write() as conn:
        ensure_partitions(conn, datetime.now(UTC))


def current_revision(db: Database) -> str | None:
    """The database's schema revision (None: no nextbest tables yet)."""
    with db.reader.connect() as conn:
        try:
            rows: list[Any] = list(conn.execute(text("SELECT version_num FROM alembic_version")))
        except (OperationalError, ProgrammingError):  # no such table: never migrated
            conn.rollback()
            return None
    return str(rows[0][0]) if rows else None


def head_revision() -> str | None:
    """The newest migration's revision, from the files' names."""
    names = sorted(p.name[:4] for p in (_SCRIPTS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))
    return names[-1] if names else None


def alembic_head_revision() -> str | None:
    """The head as Alembic computes it (tests check it is ``head_revision``)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()
