"""What the SQL store does differently on SQLite and on PostgreSQL, decided once per store.

The parts of the SQL store (decisions, customers, the experiment registry) share one :class:`Backend`
and never look at the dialect themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError, TimeoutError

from nextbest.errors import FieldViolation, InvalidArgumentError, StoreUnavailableError
from nextbest.store.database import ConnectionStash, Database, KeptConnections

__all__ = ["Backend", "guard", "refused"]

logger = logging.getLogger(__name__)


# The hot-path reads are key look-ups (a customer by id, their history by the (user_id, occurred_at)
# index, products by id); psycopg prepares them after five runs, and PostgreSQL may keep a plan made while
# a table was small or had no statistics yet (a fresh database; autovacuum analyzes within minutes): a
# sequential scan of the month's exposures per decision, measured growing with the table (1,000 rows
# read per decision at 2,000 exposures). Without sequential scans the index is used whatever the size.
_READER_SETUP = ("SET enable_seqscan = off",)
# A decision's payload (its rejections, ~2.8 KB of JSON) is over PostgreSQL's TOAST threshold, so it is
# compressed as it is written: with pglz, 7 % of the server's CPU for the decision path (perf); lz4
# compresses several times faster. Per session, for the values this process writes (each value records
# its method: reading is unchanged, and a server built without lz4 refuses the setting: pglz stays).
_COMMITTER_SETUP = ("SET default_toast_compression = lz4",)


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
    # What the database (or the driver, binding it) raises when it refuses a row's data rather than
    # being unavailable: a NUL byte in text on PostgreSQL, a value out of range, text that cannot be
    # encoded. Such a failure is the caller's (INVALID_ARGUMENT).
    refusals: tuple[type[BaseException], ...] = ()
    # Failures that may be one row's doing (refusals, constraint violations): a failed batch is then
    # retried in parts (halves, recursively).
    row_failures: tuple[type[BaseException], ...] = ()
    # Failures of the database itself (down, hung, disk full): health reports them.
    outages: tuple[type[BaseException], ...] = ()
    # PostgreSQL: plain psycopg connections kept for the hot path, without the pool's pre-ping round trip
    # per check-out: the snapshot reads (autocommit) and the group commits (one per group commit, whose
    # lock its holder keeps). None on SQLite.
    kept_readers: KeptConnections | None = None
    kept_committers: KeptConnections | None = None

    @classmethod
    def of(cls, db: Database) -> Backend:
        embedded = db.dialect == "sqlite"
        dbapi = db.reader.dialect.loaded_dbapi
        return cls(
            db=db,
            insert=sqlite.insert if embedded else postgresql.insert,
            marker="?" if embedded else "%s",
            driver_error=db.reader.dialect.loaded_dbapi.Error,
            readers=ConnectionStash(db.reader, keep=32) if embedded else None,
            committers=ConnectionStash(db.writer, keep=1) if embedded else None,
            refusals=(dbapi.DataError, ValueError, OverflowError, orjson.JSONEncodeError),
            row_failures=(
                dbapi.DataError,
                ValueError,
                OverflowError,
                orjson.JSONEncodeError,
                dbapi.IntegrityError,
            ),
            outages=(
                dbapi.OperationalError,
                dbapi.InterfaceError,
                OperationalError,
                InterfaceError,
                TimeoutError,
            ),
            kept_readers=None
            if embedded
            else KeptConnections(db.reader, keep=32, autocommit=True, setup=_READER_SETUP),
            kept_committers=None
            if embedded
            else KeptConnections(db.writer, keep=2, autocommit=False, setup=_COMMITTER_SETUP),
        )

    @contextmanager
    def raw_transaction(self) -> Iterator[Any]:
        """A write transaction on a raw DBAPI connection under the database's write lock: the group
        commits' hot path (SQLAlchemy's ``Engine.begin`` and the pool's check-out cost too much there).
        On SQLite the kept committer connection, begun IMMEDIATE; a connection that failed is closed,
        not kept."""
        if self.kept_committers is not None:
            with self._kept_transaction(self.kept_committers) as conn:
                yield conn
            return
        stash = self.committers
        with self.db.write_lock:
            conn = stash.take() if stash is not None else self.db.writer.raw_connection()
            try:
                if stash is not None:
                    conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.commit()
            except BaseException:
                if stash is not None:
                    stash = None  # a connection that failed is closed, not kept
                    with suppress(Exception):
                        conn.rollback()
                else:
                    conn.rollback()
                raise
            finally:
                if stash is not None:
                    stash.give(conn)
                else:
                    conn.close()

    @staticmethod
    @contextmanager
    def _kept_transaction(kept: KeptConnections) -> Iterator[Any]:
        """PostgreSQL: a transaction on a kept connection (psycopg begins it at the first statement).
        A connection that failed is given back only if its rollback worked and it is not broken (a
        refused row leaves it usable; a lost server does not)."""
        conn = kept.take()
        try:
            yield conn
            conn.commit()
        except BaseException:
            try:
                conn.rollback()
            except Exception:
                kept.discard(conn)
            raise
        finally:
            if conn.broken or conn.closed:
                kept.discard(conn)
            else:
                kept.give(conn)

    def close(self) -> None:
        """Closes the kept connections (the engines stay: ``Database.dispose`` releases them)."""
        for stash in (self.readers, self.committers, self.kept_readers, self.kept_committers):
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


def refused(what: str, row: dict[str, Any], exc: BaseException) -> InvalidArgumentError:
    """The caller's error for a ``row`` the database refused: names the fields whose text it cannot store
    (a NUL byte, an unpaired surrogate), else the request as a whole."""
    fields = [name for name, value in row.items() if isinstance(value, str) and not _storable(value)] or [
        "request"
    ]
    reason = (str(exc).splitlines() or [type(exc).__name__])[0][:100]
    logger.warning("the database refused the data of one %s: %s", what, type(exc).__name__)
    return InvalidArgumentError([FieldViolation(f, f"the database refused it ({reason})") for f in fields])


def _storable(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
