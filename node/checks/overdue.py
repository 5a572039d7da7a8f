"""Usage feedback that is overdue: checked subjects still "awaiting feedback" after N working days.

Every subject a check answered waits for its 应用情况反馈 (credit-use.md, Check rules);
it is overdue once more than ``due_working_days`` working days have passed since the
check, counted on the official calendar (holidays and swapped weekend days) rather than
Monday to Friday, because that is how the offices' deadlines are set. Days are counted in
China Standard Time, where the offices work, whatever the server's zone.

A node keeps its gauge current by itself (:func:`watch_overdue`, a supervised task), not
only when someone runs ``credex checks overdue``. The query reads only checks made more
than N calendar days ago: N working days are at least N calendar days, so nothing newer
can be overdue, and a node with ten years of checks does not count days for all of them.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import asyncpg

from credex.domain.workdays import working_days_between
from credex.node.cancellation import pause
from credex.node.checks.lifted import refresh_lifted_metric
from credex.node.metrics import METRICS

log = logging.getLogger(__name__)

CHINA = ZoneInfo("Asia/Shanghai")
# $1: the first instant that cannot be overdue yet (midnight in China, N calendar days before today).
_AWAITING_QUERY = (
    "SELECT c.check_id, a.subject_id, c.requesting_unit, c.scenario, c.at FROM checks c"
    " JOIN check_answers a USING (check_id)"
    " LEFT JOIN check_feedback f USING (check_id, subject_id)"
    " WHERE c.at < $1 AND f.check_id IS NULL ORDER BY c.at, c.check_id, a.subject_id"
)


@dataclass(frozen=True, slots=True)
class OverdueFeedback:
    """One checked subject whose feedback is overdue, and by how much."""

    check_id: str
    subject_id: str
    requesting_unit: str
    scenario: str
    checked_at: dt.datetime
    working_days_since: int
    calendar_official: bool  # False: a year the official calendar does not cover yet, Monday to Friday used


async def overdue_feedback(
    pool: asyncpg.Pool, due_working_days: int, today: dt.date | None = None
) -> list[OverdueFeedback]:
    """Checked subjects without feedback more than ``due_working_days`` working days after the check, oldest first.

    The working-day count is O(1) per row (running totals per year), so the list stays
    cheap however many checks await feedback.
    """
    day = today or dt.datetime.now(CHINA).date()
    horizon = dt.datetime.combine(day - dt.timedelta(days=due_working_days), dt.time(), CHINA)
    async with pool.acquire() as conn:
        rows = await conn.fetch(_AWAITING_QUERY, horizon)
    overdue = []
    for row in rows:
        days, official = working_days_between(row["at"].astimezone(CHINA).date(), day)
        if days > due_working_days:
            overdue.append(
                OverdueFeedback(
                    check_id=str(row["check_id"]),
                    subject_id=row["subject_id"],
                    requesting_unit=row["requesting_unit"],
                    scenario=row["scenario"],
                    checked_at=row["at"],
                    working_days_since=days,
                    calendar_official=official,
                )
            )
    return overdue


async def refresh_overdue_metric(
    pool: asyncpg.Pool, origin: str, due_working_days: int, today: dt.date | None = None
) -> list[OverdueFeedback]:
    """List the overdue feedback and set the node's gauge to its count, so a dashboard sees it too."""
    overdue = await overdue_feedback(pool, due_working_days, today)
    METRICS.checks_overdue.labels(origin=origin).set(len(overdue))
    return overdue


async def watch_overdue(pool: asyncpg.Pool, origin: str, due_working_days: int, every_seconds: float) -> None:
    """Keep the overdue gauge, and the lifted-but-unacknowledged one, current every ``every_seconds``, until
    the node stops (a supervised task)."""
    while True:
        overdue = await refresh_overdue_metric(pool, origin, due_working_days)
        await refresh_lifted_metric(pool, origin)
        log.debug("node %s: %d checked subjects overdue for feedback", origin, len(overdue))
        await pause(every_seconds)
