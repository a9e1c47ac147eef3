"""Write-ahead intents: a provider change is recorded on its challenge before it is made
and cleared once it is done, so a crash in between leaves a mark that the leader
finishes (re-adds, or removes and ends) instead of an orphaned or lost TXT value.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

LOCK_CLASS_NAME_VALUES = 20263
"""As in 0002: the advisory lock class of a name's value count."""

POSTGRESQL_PUT_CHALLENGE = f"""
DROP FUNCTION dns01_broker_put_challenge(
    text, text, text, text, text, text, double precision, double precision, text, integer
);
CREATE FUNCTION dns01_broker_put_challenge(
    p_id text, p_fqdn text, p_value text, p_zone text, p_provider text, p_owner text,
    p_created_at double precision, p_expires_at double precision, p_delegated_from text,
    p_intent text, p_max_values integer
) RETURNS SETOF challenges LANGUAGE plpgsql AS $$
BEGIN
    -- Every statement of a volatile function sees what committed before it started, so
    -- the count below includes what a present that held this lock just wrote.
    PERFORM pg_advisory_xact_lock({LOCK_CLASS_NAME_VALUES}, hashtext(p_fqdn));
    RETURN QUERY
    INSERT INTO challenges AS c (id, fqdn, value, zone, provider, owner, created_at,
                                 expires_at, state, ended_at, delegated_from, intent)
    SELECT p_id, p_fqdn, p_value, p_zone, p_provider, p_owner, p_created_at, p_expires_at,
           'present', NULL, p_delegated_from, p_intent
    WHERE (SELECT count(*) FROM challenges WHERE fqdn = p_fqdn AND state = 'present')
              < p_max_values
       OR EXISTS (SELECT 1 FROM challenges
                  WHERE fqdn = p_fqdn AND value = p_value AND state = 'present')
    ON CONFLICT (fqdn, value) WHERE state = 'present'
    DO UPDATE SET expires_at = GREATEST(c.expires_at, EXCLUDED.expires_at)
    RETURNING c.*;
END
$$;
"""


def upgrade() -> None:
    op.add_column("challenges", sa.Column("intent", sa.Text))
    unfinished = sa.text("state = 'present' AND intent IS NOT NULL")
    op.create_index(
        "challenges_unfinished",
        "challenges",
        ["created_at"],
        sqlite_where=unfinished,
        postgresql_where=unfinished,
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRESQL_PUT_CHALLENGE)
