"""Alembic migrations of the store, run by ``Store.migrate()`` (never by the alembic CLI)."""
