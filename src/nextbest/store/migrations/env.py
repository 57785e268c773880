"""Alembic environment: runs on the connection handed over by ``nextbest.store.migrate``."""

from alembic import context

from nextbest.store.partitions import compared
from nextbest.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection, target_metadata=metadata, render_as_batch=True, include_object=compared
)
with context.begin_transaction():
    context.run_migrations()
