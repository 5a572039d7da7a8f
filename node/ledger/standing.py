"""Operator decisions on where a record of this origin stands: revocation and temporary hiding.

Revocation (credit-use.md, Repair 8) is the act annulled on review or in court: the
record is withdrawn from every view and check in every region, and kept in the
archive as revoked. Temporary hiding (Repair 9) is for an enterprise carrying out a
court-approved restructuring plan: the record leaves public views and checks until the
hiding is lifted; both the hiding and its lifting keep their reason in the signed event.

Each decision is one signed event in one transaction; a record of another origin is
refused by the ledger (only its origin can change it) and nothing is written.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg

from credex.domain.publicity import publicity_today
from credex.node.ledger.appender import Ledger, LedgerError
from credex.node.store import events as state
from credex.v1 import event_pb2, lookup_pb2

MAX_REASON_CHARS = 500
_ACTIVE, _EXPIRED = lookup_pb2.ENTRY_STATUS_ACTIVE, lookup_pb2.ENTRY_STATUS_EXPIRED
# revoke, hide or unhide: what the CLI on a stopped node and the StandingService on a running one both call.
Decision = Callable[[asyncpg.Pool, Ledger, str, str], Awaitable[state.StoredEvent | None]]


def check_reason(reason: str) -> str:
    """A decision's reason as it will be signed: required, one line of text, bounded."""
    text = reason.strip()
    if not text:
        raise LedgerError("a reason is required: it is signed into the event and shown to every region")
    if len(text) > MAX_REASON_CHARS:
        raise LedgerError(f"the reason has {len(text)} characters; at most {MAX_REASON_CHARS} are allowed")
    if any(ch < " " or ch == "\x7f" for ch in text):
        raise LedgerError("the reason contains control characters")
    return text


async def revoke(pool: asyncpg.Pool, ledger: Ledger, record_id: str, reason: str) -> state.StoredEvent | None:
    """Withdraw a record whose act was annulled; ``None`` if it was already revoked."""
    return await _decide(
        pool, ledger, record_id, event_pb2.EVENT_TYPE_REVOKE, reason, lookup_pb2.ENTRY_STATUS_REVOKED, None
    )


async def hide(pool: asyncpg.Pool, ledger: Ledger, record_id: str, reason: str) -> state.StoredEvent | None:
    """Hide a record in publication for now; ``None`` if it was already hidden."""
    return await _decide(
        pool, ledger, record_id, event_pb2.EVENT_TYPE_HIDE, reason, lookup_pb2.ENTRY_STATUS_HIDDEN, {_ACTIVE, _EXPIRED}
    )


async def unhide(pool: asyncpg.Pool, ledger: Ledger, record_id: str, reason: str) -> state.StoredEvent | None:
    """Lift a temporary hiding: the record is back in publication, or expired if its window ended meanwhile.

    A record hidden through the end of its window must not come back active and stay so
    until the next daily expiry run: the one UNHIDE event already says it has expired.
    """
    return await _decide(
        pool, ledger, record_id, event_pb2.EVENT_TYPE_UNHIDE, reason, _ACTIVE, {lookup_pb2.ENTRY_STATUS_HIDDEN}
    )


async def _decide(
    pool: asyncpg.Pool,
    ledger: Ledger,
    record_id: str,
    event_type: int,
    reason: str,
    standing: int,
    from_standings: set[int] | None,
) -> state.StoredEvent | None:
    state.check_id("record_id", record_id)
    text = check_reason(reason)
    async with pool.acquire() as conn, conn.transaction():
        if standing == _ACTIVE:
            end = await conn.fetchval("SELECT publicity_end FROM records WHERE record_id = $1", record_id)
            if end is not None and end < publicity_today():
                standing = _EXPIRED
        return await ledger.amend(conn, record_id, event_type, text, standing=standing, from_standings=from_standings)
