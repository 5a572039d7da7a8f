"""The register of issued reports: checking a verification code, and what changed since issue.

A report's signature proves who issued it and what it said; only the issuing node
knows that it issued it to someone (its register), and any node holding the logs
knows what has become of each included record since. Verification answers both:
genuine or not, when issued, and for every included record whether its origin has
since repaired, corrected, revoked, deleted, hidden or disputed it, or its window
has ended. Every verification and every view is logged with the report number, the
caller and the time.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
from dataclasses import dataclass, field

import asyncpg

from credex.domain.publicity import publicity_today
from credex.node.reports.document import IN_FORCE
from credex.node.reports.issuing import log_access
from credex.node.store import Connection
from credex.node.store.events import entry_status
from credex.v1 import lookup_pb2

_CHANGES: dict[int, str] = {
    lookup_pb2.ENTRY_STATUS_REPAIRED: "repaired",
    lookup_pb2.ENTRY_STATUS_REVOKED: "revoked",
    lookup_pb2.ENTRY_STATUS_DELETED: "deleted",
    lookup_pb2.ENTRY_STATUS_HIDDEN: "hidden",
    lookup_pb2.ENTRY_STATUS_EXPIRED: "expired",
}
NOT_ISSUED = "this node issued no report with this number and verification code"


@dataclass(frozen=True)
class RecordChange:
    record_id: str
    origin: str
    seq_in_report: int
    seq_now: int
    change: str
    standing_now: str


@dataclass(frozen=True)
class Verdict:
    genuine: bool
    reason: str = ""
    report_number: str = ""
    issued_at: dt.datetime | None = None
    subject_id: str = ""
    changes: list[RecordChange] = field(default_factory=list)
    held: Held | None = None  # the register's entry, when genuine


@dataclass(frozen=True)
class Held:
    """An issued report as the register holds it."""

    report_number: str
    subject_id: str
    issued_at: dt.datetime
    row: asyncpg.Record  # every column but the signed report itself: see :func:`signed_report`


async def find(conn: Connection, number: str, code: str) -> Held | None:
    """The report of this number, if ``code`` is its verification code (compared in constant time).

    The signed report (megabytes for a large one) is not read here: a guess at a code
    must not make the node read it.
    """
    row = await conn.fetchrow(
        "SELECT report_number, verification_code, kind, subject_id, issued_at, issued_to, role, period_start,"
        " period_end, fields, included, report_sha256 FROM reports WHERE report_number = $1",
        number,
    )
    if row is None or not hmac.compare_digest(row["verification_code"].encode(), code.encode()):
        return None
    return Held(number, row["subject_id"], row["issued_at"], row)


async def signed_report(conn: Connection, held: Held) -> bytes:
    """The signed report as issued, once its code has been checked."""
    return bytes(await conn.fetchval("SELECT signed_report FROM reports WHERE report_number = $1", held.report_number))


async def verify(
    pool: asyncpg.Pool, number: str, code: str, digest: bytes, caller: str, role: str, purpose: str = ""
) -> Verdict:
    async with pool.acquire() as conn, conn.transaction():
        held = await find(conn, number, code)
        if held is None:
            return Verdict(False, NOT_ISSUED, number)
        await log_access(conn, number, caller, role, "verify", purpose)
        if digest and not hmac.compare_digest(digest, bytes(held.row["report_sha256"])):
            return Verdict(
                False,
                "the report presented differs from the one issued under this number",
                number,
                held.issued_at,
                held.subject_id,
            )
        included = json.loads(held.row["included"])
        rows = await conn.fetch(
            "SELECT record_id, seq, status, disputed, publicity_end, digest FROM records WHERE record_id = ANY($1)",
            [i["record_id"] for i in included],
        )
    now = {r["record_id"]: r for r in rows}
    today = publicity_today()
    changes = [c for c in (_change(i, now.get(i["record_id"]), today) for i in included) if c is not None]
    return Verdict(True, "", number, held.issued_at, held.subject_id, changes, held)


def _change(item: dict[str, object], row: asyncpg.Record | None, today: dt.date) -> RecordChange | None:
    """What became of an included record since the report, or ``None`` if it still stands as shown."""
    record_id, origin, seq = str(item["record_id"]), str(item["origin"]), int(str(item["seq"]))
    if row is None:  # a record is never removed from the store; a report from another store's copy
        return RecordChange(record_id, origin, seq, 0, "unknown to this node", "")
    status = entry_status(row["status"], row["publicity_end"], today)
    standing = lookup_pb2.EntryStatus.Name(status).removeprefix("ENTRY_STATUS_").lower()  # type: ignore[arg-type]
    change = ""
    if status in _CHANGES and not (status == lookup_pb2.ENTRY_STATUS_REPAIRED and item["shown_as"] != IN_FORCE):
        change = _CHANGES[status]
    elif row["digest"].hex() != item["record_sha256"]:
        change = "corrected"
    elif bool(row["disputed"]) != bool(item["disputed"]):
        change = "disputed" if row["disputed"] else "dispute closed"
    if not change:
        return None
    return RecordChange(record_id, origin, seq, int(row["seq"]), change, standing)
