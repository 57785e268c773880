"""SQLAlchemy tables, migrations, and the decision, exposure and event writers."""

from nextbest.store.database import Database, DatabaseUrlError
from nextbest.store.migrate import upgrade
from nextbest.store.repository import Store, StoredDecision

__all__ = ["Database", "DatabaseUrlError", "Store", "StoredDecision", "upgrade"]
