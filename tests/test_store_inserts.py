"""Rows of several tables stored by one statement: all of them or none, the tables' defaults for what is not given.

This is how a Check's audit rows, its ``checks`` row and its answers are committed
together (node/store/inserts.py): one round trip instead of a transaction of COPYs.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from credex.node.embedded import EmbeddedPostgres
from credex.node.store import database
from credex.node.store.inserts import Inserter, Rows

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
AUDIT = ("at", "caller", "role", "method", "subject_id", "purpose", "answered", "status")
CHECK = ("check_id", "at", "caller", "role", "requesting_unit", "scenario", "purpose", "legal_basis", "subjects")
ANSWER = ("check_id", "checked_at", "subject_id", "measure_ids", "measure_records", "hit_records")
SUBJECTS = ("91320500JT0000210X", "913100000000000001")


@pytest.fixture
async def pool(postgres: EmbeddedPostgres) -> AsyncIterator[asyncpg.Pool]:
    url = postgres.uri("i" + uuid.uuid4().hex[:12])
    await database.ensure_database(url)
    opened = await database.open_pool(url, create=True, min_size=1, max_size=2)
    yield opened
    await opened.close()


def a_check(check_id: uuid.UUID) -> list[Rows]:
    return [
        Rows("audit_log", AUDIT, [(NOW, "gov", "government", "Check", s, "采购", 1, "OK") for s in SUBJECTS]),
        Rows("checks", CHECK, [(check_id, NOW, "gov", "government", "U", "政府采购", "采购", "basis", 2)]),
        Rows(
            "check_answers",
            ANSWER,
            [
                (check_id, NOW, SUBJECTS[0], ["m-1", "m-2"], json.dumps({"m-1": ["r-9"]}), ["r-9", "r-10"]),
                (check_id, NOW, SUBJECTS[1], [], "{}", []),
            ],
        ),
    ]


async def counts(pool: asyncpg.Pool) -> tuple[int, int, int]:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM audit_log) a, (SELECT count(*) FROM checks) c,"
            " (SELECT count(*) FROM check_answers) s"
        )
    assert row is not None
    return int(row["a"]), int(row["c"]), int(row["s"])


async def test_rows_of_three_tables_are_stored_as_given_and_the_rest_take_the_tables_defaults(
    pool: asyncpg.Pool,
) -> None:
    check_id = uuid.uuid4()
    inserter = Inserter()
    async with pool.acquire() as conn:
        await inserter.insert(conn, a_check(check_id))
        audit = await conn.fetch("SELECT id, subject_id, detail, calls FROM audit_log ORDER BY id")
        answers = await conn.fetch(
            "SELECT subject_id, measure_ids, measure_records, hit_records FROM check_answers"
            " WHERE check_id = $1 ORDER BY subject_id",
            check_id,
        )
    assert [r["subject_id"] for r in audit] == list(SUBJECTS)
    assert len({r["id"] for r in audit}) == 2  # numbered by the table's sequence
    assert {(r["detail"], r["calls"]) for r in audit} == {("", 1)}  # columns not given: their defaults
    assert [tuple(r) for r in answers] == sorted(
        [
            (SUBJECTS[0], ["m-1", "m-2"], json.dumps({"m-1": ["r-9"]}), ["r-9", "r-10"]),
            (SUBJECTS[1], [], "{}", []),
        ]
    )
    # Another shape of call on the same inserter: audit rows alone.
    async with pool.acquire() as conn:
        await inserter.insert(conn, a_check(uuid.uuid4())[:1])
    assert await counts(pool) == (4, 1, 2)


async def test_a_row_any_table_refuses_stores_nothing_of_any_table(pool: asyncpg.Pool) -> None:
    check_id = uuid.uuid4()
    inserter = Inserter()
    async with pool.acquire() as conn:
        await inserter.insert(conn, a_check(check_id))
        before = await counts(pool)
        again = a_check(uuid.uuid4())
        again[2] = Rows("check_answers", ANSWER, [*again[2].records, again[2].records[0]])  # a subject twice
        with pytest.raises(asyncpg.UniqueViolationError):
            await inserter.insert(conn, again)
        with pytest.raises(asyncpg.NotNullViolationError):  # a NOT NULL column left out has no default
            await inserter.insert(conn, [Rows("checks", CHECK[:-1], [(uuid.uuid4(), NOW, *"abcdef")])])
    assert await counts(pool) == before


async def test_a_table_or_column_the_database_lacks_is_named_and_nothing_is_stored(pool: asyncpg.Pool) -> None:
    inserter = Inserter()
    async with pool.acquire() as conn:
        with pytest.raises(LookupError, match="no column colour"):
            await inserter.insert(conn, [*a_check(uuid.uuid4())[:2], Rows("check_answers", ("colour",), [("red",)])])
        with pytest.raises(LookupError, match="no table 'no_such_table'"):
            await inserter.insert(conn, [Rows("no_such_table", ("a",), [(1,)])])
    assert await counts(pool) == (0, 0, 0)
