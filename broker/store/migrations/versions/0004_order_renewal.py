"""Certificates the broker keeps renewed: an order may ask for renewal, and the broker
then re-orders with the same CSR before expiry, recording each renewal.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "certificate_orders", sa.Column("renew", sa.Integer, nullable=False, server_default="0")
    )
    op.add_column("certificate_orders", sa.Column("not_before", sa.Double()))
    op.add_column("certificate_orders", sa.Column("not_after", sa.Double()))
    op.add_column(
        "certificate_orders",
        sa.Column("renewals", sa.Integer, nullable=False, server_default="0"),
    )
    op.add_column("certificate_orders", sa.Column("renewal_error", sa.Text))
    kept = sa.text("state = 'valid' AND renew = 1")
    op.create_index(
        "certificate_orders_kept",
        "certificate_orders",
        ["not_after"],
        sqlite_where=kept,
        postgresql_where=kept,
    )
