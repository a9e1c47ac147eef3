"""TSIG keys of tokens, for RFC 2136 updates: the key's name and algorithm, and its
secret as the broker keeps it (sealed with auth.secret_key where configured).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tokens", sa.Column("tsig_name", sa.Text))
    op.add_column("tokens", sa.Column("tsig_algorithm", sa.Text))
    op.add_column("tokens", sa.Column("tsig_secret", sa.Text))
    live = sa.text("revoked_at IS NULL AND tsig_name IS NOT NULL")
    op.create_index(
        "tokens_live_tsig",
        "tokens",
        ["tsig_name"],
        unique=True,
        sqlite_where=live,
        postgresql_where=live,
    )
