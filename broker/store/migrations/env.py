"""Alembic's entry point: runs the migrations on the connection broker.store.schema
opened, inside the transaction it began (so an upgrade is all or nothing)."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
