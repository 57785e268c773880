"""Every stored customer, streamed: what segments and campaigns walk (``nextbest segment``).

Keyset pagination on the primary key, one short read transaction per page: memory stays flat whatever the
number of customers, and no transaction stays open across a long scan (which would hold PostgreSQL's
vacuum back or SQLite's WAL from being checkpointed). A customer written while the scan runs is seen or
not depending on where the scan is; each customer is seen at most once. With hashed customer ids the ids
are the stored digests.

With ``scores``, each page also reads the customers' stored scores (``nextbest.store.scores``, one outer
join): a score that is missing or stale (the customer changed since it was computed) is computed again
for the page at once by ``rescore`` when one is given, else a stale one is kept and a missing one left
out (``ScoreTally`` counts each case).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select

from nextbest.state import CustomerState
from nextbest.state.scored import with_scores
from nextbest.store.codec import state_from_row
from nextbest.store.database import Database
from nextbest.store.schema import customers
from nextbest.store.scores import SCORE_COLUMNS, customer_scores

__all__ = ["Rescore", "ScoreTally", "customer_states", "scoring_pages"]

# Scores for a page of states: one mapping per state (``SCORE_COLUMNS`` -> value).
Rescore = Callable[[Sequence[CustomerState]], Sequence[Mapping[str, float]]]


@dataclass
class ScoreTally:
    """What a scan with scores found: fresh stored scores, ones computed again (missing or stale), stale
    ones kept (no ``rescore``), and customers left without scores."""

    fresh: int = 0
    rescored: int = 0
    stale_kept: int = 0
    missing: int = 0


def customer_states(
    db: Database,
    page: int = 1000,
    *,
    scores: bool = False,
    rescore: Rescore | None = None,
    tally: ScoreTally | None = None,
) -> Iterator[CustomerState]:
    """Every customer's state, in user-id order, ``page`` rows per query; with ``scores``, carrying
    their scores (``state.scored.ScoredState``)."""
    if page < 1:
        raise ValueError("page must be at least 1")
    tally = tally if tally is not None else ScoreTally()
    after: str | None = None
    columns: list[Any] = [customers]
    if scores:
        columns += [customer_scores.c[c].label(f"score__{c}") for c in SCORE_COLUMNS]
        columns.append(customer_scores.c.customer_version.label("score__version"))
    while True:
        query = select(*columns).order_by(customers.c.user_id).limit(page)
        if scores:
            query = query.select_from(
                customers.outerjoin(customer_scores, customer_scores.c.user_id == customers.c.user_id)
            )
        if after is not None:
            query = query.where(customers.c.user_id > after)
        with db.analytical_reader() as conn:
            rows = [row._mapping for row in conn.execute(query)]
        states = [state_from_row(row) for row in rows]
        if scores:
            states = _with_scores(states, rows, rescore, tally)
        yield from states
        if len(rows) < page:
            return
        after = rows[-1]["user_id"]


def _with_scores(
    states: list[CustomerState],
    rows: Sequence[Any],
    rescore: Rescore | None,
    tally: ScoreTally,
) -> list[CustomerState]:
    out = list(states)
    again: list[int] = []
    for i, (state, row) in enumerate(zip(states, rows, strict=True)):
        version = row["score__version"]
        if version is not None and version == row["version"]:
            tally.fresh += 1
        elif rescore is not None:
            again.append(i)
            continue
        elif version is not None:
            tally.stale_kept += 1
        else:
            tally.missing += 1
            continue
        stored = {c: row[f"score__{c}"] for c in SCORE_COLUMNS}
        out[i] = with_scores(state, {c: float(v) for c, v in stored.items() if isinstance(v, (int, float))})
    if again:
        fresh = rescore([states[i] for i in again]) if rescore is not None else []
        for i, computed in zip(again, fresh, strict=True):
            out[i] = with_scores(states[i], computed)
        tally.rescored += len(again)
    return out


def scoring_pages(
    db: Database, page: int = 2000, *, stale_only: bool = False
) -> Iterator[tuple[list[CustomerState], list[int]]]:
    """Pages of customers to score, with each one's version (written with its scores); ``stale_only``:
    only those whose stored scores are missing or stale."""
    after: str | None = None
    joined = customers.outerjoin(customer_scores, customer_scores.c.user_id == customers.c.user_id)
    while True:
        query = select(customers).select_from(joined).order_by(customers.c.user_id).limit(page)
        if stale_only:
            query = query.where(
                or_(
                    customer_scores.c.user_id.is_(None),
                    customer_scores.c.customer_version != customers.c.version,
                )
            )
        if after is not None:
            query = query.where(customers.c.user_id > after)
        with db.analytical_reader() as conn:
            rows = [row._mapping for row in conn.execute(query)]
        if rows:
            yield [state_from_row(r) for r in rows], [int(r["version"]) for r in rows]
        if len(rows) < page:
            return
        after = rows[-1]["user_id"]
