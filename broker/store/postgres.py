"""The store for several replicas: PostgreSQL, through asyncpg and its connection pool.

Replicas learn of each other's changes by LISTEN/NOTIFY: triggers (migration 0002)
notify on every change of a live value, a token or a registration, in the transaction
that makes it, and each replica keeps one connection listening. Leadership is a
session advisory lock held on a connection of its own: PostgreSQL drops it the moment
that connection ends, so it moves on when its replica dies. A present counts a name's
values under a transaction advisory lock (one round trip, in a function), so the cap
holds across replicas; providers that rewrite whole RRsets take a lock per RRset.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg

from broker.errors import InvalidRequestError, StoreUnavailableError
from broker.store.base import ChallengeRecord
from broker.store.changes import (
    ApplyChange,
    ChangeFeed,
    Leadership,
    Resync,
    TokenChanged,
    parse_change,
)
from broker.store.rows import CHALLENGE_COLUMNS, Row, challenge_from_row, challenge_row
from broker.store.schema import SchemaError, needs_upgrade, upgrade_postgresql
from broker.store.sql import DuplicateRowError, SqlStore

log = logging.getLogger(__name__)

CHANNEL = "dns01_broker"
LOCK_CLASS_LEADER = 20262
LOCK_CLASS_RRSET = 20264
KEEPALIVE_SECONDS = 5.0
"""A quiet listening connection is checked this often, so a dead one is noticed."""
RECONNECT_MAX_SECONDS = 5.0
FAILURES = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)

Connect = Callable[[], Awaitable[asyncpg.Connection]]


def numbered(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1``, ``$2``, ... (no statement here has a
    question mark inside a literal)."""
    counter = iter(range(1, 10_000))
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)


class PostgresStore(SqlStore):
    def __init__(
        self, url: str, password: str | None, *, pool_size: int = 10, timeout: float = 5.0
    ) -> None:
        self.url = url
        self._password = password
        self._pool_size = pool_size
        self._timeout = timeout
        self._pool: asyncpg.Pool | None = None
        self._statements: dict[str, str] = {}
        self._backends: set[int] = set()
        self._feed = PostgresChangeFeed(self._connect, self._backends.__contains__)
        self._leadership = AdvisoryLeadership(self._connect)
        self._lock_slots = asyncio.Semaphore(max(1, pool_size // 2))
        """RRset locks held at once: each keeps a pool connection while the statements
        under it need others, so locks may never take the whole pool."""

    async def _remember_backend(self, connection: asyncpg.Connection) -> None:
        """Note the server process of each pool connection: changes notified by them are
        this replica's own, already applied to its memory."""
        backend = connection.get_server_pid()
        self._backends.add(backend)
        connection.add_termination_listener(lambda _: self._backends.discard(backend))

    async def _connect(self) -> asyncpg.Connection:
        connection: asyncpg.Connection = await asyncpg.connect(
            self.url, password=self._password, timeout=self._timeout
        )
        return connection

    async def open(self) -> None:
        try:
            connection = await self._connect()
            try:
                version = await _schema_version(connection)
            finally:
                await connection.close()
            if needs_upgrade(version):
                await asyncio.to_thread(upgrade_postgresql, self.url, self._password)
            self._pool = await asyncpg.create_pool(
                self.url,
                password=self._password,
                min_size=1,
                max_size=self._pool_size,
                timeout=self._timeout,
                command_timeout=self._timeout,
                init=self._remember_backend,
                reset=_rollback_only,
            )
        except SchemaError as exc:
            raise StoreUnavailableError(f"PostgreSQL store: {exc}") from None
        except (*FAILURES, ValueError) as exc:
            raise StoreUnavailableError(f"cannot open the PostgreSQL store: {_why(exc)}") from None

    async def close(self) -> None:
        await self._leadership.release()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), self._timeout)
            except TimeoutError:
                pool.terminate()

    def _sql(self, sql: str) -> str:
        statement = self._statements.get(sql)
        if statement is None:
            statement = self._statements[sql] = numbered(sql)
        return statement

    def _ready_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreUnavailableError("the PostgreSQL store is not open")
        return self._pool

    async def _select(self, sql: str, params: Row = ()) -> list[Row]:
        if not _storable(params):
            return []  # no stored text holds a NUL (PostgreSQL refuses one outright)
        try:
            rows = await self._ready_pool().fetch(self._sql(sql), *params)
        except FAILURES as exc:
            raise StoreUnavailableError(f"PostgreSQL store: {_why(exc)}") from None
        return [tuple(row) for row in rows]

    async def _modify(self, sql: str, params: Row = ()) -> list[Row]:
        _require_storable(params)
        try:
            rows = await self._ready_pool().fetch(self._sql(sql), *params)
        except asyncpg.UniqueViolationError:
            raise DuplicateRowError from None
        except FAILURES as exc:
            raise StoreUnavailableError(f"PostgreSQL store: {_why(exc)}") from None
        return [tuple(row) for row in rows]

    async def _modify_count(self, sql: str, params: Row = ()) -> int:
        _require_storable(params)
        try:
            status = await self._ready_pool().execute(self._sql(sql), *params)
        except asyncpg.UniqueViolationError:
            raise DuplicateRowError from None
        except FAILURES as exc:
            raise StoreUnavailableError(f"PostgreSQL store: {_why(exc)}") from None
        count = status.rsplit(" ", 1)[-1]
        return int(count) if count.isdigit() else 0

    async def ping(self) -> None:
        await self._select("SELECT 1")

    async def put_challenge(
        self, record: ChallengeRecord, max_values: int
    ) -> tuple[ChallengeRecord, bool] | None:
        row = challenge_row(record)
        # The function takes the row without state and ended_at (always live, not ended).
        params = (*row[:8], row[10], row[11], max_values)
        stored = await self._modify_one(
            f"SELECT {CHALLENGE_COLUMNS} FROM dns01_broker_put_challenge(?,?,?,?,?,?,?,?,?,?,?)",
            params,
        )
        if stored is None:
            return None
        result = challenge_from_row(stored)
        return result, result.id == record.id

    async def token_generation(self) -> int | None:
        return self._feed.token_generation

    def changes(self) -> ChangeFeed:
        return self._feed

    def leadership(self) -> Leadership:
        return self._leadership

    @contextlib.asynccontextmanager
    async def rrset_lock(self, provider: str, fqdn: str) -> AsyncIterator[None]:
        try:
            async with (
                self._lock_slots,
                self._ready_pool().acquire() as connection,
                connection.transaction(),
            ):
                await connection.execute(
                    "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                    LOCK_CLASS_RRSET,
                    f"{provider} {fqdn}",
                )
                yield
        except FAILURES as exc:
            raise StoreUnavailableError(f"PostgreSQL store: {_why(exc)}") from None


def _storable(params: Row) -> bool:
    return not any(isinstance(value, str) and "\x00" in value for value in params)


def _require_storable(params: Row) -> None:
    if not _storable(params):
        raise InvalidRequestError("text with a NUL character cannot be stored: leave it out")


async def _rollback_only(connection: asyncpg.Connection) -> None:
    """What a pool connection needs before its next use. Nothing here leaves session
    state behind (no LISTEN, SET, cursors or session advisory locks: those live on
    connections of their own), so asyncpg's full reset, a round trip on every release,
    is not needed."""
    if connection.is_in_transaction():
        await connection.execute("ROLLBACK")


async def _schema_version(connection: asyncpg.Connection) -> str | None:
    try:
        version: str | None = await connection.fetchval("SELECT version_num FROM alembic_version")
    except asyncpg.UndefinedTableError:
        return None
    return version


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class _ConnectionLost(Exception):
    pass


class PostgresChangeFeed(ChangeFeed):
    """One LISTEN connection; reconnects with backoff and resyncs after each connect.
    Changes this replica made itself (``own(backend)``) move the token generation but are
    not delivered: its memory has them already."""

    def __init__(self, connect: Connect, own: Callable[[int], bool]) -> None:
        self._connect = connect
        self._own = own
        self._connected = False
        self._error: str | None = "not started"
        self._generation = 0

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def error(self) -> str | None:
        return self._error

    @property
    def token_generation(self) -> int | None:
        return self._generation if self._connected else None

    async def run(self, apply: ApplyChange) -> None:
        backoff = 0.1
        while True:
            try:
                await self._listen(apply)
            except (*FAILURES, _ConnectionLost, StoreUnavailableError) as exc:
                self._lost(exc)
            except Exception as exc:  # a change it could not apply: start over, say why
                log.exception("applying other replicas' changes failed; reloading")
                self._lost(exc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RECONNECT_MAX_SECONDS)

    async def _listen(self, apply: ApplyChange) -> None:
        connection = await self._connect()
        queue: asyncio.Queue[tuple[int, str] | None] = asyncio.Queue()
        try:
            connection.add_termination_listener(lambda _: queue.put_nowait(None))
            await connection.add_listener(
                CHANNEL, lambda _, backend, __, payload: queue.put_nowait((backend, payload))
            )
            self._generation += 1
            await apply(Resync())
            self._connected, self._error = True, None
            log.info("listening for changes from other replicas")
            while True:
                try:
                    # asyncio.timeout, not wait_for: 3.11's wait_for can swallow the
                    # cancellation of a stopping broker when the queue wakes at that moment
                    async with asyncio.timeout(KEEPALIVE_SECONDS):
                        payload = await queue.get()
                except TimeoutError:
                    await connection.fetchval("SELECT 1", timeout=KEEPALIVE_SECONDS)
                    continue
                if payload is None:
                    raise _ConnectionLost("the listening connection was closed")
                await self._deliver(*payload, apply)
        finally:
            self._connected = False
            connection.terminate()

    async def _deliver(self, backend: int, payload: str, apply: ApplyChange) -> None:
        change = parse_change(payload)
        if change is None:
            log.warning("ignoring a change notification this broker does not know: %r", payload)
            return
        if isinstance(change, TokenChanged):
            self._generation += 1
        if not self._own(backend):
            await apply(change)

    def _lost(self, exc: BaseException) -> None:
        reason = _why(exc)
        if self._error != reason:
            log.warning("not receiving changes from other replicas (reconnecting): %s", reason)
        self._connected, self._error = False, reason


class AdvisoryLeadership(Leadership):
    """``pg_try_advisory_lock`` on a connection kept for it."""

    def __init__(self, connect: Connect) -> None:
        self._connect = connect
        self._connection: asyncpg.Connection | None = None
        self._held = False
        self._turn = asyncio.Lock()  # one statement at a time on the connection

    async def try_acquire(self) -> bool:
        async with self._turn:
            return await self._try_acquire()

    async def _try_acquire(self) -> bool:
        try:
            if self._connection is None or self._connection.is_closed():
                self._held = False
                self._connection = await self._connect()
            if self._held:
                await self._connection.fetchval("SELECT 1", timeout=KEEPALIVE_SECONDS)
            else:
                self._held = bool(
                    await self._connection.fetchval(
                        "SELECT pg_try_advisory_lock($1, 0)", LOCK_CLASS_LEADER
                    )
                )
        except FAILURES as exc:
            log.warning("leadership check failed: %s", _why(exc))
            await self._release()
            return False
        return self._held

    async def release(self) -> None:
        """Unlock at once where the connection still works (another replica may take over
        in its next second), then close it."""
        async with self._turn:
            await self._release()

    async def _release(self) -> None:
        connection, held = self._connection, self._held
        self._connection, self._held = None, False
        if connection is None or connection.is_closed():
            return
        try:
            if held:
                await connection.execute(
                    "SELECT pg_advisory_unlock($1, 0)", LOCK_CLASS_LEADER, timeout=1.0
                )
            await connection.close(timeout=1.0)
        except FAILURES:
            connection.terminate()
