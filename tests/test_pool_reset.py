"""A connection goes back to the pool without a reset round trip, unless it left state in its session.

Reset or not, the next user of a connection never finds what an earlier one left:
a session advisory lock, a LISTEN, a session setting.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from asyncpg.pool import PoolConnectionProxy

from credex.domain.memo import memo_size
from credex.node.embedded import EmbeddedPostgres
from credex.node.store.database import PooledConnection, open_pool, takes_session_state


def took_session_state(conn: PoolConnectionProxy) -> bool:
    """What the pooled connection behind the pool's proxy remembers."""
    held: object = conn._con  # type: ignore[attr-defined]  # the proxy's connection; the stubs leave it out
    assert isinstance(held, PooledConnection)
    return held.took_session_state


@pytest.fixture
async def pool(postgres: EmbeddedPostgres) -> AsyncIterator[asyncpg.Pool]:
    opened = await open_pool(postgres.uri(f"reset_{uuid.uuid4().hex[:8]}"), create=True, min_size=1, max_size=1)
    yield opened
    await opened.close()


async def test_a_connection_that_only_ran_statements_is_not_reset(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute("CREATE TEMP TABLE t (n int) ON COMMIT PRESERVE ROWS")
        await conn.execute("INSERT INTO t VALUES (1)")
        await conn.execute("UPDATE t SET n = 2")
        async with conn.transaction():
            await conn.execute("SET LOCAL statement_timeout = 1000")
            await conn.fetchval("SELECT pg_advisory_xact_lock(7)")
        assert await conn.fetchval("SELECT n FROM t") == 2
        assert not took_session_state(conn)


async def test_a_session_advisory_lock_left_behind_is_released_before_the_next_user(
    pool: asyncpg.Pool, postgres: EmbeddedPostgres
) -> None:
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT pg_try_advisory_lock(42)")
        database = await conn.fetchval("SELECT current_database()")
    other = await asyncpg.connect(postgres.uri(database))
    try:
        assert await other.fetchval("SELECT pg_try_advisory_lock(42)")
    finally:
        await other.close()


async def test_a_listen_left_behind_is_gone_for_the_next_user(pool: asyncpg.Pool) -> None:
    with pytest.warns(asyncpg.InterfaceWarning, match="active notification listener"):  # asyncpg says so too
        async with pool.acquire() as conn:
            await conn.add_listener("credex_test", lambda *_: None)
            pid = conn.get_server_pid()
    async with pool.acquire() as conn:
        assert conn.get_server_pid() == pid  # the same connection, back from the pool
        assert await conn.fetchval("SELECT count(*) FROM pg_listening_channels()") == 0


async def test_a_session_setting_left_behind_is_undone_for_the_next_user(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute("SET application_name = 'left-behind'")
        pid = conn.get_server_pid()
    async with pool.acquire() as conn:
        assert conn.get_server_pid() == pid
        assert await conn.fetchval("SHOW application_name") != "left-behind"
        assert not took_session_state(conn)


async def test_a_statement_seen_before_still_marks_every_connection_that_runs_it(pool: asyncpg.Pool) -> None:
    """The verdict on a statement's text is remembered; the mark is still the connection's own, every time."""
    for _ in range(3):
        async with pool.acquire() as conn:
            await conn.execute("SET application_name = 'again'")
            assert took_session_state(conn)
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW application_name") != "again"
            assert not took_session_state(conn)


def test_a_long_statement_is_judged_without_being_kept() -> None:
    """Statements built with values in them are judged every time, so the memory of verdicts stays small."""
    kept = memo_size(takes_session_state)
    long = "SELECT 1 -- " + "x" * 10000
    assert not takes_session_state(long)
    assert takes_session_state(long + "\nLISTEN credex_test")
    assert memo_size(takes_session_state) == kept
    locking = f"SELECT pg_advisory_lock(1) -- {uuid.uuid4()}"
    assert takes_session_state(locking) and takes_session_state(locking)
    assert memo_size(takes_session_state) == kept + 1
