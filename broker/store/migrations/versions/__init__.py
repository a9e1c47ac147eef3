"""Alembic revisions of the SQL stores, in order: 0001, 0002, ..."""
