"""What the SQL stores share: every statement both engines run alike, written once.

Statements use ``?`` placeholders; a store for an engine that numbers its parameters
rewrites them (``postgres.numbered``). A store supplies three primitives — read rows,
write and read back rows, write and count rows — and the statements that differ.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager

from broker.errors import ConflictError
from broker.store.base import (
    AcmeAccountRecord,
    AuditEventRecord,
    AuditQuery,
    CertificateOrderRecord,
    ChallengeIntent,
    ChallengeRecord,
    ChallengeState,
    OrderState,
    RegistrationRecord,
    Store,
    TokenRecord,
)
from broker.store.rows import (
    ACCOUNT_COLUMNS,
    AUDIT_COLUMNS,
    CHALLENGE_COLUMNS,
    ORDER_COLUMNS,
    REGISTRATION_COLUMNS,
    TOKEN_COLUMNS,
    Row,
    audit_from_row,
    audit_row,
    challenge_from_row,
    order_from_row,
    order_row,
    registration_from_row,
    registration_row,
    token_from_row,
    token_row,
)


class DuplicateRowError(Exception):
    """A write broke a uniqueness constraint."""


def _values(columns: str) -> str:
    return ",".join("?" * (columns.count(",") + 1))


def audit_filter(query: AuditQuery) -> tuple[str, Row]:
    """The WHERE clause (and its parameters) of an audit query."""
    clauses: list[str] = []
    params: list[object] = []
    for clause, value in (
        ("at >= ?", query.since),
        ("at < ?", query.until),
        ("actor = ?", query.actor),
        ("action = ?", query.action),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    if query.before is not None:
        at, event_id = query.before
        clauses.append("(at < ? OR (at = ? AND id < ?))")
        params.extend((at, at, event_id))
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)


class SqlStore(Store):
    _token_writes = 0
    """Writes to tokens running now (``_changing_tokens``)."""
    _token_version: int | None = None
    """What a store that caches the token generation keys it by (None: read it again)."""

    @abstractmethod
    async def _select(self, sql: str, params: Row = ()) -> list[Row]:
        """Rows of a read."""

    @abstractmethod
    async def _modify(self, sql: str, params: Row = ()) -> list[Row]:
        """Rows a write returns; DuplicateRowError when it breaks a unique index."""

    @abstractmethod
    async def _modify_count(self, sql: str, params: Row = ()) -> int:
        """How many rows a write changed."""

    @contextmanager
    def _changing_tokens(self) -> Iterator[None]:
        """Around a write to tokens: while one runs and once it is done, a store that
        caches the token generation reads it again."""
        self._token_writes += 1
        try:
            yield
        finally:
            self._token_writes -= 1
            self._token_version = None

    async def _select_one(self, sql: str, params: Row = ()) -> Row | None:
        rows = await self._select(sql, params)
        return rows[0] if rows else None

    async def _modify_one(self, sql: str, params: Row = ()) -> Row | None:
        rows = await self._modify(sql, params)
        return rows[0] if rows else None

    async def create_token(self, token: TokenRecord) -> None:
        sql = f"INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES ({_values(TOKEN_COLUMNS)})"
        try:
            with self._changing_tokens():
                await self._modify_count(sql, token_row(token))
        except DuplicateRowError:
            raise ConflictError(
                f"a token named {token.name!r} (or a TSIG key of that name) already exists: "
                "revoke it or choose another name"
            ) from None

    async def token_by_key(self, key: str) -> TokenRecord | None:
        row = await self._select_one(f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE key = ?", (key,))
        return None if row is None else token_from_row(row)

    async def token_by_tsig(self, name: str) -> TokenRecord | None:
        row = await self._select_one(
            f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE tsig_name = ? AND revoked_at IS NULL",
            (name,),
        )
        return None if row is None else token_from_row(row)

    async def list_tokens(self, *, include_revoked: bool = False) -> list[TokenRecord]:
        where = "" if include_revoked else "WHERE revoked_at IS NULL"
        rows = await self._select(f"SELECT {TOKEN_COLUMNS} FROM tokens {where} ORDER BY name")
        return [token_from_row(row) for row in rows]

    async def revoke_token(self, name: str, at: float) -> TokenRecord | None:
        with self._changing_tokens():
            row = await self._modify_one(
                "UPDATE tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL "
                f"RETURNING {TOKEN_COLUMNS}",
                (at, name),
            )
        return None if row is None else token_from_row(row)

    async def rotate_token(self, name: str, rotated: TokenRecord) -> TokenRecord | None:
        try:
            with self._changing_tokens():
                row = await self._modify_one(
                    "UPDATE tokens SET digest = ?, tsig_name = ?, tsig_algorithm = ?, "
                    "tsig_secret = ? WHERE name = ? AND key = ? AND revoked_at IS NULL "
                    f"RETURNING {TOKEN_COLUMNS}",
                    (rotated.digest, rotated.tsig_name, rotated.tsig_algorithm,
                     rotated.tsig_secret, name, rotated.key),
                )  # fmt: skip
        except DuplicateRowError:
            raise ConflictError(
                f"another live token has a TSIG key named {rotated.tsig_name!r}: revoke it first"
            ) from None
        return None if row is None else token_from_row(row)

    async def bind_one_shot(self, key: str, binding: str) -> bool:
        with self._changing_tokens():
            bound = await self._modify_count(
                "UPDATE tokens SET one_shot = ? WHERE key = ? AND one_shot = '' "
                "AND revoked_at IS NULL",
                (binding, key),
            )
        if bound:
            return True
        row = await self._select_one(
            "SELECT 1 FROM tokens WHERE key = ? AND one_shot = ? AND revoked_at IS NULL",
            (key, binding),
        )
        return row is not None

    async def spend_one_shot(self, key: str, binding: str, at: float) -> bool:
        with self._changing_tokens():
            spent = await self._modify_count(
                "UPDATE tokens SET revoked_at = ? WHERE key = ? AND one_shot = ? "
                "AND revoked_at IS NULL",
                (at, key, binding),
            )
        return spent > 0

    async def purge_tokens(self, prefix: str, before: float) -> int:
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self._changing_tokens():
            return await self._modify_count(
                "DELETE FROM tokens WHERE name LIKE ? ESCAPE '\\' AND expires_at < ?",
                (pattern, before),
            )

    async def claim_replay(self, issuer: str, jti: str, expires_at: float, now: float) -> bool:
        row = await self._modify_one(
            "INSERT INTO oidc_replays (issuer, jti, expires_at) VALUES (?, ?, ?) "
            "ON CONFLICT (issuer, jti) DO UPDATE SET expires_at = excluded.expires_at "
            "WHERE oidc_replays.expires_at <= ? RETURNING 1",
            (issuer, jti, expires_at, now),
        )
        return row is not None

    async def purge_replays(self, before: float) -> int:
        return await self._modify_count("DELETE FROM oidc_replays WHERE expires_at < ?", (before,))

    async def add_audit_events(self, events: list[AuditEventRecord]) -> None:
        if not events:
            return
        rows = ",".join(f"({_values(AUDIT_COLUMNS)})" for _ in events)
        params = tuple(value for event in events for value in audit_row(event))
        await self._modify_count(
            f"INSERT INTO audit_events ({AUDIT_COLUMNS}) VALUES {rows}", params
        )

    async def audit_events(self, query: AuditQuery) -> list[AuditEventRecord]:
        where, params = audit_filter(query)
        rows = await self._select(
            f"SELECT id, {AUDIT_COLUMNS} FROM audit_events {where} "
            "ORDER BY at DESC, id DESC LIMIT ?",
            (*params, query.limit),
        )
        return [audit_from_row(row) for row in rows]

    async def purge_audit(self, before: float) -> int:
        return await self._modify_count("DELETE FROM audit_events WHERE at < ?", (before,))

    async def count_tokens(self) -> int:
        row = await self._select_one("SELECT count(*) FROM tokens")
        return int(row[0]) if row else 0

    async def live_challenge(self, fqdn: str, value: str) -> ChallengeRecord | None:
        row = await self._select_one(
            f"SELECT {CHALLENGE_COLUMNS} FROM challenges "
            "WHERE fqdn = ? AND value = ? AND state = 'present'",
            (fqdn, value),
        )
        return None if row is None else challenge_from_row(row)

    async def challenge(self, challenge_id: str) -> ChallengeRecord | None:
        row = await self._select_one(
            f"SELECT {CHALLENGE_COLUMNS} FROM challenges WHERE id = ?", (challenge_id,)
        )
        return None if row is None else challenge_from_row(row)

    async def end_challenge(
        self, challenge_id: str, state: ChallengeState, at: float
    ) -> ChallengeRecord | None:
        row = await self._modify_one(
            "UPDATE challenges SET state = ?, ended_at = ?, intent = NULL "
            f"WHERE id = ? AND state = 'present' RETURNING {CHALLENGE_COLUMNS}",
            (state.value, at, challenge_id),
        )
        return None if row is None else challenge_from_row(row)

    async def end_live(
        self, fqdn: str, value: str, state: ChallengeState, at: float
    ) -> ChallengeRecord | None:
        row = await self._modify_one(
            "UPDATE challenges SET state = ?, ended_at = ?, intent = NULL "
            "WHERE fqdn = ? AND value = ? AND state = 'present' "
            f"RETURNING {CHALLENGE_COLUMNS}",
            (state.value, at, fqdn, value),
        )
        return None if row is None else challenge_from_row(row)

    async def delete_challenge(self, challenge_id: str) -> None:
        await self._modify_count("DELETE FROM challenges WHERE id = ?", (challenge_id,))

    async def intend(
        self, challenge_id: str, intent: ChallengeIntent | None
    ) -> ChallengeRecord | None:
        row = await self._modify_one(
            "UPDATE challenges SET intent = ? WHERE id = ? AND state = 'present' "
            f"RETURNING {CHALLENGE_COLUMNS}",
            (None if intent is None else intent.value, challenge_id),
        )
        return None if row is None else challenge_from_row(row)

    async def unfinished_challenges(self, limit: int = 500) -> list[ChallengeRecord]:
        rows = await self._select(
            f"SELECT {CHALLENGE_COLUMNS} FROM challenges "
            "WHERE state = 'present' AND intent IS NOT NULL ORDER BY created_at LIMIT ?",
            (limit,),
        )
        return [challenge_from_row(row) for row in rows]

    async def live_challenges(self) -> list[ChallengeRecord]:
        rows = await self._select(
            f"SELECT {CHALLENGE_COLUMNS} FROM challenges WHERE state = 'present' "
            "ORDER BY created_at"
        )
        return [challenge_from_row(row) for row in rows]

    async def live_at(self, fqdn: str) -> list[ChallengeRecord]:
        rows = await self._select(
            f"SELECT {CHALLENGE_COLUMNS} FROM challenges WHERE fqdn = ? AND state = 'present' "
            "ORDER BY created_at",
            (fqdn,),
        )
        return [challenge_from_row(row) for row in rows]

    async def live_under(self, label: str) -> list[ChallengeRecord]:
        prefix = label + "."
        rows = await self._select(
            f"SELECT {CHALLENGE_COLUMNS} FROM challenges WHERE state = 'present' "
            "AND substr(fqdn, 1, ?) = ? ORDER BY created_at",
            (len(prefix), prefix),
        )
        return [challenge_from_row(row) for row in rows]

    async def due_challenges(self, now: float, limit: int = 500) -> list[ChallengeRecord]:
        rows = await self._select(
            f"SELECT {CHALLENGE_COLUMNS} FROM challenges "
            "WHERE state = 'present' AND expires_at <= ? ORDER BY expires_at LIMIT ?",
            (now, limit),
        )
        return [challenge_from_row(row) for row in rows]

    async def count_live(self) -> int:
        row = await self._select_one("SELECT count(*) FROM challenges WHERE state = 'present'")
        return int(row[0]) if row else 0

    async def oldest_live(self, fqdn: str) -> ChallengeRecord | None:
        row = await self._select_one(
            f"SELECT {CHALLENGE_COLUMNS} FROM challenges WHERE fqdn = ? AND state = 'present' "
            "ORDER BY created_at LIMIT 1",
            (fqdn,),
        )
        return None if row is None else challenge_from_row(row)

    async def secret(self, name: str, make: str) -> str:
        row = await self._select_one("SELECT value FROM secrets WHERE name = ?", (name,))
        if row is None:
            row = await self._modify_one(
                "INSERT INTO secrets (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = secrets.value RETURNING value",
                (name, make),
            )
        assert row is not None
        return str(row[0])

    async def create_registration(self, registration: RegistrationRecord) -> None:
        sql = (
            f"INSERT INTO registrations ({REGISTRATION_COLUMNS}) "
            f"VALUES ({_values(REGISTRATION_COLUMNS)})"
        )
        try:
            await self._modify_count(sql, registration_row(registration))
        except DuplicateRowError:
            raise ConflictError(
                f"registration {registration.username} or subdomain "
                f"{registration.subdomain} already exists"
            ) from None

    async def registration(self, username: str) -> RegistrationRecord | None:
        row = await self._select_one(
            f"SELECT {REGISTRATION_COLUMNS} FROM registrations WHERE username = ?", (username,)
        )
        return None if row is None else registration_from_row(row)

    async def list_registrations(self) -> list[RegistrationRecord]:
        rows = await self._select(
            f"SELECT {REGISTRATION_COLUMNS} FROM registrations ORDER BY created_at, username"
        )
        return [registration_from_row(row) for row in rows]

    async def delete_registration(self, username: str) -> RegistrationRecord | None:
        row = await self._modify_one(
            f"DELETE FROM registrations WHERE username = ? RETURNING {REGISTRATION_COLUMNS}",
            (username,),
        )
        return None if row is None else registration_from_row(row)

    async def rehash_registration(self, username: str, key_hash: str) -> None:
        await self._modify_count(
            "UPDATE registrations SET key_hash = ?, legacy_bcrypt = NULL WHERE username = ?",
            (key_hash, username),
        )

    async def acme_account(self, directory: str) -> AcmeAccountRecord | None:
        row = await self._select_one(
            f"SELECT {ACCOUNT_COLUMNS} FROM acme_accounts WHERE directory = ?", (directory,)
        )
        return None if row is None else AcmeAccountRecord(*row)

    async def put_acme_account(self, account: AcmeAccountRecord) -> AcmeAccountRecord:
        row = await self._modify_one(
            f"INSERT INTO acme_accounts ({ACCOUNT_COLUMNS}) VALUES (?,?,?,?) "
            "ON CONFLICT (directory) DO UPDATE SET directory = acme_accounts.directory "
            f"RETURNING {ACCOUNT_COLUMNS}",
            (account.directory, account.url, account.key_pem, account.created_at),
        )
        assert row is not None
        return AcmeAccountRecord(*row)

    async def create_order(self, order: CertificateOrderRecord) -> None:
        await self._modify_count(
            f"INSERT INTO certificate_orders ({ORDER_COLUMNS}) VALUES ({_values(ORDER_COLUMNS)})",
            order_row(order),
        )

    async def order(self, order_id: str) -> CertificateOrderRecord | None:
        row = await self._select_one(
            f"SELECT {ORDER_COLUMNS} FROM certificate_orders WHERE id = ?", (order_id,)
        )
        return None if row is None else order_from_row(row)

    async def pending_orders(self) -> list[CertificateOrderRecord]:
        rows = await self._select(
            f"SELECT {ORDER_COLUMNS} FROM certificate_orders WHERE state = 'pending' "
            "ORDER BY created_at"
        )
        return [order_from_row(row) for row in rows]

    async def finish_order(
        self,
        order_id: str,
        state: OrderState,
        at: float,
        *,
        fullchain_pem: str | None = None,
        error: str | None = None,
        validity: tuple[float, float] | None = None,
    ) -> None:
        not_before, not_after = validity or (None, None)
        await self._modify_count(
            "UPDATE certificate_orders SET state = ?, updated_at = ?, fullchain_pem = ?, "
            "error = ?, not_before = ?, not_after = ?, claimed_by = NULL, claimed_until = NULL "
            "WHERE id = ?",
            (state.value, at, fullchain_pem, error, not_before, not_after, order_id),
        )

    async def claim_renewals(
        self, replica: str, now: float, until: float
    ) -> list[CertificateOrderRecord]:
        rows = await self._modify(
            "UPDATE certificate_orders SET claimed_by = ?, claimed_until = ? "
            "WHERE state = 'valid' AND renew = 1 AND not_after IS NOT NULL "
            "AND not_after - (not_after - not_before) / 3 <= ? "
            "AND (claimed_until IS NULL OR claimed_until < ?) "
            f"RETURNING {ORDER_COLUMNS}",
            (replica, until, now, now),
        )
        return [order_from_row(row) for row in rows]

    async def record_renewal(
        self, order_id: str, fullchain_pem: str, validity: tuple[float, float], at: float
    ) -> None:
        await self._modify_count(
            "UPDATE certificate_orders SET fullchain_pem = ?, not_before = ?, not_after = ?, "
            "updated_at = ?, renewals = renewals + 1, renewal_error = NULL, "
            "claimed_by = NULL, claimed_until = NULL WHERE id = ?",
            (fullchain_pem, *validity, at, order_id),
        )

    async def renewal_failed(self, order_id: str, error: str, retry_at: float) -> None:
        await self._modify_count(
            "UPDATE certificate_orders SET renewal_error = ?, claimed_by = NULL, "
            "claimed_until = ? WHERE id = ?",
            (error, retry_at, order_id),
        )

    async def kept_certificates(self) -> list[CertificateOrderRecord]:
        rows = await self._select(
            f"SELECT {ORDER_COLUMNS} FROM certificate_orders WHERE state = 'valid' AND renew = 1 "
            "ORDER BY not_after"
        )
        return [order_from_row(row) for row in rows]

    async def claim_orders(
        self, replica: str, now: float, until: float
    ) -> list[CertificateOrderRecord]:
        rows = await self._modify(
            "UPDATE certificate_orders SET claimed_by = ?, claimed_until = ? "
            "WHERE state = 'pending' AND (claimed_until IS NULL OR claimed_until < ?) "
            f"RETURNING {ORDER_COLUMNS}",
            (replica, until, now),
        )
        return sorted((order_from_row(row) for row in rows), key=lambda o: o.created_at)

    async def extend_claim(self, order_id: str, replica: str, until: float) -> bool:
        changed = await self._modify_count(
            "UPDATE certificate_orders SET claimed_until = ? "
            "WHERE id = ? AND claimed_by = ? AND state IN ('pending', 'valid')",
            (until, order_id, replica),
        )
        return changed > 0

    async def release_claims(self, replica: str) -> None:
        await self._modify_count(
            "UPDATE certificate_orders SET claimed_until = NULL "
            "WHERE claimed_by = ? AND state IN ('pending', 'valid')",
            (replica,),
        )

    async def put_report(self, challenge_id: str, report: str, at: float) -> None:
        await self._modify_count(
            "INSERT INTO propagation_reports (challenge_id, report, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (challenge_id) DO UPDATE SET report = excluded.report, "
            "updated_at = excluded.updated_at",
            (challenge_id, report, at),
        )

    async def report(self, challenge_id: str) -> str | None:
        row = await self._select_one(
            "SELECT report FROM propagation_reports WHERE challenge_id = ?", (challenge_id,)
        )
        return None if row is None else str(row[0])

    async def purge_ended(self, before: float) -> int:
        await self._modify_count(
            "DELETE FROM propagation_reports WHERE challenge_id IN (SELECT id FROM challenges "
            "WHERE state != 'present' AND ended_at < ?)",
            (before,),
        )
        return await self._modify_count(
            "DELETE FROM challenges WHERE state != 'present' AND ended_at < ?", (before,)
        )
