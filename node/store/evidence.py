"""Evidence of what intake refused: bounded, aggregated, trimmed, and never able to stop intake.

Anyone who can write to a peer topic can send anything, so nothing of a rejected
message is trusted to be storable. Its text (key id, message, reason) is
escaped and capped before it reaches a text column; of its bytes only the first
``evidence_bytes`` are kept, with the size and SHA-256 of the whole.

Identical rejections within ``evidence_window_seconds`` share one row with a
repeat count, so a peer that keeps publishing with a revoked key adds one row an
hour, not hundreds a minute. Identical means same origin and reason, and, where
the key id was found in the trust bundle, the same key id. Where it was not
(``key.unknown``, a malformed envelope) the sender chose it, and a new one per
message would otherwise make a row per message: those are grouped by origin and
reason alone, the key id of the first one kept in the row's message.

Beyond ``evidence_max_rows`` or ``evidence_max_bytes`` per origin the oldest rows
are trimmed. The budget is checked against running totals (table
``intake_evidence_totals``) and trimmed only once it is exceeded by a tenth, so
trimming is occasional work rather than a scan with every batch. Rows last seen
more than ``evidence_max_age_days`` ago are deleted by :func:`expire`, which the
node runs in the background. The counters in ``intake_counters`` carry no caller
text and are never trimmed: every message that came in is counted as applied,
replay, rejected or held, whatever happened to its evidence.

If the evidence still cannot be written (the last resort), it is dropped, the
rejection is counted all the same, and the batch goes on; see :data:`POISON`.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

import asyncpg

from credex.node.config import IntakeConfig
from credex.node.metrics import METRICS
from credex.node.store import events as state
from credex.node.store.database import Connection

log = logging.getLogger(__name__)

# Database errors a message's own content can cause (bad text or numbers, an index entry too
# large, a constraint broken). Retrying cannot help; the message is counted and skipped. Errors
# of the database itself (connection lost, disk full) are not here: those are retried, nothing
# skipped.
POISON: tuple[type[Exception], ...] = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.ProgramLimitExceededError,
)

MAX_MESSAGE_CHARS = 500
MAX_KEY_ID_CHARS = 64
MAX_REASON_CHARS = 64


def storable_text(value: str, limit: int) -> str:
    """``value`` as any text column can hold it: control and unassigned characters escaped, at most ``limit``.

    Escaping (rather than dropping) keeps the evidence honest: ``\\x00`` shows an
    operator that the sender put a NUL there.
    """
    out: list[str] = []
    length = 0
    for index, ch in enumerate(value):
        piece = ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
        if length + len(piece) > limit:
            return "".join(out) + f"…(+{len(value) - index} chars)"
        out.append(piece)
        length += len(piece)
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Rejection:
    """One refused message: why, and the message itself (bounded only when recorded)."""

    reason: str
    message: str
    key_id: str = ""
    raw: bytes = b""


@dataclass(frozen=True, slots=True)
class _Row:
    reason: str
    key_id: str
    message: str
    evidence: bytes
    size: int
    digest: bytes
    repeats: int


# Reasons given only once the envelope's key id was found in the trust bundle: a sender cannot
# invent new ones, so rows are grouped by key id too. For every other reason the key id is
# whatever the sender wrote, and grouping by it would give the sender one row per message.
KEY_CHECKED_REASONS = frozenset(
    {
        "key.other_origin",
        "signature.invalid",
        "payload.malformed",
        "origin.mismatch",
        "event.seq",
        "event.inconsistent",
        "event.unstorable",
        "key.revoked",
        "key.revoked.conflict",
        "key.not_valid",
    }
)


def _group_key_id(r: Rejection) -> str:
    return storable_text(r.key_id, MAX_KEY_ID_CHARS) if r.reason in KEY_CHECKED_REASONS else ""


def _message(r: Rejection) -> str:
    """The rejection's message, naming the key id when the row does not (see :data:`KEY_CHECKED_REASONS`)."""
    if r.key_id and r.reason not in KEY_CHECKED_REASONS and r.key_id not in r.message:
        return storable_text(f"{r.message} (key id {storable_text(r.key_id, MAX_KEY_ID_CHARS)})", MAX_MESSAGE_CHARS)
    return storable_text(r.message, MAX_MESSAGE_CHARS)


def _rows(rejections: Sequence[Rejection], evidence_bytes: int) -> list[_Row]:
    """One row per group (see the module docstring), first message as the evidence, the rest as a count."""
    rows: dict[tuple[str, str], _Row] = {}
    for r in rejections:
        reason = storable_text(r.reason, MAX_REASON_CHARS)
        key_id = _group_key_id(r)
        held = rows.get((reason, key_id))
        if held is not None:
            rows[(reason, key_id)] = replace(held, repeats=held.repeats + 1)
            continue
        rows[(reason, key_id)] = _Row(
            reason=reason,
            key_id=key_id,
            message=_message(r),
            evidence=r.raw[:evidence_bytes],
            size=len(r.raw),
            digest=hashlib.sha256(r.raw).digest(),
            repeats=1,
        )
    return list(rows.values())


def counter_label(reason: str) -> str:
    return f"rejected:{storable_text(reason, MAX_REASON_CHARS)}"


async def record(
    conn: Connection,
    me: str,
    origin: str,
    channel: str,
    rejections: Sequence[Rejection],
    policy: IntakeConfig,
) -> None:
    """Count ``rejections`` of ``origin`` and keep bounded evidence, inside the caller's transaction.

    The evidence is written under a savepoint: if the database still refuses it,
    only the evidence is lost; the counts (which carry no caller text) are written
    and the caller's transaction goes on.
    """
    if not rejections:
        return
    try:
        async with conn.transaction():  # a savepoint inside the caller's transaction
            await _keep_evidence(
                conn, origin, storable_text(channel, 200), _rows(rejections, policy.evidence_bytes), policy
            )
    except POISON as exc:
        METRICS.intake.labels(me, origin, "evidence_unrecorded").inc(len(rejections))
        log.error(
            "%s: evidence of %d rejected messages of %s could not be stored (%s); counted without evidence",
            channel,
            len(rejections),
            origin,
            type(exc).__name__,
        )
    for reason, n in Counter(counter_label(r.reason) for r in rejections).items():
        await state.count(conn, origin, reason, n)


async def _keep_evidence(conn: Connection, origin: str, channel: str, rows: list[_Row], policy: IntakeConfig) -> None:
    # Rows of the same group seen within the window absorb the new ones as repeats.
    absorbed = await conn.fetch(
        "WITH wanted AS (SELECT * FROM unnest($2::text[], $3::text[], $4::bigint[]) AS w(reason, key_id, n)),"
        " latest AS (SELECT DISTINCT ON (r.reason, r.key_id) r.id, w.n FROM intake_rejections r"
        "  JOIN wanted w ON w.reason = r.reason AND w.key_id = r.key_id"
        "  WHERE r.origin = $1 AND r.at > now() - make_interval(secs => $5)"
        "  ORDER BY r.reason, r.key_id, r.id DESC)"
        " UPDATE intake_rejections r SET repeats = r.repeats + latest.n, last_at = now()"
        " FROM latest WHERE r.id = latest.id RETURNING r.reason, r.key_id",
        origin,
        [r.reason for r in rows],
        [r.key_id for r in rows],
        [r.repeats for r in rows],
        policy.evidence_window_seconds,
    )
    done = {(a["reason"], a["key_id"]) for a in absorbed}
    new = [r for r in rows if (r.reason, r.key_id) not in done]
    if not new:
        return
    await conn.executemany(
        "INSERT INTO intake_rejections (origin, channel, reason, message, key_id, evidence, size, digest, repeats)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        [(origin, channel, r.reason, r.message, r.key_id, r.evidence, r.size, r.digest, r.repeats) for r in new],
    )
    totals = await conn.fetchrow(
        "INSERT INTO intake_evidence_totals AS t (origin, n_rows, n_bytes) VALUES ($1, $2, $3)"
        " ON CONFLICT (origin) DO UPDATE SET n_rows = t.n_rows + $2, n_bytes = t.n_bytes + $3"
        " RETURNING n_rows, n_bytes",
        origin,
        len(new),
        sum(len(r.evidence) + len(r.message.encode()) for r in new),
    )
    assert totals is not None
    if totals["n_rows"] > ceiling(policy.evidence_max_rows) or totals["n_bytes"] > ceiling(policy.evidence_max_bytes):
        trimmed = await trim(conn, origin, policy)
        log.info("evidence of %s over budget: trimmed the %d oldest rejection rows (counts kept)", origin, trimmed)


def ceiling(budget: int) -> int:
    """How far evidence may exceed ``budget`` before it is trimmed (back to the budget): a tenth more."""
    return budget + budget // 10


async def trim(conn: Connection, origin: str, policy: IntakeConfig) -> int:
    """Delete ``origin``'s oldest evidence rows beyond the row and byte budgets; return how many."""
    status = await conn.execute(
        "DELETE FROM intake_rejections WHERE id IN ("
        " SELECT id FROM (SELECT id, row_number() OVER w AS n,"
        "  sum(coalesce(octet_length(evidence), 0) + octet_length(message)) OVER w AS bytes"
        "  FROM intake_rejections WHERE origin = $1 WINDOW w AS (ORDER BY id DESC)) ranked"
        " WHERE n > $2 OR bytes > $3)",
        origin,
        policy.evidence_max_rows,
        policy.evidence_max_bytes,
    )
    await _recount(conn, [origin])
    return int(status.rsplit(" ", 1)[1])


async def _recount(conn: Connection, origins: Sequence[str]) -> None:
    """Set the running totals of ``origins`` to what their rows hold now."""
    await conn.execute(
        "UPDATE intake_evidence_totals t SET n_rows = coalesce(c.n_rows, 0), n_bytes = coalesce(c.n_bytes, 0)"
        " FROM unnest($1::text[]) AS o(origin) LEFT JOIN ("
        "  SELECT origin, count(*) AS n_rows,"
        "   sum(coalesce(octet_length(evidence), 0) + octet_length(message)) AS n_bytes"
        "  FROM intake_rejections WHERE origin = ANY($1::text[]) GROUP BY origin) c ON c.origin = o.origin"
        " WHERE t.origin = o.origin",
        list(origins),
    )


async def expire(pool: asyncpg.Pool, policy: IntakeConfig) -> int:
    """Delete evidence rows last seen more than ``evidence_max_age_days`` ago; return how many (0 keeps all)."""
    if not policy.evidence_max_age_days:
        return 0
    async with pool.acquire() as conn, conn.transaction():
        gone = await conn.fetch(
            "DELETE FROM intake_rejections WHERE last_at < now() - make_interval(secs => $1) RETURNING origin",
            policy.evidence_max_age_days * 86400.0,
        )
        if gone:
            await _recount(conn, sorted({r["origin"] for r in gone}))
    if gone:
        log.info(
            "deleted %d rejection evidence rows older than %g days (counts kept)",
            len(gone),
            policy.evidence_max_age_days,
        )
    return len(gone)
