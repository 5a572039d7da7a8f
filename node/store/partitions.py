"""Monthly partitions of the tables kept for years: the audit trail and the checks (migration 0013).

Checks and audit rows are kept ten years by default (credit-use.md Check rule 8). Each of
these tables is range-partitioned by month on its time column, so that:

- retention drops a month whole (``DROP TABLE``: no row-by-row delete, no bloat) once the
  *whole* month is older than the retention, never a month that still holds a row inside it;
- a query by subject reads each month's own small index.

Partitions are created ahead (this month and :data:`AHEAD_MONTHS` more) by a supervised task
at start and every day after, so rows never wait for a partition; a row of a month without
one (a clock far off) goes to the table's DEFAULT partition and moves into its month when that
month's partition is made (``credex_month_partition`` in the migration, the one definition).
Check answers and feedback are partitioned by the time of their check, and a month of checks
is dropped after its answers and feedback; the measures lifted on their feedback go with them.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass

import asyncpg

from credex.node.cancellation import pause
from credex.node.store import lifting
from credex.node.store.database import Connection

log = logging.getLogger(__name__)

AHEAD_MONTHS = 3
DAY_SECONDS = 86_400.0
# Parents in the order their months are dropped: what refers to a check before the check.
AUDIT = ("audit_log",)
CHECKS = ("check_feedback", "check_answers", "checks")
_MONTH = re.compile(r"_(\d{4})(\d{2})$")
# The advisory lock class ("part") under which a month partition is made (credex_month_partition,
# migration 0026) or dropped, keyed by the partition's name: replicas maintain the same tables at once.
MONTH_LOCK = 0x70617274


@dataclass(frozen=True, slots=True)
class Retention:
    """How long each family of tables is kept, in days (0: forever)."""

    audit_days: int
    checks_days: int

    def by_table(self) -> dict[str, int]:
        return {**dict.fromkeys(AUDIT, self.audit_days), **dict.fromkeys(CHECKS, self.checks_days)}


def month_start(day: dt.date) -> dt.date:
    return day.replace(day=1)


def add_months(month: dt.date, count: int) -> dt.date:
    index = month.year * 12 + month.month - 1 + count
    return dt.date(index // 12, index % 12 + 1, 1)


async def ensure_months(conn: Connection, parent: str, first: dt.date, last: dt.date) -> list[str]:
    """Create the partitions of ``parent`` for every month from ``first`` to ``last``; return those made now."""
    made = []
    month = month_start(first)
    while month <= last:
        if await conn.fetchval("SELECT credex_month_partition($1, $2)", parent, month):
            made.append(f"{parent}_{month:%Y%m}")
        month = add_months(month, 1)
    return made


async def months_of(conn: Connection, parent: str) -> dict[str, dt.date]:
    """The month partitions of ``parent``, by name, with the first day of their month."""
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = $1::regclass ORDER BY c.relname",
        parent,
    )
    found = {}
    for row in rows:
        matched = _MONTH.search(row["relname"])
        if matched and row["relname"] == f"{parent}_{matched.group(1)}{matched.group(2)}":
            found[row["relname"]] = dt.date(int(matched.group(1)), int(matched.group(2)), 1)
    return found


async def drop_months_before(conn: Connection, parent: str, limit: dt.datetime) -> list[str]:
    """Drop the month partitions of ``parent`` that end at or before ``limit`` (UTC months); return their names.

    A partition still referenced as a partition is detached first, so that dropping it takes
    only its own lock. Rows of such months in the DEFAULT partition are deleted with it.
    Each month is dropped under :data:`MONTH_LOCK` and looked up again under it, so two
    replicas dropping at once drop it once and neither fails.
    """
    dropped = []
    for name, month in (await months_of(conn, parent)).items():
        ends = dt.datetime.combine(add_months(month, 1), dt.time(), dt.UTC)
        if ends <= limit:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", MONTH_LOCK, name)
                if await conn.fetchval("SELECT to_regclass($1)", f'"{name}"') is None:
                    continue  # another replica dropped it while this one waited
                await conn.execute(f'ALTER TABLE "{parent}" DETACH PARTITION "{name}"')
                await conn.execute(f'DROP TABLE "{name}"')
            dropped.append(name)
    key = "at" if parent in ("audit_log", "checks") else "checked_at"
    start_of_limit_month = dt.datetime.combine(month_start(limit.date()), dt.time(), dt.UTC)
    await conn.execute(f'DELETE FROM "{parent}_default" WHERE "{key}" < $1', start_of_limit_month)
    return dropped


async def maintain(pool: asyncpg.Pool, retention: Retention, now: dt.datetime | None = None) -> list[str]:
    """Create this month's and the next months' partitions, drop those wholly past retention; the changes."""
    at = now or dt.datetime.now(dt.UTC)
    this_month = month_start(at.date())
    changes: list[str] = []
    async with pool.acquire() as conn:
        for parent, days in retention.by_table().items():
            changes += await ensure_months(conn, parent, this_month, add_months(this_month, AHEAD_MONTHS))
            if days > 0:
                limit = at - dt.timedelta(days=days)
                changes += [f"dropped {name}" for name in await drop_months_before(conn, parent, limit)]
                if parent == CHECKS[-1] and (forgotten := await lifting.forget_dropped_checks(conn, limit)):
                    changes.append(f"deleted {forgotten} lifted measures of dropped checks")
    return changes


async def keep_partitions(pool: asyncpg.Pool, retention: Retention, every_seconds: float = DAY_SECONDS) -> None:
    """The supervised task: :func:`maintain` at start and every ``every_seconds`` until the node stops."""
    while True:
        changes = await maintain(pool, retention)
        if changes:
            log.info("partitions: %s", ", ".join(changes))
        await pause(every_seconds)
