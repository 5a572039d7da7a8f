"""Who checked me (credit-use.md, Check rule 8; 上海市社会信用条例 第三十四条): a subject's checks, newest first.

Read from the check rows, which hold every subject a check answered (persons by
pseudonym), in pages that follow one another by position (checked at, check id),
so a page never repeats or skips a check however many are added meanwhile.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import asyncpg

DEFAULT_PAGE = 50
MAX_PAGE = 500
CHECKS_OF_SUBJECT = (
    "SELECT c.check_id, c.at, c.caller, c.requesting_unit, c.scenario, c.purpose, c.legal_basis"
    " FROM check_answers a JOIN checks c USING (check_id)"
    " WHERE a.subject_id = $1 AND ($2::timestamptz IS NULL OR (c.at, c.check_id) < ($2, $3::uuid))"
    " ORDER BY c.at DESC, c.check_id DESC LIMIT $4"
)


@dataclass(frozen=True, slots=True)
class CheckOfSubject:
    """One check that answered about the subject: who, when, for which scenario and purpose."""

    check_id: uuid.UUID
    at: dt.datetime
    caller: str
    requesting_unit: str
    scenario: str
    purpose: str
    legal_basis: str


async def checks_of_subject(
    pool: asyncpg.Pool,
    subject_id: str,
    page_size: int,
    after: tuple[dt.datetime, uuid.UUID] | None = None,
) -> tuple[list[CheckOfSubject], bool]:
    """One page of ``subject_id``'s checks after the position ``after``, and whether more follow."""
    at, check_id = after if after else (None, None)
    async with pool.acquire() as conn:
        rows = await conn.fetch(CHECKS_OF_SUBJECT, subject_id, at, check_id, page_size + 1)
    found = [CheckOfSubject(*row.values()) for row in rows[:page_size]]
    return found, len(rows) > page_size
