"""The audit log: every admin call and erasure, appended and never changed (the migration's triggers
refuse UPDATE and DELETE on ``audit_log``). An entry says who, when, what — never a customer id — and the
catalog or model versions before and after."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select

from nextbest.store.backend import guard
from nextbest.store.database import Database
from nextbest.store.schema import audit_log

__all__ = ["AuditEntry", "AuditLog"]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audited action. ``principal`` is the caller (a token name, a certificate subject, or
    ``cli:<os user>`` for commands run against the database); ``detail`` what was asked and what it did."""

    at: datetime
    principal: str
    action: str
    detail: Mapping[str, Any] = field(default_factory=dict)
    before: str | None = None
    after: str | None = None
    audit_id: int | None = None

    def row(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "principal": self.principal[:256],
            "action": self.action[:64],
            "detail": dict(self.detail),
            "before": None if self.before is None else self.before[:512],
            "after": None if self.after is None else self.after[:512],
        }


class AuditLog:
    """Appends entries and reads them back, newest last."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def append(self, entry: AuditEntry) -> None:
        """Writes ``entry`` in a transaction of its own."""
        with guard("write the audit log"), self.db.begin_write() as conn:
            append_in(conn, entry)

    def read(self, *, since: datetime | None = None, limit: int = 100) -> list[AuditEntry]:
        """The latest ``limit`` entries (at or after ``since``), oldest first."""
        query = select(audit_log).order_by(audit_log.c.audit_id.desc()).limit(limit)
        if since is not None:
            query = query.where(audit_log.c.at >= since)
        with guard("read the audit log"), self.db.reader.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            AuditEntry(
                r["at"], r["principal"], r["action"], r["detail"], r["before"], r["after"], r["audit_id"]
            )
            for r in reversed(rows)
        ]


def append_in(conn: Connection, entry: AuditEntry) -> None:
    """Writes ``entry`` in the caller's transaction (an erasure and its entry commit together)."""
    conn.execute(insert(audit_log), [entry.row()])
