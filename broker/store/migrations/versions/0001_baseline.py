"""The schema as the first SQLite-only brokers made it (PRAGMA user_version 1).

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TIME: sa.Double[float] = sa.Double()


def _partial_index(
    name: str, table: str, columns: list[str], where: str, *, unique: bool = False
) -> None:
    condition = sa.text(where)
    op.create_index(
        name, table, columns, unique=unique, sqlite_where=condition, postgresql_where=condition
    )


def upgrade() -> None:
    op.create_table(
        "tokens",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("digest", sa.Text, nullable=False),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column("cidrs", sa.Text, nullable=False),
        sa.Column("admin", sa.Integer, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("expires_at", TIME),
        sa.Column("revoked_at", TIME),
    )
    _partial_index("tokens_live_name", "tokens", ["name"], "revoked_at IS NULL", unique=True)
    op.create_table(
        "challenges",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("fqdn", sa.Text, nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("zone", sa.Text, nullable=False),
        sa.Column("provider", sa.Text, nullable=False),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("expires_at", TIME, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("ended_at", TIME),
        sa.Column("delegated_from", sa.Text),
    )
    live = "state = 'present'"
    _partial_index("challenges_live", "challenges", ["fqdn", "value"], live, unique=True)
    _partial_index("challenges_due", "challenges", ["expires_at"], live)
    _partial_index("challenges_ended", "challenges", ["ended_at"], "state != 'present'")
    op.create_table(
        "registrations",
        sa.Column("username", sa.Text, primary_key=True),
        sa.Column("subdomain", sa.Text, nullable=False, unique=True),
        sa.Column("key_hash", sa.Text),
        sa.Column("legacy_bcrypt", sa.Text),
        sa.Column("allowfrom", sa.Text, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
    )
    op.create_table(
        "acme_accounts",
        sa.Column("directory", sa.Text, primary_key=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("key_pem", sa.Text, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
    )
    op.create_table(
        "certificate_orders",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("names", sa.Text, nullable=False),
        sa.Column("csr_pem", sa.Text, nullable=False),
        sa.Column("directory", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.Column("fullchain_pem", sa.Text),
        sa.Column("error", sa.Text),
    )
    _partial_index(
        "certificate_orders_pending", "certificate_orders", ["created_at"], "state = 'pending'"
    )
    op.create_table(
        "secrets",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
