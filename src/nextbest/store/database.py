"""Engines for the embedded SQLite default and for PostgreSQL."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from nextbest.errors import NextbestError, StoreUnavailableError

__all__ = ["Database", "DatabaseUrlError"]

logger = logging.getLogger(__name__)


class DatabaseUrlError(NextbestError):
    status = "INVALID_ARGUMENT"


class Database:
    """A reader engine and a writer engine on one database.

    On SQLite the writer begins ``IMMEDIATE`` transactions so that concurrent writers queue on the
    busy timeout instead of failing when a read transaction tries to upgrade to a write; the file runs in
    WAL mode with ``synchronous=FULL`` so a committed decision survives a power loss.
    """

    def __init__(self, url: str, pool_size: int = 16) -> None:
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise DatabaseUrlError(f"cannot parse database URL {url!r}: {exc}") from exc
        self.url = url
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            database = parsed.database or ""
            if database and database != ":memory:" and not database.startswith("file:"):
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            self.reader = _sqlite_engine(url, pool_size, immediate=False)
            self.writer = _sqlite_engine(url, 4, immediate=True)
        elif self.dialect == "postgresql":
            kwargs: dict[str, Any] = {
                "pool_size": pool_size,
                "max_overflow": pool_size,
                "pool_pre_ping": True,
            }
            self.reader = create_engine(url, **kwargs)
            self.writer = self.reader
        else:
            raise DatabaseUrlError(
                f"unsupported database {self.dialect!r}: use sqlite:///path.db or postgresql+psycopg://..."
            )

    def ping(self) -> None:
        """Raises :class:`StoreUnavailableError` if the database cannot answer a query."""
        try:
            with self.reader.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            raise StoreUnavailableError(f"database unreachable: {type(exc).__name__}") from exc

    def dispose(self) -> None:
        self.reader.dispose()
        if self.writer is not self.reader:
            self.writer.dispose()


def _sqlite_engine(url: str, pool_size: int, *, immediate: bool) -> Engine:
    # LIFO: the most recently used connection has the warmest SQLite page cache.
    engine = create_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_use_lifo=True, connect_args={"timeout": 30}
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, issue BEGIN (the pysqlite recipe in SQLAlchemy's docs).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine
