"""``nextbest erase | retention | audit | partitions``: privacy and maintenance operations run against
the database directly (no server needed; safe while servers run on it). Erasures and retention runs are
appended to the audit log as ``cli:<os user>``."""

from __future__ import annotations

import argparse
import getpass
import json
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["COMMANDS", "add_privacy_commands", "parse_age", "run_privacy_command"]

COMMANDS = ("erase", "retention", "audit", "partitions")
_AGE = re.compile(r"^\s*(\d+)\s*([dhw])\s*$")
_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


def parse_age(text: str) -> timedelta:
    """``400d``, ``12h`` or ``52w`` as a duration; ``ValueError`` saying what is expected otherwise."""
    match = _AGE.match(text)
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"expected a positive age such as 400d, 12h or 52w, got {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


def _add_database(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        help="sqlite:///path.db or postgresql+psycopg://user@host/db [NEXTBEST_DATABASE_URL]",
    )


def add_privacy_commands(sub: Any) -> None:
    erase = sub.add_parser(
        "erase",
        help="delete one customer's decisions, exposures, assignments, events and state (idempotent)",
    )
    erase.add_argument("user_id", help="the customer id, as sent to NextAction")
    erase.add_argument("--reason", default="", help="why (a ticket number), kept in the audit log")
    _add_database(erase)

    retention = sub.add_parser(
        "retention", help="delete events, decisions and exposures older than an age (safe while serving)"
    )
    retention.add_argument("--older-than", required=True, help="age such as 400d, 12h or 52w")
    retention.add_argument("--batch", type=int, default=1000, help="rows per transaction (default 1000)")
    _add_database(retention)

    partitions = sub.add_parser(
        "partitions",
        help="PostgreSQL: create the monthly partitions ahead and list them (run monthly, e.g. from cron)",
    )
    partitions.add_argument(
        "--months-ahead", type=int, default=3, help="months after the current one to create (default 3)"
    )
    _add_database(partitions)

    audit = sub.add_parser("audit", help="the audit log of admin calls and erasures, oldest first")
    audit.add_argument("--limit", type=int, default=100, help="the latest N entries (default 100)")
    audit.add_argument("--since", help="ISO time: entries at or after it")
    audit.add_argument("--json", action="store_true", help="one JSON object per line")
    _add_database(audit)


def run_privacy_command(args: argparse.Namespace, settings: Callable[[argparse.Namespace], Any]) -> int:
    """Runs ``args.command`` (one of ``COMMANDS``); bad input is a one-line message and exit 2."""
    from nextbest.store import Database
    from nextbest.store.audit import AuditLog
    from nextbest.store.erasure import Erasure

    try:
        request = _request(args)
    except ValueError as exc:
        print(f"nextbest {args.command}: {exc}", file=sys.stderr)
        return 2
    config = settings(args)
    db = Database(config.database_url)
    try:
        _check_schema(db)
        now = datetime.now(UTC)
        principal = f"cli:{getpass.getuser()}"
        if args.command == "erase":
            erasure = Erasure(db, config.customer_ids())
            erased = erasure.erase_customer(args.user_id, now, principal, args.reason)
            if erased.nothing_left and erasure.stores_other_ids():
                print(
                    "nextbest erase: nothing found, and this database holds "
                    + ("raw customer ids: unset" if erasure.ids.hashing else "hashed customer ids: set")
                    + " NEXTBEST_CUSTOMER_ID_KEY (or _FILE) as the server has it",
                    file=sys.stderr,
                )
                return 2
            if erased.nothing_left:
                print("nothing left to erase for this customer")
            else:
                rows = ", ".join(f"{table} {n:,}" for table, n in erased.rows.items())
                print(f"erased: {rows}")
                if erased.experiment_units:
                    print(f"counted as erased in: {', '.join(sorted(erased.experiment_units))}")
        elif args.command == "retention":
            purged = Erasure(db).purge_before(now - request, now, principal, batch=args.batch)
            rows = ", ".join(f"{table} {n:,}" for table, n in purged.rows.items())
            print(f"deleted rows older than {purged.before:%Y-%m-%d %H:%M} UTC: {rows}")
            if purged.partitions:
                print(f"dropped {len(purged.partitions)} monthly partitions: {', '.join(purged.partitions)}")
        elif args.command == "partitions":
            _partitions(db, now, args.months_ahead)
        else:
            for entry in AuditLog(db).read(since=request, limit=args.limit):
                if args.json:
                    print(json.dumps(_entry_json(entry), sort_keys=True))
                else:
                    change = f" {entry.before} -> {entry.after}" if entry.before != entry.after else ""
                    detail = json.dumps(dict(entry.detail), sort_keys=True) if entry.detail else ""
                    print(f"{entry.at:%Y-%m-%d %H:%M:%S} {entry.principal} {entry.action} {detail}{change}")
    finally:
        db.dispose()
    return 0


def _request(args: argparse.Namespace) -> Any:
    """Checks the command's arguments before the database is opened."""
    if args.command == "erase":
        from nextbest.errors import InvalidArgumentError
        from nextbest.store.erasure import check_erasure

        try:
            check_erasure(args.user_id, args.reason)
        except InvalidArgumentError as exc:
            raise ValueError(str(exc)) from None
        return None
    if args.command == "partitions":
        if not 0 <= args.months_ahead <= 120:
            raise ValueError(f"--months-ahead must be between 0 and 120, got {args.months_ahead}")
        return None
    if args.command == "retention":
        if args.batch < 1:
            raise ValueError(f"--batch must be at least 1, got {args.batch}")
        return parse_age(args.older_than)
    if args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    if args.since is None:
        return None
    try:
        since = datetime.fromisoformat(args.since)
    except ValueError:
        raise ValueError(
            f"--since: expected an ISO time such as 2026-12-01T00:00Z, got {args.since!r}"
        ) from None
    return since if since.tzinfo else since.replace(tzinfo=UTC)


def _partitions(db: Any, now: datetime, ahead: int) -> None:
    from nextbest.store.partitions import PARTITIONED, ensure_partitions, is_partitioned, partitions

    if db.dialect != "postgresql":
        print("SQLite keeps no partitions: nothing to do")
        return
    with db.begin_write() as conn:
        created = ensure_partitions(conn, now, ahead)
    print(f"created {len(created)} partitions" + (f": {', '.join(created)}" if created else ""))
    with db.reader.connect() as conn:
        for table in PARTITIONED:
            if not is_partitioned(conn, table):
                print(f"{table}: not partitioned")
                continue
            months = [p for p in partitions(conn, table) if not p.is_default]
            span = f"{months[0].start:%Y-%m} to {months[-1].start:%Y-%m}" if months else "none"
            print(f"{table}: {len(months)} monthly partitions ({span}) and a default one")


def _check_schema(db: Any) -> None:
    from nextbest.errors import NextbestError
    from nextbest.store.migrate import current_revision, head_revision

    current, head = current_revision(db), head_revision()
    if current != head:
        raise NextbestError(
            f"the database schema is at revision {current or 'none'}, not {head}: "
            "run `nextbest migrate` first"
        )


def _entry_json(entry: Any) -> dict[str, Any]:
    return {
        "audit_id": entry.audit_id,
        "at": entry.at.isoformat(),
        "principal": entry.principal,
        "action": entry.action,
        "detail": dict(entry.detail),
        "before": entry.before,
        "after": entry.after,
    }
