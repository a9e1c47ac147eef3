"""OIDC workload identity and one-shot tokens: the ID tokens already exchanged (by issuer
and ``jti``, kept until they expire, so every replica refuses a replay), and a token's
one-shot state (NULL: an ordinary token; '': one-shot, unused; else the challenge it is
bound to).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "oidc_replays",
        sa.Column("issuer", sa.Text, nullable=False),
        sa.Column("jti", sa.Text, nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("issuer", "jti"),
    )
    op.create_index("oidc_replays_expires_at", "oidc_replays", ["expires_at"])
    op.add_column("tokens", sa.Column("one_shot", sa.Text))
