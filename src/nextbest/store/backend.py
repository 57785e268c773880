"""What the SQL store does differently on SQLite and on PostgreSQL, decided once per store.

The parts of the SQL store (decisions, customers, the experiment registry) share one :class:`Backend`
and never look at the dialect themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from nextbest.errors import StoreUnavailableError
from nextbest.store.database import ConnectionStash, Database

__all__ = ["Backend", "guard"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Backend:
    """One database's dialect-specific parts.

    ``insert`` builds the dialect's ``INSERT`` (with ``ON CONFLICT``); ``marker`` is the driver's
    parameter marker for hand-written SQL; ``driver_error`` the driver's base exception, raised on raw
    connections. On SQLite the reads and the group commit use raw connections kept between calls
    (``readers``, ``committers``; the commit's one is used only by the commit lock's holder); on
    PostgreSQL both are None and connections come from the pool."""

    db: Database
    insert: Callable[..., Any]
    marker: str
    driver_error: type[Exception]
    readers: ConnectionStash | None
    committers: ConnectionStash | None

    @classmethod
    def of(cls, db: Database) -> Backend:
        embedded = db.dialect == "sqlite"
        return cls(
            db=db,
            insert=sqlite.insert if embedded else postgresql.insert,
            marker="?" if embedded else "%s",
            driver_error=db.reader.dialect.loaded_dbapi.Error,
            readers=ConnectionStash(db.reader, keep=32) if embedded else None,
            committers=ConnectionStash(db.writer, keep=1) if embedded else None,
        )

    def close(self) -> None:
        """Closes the kept connections (the engines stay: ``Database.dispose`` releases them)."""
        for stash in (self.readers, self.committers):
            if stash is not None:
                stash.close()


@contextmanager
def guard(what: str, driver_error: type[Exception] = SQLAlchemyError) -> Iterator[None]:
    """Turns database failures (SQLAlchemy's, or the driver's on raw connections) into
    :class:`StoreUnavailableError`: nothing was acknowledged."""
    try:
        yield
    except (SQLAlchemyError, driver_error) as exc:
        logger.warning("store failure during %s: %s", what, type(exc).__name__)
        raise StoreUnavailableError(f"could not {what}: the database is unavailable") from exc
