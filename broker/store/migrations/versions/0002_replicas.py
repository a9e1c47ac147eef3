"""Several replicas on one database: stored propagation reports, certificate orders
claimed by the replica running them, and change signals (PostgreSQL: NOTIFY from
triggers, and an insert that counts a name's values under a lock; SQLite: a token
generation counter bumped by triggers).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

CHANNEL = "dns01_broker"
LOCK_CLASS_NAME_VALUES = 20263
"""Advisory lock class of a name's value count (the objid is hashtext of the name)."""

POSTGRESQL_NOTIFY = f"""
CREATE FUNCTION dns01_broker_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    payload text;
BEGIN
    IF TG_TABLE_NAME = 'challenges' THEN
        IF TG_OP = 'UPDATE' AND OLD.state = NEW.state THEN
            RETURN NULL;
        ELSIF TG_OP = 'DELETE' AND OLD.state <> 'present' THEN
            RETURN NULL;
        ELSIF TG_OP = 'DELETE' THEN
            payload := 'txt ' || OLD.provider || ' ' || OLD.fqdn;
        ELSE
            payload := 'txt ' || NEW.provider || ' ' || NEW.fqdn;
        END IF;
    ELSIF TG_TABLE_NAME = 'tokens' THEN
        payload := 'token ' || CASE WHEN TG_OP = 'DELETE' THEN OLD.key ELSE NEW.key END;
    ELSIF TG_OP = 'DELETE' THEN
        payload := 'registration ' || OLD.username || ' ' || OLD.subdomain;
    ELSE
        payload := 'registration ' || NEW.username || ' ' || NEW.subdomain;
    END IF;
    PERFORM pg_notify('{CHANNEL}', payload);
    RETURN NULL;
END
$$;
CREATE TRIGGER challenges_notify AFTER INSERT OR UPDATE OR DELETE ON challenges
    FOR EACH ROW EXECUTE FUNCTION dns01_broker_notify();
CREATE TRIGGER tokens_notify AFTER INSERT OR UPDATE OR DELETE ON tokens
    FOR EACH ROW EXECUTE FUNCTION dns01_broker_notify();
CREATE TRIGGER registrations_notify AFTER INSERT OR UPDATE OR DELETE ON registrations
    FOR EACH ROW EXECUTE FUNCTION dns01_broker_notify();
"""

POSTGRESQL_PUT_CHALLENGE = f"""
CREATE FUNCTION dns01_broker_put_challenge(
    p_id text, p_fqdn text, p_value text, p_zone text, p_provider text, p_owner text,
    p_created_at double precision, p_expires_at double precision, p_delegated_from text,
    p_max_values integer
) RETURNS SETOF challenges LANGUAGE plpgsql AS $$
BEGIN
    -- Every statement of a volatile function sees what committed before it started, so
    -- the count below includes what a present that held this lock just wrote.
    PERFORM pg_advisory_xact_lock({LOCK_CLASS_NAME_VALUES}, hashtext(p_fqdn));
    RETURN QUERY
    INSERT INTO challenges AS c (id, fqdn, value, zone, provider, owner, created_at,
                                 expires_at, state, ended_at, delegated_from)
    SELECT p_id, p_fqdn, p_value, p_zone, p_provider, p_owner, p_created_at, p_expires_at,
           'present', NULL, p_delegated_from
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

SQLITE_TOKEN_GENERATION = [
    "CREATE TABLE generations (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT INTO generations (name, value) VALUES ('tokens', 0)",
    *(
        f"CREATE TRIGGER tokens_generation_{event.lower()} AFTER {event} ON tokens BEGIN "
        "UPDATE generations SET value = value + 1 WHERE name = 'tokens'; END"
        for event in ("INSERT", "UPDATE", "DELETE")
    ),
]


def upgrade() -> None:
    op.create_table(
        "propagation_reports",
        sa.Column("challenge_id", sa.Text, primary_key=True),
        sa.Column("report", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
    )
    op.add_column("certificate_orders", sa.Column("claimed_by", sa.Text))
    op.add_column("certificate_orders", sa.Column("claimed_until", sa.Double()))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRESQL_NOTIFY)
        op.execute(POSTGRESQL_PUT_CHALLENGE)
    else:
        for statement in SQLITE_TOKEN_GENERATION:
            op.execute(statement)
