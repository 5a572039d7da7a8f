"""The PostgreSQL store: connection pool, database creation and migrations.

SQL lives in versioned files under ``migrations/``; they are applied in order at
start-up inside one transaction each, under an advisory lock, so replicas that
start together do not race.
"""

from __future__ import annotations

import logging
import re
from importlib import resources
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from credex.domain.memo import recurring
from credex.errors import CredexError

# A connection taken from a pool or opened directly; the store accepts both.
Connection = asyncpg.Connection | PoolConnectionProxy

log = logging.getLogger(__name__)

# The database or the way to it went away: the same statement may succeed later. Callers that
# must tell this from a refused statement (the edge, the audit writer) catch exactly these.
CONNECTION_LOST: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
)
# What a background loop outlives by trying again after a pause (a refused statement included:
# the loop logs it and goes on rather than dying on one bad round).
RETRYABLE: tuple[type[BaseException], ...] = (*CONNECTION_LOST, asyncpg.PostgresError)

# The channel a ledger commit notifies, so the relay publishes at once instead of at its next poll.
NOTIFY_CHANNEL = "credex_outbox"
# Bulk loads outrun autovacuum's statistics: ANALYZE after this many new rows, or lookups scan.
ANALYZE_AFTER = 10000

_MIGRATION_LOCK = 0x63726564  # "cred"
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class StoreError(CredexError, RuntimeError):
    """The database is unreachable or its schema is newer than this code."""


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/") or "postgres"


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


async def ensure_database(url: str) -> None:
    """Create the database named in ``url`` if the server does not have it yet."""
    name = database_name(url)
    try:
        conn = await asyncpg.connect(with_database(url, "postgres"))
    except (OSError, asyncpg.PostgresError) as exc:
        raise StoreError(f"cannot reach PostgreSQL at {_redact(url)}: {exc}") from exc
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            quoted = '"' + name.replace('"', '""') + '"'
            try:
                await conn.execute(f"CREATE DATABASE {quoted}")
                log.info("created database %s", name)
            except asyncpg.DuplicateDatabaseError:
                pass
    finally:
        await conn.close()


def migrations() -> list[tuple[int, str, str]]:
    found = []
    for entry in resources.files(__package__).joinpath("migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


async def migrate(conn: Connection, before: int | None = None) -> list[str]:
    """Apply the migrations this database has not seen; return their names.

    ``before`` stops short of that version: an upgrade is tested on a store built as an older credex left it.
    """
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        known = migrations()
        newest_known = known[-1][0] if known else 0
        if done and max(done) > newest_known:
            raise StoreError(
                f"database schema is at version {max(done)} but this credex knows only up to {newest_known}; "
                "upgrade credex before starting this node"
            )
        for version, name, sql in known:
            if version in done or (before is not None and version >= before):
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name)
            applied_now.append(name)
            log.info("applied migration %s", name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return applied_now


# Statements that leave state in the session beyond their transaction: LISTEN, a session advisory lock
# (pg_advisory_lock, pg_try_advisory_lock; the _xact_ ones end with their transaction), a session SET.
_SESSION_STATE = re.compile(r"\bLISTEN\b|advisory_lock|set_config|(?:^|;)\s*SET\s(?!\s*LOCAL\b)", re.IGNORECASE)


@recurring(maxsize=1024, key_chars=8192)
def takes_session_state(query: str) -> bool:
    """Whether ``query`` may leave state in its session (:data:`_SESSION_STATE`), judged once per text.

    The search costs more than a short query's own client work (~13 µs per statement), and
    credex's statements are a few hundred constant texts run over and over: each is judged
    once. The memory is bounded in entries and in the length of a text kept.
    """
    return _SESSION_STATE.search(query) is not None


class PooledConnection(asyncpg.Connection):
    """A pool's connection that remembers whether it left state in its session, so that only then is it reset.

    asyncpg resets every connection given back to a pool with one more round trip
    (advisory locks released, UNLISTEN, RESET ALL, cursors closed), which costs about
    as much as a short query: half the database time of a lookup or a proof. Almost
    no statement of credex leaves session state; those that do (the relay's leader
    lock, the migration lock, LISTEN, a session SET) mark their connection here and
    it is reset as before. An open transaction is rolled back on release either way.
    """

    took_session_state = False

    def _note(self, query: str) -> None:
        if not self.took_session_state and takes_session_state(query):
            self.took_session_state = True

    async def execute(self, query: str, *args: object, timeout: float | None = None) -> str:
        self._note(query)
        return await super().execute(query, *args, timeout=timeout)

    async def fetch(self, query: str, *args: object, **options: Any) -> Any:
        self._note(query)
        return await super().fetch(query, *args, **options)

    async def fetchrow(self, query: str, *args: object, **options: Any) -> Any:
        self._note(query)
        return await super().fetchrow(query, *args, **options)

    async def fetchval(self, query: str, *args: object, column: int = 0, timeout: float | None = None) -> Any:
        self._note(query)
        return await super().fetchval(query, *args, column=column, timeout=timeout)


async def _reset_if_used(conn: asyncpg.Connection) -> None:
    """The pool's reset: asyncpg's own, for a connection that took session state (see :class:`PooledConnection`)."""
    if isinstance(conn, PooledConnection) and conn.took_session_state:
        await conn.execute(conn.get_reset_query())
        conn.took_session_state = False


async def open_pool(url: str, *, create: bool, min_size: int, max_size: int) -> asyncpg.Pool:
    if create:
        await ensure_database(url)
    try:
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            command_timeout=120,
            connection_class=PooledConnection,
            reset=_reset_if_used,
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise StoreError(f"cannot open database {_redact(url)}: {exc}") from exc
    async with pool.acquire() as conn:
        await migrate(conn)
    return pool


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)
