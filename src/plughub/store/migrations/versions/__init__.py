"""One module per schema revision; alembic loads them by path."""
