"""Checks and the audit trail kept ten years in monthly partitions (credit-use.md, Check rule 8).

The tables are range-partitioned by month: migration 0013 converts the existing ones
without losing a row, rows land in their month's partition, retention drops a month only
when all of it is older than the limit, and a query by subject reads each month's index.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from credex.node.checks import history
from credex.node.config import AuditConfig, ChecksConfig
from credex.node.embedded import EmbeddedPostgres
from credex.node.store import database, partitions
from credex.node.store.database import Connection
from credex.node.store.partitions import Retention

from .conftest import TestFederation, eventually

UTC = dt.UTC
NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
SUBJECT = "91320500JT0000210X"


def at(year: int, month: int, day: int = 15) -> dt.datetime:
    return dt.datetime(year, month, day, 8, 0, tzinfo=UTC)


@pytest.fixture
async def url(postgres: EmbeddedPostgres) -> str:
    made = postgres.uri("p" + uuid.uuid4().hex[:12])
    await database.ensure_database(made)
    return made


@pytest.fixture
async def pool(url: str) -> AsyncIterator[asyncpg.Pool]:
    opened = await database.open_pool(url, create=True, min_size=1, max_size=2)
    yield opened
    await opened.close()


async def add_check(conn: Connection, when: dt.datetime, subject: str) -> uuid.UUID:
    check_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO checks (check_id, at, caller, role, requesting_unit, scenario, purpose, legal_basis, subjects)"
        " VALUES ($1, $2, 'gov', 'government', 'U', '政府采购', 'p', 'b', 1)",
        check_id,
        when,
    )
    await conn.execute(
        "INSERT INTO check_answers (check_id, checked_at, subject_id, measure_ids) VALUES ($1, $2, $3, '{}')",
        check_id,
        when,
        subject,
    )
    return check_id


async def where(conn: Connection, table: str) -> dict[str, int]:
    rows = await conn.fetch(f"SELECT tableoid::regclass::text AS part, count(*) AS n FROM {table} GROUP BY 1")
    return {r["part"]: r["n"] for r in rows}


def test_checks_and_audit_rows_are_kept_ten_years_by_default() -> None:
    assert AuditConfig().retention_days == ChecksConfig().retention_days == 3653


async def test_the_migration_moves_every_existing_row_into_its_months_partition(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await database.migrate(conn, before=13)  # the store as an older credex left it
        old = [(uuid.uuid4(), at(2019, 3)), (uuid.uuid4(), at(2024, 7)), (uuid.uuid4(), at(2026, 11))]
        for check_id, when in old:
            await conn.execute(
                "INSERT INTO checks (check_id, at, caller, role, requesting_unit, scenario, purpose, legal_basis,"
                " subjects) VALUES ($1, $2, 'gov', 'government', 'U', '政府采购', 'p', 'b', 1)",
                check_id,
                when,
            )
            await conn.execute(
                "INSERT INTO check_answers (check_id, subject_id, measure_ids) VALUES ($1, $2, '{M-1}')",
                check_id,
                SUBJECT,
            )
        await conn.execute(
            "INSERT INTO check_feedback (check_id, subject_id, caller, measures_applied, outcome, reason, amount_yuan,"
            " basis, district_code, department, applied_on)"
            " VALUES ($1, $2, 'gov', '{M-1}', 'punished', '', 12000.50, 'b', '310101', 'd', '2024-07-20')",
            old[1][0],
            SUBJECT,
        )
        await conn.executemany(
            "INSERT INTO audit_log (at, caller, role, method, subject_id, purpose, answered, status, detail, calls)"
            " VALUES ($1, 'c', 'public', 'GetProfile', $2, '', 1, 'OK', 'd', 2)",
            [(at(2018, 1), SUBJECT), (at(2026, 10), SUBJECT), (at(2026, 11), "other")],
        )
        ids_before = [r["id"] for r in await conn.fetch("SELECT id FROM audit_log ORDER BY id")]

        assert await database.migrate(conn) == [name for version, name, _ in database.migrations() if version >= 13]

        assert await conn.fetchval("SELECT relkind::text FROM pg_class WHERE relname = 'checks'") == "p"
        checks = await conn.fetch("SELECT check_id, at, tableoid::regclass::text AS part FROM checks ORDER BY at")
        assert [(r["check_id"], r["at"], r["part"]) for r in checks] == [
            (old[0][0], old[0][1], "checks_201903"),
            (old[1][0], old[1][1], "checks_202407"),
            (old[2][0], old[2][1], "checks_202611"),
        ]
        answers = await conn.fetch(
            "SELECT check_id, checked_at, measure_ids, tableoid::regclass::text AS part FROM check_answers"
            " ORDER BY checked_at"
        )
        assert [(r["check_id"], r["checked_at"], r["measure_ids"]) for r in answers] == [
            (check_id, when, ["M-1"]) for check_id, when in old
        ]
        assert [r["part"] for r in answers] == ["check_answers_201903", "check_answers_202407", "check_answers_202611"]
        feedback = await conn.fetchrow("SELECT *, tableoid::regclass::text AS part FROM check_feedback")
        assert feedback is not None
        assert (feedback["check_id"], str(feedback["amount_yuan"]), feedback["part"]) == (
            old[1][0],
            "12000.50",
            "check_feedback_202407",
        )
        audit = await conn.fetch(
            "SELECT id, calls, detail, tableoid::regclass::text AS part FROM audit_log ORDER BY id"
        )
        assert [r["id"] for r in audit] == ids_before
        assert [r["part"] for r in audit] == ["audit_log_201801", "audit_log_202610", "audit_log_202611"]
        assert all((r["calls"], r["detail"]) == (2, "d") for r in audit)
        # New rows get ids after the old ones, and the old tables are gone.
        new_id = await conn.fetchval(
            "INSERT INTO audit_log (at, caller, role, method, subject_id, purpose, answered, status)"
            " VALUES (now(), 'c', 'public', 'GetProfile', '', '', 0, 'OK') RETURNING id"
        )
        assert new_id > max(ids_before)
        assert await conn.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'credex_0013%'") == 0
    finally:
        await conn.close()


async def test_rows_across_several_months_land_in_their_partitions_and_a_month_without_one_in_default(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        await partitions.ensure_months(conn, "checks", dt.date(2026, 7, 1), dt.date(2026, 9, 1))
        await partitions.ensure_months(conn, "check_answers", dt.date(2026, 7, 1), dt.date(2026, 9, 1))
        for month in (7, 8, 8, 9):
            await add_check(conn, at(2026, month), SUBJECT)
        far = await add_check(conn, at(2031, 2), SUBJECT)  # no partition for that month yet
        assert await where(conn, "checks") == {
            "checks_202607": 1,
            "checks_202608": 2,
            "checks_202609": 1,
            "checks_default": 1,
        }
        # Its month's partition, made later, takes the row out of the default partition.
        assert await partitions.ensure_months(conn, "checks", dt.date(2031, 2, 1), dt.date(2031, 2, 1)) == [
            "checks_203102"
        ]
        assert await conn.fetchval("SELECT tableoid::regclass::text FROM checks WHERE check_id = $1", far) == (
            "checks_203102"
        )
        assert await partitions.ensure_months(conn, "checks", dt.date(2031, 2, 1), dt.date(2031, 2, 1)) == []


async def test_retention_drops_only_months_wholly_older_than_the_limit(pool: asyncpg.Pool) -> None:
    keep_days = 100  # NOW - 100 days = 12 August 2026, 12:00 UTC
    async with pool.acquire() as conn:
        for parent in (*partitions.CHECKS, *partitions.AUDIT):
            await partitions.ensure_months(conn, parent, dt.date(2026, 6, 1), dt.date(2026, 9, 1))
        ids = {month: await add_check(conn, at(2026, month, 1), SUBJECT) for month in (6, 7, 8, 9)}
        ancient = await add_check(conn, at(2001, 1), SUBJECT)  # in the default partitions
        await conn.executemany(
            "INSERT INTO audit_log (at, caller, role, method, subject_id, purpose, answered, status)"
            " VALUES ($1, 'c', 'public', 'GetProfile', '', '', 0, 'OK')",
            [(at(2026, month, 1),) for month in (6, 7, 8, 9)],
        )
    changes = await partitions.maintain(pool, Retention(audit_days=keep_days, checks_days=keep_days), now=NOW)
    assert sorted(c for c in changes if c.startswith("dropped")) == sorted(
        f"dropped {parent}_2026{month:02d}" for parent in (*partitions.CHECKS, *partitions.AUDIT) for month in (6, 7)
    )
    async with pool.acquire() as conn:  # this month and three ahead exist (the migration made them, for today)
        months = await partitions.months_of(conn, "checks")
    assert {"checks_202611", "checks_202612", "checks_202701", "checks_202702"} <= set(months)
    async with pool.acquire() as conn:
        kept = {r["check_id"] for r in await conn.fetch("SELECT check_id FROM checks")}
        assert kept == {ids[8], ids[9]}  # August holds a row older than the limit, but not all of it is
        assert ancient not in {r["check_id"] for r in await conn.fetch("SELECT check_id FROM check_answers")}
        audit_months = {r["at"].month for r in await conn.fetch("SELECT at FROM audit_log")}
        assert audit_months == {8, 9}
    assert not [c for c in await partitions.maintain(pool, Retention(keep_days, keep_days), now=NOW)]


async def test_a_retention_of_zero_keeps_every_month(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await partitions.ensure_months(conn, "checks", dt.date(2001, 1, 1), dt.date(2001, 1, 1))
        await add_check(conn, at(2001, 1), SUBJECT)
    changes = await partitions.maintain(pool, Retention(audit_days=0, checks_days=0), now=NOW)
    assert not [c for c in changes if c.startswith("dropped")]
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM checks") == 1


async def blocked(url: str, pid: int) -> bool:
    """Whether the backend ``pid`` waits for a lock another replica holds."""
    conn = await asyncpg.connect(url)
    try:
        return bool(await conn.fetchval("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid))
    finally:
        await conn.close()


async def test_two_replicas_making_the_same_month_at_once_make_it_once_and_neither_fails(
    url: str, pool: asyncpg.Pool
) -> None:
    month = dt.date(2031, 5, 1)
    first, second = await asyncpg.connect(url), await asyncpg.connect(url)
    try:
        making = first.transaction()
        await making.start()  # the first replica is making the month and has not committed yet
        assert await partitions.ensure_months(first, "checks", month, month) == ["checks_203105"]
        racing = asyncio.ensure_future(partitions.ensure_months(second, "checks", month, month))
        await eventually(lambda: blocked(url, second.get_server_pid()))
        await making.commit()
        assert await racing == []  # already made: nothing to do, no error
        assert "checks_203105" in await partitions.months_of(second, "checks")
    finally:
        await first.close()
        await second.close()


async def test_two_replicas_dropping_the_same_month_at_once_drop_it_once_and_neither_fails(
    url: str, pool: asyncpg.Pool
) -> None:
    limit = dt.datetime(2001, 3, 1, tzinfo=UTC)
    first, second = await asyncpg.connect(url), await asyncpg.connect(url)
    try:
        await partitions.ensure_months(first, "checks", dt.date(2001, 1, 1), dt.date(2001, 1, 1))
        dropping = first.transaction()
        await dropping.start()  # the first replica is dropping the month and has not committed yet
        assert await partitions.drop_months_before(first, "checks", limit) == ["checks_200101"]
        racing = asyncio.ensure_future(partitions.drop_months_before(second, "checks", limit))
        await eventually(lambda: blocked(url, second.get_server_pid()))
        await dropping.commit()
        assert await racing == []
        assert "checks_200101" not in await partitions.months_of(second, "checks")
    finally:
        await first.close()
        await second.close()


async def test_a_row_inserted_into_the_default_while_its_month_is_made_moves_into_the_month(
    url: str, pool: asyncpg.Pool
) -> None:
    """A month without a partition takes its rows in DEFAULT; making the month moves them, and a row an
    insert has put there but not yet committed must move too, not fail the month (and the maintenance)."""
    inserting, making = await asyncpg.connect(url), await asyncpg.connect(url)
    try:
        earlier = await add_check(inserting, at(2032, 3), SUBJECT)
        insert = inserting.transaction()
        await insert.start()
        late = await add_check(inserting, at(2032, 3, 20), SUBJECT)  # in DEFAULT, not committed yet
        racing = asyncio.ensure_future(
            partitions.ensure_months(making, "checks", dt.date(2032, 3, 1), at(2032, 3).date())
        )
        await eventually(lambda: blocked(url, making.get_server_pid()))
        await insert.commit()
        assert await racing == ["checks_203203"]
        moved = await making.fetch("SELECT check_id FROM checks_203203")
        assert {r["check_id"] for r in moved} == {earlier, late}
        assert await making.fetchval("SELECT count(*) FROM checks_default") == 0
    finally:
        await inserting.close()
        await making.close()


async def test_who_checked_a_subject_reads_each_months_index(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        for parent in ("checks", "check_answers"):
            await partitions.ensure_months(conn, parent, dt.date(2026, 1, 1), dt.date(2026, 6, 1))
        await conn.copy_records_to_table(
            "check_answers",
            records=[(uuid.uuid4(), at(2026, 1 + n % 6, 1 + n % 28), f"9132050{n:011d}", []) for n in range(30_000)],
            columns=("check_id", "checked_at", "subject_id", "measure_ids"),
        )
        await add_check(conn, at(2026, 3), SUBJECT)
        await conn.execute("ANALYZE check_answers; ANALYZE checks")
        plan = "\n".join(
            r[0] for r in await conn.fetch("EXPLAIN " + history.CHECKS_OF_SUBJECT, SUBJECT, None, None, 50)
        )
    for month in range(1, 7):  # every month holding rows is read by its index on subject_id
        assert f"check_answers_2026{month:02d}_subject_id_idx" in plan, plan
        assert f"Seq Scan on check_answers_2026{month:02d}" not in plan, plan


async def test_a_serving_node_makes_months_ahead_and_drops_old_ones_by_itself(federation: TestFederation) -> None:
    node = await federation.start_node(
        "320000", audit={"partitions_every_seconds": 0.2}, checks={"retention_days": 400}
    )
    assert node.pool is not None
    ahead = f"checks_{partitions.add_months(partitions.month_start(dt.date.today()), partitions.AHEAD_MONTHS):%Y%m}"
    async with node.pool.acquire() as conn:
        await partitions.ensure_months(conn, "checks", dt.date(2020, 1, 1), dt.date(2020, 1, 1))
        await add_check(conn, at(2020, 1), SUBJECT)
        await conn.execute(f"ALTER TABLE checks DETACH PARTITION {ahead}; DROP TABLE {ahead}")

    async def settled() -> bool:
        assert node.pool is not None
        async with node.pool.acquire() as conn:
            months = await partitions.months_of(conn, "checks")
        return ahead in months and "checks_202001" not in months

    await eventually(settled)


async def test_measures_lifted_on_a_dropped_months_feedback_go_with_it(pool: asyncpg.Pool) -> None:
    keep_days = 100
    async with pool.acquire() as conn:
        for parent in partitions.CHECKS:
            await partitions.ensure_months(conn, parent, dt.date(2026, 6, 1), dt.date(2026, 9, 1))
        ids = {month: await add_check(conn, at(2026, month, 1), SUBJECT) for month in (6, 9)}
        await conn.executemany(
            "INSERT INTO lifted_measures (check_id, subject_id, checked_at, requesting_unit, caller, measure_id,"
            " record_id, record_origin, reason, event_seq, lifted_on)"
            " VALUES ($1, $2, $3, 'U', 'gov', 'M', 'R', '320000', 'repaired', 9, '2026-10-01')",
            [(ids[month], SUBJECT, at(2026, month, 1)) for month in (6, 9)],
        )
    changes = await partitions.maintain(pool, Retention(audit_days=0, checks_days=keep_days), now=NOW)
    assert "deleted 1 lifted measures of dropped checks" in changes
    async with pool.acquire() as conn:
        assert [r["check_id"] for r in await conn.fetch("SELECT check_id FROM lifted_measures")] == [ids[9]]
