"""Alembic migrations of the SQL stores: one set for SQLite and PostgreSQL (see
broker.store.schema, which runs them)."""
