"""Persistence: the store contract, the SQL store (tables, migrations, the group commit) and the
in-memory stores."""

from nextbest.store.contract import DecisionStore, SavedDecision, SnapshotWanted, StoredDecision, ToSave
from nextbest.store.database import Database, DatabaseUrlError
from nextbest.store.memory import FrozenStore, MemoryStore
from nextbest.store.migrate import upgrade
from nextbest.store.scores import customer_scores
from nextbest.store.sql import Store

__all__ = [
    "Database",
    "DatabaseUrlError",
    "DecisionStore",
    "FrozenStore",
    "MemoryStore",
    "SavedDecision",
    "SnapshotWanted",
    "Store",
    "StoredDecision",
    "ToSave",
    "customer_scores",
    "upgrade",
]
