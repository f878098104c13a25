"""Alembic environment for the store.

``Store.migrate()`` builds the alembic ``Config`` in code and hands over an open connection in
``config.attributes["connection"]`` (already in a transaction, under a lock on PostgreSQL), so
there is no ``alembic.ini`` and no offline mode.
"""

from __future__ import annotations

from alembic import context

from plughub.store._models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("the store's migrations run through plughub.store.Store.migrate()")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=config.attributes.get("version_table", "plughub_store_version"),
    render_as_batch=connection.dialect.name == "sqlite",
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
