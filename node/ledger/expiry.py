"""Expiry signed by the origin: a daily job that ends publication of this origin's lapsed records.

Every region holding a copy used to decide for itself when a record's window had
ended, by its own clock. The origin now signs an EXPIRE event (standing EXPIRED)
for each of its active records whose publicity window ended before today in China
Standard Time, so every region stops publishing on the same day; peers still apply
the window themselves as a safety net (``entry_status``).

Work is done in bounded batches, each in its own transaction under the ledger's
head lock: a run killed half-way leaves whole batches signed and nothing half
written, and because an expired record is no longer active, the next run (or a
second run the same day) signs exactly what is left — nothing, if nothing is.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import asyncpg

from credex.crypto.keys import SigningRefused
from credex.domain.publicity import CHINA, publicity_today
from credex.node.cancellation import pause
from credex.node.config import ExpiryConfig
from credex.node.ledger.appender import Ledger
from credex.node.metrics import METRICS
from credex.node.store.database import RETRYABLE
from credex.v1 import lookup_pb2

log = logging.getLogger(__name__)
RETRY_SECONDS = 60.0


@dataclass
class ExpiryRun:
    """What one run did (or, dry, would do)."""

    today: dt.date
    expired: int = 0
    batches: int = 0
    record_ids: list[str] | None = None  # a dry run's list of what is due


async def due(pool: asyncpg.Pool, origin: str, today: dt.date) -> list[str]:
    """This origin's active records whose window ended before ``today``: what a run would expire."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT record_id FROM records WHERE origin = $1 AND status = $2 AND publicity_end < $3"
            " ORDER BY publicity_end, record_id",
            origin,
            lookup_pb2.ENTRY_STATUS_ACTIVE,
            today,
        )
    return [r["record_id"] for r in rows]


async def expire_due(
    pool: asyncpg.Pool, ledger: Ledger, batch_size: int, today: dt.date | None = None, *, dry_run: bool = False
) -> ExpiryRun:
    """Sign EXPIRE for every record of ``ledger``'s origin whose window ended before ``today``."""
    run = ExpiryRun(today or publicity_today())
    if dry_run:
        run.record_ids = await due(pool, ledger.origin, run.today)
        return run
    while True:
        async with pool.acquire() as conn, conn.transaction():
            events = await ledger.expire(conn, run.today, batch_size)
        if not events:
            return run
        run.batches += 1
        run.expired += len(events)
        METRICS.records_expired.labels(ledger.origin).inc(len(events))
        if len(events) < batch_size:
            return run


def next_run(now: dt.datetime, hour: int) -> dt.datetime:
    """The next time of day ``hour`` (China Standard Time) strictly after ``now``."""
    local = now.astimezone(CHINA)
    at = local.replace(hour=hour, minute=0, second=0, microsecond=0)
    if at <= local:
        at = (local + dt.timedelta(days=1)).replace(hour=hour, minute=0, second=0, microsecond=0)
    return at


async def run_daily(pool: asyncpg.Pool, ledger: Ledger, config: ExpiryConfig) -> None:
    """Expire what is due now, then every day at ``config.hour``; runs until cancelled (supervised).

    A database that is away is waited for (the run is tried again in a minute: whole batches
    committed stay, the rest is still due); a key the bundle revoked signs nothing until the
    next day's run. Neither is a reason to take the node out of service.
    """
    while True:
        try:
            run = await expire_due(pool, ledger, config.batch_size)
        except RETRYABLE as exc:
            log.warning(
                "node %s: expiry could not reach the database (%s); trying again in a minute", ledger.origin, exc
            )
            await pause(RETRY_SECONDS)
            continue
        except SigningRefused as exc:
            log.error("node %s: expiry signs nothing: %s", ledger.origin, exc)
        else:
            if run.expired:
                log.info("node %s: %d records expired (windows ended before %s)", ledger.origin, run.expired, run.today)
        now = dt.datetime.now(dt.UTC)
        await pause((next_run(now, config.hour) - now).total_seconds())
