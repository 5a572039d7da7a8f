"""Taking in a platform file: adapter → profile → ledger, all or nothing per file.

One file is one PostgreSQL transaction: its accepted rows become signed events,
its rejected rows quarantine entries, and the file's content hash is recorded so
the same file is never taken in twice. If the file turns out to be unreadable
half-way, the transaction rolls back and nothing of it remains. Every row is
counted: rows in = accepted + quarantined.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from credex.adapters.profile import MappingContext, Problem, Profile, ProfileError, Rejection
from credex.adapters.tables import FileUnreadable
from credex.domain.reasons import Reason
from credex.domain.records import TakenRecord
from credex.errors import CredexError
from credex.node.feeds.mapping import Batch, open_mapping
from credex.node.ledger import Appending, AppendResult, Change, EntryTooLarge, Ledger
from credex.node.metrics import METRICS
from credex.node.store import ANALYZE_AFTER, Connection, RecordState
from credex.node.store.events import analyze_after_bulk_load

ProgressCallback = Callable[[str, int, int], None]
_QUARANTINE_COLUMNS = (
    "content_hash",
    "feed_batch",
    "source",
    "locator",
    "source_unit",
    "source_unit_uscc",
    "reasons",
    "messages",
    "raw",
)


class IngestError(CredexError):
    """A file could not be taken in; nothing of it was applied. The message names the file."""


@dataclass
class Counts:
    """Where the rows of a file, page or poll went: rows in = accepted + quarantined."""

    rows_in: int = 0
    accepted: int = 0
    quarantined: int = 0
    new: int = 0
    corrected: int = 0
    unchanged: int = 0
    revoked: int = 0  # rows the platform marks withdrawn, signed as REVOKEs
    withdrawn_unknown: int = 0  # rows marked withdrawn of records never taken in: nothing to revoke
    first_seq: int | None = None
    last_seq: int | None = None
    reasons: Counter[str] = field(default_factory=Counter)

    def count_in_metrics(self, origin: str) -> None:
        """Add these rows to the node's ``credex_ingest_rows`` by outcome; call once their transaction committed,
        so that a file rolled back half-way counts nothing, as nothing of it was taken in."""
        METRICS.rows_in.labels(origin, "accepted").inc(self.accepted)
        METRICS.rows_in.labels(origin, "quarantined").inc(self.quarantined)


@dataclass
class FileReport(Counts):
    path: str = ""
    content_hash: str = ""
    profile: str = ""
    already_taken: bool = False


def file_hash(path: Path) -> bytes:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise IngestError(f"{path}: cannot read: {exc.strerror}") from exc
    return digest.digest()


async def ingest_file(
    pool: asyncpg.Pool,
    ledger: Ledger,
    profile: Profile,
    context: MappingContext,
    path: Path,
    *,
    batch_size: int = 2000,
    parallel_from_bytes: int = 0,
    progress: ProgressCallback | None = None,
) -> FileReport:
    """Take one file in; ``parallel_from_bytes`` > 0 maps files at least that big in a worker process."""
    content_hash = await asyncio.to_thread(file_hash, path)
    report = FileReport(path=str(path), content_hash=content_hash.hex(), profile=profile.name)
    quarantine = QuarantineKey(content_hash=content_hash)
    async with pool.acquire() as conn:
        taken = await conn.fetchrow("SELECT * FROM ingest_files WHERE content_hash = $1", content_hash)
        if taken is not None:
            return _already_taken(report, taken)
        try:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO ingest_files (content_hash, file_name, profile, rows_in, accepted, quarantined,"
                    " new_records, corrected, unchanged) VALUES ($1, $2, $3, 0, 0, 0, 0, 0, 0)",
                    content_hash,
                    path.name,
                    profile.name,
                )
                mapping = open_mapping(path, profile, context, batch_size, parallel_from_bytes=parallel_from_bytes)
                appending = ledger.appending(conn)  # each batch signed while the one before is stored
                try:
                    while (batch := await mapping.next_batch()) is not None:
                        await take_in_batch(conn, appending, batch, report, quarantine)
                        if progress is not None:
                            progress(batch.source, *batch.progress)
                    await appending.flush()
                finally:
                    mapping.close()
                if report.rows_in == 0:
                    raise FileUnreadable(f"{path}: no data rows")
                await conn.execute(
                    "UPDATE ingest_files SET rows_in = $2, accepted = $3, quarantined = $4, new_records = $5,"
                    " corrected = $6, unchanged = $7, first_seq = $8, last_seq = $9, revoked = $10,"
                    " withdrawn_unknown = $11 WHERE content_hash = $1",
                    content_hash,
                    report.rows_in,
                    report.accepted,
                    report.quarantined,
                    report.new,
                    report.corrected,
                    report.unchanged,
                    report.first_seq,
                    report.last_seq,
                    report.revoked,
                    report.withdrawn_unknown,
                )
        except (FileUnreadable, ProfileError) as exc:
            raise IngestError(f"{exc}; nothing of {path.name} was taken in") from exc
        except asyncpg.UniqueViolationError:
            # Another ingest of the same content committed first; report that one.
            taken = await conn.fetchrow("SELECT * FROM ingest_files WHERE content_hash = $1", content_hash)
            if taken is None:
                raise
            return _already_taken(report, taken)
        report.count_in_metrics(ledger.origin)
        if report.new + report.corrected >= ANALYZE_AFTER:
            # A bulk load leaves the planner's statistics behind; until autovacuum catches up
            # it may scan the whole records table for every lookup.
            await analyze_after_bulk_load(conn)
    return report


@dataclass(frozen=True, slots=True)
class QuarantineKey:
    """What a quarantined row came in with: a file (content hash) or a feed batch."""

    content_hash: bytes | None = None
    feed_batch: int | None = None


async def take_in_batch(
    conn: Connection, ledger: Ledger | Appending, batch: Batch, counts: Counts, quarantine: QuarantineKey
) -> AppendResult:
    """Quarantine a batch's rejections and append its changes; add both to ``counts``.

    Shared by files and feeds; runs inside the caller's transaction.
    """
    counts.rows_in += batch.rows
    counts.accepted += len(batch.records)
    counts.quarantined += len(batch.rejections)
    if batch.rejections:
        await conn.copy_records_to_table(
            "quarantine",
            records=[_quarantine_row(quarantine, source, r) for source, r in batch.rejections],
            columns=_QUARANTINE_COLUMNS,
        )
        for _, rejection in batch.rejections:
            counts.reasons.update(rejection.reasons)
    # The ledger's side of the hand-over: serializing, digesting and the store's columns,
    # off the event loop (a batch is thousands of records).
    changes = await asyncio.to_thread(_changes, batch.records)
    result = await ledger.append(conn, changes)
    if result.too_large:  # signed, these rows would be entries no log can serve: quarantined, not taken in
        too_large = [(change.source, _too_large(change, exc)) for change, exc in result.too_large]
        await conn.copy_records_to_table(
            "quarantine",
            records=[_quarantine_row(quarantine, source, r) for source, r in too_large],
            columns=_QUARANTINE_COLUMNS,
        )
        counts.accepted -= len(too_large)
        counts.quarantined += len(too_large)
        counts.reasons.update(Reason.ROW_ENTRY_TOO_LARGE for _ in too_large)
    counts.new += result.new
    counts.corrected += result.corrected
    counts.unchanged += result.unchanged
    counts.revoked += result.revoked
    counts.withdrawn_unknown += result.withdrawn_unknown
    if result.seqs:
        counts.first_seq = min(result.seqs) if counts.first_seq is None else min(counts.first_seq, *result.seqs)
        counts.last_seq = max(result.seqs) if counts.last_seq is None else max(counts.last_seq, *result.seqs)
    return result


def _changes(records: list[TakenRecord]) -> list[Change]:
    """The ledger's view of taken records: each one's state, from the canonical bytes it arrived with."""
    return [Change(RecordState.of(t.record, t.encoded), *t.provenance, withdrawal=t.withdrawal) for t in records]


def _too_large(change: Change, exc: EntryTooLarge) -> Rejection:
    problem = Problem(Reason.ROW_ENTRY_TOO_LARGE, "", str(exc))
    return Rejection(change.locator, (problem,), {"record_id": change.state.record_id, "entry_bytes": str(exc.size)})


def _quarantine_row(key: QuarantineKey, source: str, rejection: Rejection) -> tuple[object, ...]:
    return (
        key.content_hash,
        key.feed_batch,
        source,
        rejection.locator,
        rejection.source_unit,
        rejection.source_unit_uscc,
        [p.reason for p in rejection.problems],
        [p.message for p in rejection.problems],
        json.dumps(rejection.raw, ensure_ascii=False),
    )


def _already_taken(report: FileReport, taken: asyncpg.Record) -> FileReport:
    report.already_taken = True
    report.rows_in = taken["rows_in"]
    report.accepted = taken["accepted"]
    report.quarantined = taken["quarantined"]
    report.new = taken["new_records"]
    report.corrected = taken["corrected"]
    report.unchanged = taken["unchanged"]
    report.revoked = taken["revoked"]
    report.withdrawn_unknown = taken["withdrawn_unknown"]
    report.first_seq = taken["first_seq"]
    report.last_seq = taken["last_seq"]
    return report
