"""The ``persist`` right of tokens: a scoped token may create dns-persist-01 grants
(standing issuance permissions at ``_validation-persist.<name>``) only with it.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tokens", sa.Column("persist", sa.Integer, nullable=False, server_default="0"))
