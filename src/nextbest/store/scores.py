"""Stored customer scores (``customer_scores``, migration 0010): churn risk and purchase propensity per
customer, with the model version that computed them, when, and the customer's version they were computed
from.

**Freshness without a cost on the event path.** Every write that folds an event into a customer already
bumps ``customers.version`` (optimistic concurrency, migration 0005). A score row keeps the version it
was computed from, so a score is *stale* exactly when the customer's version has moved since: nothing is
added to ``RecordEvents``. Readers decide what to do with a stale score (``nextbest segment`` scores it
again from the state it reads, with the promoted model; ``nextbest score --stale`` rewrites the stale
rows). A decision also bumps the version, so "stale" over-approximates: some rows are scored again
although their features did not change.

The table lives in its own module, on ``schema.metadata``; ``user_id`` references ``customers`` with
``ON DELETE CASCADE``, so erasing a customer erases their scores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, Float, ForeignKey, String, Table, case, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from nextbest.store.database import Database
from nextbest.store.schema import UTCDateTime, customers, metadata

__all__ = [
    "SCORE_COLUMNS",
    "ScoreRow",
    "ScoreSummary",
    "customer_scores",
    "score_summary",
    "write_scores",
]

customer_scores = Table(
    "customer_scores",
    metadata,
    Column(
        "user_id",
        String(128),
        ForeignKey("customers.user_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("churn_risk", Float),
    Column("purchase_propensity", Float),
    Column("model_version", String(64), nullable=False),
    Column("customer_version", BigInteger, nullable=False),
    Column("scored_at", UTCDateTime(), nullable=False),
)

SCORE_COLUMNS = ("churn_risk", "purchase_propensity")


@dataclass(frozen=True, slots=True)
class ScoreRow:
    """One customer's scores as written."""

    user_id: str
    scores: Mapping[str, float]
    model_version: str
    customer_version: int
    scored_at: datetime


def write_scores(db: Database, rows: Sequence[ScoreRow]) -> int:
    """Inserts or replaces the rows, in one transaction; returns how many."""
    if not rows:
        return 0
    values: list[dict[str, Any]] = [
        {
            "user_id": r.user_id,
            **{c: r.scores.get(c) for c in SCORE_COLUMNS},
            "model_version": r.model_version,
            "customer_version": r.customer_version,
            "scored_at": r.scored_at,
        }
        for r in rows
    ]
    insert = pg_insert if db.dialect == "postgresql" else sqlite_insert
    statement = insert(customer_scores)
    statement = statement.on_conflict_do_update(
        index_elements=[customer_scores.c.user_id],
        set_={
            name: statement.excluded[name]
            for name in (*SCORE_COLUMNS, "model_version", "customer_version", "scored_at")
        },
    )
    with db.begin_write() as conn:
        conn.execute(statement, values)
    return len(values)


@dataclass(frozen=True, slots=True)
class ScoreSummary:
    customers: int
    scored: int
    stale: int
    versions: Mapping[str, int]
    last_scored_at: datetime | None


def score_summary(db: Database) -> ScoreSummary:
    """How many customers have scores, how many of those are stale, by model version."""
    joined = customers.outerjoin(customer_scores, customer_scores.c.user_id == customers.c.user_id)
    stale = case((customer_scores.c.customer_version != customers.c.version, 1), else_=0)
    with db.analytical_reader() as conn:
        total, scored, n_stale, last = conn.execute(
            select(
                func.count(),
                func.count(customer_scores.c.user_id),
                func.coalesce(func.sum(stale), 0),
                func.max(customer_scores.c.scored_at),
            ).select_from(joined)
        ).one()
        versions = {
            str(v): int(n)
            for v, n in conn.execute(
                select(customer_scores.c.model_version, func.count()).group_by(
                    customer_scores.c.model_version
                )
            )
        }
    return ScoreSummary(int(total), int(scored), int(n_stale), versions, last)
