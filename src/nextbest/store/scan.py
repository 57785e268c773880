"""Every stored customer, streamed: what segments and campaigns walk (``nextbest segment``).

Keyset pagination on the primary key, one short read transaction per page: memory stays flat whatever the
number of customers, and no transaction stays open across a long scan (which would hold PostgreSQL's
vacuum back or SQLite's WAL from being checkpointed). A customer written while the scan runs is seen or
not depending on where the scan is; each customer is seen at most once. With hashed customer ids the ids
are the stored digests.
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import select

from nextbest.state import CustomerState
from nextbest.store.codec import state_from_row
from nextbest.store.database import Database
from nextbest.store.schema import customers

__all__ = ["customer_states"]


def customer_states(db: Database, page: int = 1000) -> Iterator[CustomerState]:
    """Every customer's state, in user-id order, ``page`` rows per query."""
    if page < 1:
        raise ValueError("page must be at least 1")
    after: str | None = None
    while True:
        query = select(customers).order_by(customers.c.user_id).limit(page)
        if after is not None:
            query = query.where(customers.c.user_id > after)
        with db.analytical_reader() as conn:
            rows = [row._mapping for row in conn.execute(query)]
        for row in rows:
            yield state_from_row(row)
        if len(rows) < page:
            return
        after = rows[-1]["user_id"]
