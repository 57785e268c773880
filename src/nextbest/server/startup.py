"""What a server checks before it serves, each failure one line for the operator (``StartupError``):
the database answers (waiting for it, with logged backoff, up to ``database_wait`` seconds: a server
started beside its database comes up once the database does), holds nextbest's tables, and the port is
free."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from nextbest.errors import StartupError
from nextbest.store import Database
from nextbest.store.migrate import current_revision, head_revision

__all__ = ["bind_error", "require_schema", "wait_for_database"]

logger = logging.getLogger(__name__)

# libpq and SQLite messages that waiting will not change.
_PERMANENT = (
    "does not exist",
    "authentication failed",
    "password",
    "unable to open database file",
    "no pg_hba.conf entry",
    "is not a database",
)
_FIRST_BACKOFF = 0.25
_MAX_BACKOFF = 4.0


def shown_url(url: str) -> str:
    """The database URL without its password."""
    return make_url(url).render_as_string(hide_password=True)


def _reason(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    return lines[0] if lines else type(cause).__name__


def wait_for_database(
    db: Database,
    wait: float,
    *,
    required: bool = True,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """True once the database answers a query; ``StartupError`` at once when it never will (no such
    database, refused credentials). After ``wait`` seconds of no answer: ``StartupError`` if the database
    is ``required`` now (to migrate it), else False (the server starts NOT_SERVING, and its health
    monitor sees the database come)."""
    give_up = clock() + wait
    backoff = _FIRST_BACKOFF
    where = shown_url(db.url)
    while True:
        try:
            with db.writer.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except SQLAlchemyError as exc:
            reason = _reason(exc)
            if any(p in reason.lower() for p in _PERMANENT):
                raise StartupError(f"cannot use the database {where}: {reason}") from exc
            left = give_up - clock()
            if left <= 0 and not required:
                logger.warning("database %s not answering (%s); starting NOT_SERVING", where, reason)
                return False
            if left <= 0:
                raise StartupError(
                    f"the database {where} did not answer within {wait:g} s (--database-wait): {reason}"
                ) from exc
            pause = min(backoff, left)
            logger.warning("database %s not answering (%s); trying again in %.2g s", where, reason, pause)
            sleep(pause)
            backoff = min(backoff * 2, _MAX_BACKOFF)


def require_schema(db: Database, hint: str = "run `nextbest migrate` or start without --no-migrate") -> None:
    """Raises ``StartupError`` unless the database's schema is nextbest's latest (``--no-migrate``)."""
    try:
        current = current_revision(db)
    except SQLAlchemyError as exc:
        raise StartupError(f"cannot read the schema of {shown_url(db.url)}: {_reason(exc)}") from exc
    head = head_revision()
    if current != head:
        found = (
            "has no nextbest tables" if current is None else f"is at schema revision {current}, not {head}"
        )
        raise StartupError(f"the database {shown_url(db.url)} {found}: {hint}")


def bind_error(address: str, exc: BaseException) -> StartupError:
    """The one line for a port that cannot be bound (gRPC raises RuntimeError with no reason)."""
    return StartupError(
        f"cannot listen on {address}: the port is in use or the address is not this host's "
        f"(--host/--port, NEXTBEST_HOST/NEXTBEST_PORT; {type(exc).__name__})"
    )
