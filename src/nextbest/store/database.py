"""Engines for the embedded SQLite default and for PostgreSQL."""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from nextbest.errors import NextbestError, StoreUnavailableError

__all__ = [
    "Checkpointer",
    "ConnectionStash",
    "Database",
    "DatabaseUrlError",
    "KeptConnections",
    "WriteHealth",
    "WriteLock",
]

logger = logging.getLogger(__name__)

# The checkpointer restarts the WAL once it holds as much as the database itself (the issue-19 run saw it
# reach 11x the database under load and fill a 64 MB disk in 7 s), but never below the floor nor above the
# cap. A restart makes writers wait for in-flight readers (10-20 ms measured under load); at 500
# decisions/s the WAL grows ~25 MB/s, so the floor means one such wait every ~0.6 s on a small database and
# the cap one every ~10 s on a large one (64 MB put the 99th percentile at 10-27 ms). After a restart
# SQLite truncates the file back to the floor (``journal_size_limit``), so an idle WAL stays small.
_WAL_SIZE_FLOOR = 16 * 1024 * 1024
_WAL_SIZE_LIMIT = 256 * 1024 * 1024
# A restart tries this many times, this far apart (seconds), before it lets the writers go and waits for
# the next interval: a reader holds its WAL frame for one statement (tens of microseconds, or the
# moments its thread waits for the GIL).
_RESTART_TRIES = 4
_RESTART_PAUSE = 0.0005
_BUSY_TIMEOUT_MS = 30000


def _json_dumps(value: Any) -> str:
    """JSON columns through orjson: every decision encodes its payload (a row per rejected candidate,
    ~2.8 KB on the benchmark catalog) in 2 µs instead of the standard library's 15, to the same text
    (compact, UTF-8). Non-string keys become strings and NumPy scalars numbers, as ``json`` does."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY).decode()


class DatabaseUrlError(NextbestError):
    status = "INVALID_ARGUMENT"


class Database:
    """A reader engine and a writer engine on one database.

    On SQLite the writer begins ``IMMEDIATE`` transactions so that concurrent writers queue on the
    busy timeout instead of failing when a read transaction tries to upgrade to a write; the file runs in
    WAL mode with ``synchronous=FULL`` so a committed decision survives a power loss (unless built with
    ``durable=False``: ``synchronous=OFF``, for a scratch store that is rebuilt, not recovered, after a
    crash — the simulated store ``make models`` trains on).
    """

    def __init__(
        self,
        url: str,
        pool_size: int = 16,
        *,
        connect_timeout: float | None = None,
        statement_timeout: float | None = None,
        durable: bool = True,
    ) -> None:
        """``connect_timeout`` and ``statement_timeout`` (seconds, PostgreSQL only; None: the driver's
        and the server's defaults, i.e. none) bound how long a call waits on a database that hangs."""
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise DatabaseUrlError(f"cannot parse database URL {url!r}: {exc}") from exc
        self.url = url
        self.dialect = parsed.get_backend_name()
        self.health = WriteHealth()
        self._probe: threading.Thread | None = None
        self._probe_problem: str | None = None
        # PostgreSQL: health probes on a connection of their own (a busy pool is not a hung database),
        # and every pooled connection, so that a hung server's can be cut (see ``check``).
        self._prober: Engine | None = None
        self._connections: weakref.WeakSet[Any] = weakref.WeakSet()
        # Set while the last check found the server hung: new pooled connections fail at once
        # (UNAVAILABLE) instead of each waiting out the connect timeout.
        self.hung = False
        # Held around every write transaction (see ``WriteLock``); nothing to hold on PostgreSQL.
        self.write_lock: AbstractContextManager[Any] = nullcontext()
        if self.dialect == "sqlite":
            database = parsed.database or ""
            if database and database != ":memory:" and not database.startswith("file:"):
                path = Path(database).expanduser()
                path.parent.mkdir(parents=True, exist_ok=True)
                try:
                    self.write_lock = WriteLock(path.with_name(path.name + "-lock"))
                except OSError as exc:  # a read-only directory: SQLite's own locking still holds
                    logger.warning("no write lock beside %s (%s); writers will poll SQLite's lock", path, exc)
            self.reader = _sqlite_engine(url, pool_size, immediate=False, durable=durable)
            self.writer = _sqlite_engine(url, 4, immediate=True, durable=durable)
        elif self.dialect == "postgresql":
            kwargs: dict[str, Any] = {
                "pool_size": pool_size,
                "max_overflow": pool_size,
                "pool_pre_ping": True,
                "json_serializer": _json_dumps,
                "json_deserializer": orjson.loads,
            }
            connect_args: dict[str, Any] = {}
            if connect_timeout is not None:
                connect_args["connect_timeout"] = max(2, round(connect_timeout))  # libpq: whole seconds, >= 2
            if statement_timeout is not None:
                connect_args["options"] = f"-c statement_timeout={round(statement_timeout * 1000)}"
                # A pooled connection is no use while the server hangs: give up on the pool as soon.
                kwargs["pool_timeout"] = statement_timeout + (connect_timeout or 0)
            kwargs["connect_args"] = connect_args
            self.reader = create_engine(url, **kwargs)
            self.writer = self.reader
            # One connection, kept: a probe a second would otherwise fork a backend a second.
            self._prober = create_engine(
                url, pool_size=1, max_overflow=0, pool_pre_ping=True, connect_args=connect_args
            )
            event.listen(
                self.reader, "connect", lambda dbapi_conn, _record: self._connections.add(dbapi_conn)
            )
            event.listen(self.reader, "do_connect", self._refuse_while_hung)
        else:
            raise DatabaseUrlError(
                f"unsupported database {self.dialect!r}: use sqlite:///path.db or postgresql+psycopg://..."
            )

    @contextmanager
    def begin_write(self) -> Iterator[Any]:
        """A write transaction on the writer engine (a SQLAlchemy ``Connection``), under the write lock."""
        with self.write_lock, self.writer.begin() as conn:
            yield conn

    def ping(self) -> None:
        """Raises :class:`StoreUnavailableError` if the database cannot answer a query."""
        try:
            with self.reader.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            raise StoreUnavailableError(f"database unreachable: {type(exc).__name__}") from exc

    def check(self, timeout: float) -> None:
        """Raises :class:`StoreUnavailableError` unless the database takes writes: it must answer a query
        within ``timeout`` seconds (a hung server answers nothing, and statement timeouts run on the
        server) and, while writes have been failing (a full disk), commit a write of its own. A probe
        still running from an earlier check counts as a hang."""
        if self._probe is not None and self._probe.is_alive():
            raise StoreUnavailableError(f"the database has not answered for over {timeout:g} s")
        self._probe_problem = "the database did not answer"
        self._probe = threading.Thread(
            target=self._run_probe, args=(self.health.failing,), name="nextbest-db-probe", daemon=True
        )
        self._probe.start()
        self._probe.join(timeout)
        if self._probe.is_alive():
            self.hung = True
            self._cut_connections()
            raise StoreUnavailableError(f"the database did not answer within {timeout:g} s")
        if self._probe_problem is not None:
            raise StoreUnavailableError(self._probe_problem)

    def _refuse_while_hung(self, dialect: Any, _record: Any, _args: Any, _kwargs: Any) -> None:
        if self.hung:
            raise dialect.loaded_dbapi.OperationalError("the database does not answer its health check")

    def _cut_connections(self) -> None:
        """Shuts down the socket of every pooled PostgreSQL connection. A stopped (SIGSTOP) or
        unreachable server never answers, and its statement timeout runs on the server: the calls
        waiting on it would hold their threads until the caller's deadline and long after. Cut, each
        fails at once with a connection error (UNAVAILABLE; its write either committed or not, and a
        retry with the same request id settles which); the pool replaces the connections, each new one
        bounded by the connect timeout."""
        cut = 0
        for conn in list(self._connections):
            try:
                with socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
                    sock.shutdown(socket.SHUT_RDWR)
                cut += 1
            except Exception:  # closed meanwhile
                continue
        if cut:
            logger.warning("the database hangs: cut %d connections so that their calls fail now", cut)

    def _run_probe(self, write: bool) -> None:
        try:
            if self._prober is not None:
                with self._prober.begin() as conn:
                    conn.execute(text("SELECT txid_current()" if write else "SELECT 1"))
                self.hung = False
                if write:
                    self.health.succeeded()
            elif write:
                self.probe_write()
                self.health.succeeded()
            else:
                self.ping()
            self._probe_problem = None
        except (StoreUnavailableError, SQLAlchemyError) as exc:
            self._probe_problem = str(exc)

    def probe_write(self) -> None:
        """Commits a write that touches no table, through the writers' path: on SQLite a bump of the
        header's ``user_version`` (a page through the WAL, fsynced; nextbest does not use the field),
        on PostgreSQL a transaction id (a commit record, fsynced)."""
        try:
            with self.begin_write() as conn:
                if self.dialect == "sqlite":
                    version = int(conn.exec_driver_sql("PRAGMA user_version").scalar() or 0)
                    conn.exec_driver_sql(f"PRAGMA user_version = {(version + 1) % 2**31}")
                else:
                    conn.execute(text("SELECT txid_current()"))
        except SQLAlchemyError as exc:
            raise StoreUnavailableError(f"database refuses writes: {type(exc).__name__}") from exc

    def checkpointer(
        self, interval: float = 0.25, writers: AbstractContextManager[Any] | None = None
    ) -> Checkpointer | None:
        """A background WAL checkpointer for SQLite (None for PostgreSQL, which needs none). ``writers``
        is held while the WAL restarts, so the process's own writers queue on it and resume the moment
        the restart ends, instead of polling SQLite's busy handler (which sleeps 1, 2, 5, 10... ms)."""
        if self.dialect != "sqlite":
            return None
        database = self.writer.url.database or ""
        path = (
            Path(database)
            if database and database != ":memory:" and not database.startswith("file:")
            else None
        )
        return Checkpointer(self.writer, interval, writers, self.write_lock, path)

    @contextmanager
    def analytical_reader(self, timeout: float | None = None) -> Iterator[Connection]:
        """A read connection for long analytical queries (lift reports). The server-wide statement
        timeout is meant for the decision path; here it is replaced, for this connection's transaction
        only, by ``timeout`` seconds (the caller's deadline), or lifted when ``timeout`` is None."""
        with self.reader.connect() as conn:
            if conn.dialect.name == "postgresql":
                limit = max(1, round(timeout * 1000)) if timeout is not None else 0
                conn.exec_driver_sql(f"SET LOCAL statement_timeout = {limit}")
            yield conn

    def dispose(self) -> None:
        if self._prober is not None:
            self._prober.dispose()
        self.reader.dispose()
        if self.writer is not self.reader:
            self.writer.dispose()
        if isinstance(self.write_lock, WriteLock):
            self.write_lock.close()


class WriteHealth:
    """Whether writes are failing for want of the database (not for bad data), from every write's outcome.

    A full disk fails some writes and not others (a small one still fits in the WAL's free pages), so
    one success does not make the database healthy: ``failing`` holds until a write has succeeded and
    ``hold`` seconds have passed without another failure. ``Database.check``'s probe write is that
    success when no traffic comes. Health reports NOT_SERVING while ``failing``; ``began_failing`` is set
    by the first failure after a healthy spell, so that health need not wait for its next poll."""

    def __init__(self, hold: float = 2.0) -> None:
        self.hold = hold
        self.last_failure: float | None = None  # time.monotonic()
        self._recovered = True
        self.failures = 0
        self.began_failing = threading.Event()

    @property
    def failing(self) -> bool:
        if self.last_failure is None:
            return False
        return not self._recovered or time.monotonic() - self.last_failure < self.hold

    def succeeded(self) -> None:
        if not self._recovered:
            logger.info("database writes succeed again")
            self._recovered = True

    def failed(self) -> None:
        self.failures += 1
        self.last_failure = time.monotonic()
        if self._recovered:
            self._recovered = False
            self.began_failing.set()


class WriteLock:
    """Makes SQLite's writers, in this process and in the others on the same file, wait their turn in
    the kernel instead of in SQLite's busy handler.

    SQLite lets one writer in at a time. A writer that finds the file locked by another process polls
    through the busy handler, which sleeps 1, 2, 5, 10, ... up to 100 ms between tries: with
    ``nextbest serve --processes 2`` a commit in one process held up every call queued in the other for
    tens of milliseconds. Every write transaction first takes this lock: a thread lock inside the process,
    then an exclusive ``flock`` on a file beside the database (``<database>-lock``), so the next writer
    wakes up the moment the current one commits. It is about waiting well, not about safety: a program
    that writes without it (the ``sqlite3`` shell) still meets SQLite's own locking."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self._threads = threading.Lock()

    def __enter__(self) -> WriteLock:
        self._threads.acquire()
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_EX)  # blocks outside the GIL
        except BaseException:
            self._threads.release()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def close(self) -> None:
        with self._threads:
            if self._fd is not None:
                os.close(self._fd)  # under the thread lock: no writer of this process holds the flock
                self._fd = None


class ConnectionStash:
    """SQLite connections kept open between calls, outside SQLAlchemy's pool.

    A decision reads with one connection and commits with another; checking each out of the pool and
    back (events, reset, bookkeeping) costs about as much CPU as the reads themselves. A stashed
    connection is a plain ``sqlite3.Connection`` set up by the engine's ``connect`` hook (WAL, busy
    timeout, no driver-issued BEGIN), detached from the pool; at most ``keep`` wait here, the rest are
    closed. Not for PostgreSQL, whose pool pre-pings a connection before handing it out."""

    def __init__(self, engine: Engine, keep: int) -> None:
        self._engine = engine
        self._keep = keep
        self._free: list[Any] = []  # list.append and list.pop are atomic: no lock needed

    def take(self) -> Any:
        try:
            return self._free.pop()
        except IndexError:
            fairy = self._engine.raw_connection()
            conn = fairy.dbapi_connection
            fairy.detach()
            return conn

    def give(self, conn: Any) -> None:
        """Returns a healthy connection, outside any transaction."""
        if len(self._free) < self._keep:
            self._free.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        while self._free:
            self._free.pop().close()


class KeptConnections:
    """PostgreSQL connections kept open between calls, outside SQLAlchemy's pool, for the hot path.

    The pool pre-pings every connection it hands out: a ``SELECT 1`` round trip, and a statement for the
    server to run, before each of a decision's read and write (measured: 2 of a decision's ~8 round
    trips). A kept connection is a plain psycopg connection (made by the engine, so set up as the pool's
    are: timeouts, and known to ``Database`` for cutting when the server hangs), checked by a round trip
    only when it has been idle for longer than ``idle`` seconds (a server restarted meanwhile has closed
    it); in between, a connection that failed is closed by its user, not given back. At most ``keep``
    wait here, the rest are closed. ``autocommit``: how the connections run (reads: single statements,
    no BEGIN and ROLLBACK round trips; writes: transactions)."""

    def __init__(
        self, engine: Engine, keep: int, *, autocommit: bool, idle: float = 1.0, setup: Sequence[str] = ()
    ) -> None:
        self._engine = engine
        self._keep = keep
        self._autocommit = autocommit
        self._idle = idle
        # Statements run once on each new connection (session settings); one the server refuses is
        # logged and done without.
        self._setup = tuple(setup)
        self._free: list[tuple[Any, float]] = []  # (connection, when given back); atomic append and pop

    def take(self) -> Any:
        conn: Any
        while True:
            try:
                conn, since = self._free.pop()
            except IndexError:
                fairy = self._engine.raw_connection()  # pre-pinged by the pool
                conn = fairy.dbapi_connection
                fairy.detach()
                conn.autocommit = True
                for statement in self._setup:
                    try:
                        conn.execute(statement)
                    except Exception as exc:  # a setting this server lacks (a build without lz4)
                        if conn.broken:
                            raise
                        logger.info("session setting %r refused (%s); going on without it", statement, exc)
                conn.autocommit = self._autocommit
                return conn
            if conn.closed or conn.broken:
                continue
            if time.monotonic() - since > self._idle and not self._alive(conn):
                continue
            return conn

    def _alive(self, conn: Any) -> bool:
        try:
            if not self._autocommit:
                conn.autocommit = True
            conn.execute("SELECT 1")
            if not self._autocommit:
                conn.autocommit = False
        except Exception:
            with suppress(Exception):
                conn.close()
            return False
        return True

    def give(self, conn: Any) -> None:
        """Returns a healthy connection, outside any transaction."""
        if len(self._free) < self._keep and not conn.closed:
            self._free.append((conn, time.monotonic()))
        else:
            with suppress(Exception):
                conn.close()

    def discard(self, conn: Any) -> None:
        """Closes a connection that failed. One the server closed (``broken``) means the others kept
        since before it most likely are too (a restart): they are closed as well, not handed out to fail
        one call each."""
        broken = conn.broken
        with suppress(Exception):
            conn.close()
        if broken:
            self.close()

    def close(self) -> None:
        while self._free:
            with suppress(Exception):
                self._free.pop()[0].close()


class Checkpointer:
    """Moves SQLite's WAL into the database file off the request path.

    Every ``interval`` seconds a PASSIVE checkpoint copies the WAL into the database without blocking
    readers or writers (the sqlite3 module releases the GIL while it runs). Under steady load some reader
    is nearly always on a WAL frame, so the WAL never starts over on its own; once it holds as much as the
    database file (at least 16 MB, at most 256 MB) the writers are paused for a RESTART checkpoint, which
    copies what the PASSIVE pass left and waits for the readers still on the WAL; the next commit then
    starts the WAL from its beginning. The wait is bounded: the RESTART is tried without SQLite's busy
    handler (whose sleeps of 1, 2, 5, 10, 15, 20, 25 ms had held every writer up to 79 ms while one
    reader finished), a few times ``_RESTART_PAUSE`` apart, and when readers are still on the WAL the
    writers resume and it is tried again at the next interval. Only a WAL grown past twice its restart
    size waits for its readers as long as it takes, so the WAL stays bounded whatever the load.
    ``stop()`` finishes with a TRUNCATE checkpoint.
    """

    def __init__(
        self,
        engine: Engine,
        interval: float,
        writers: AbstractContextManager[Any] | None,
        write_lock: AbstractContextManager[Any] | None = None,
        path: Path | None = None,
    ) -> None:
        self._engine = engine
        self._path = path
        self._interval = interval
        self._writers = writers if writers is not None else nullcontext()
        self._write_lock = write_lock if write_lock is not None else nullcontext()
        self._page_size = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nextbest-checkpoint", daemon=True)
        self._thread.start()

    def checkpoint(self, mode: str = "PASSIVE") -> int:
        """Runs one checkpoint; returns the number of frames in the WAL (0 right after it restarted)."""
        conn = self._engine.raw_connection()
        try:
            return self._run_checkpoint(conn.cursor(), mode)[1]
        finally:
            conn.close()

    def _run_checkpoint(self, cursor: Any, mode: str) -> tuple[bool, int]:
        """One checkpoint on ``cursor``: whether it was busy (did not finish: readers or a writer in the
        way), and the frames in the WAL."""
        ((busy, log_frames, _done),) = cursor.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
        if self._page_size == 0:
            self._page_size = int(cursor.execute("PRAGMA page_size").fetchone()[0])
        return bool(busy), int(log_frames)

    def restart(self, *, wait: bool = False) -> bool:
        """Pauses the writers and restarts the WAL (a RESTART checkpoint: the next commit writes the WAL
        from its beginning); returns whether it did. Without ``wait``, gives up (writers resumed) when
        readers are still on the WAL after ``_RESTART_TRIES`` tries ``_RESTART_PAUSE`` apart, and does not
        call SQLite's busy handler. The connection is set up, and what the WAL holds already copied by a
        PASSIVE checkpoint, before the writers pause: during the pause only the RESTART runs (each other
        statement there would be one more wait for the GIL, with every writer waiting)."""
        requested = time.perf_counter()
        conn = self._engine.raw_connection()
        try:
            cursor = conn.cursor()
            if not wait:
                cursor.execute("PRAGMA busy_timeout=0")
            try:
                self._run_checkpoint(cursor, "PASSIVE")
                with self._writers, self._write_lock:
                    started = time.perf_counter()
                    busy, _frames = self._run_checkpoint(cursor, "RESTART")
                    tries = 1
                    while busy and not wait and tries < _RESTART_TRIES:
                        time.sleep(_RESTART_PAUSE)  # readers on the WAL finish (new ones do not use it)
                        busy, _frames = self._run_checkpoint(cursor, "RESTART")
                        tries += 1
                    ended = time.perf_counter()
            finally:
                if not wait:
                    cursor.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        finally:
            conn.close()
        paused, asked = (ended - started) * 1e3, (ended - requested) * 1e3
        if busy:
            logger.info("WAL restart put off: readers still on it after %d tries (%.1f ms)", tries, paused)
            return False
        logger.info("WAL restarted; writers paused %.1f ms (%.1f ms from the request)", paused, asked)
        return True

    def restart_size(self) -> int:
        """The WAL size, in bytes, past which the WAL restarts: the database's size, within bounds."""
        try:
            size = self._path.stat().st_size if self._path is not None else 0
        except OSError:
            size = 0
        return min(_WAL_SIZE_LIMIT, max(_WAL_SIZE_FLOOR, size))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        try:
            self.checkpoint("TRUNCATE")
        except Exception:
            logger.warning("final WAL checkpoint failed", exc_info=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                wal = self.checkpoint() * self._page_size
                limit = self.restart_size()
                if wal >= limit:
                    self.restart(wait=wal >= 2 * limit)
            except Exception:  # a failed checkpoint is retried next time; commits are unaffected
                logger.warning("WAL checkpoint failed", exc_info=True)


def _sqlite_engine(url: str, pool_size: int, *, immediate: bool, durable: bool = True) -> Engine:
    # LIFO: the most recently used connection has the warmest SQLite page cache.
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_use_lifo=True,
        connect_args={"timeout": 30},
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, issue BEGIN (the pysqlite recipe in SQLAlchemy's docs).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL" if durable else "PRAGMA synchronous=OFF")
        # No checkpoint inside a commit: it would hold up every call queued behind that commit for the
        # time it takes to copy and flush the WAL. The Checkpointer thread does it instead.
        cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_FLOOR}")
        cursor.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine
