"""Lifted measures as the department that applied them reads them, and its acknowledgement.

The rows are written where records leave force (:mod:`credex.node.store.lifting`). Here a
unit lists what it must stop applying — its own feedback only, unless the caller is an
operator — in pages that follow one another by row id, and acknowledges each; what is
not yet acknowledged is a gauge, so a dashboard sees a unit that does not read its list.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import asyncpg
from prometheus_client import Gauge

from credex.node.checks.checking import CheckFailure
from credex.node.store import lifting
from credex.v1 import lookup_pb2

UNACKNOWLEDGED = Gauge(
    "credex_lifted_measures_unacknowledged",
    "Applied measures lifted (or reinstated) that the applying unit has not acknowledged, as last counted",
    ["origin"],
)
DEFAULT_PAGE = 50
MAX_PAGE = 500
_ACTIVE = lookup_pb2.ENTRY_STATUS_ACTIVE
# Every row with what the check said the measure rested on besides this record, still in force now.
_LIST = (
    "SELECT l.*, ARRAY(SELECT x FROM jsonb_array_elements_text(coalesce(a.measure_records -> l.measure_id,"
    " '[]'::jsonb)) AS x JOIN records r ON r.record_id = x WHERE x <> l.record_id AND r.status = $6"
    " AND (r.publicity_end IS NULL OR r.publicity_end >= $7) ORDER BY x) AS still_rests_on"
    " FROM lifted_measures l LEFT JOIN check_answers a ON a.check_id = l.check_id"
    " AND a.subject_id = l.subject_id AND a.checked_at = l.checked_at"
    " WHERE ($1::text IS NULL OR l.caller = $1) AND ($2::text IS NULL OR l.requesting_unit = $2)"
    " AND ($3::date IS NULL OR l.lifted_on >= $3) AND (NOT $4 OR l.acknowledged_at IS NULL) AND l.id > $5"
    " ORDER BY l.id LIMIT $8"
)


@dataclass(frozen=True, slots=True)
class LiftedMeasure:
    """One measure a unit applied to a subject because of a record that has left force since."""

    id: int
    check_id: uuid.UUID
    subject_id: str
    checked_at: dt.datetime
    requesting_unit: str
    caller: str
    measure_id: str
    record_id: str
    record_origin: str
    reason: str
    event_seq: int
    lifted_on: dt.date
    reinstated_seq: int | None
    reinstated_on: dt.date | None
    acknowledged_at: dt.datetime | None
    acknowledged_by: str | None
    still_rests_on: tuple[str, ...] = ()

    @property
    def temporary(self) -> bool:
        """Hidden for a bankruptcy restructuring: UNHIDE may reinstate it."""
        return self.reason == "hidden"

    @classmethod
    def of(cls, row: asyncpg.Record) -> LiftedMeasure:
        return cls(
            id=row["id"],
            check_id=row["check_id"],
            subject_id=row["subject_id"],
            checked_at=row["checked_at"],
            requesting_unit=row["requesting_unit"],
            caller=row["caller"],
            measure_id=row["measure_id"],
            record_id=row["record_id"],
            record_origin=row["record_origin"],
            reason=row["reason"],
            event_seq=row["event_seq"],
            lifted_on=row["lifted_on"],
            reinstated_seq=row["reinstated_seq"],
            reinstated_on=row["reinstated_on"],
            acknowledged_at=row["acknowledged_at"],
            acknowledged_by=row["acknowledged_by"],
            still_rests_on=tuple(row["still_rests_on"]) if "still_rests_on" in row else (),
        )


async def lifted_measures(
    pool: asyncpg.Pool,
    *,
    caller: str | None,
    unit: str | None = None,
    since: dt.date | None = None,
    unacknowledged_only: bool = False,
    after: int = 0,
    page_size: int = DEFAULT_PAGE,
    today: dt.date | None = None,
) -> tuple[list[LiftedMeasure], bool]:
    """One page of lifted measures after row ``after``, oldest first, and whether more follow.

    ``caller`` None: every unit's (an operator); otherwise only those of feedback ``caller`` filed.
    """
    day = today or dt.datetime.now(lifting.CHINA).date()
    async with pool.acquire() as conn:
        rows = await conn.fetch(_LIST, caller, unit, since, unacknowledged_only, after, _ACTIVE, day, page_size + 1)
    return [LiftedMeasure.of(r) for r in rows[:page_size]], len(rows) > page_size


async def acknowledge(pool: asyncpg.Pool, lifted_id: int, caller: str | None, by: str) -> LiftedMeasure:
    """Acknowledge one lifted measure; acknowledging it again changes nothing and answers the same.

    A caller that did not file the feedback is told there is no such row: it may not learn of others'.
    """
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "UPDATE lifted_measures SET acknowledged_at = coalesce(acknowledged_at, now()),"
            " acknowledged_by = coalesce(acknowledged_by, $3)"
            " WHERE id = $1 AND ($2::text IS NULL OR caller = $2) RETURNING *",
            lifted_id,
            caller,
            by,
        )
    if row is None:
        raise CheckFailure("NOT_FOUND", f"no lifted measure {lifted_id} of yours on this node")
    return LiftedMeasure.of(row)


async def refresh_lifted_metric(pool: asyncpg.Pool, origin: str) -> int:
    """Count the lifted measures no unit has acknowledged yet and set the gauge to it."""
    async with pool.acquire() as conn:
        count = int(await conn.fetchval("SELECT count(*) FROM lifted_measures WHERE acknowledged_at IS NULL"))
    UNACKNOWLEDGED.labels(origin=origin).set(count)
    return count
