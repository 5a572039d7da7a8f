"""The ledger: this node's own log.

Per batch, inside the caller's transaction, it decides what changed (new record,
correction, nothing), assigns dense sequence numbers under the origin's head
lock, builds and signs the events, stores them with the record state, and
thereby fills the outbox the relay publishes from. Signing happens before the
row lock's transaction commits, so a crash leaves either the whole batch or none
of it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from google.protobuf.timestamp_pb2 import Timestamp

from credex.crypto.envelope import canonical_bytes, seal
from credex.crypto.keys import SigningKey
from credex.node import state
from credex.node.store import Connection
from credex.v1 import event_pb2, lookup_pb2, record_pb2

NOTIFY_CHANNEL = "credex_outbox"


class LedgerError(Exception):
    """A change cannot be recorded (unknown record, record of another origin)."""


@dataclass(frozen=True, slots=True)
class Change:
    record: record_pb2.Record
    provenance: event_pb2.Provenance | None = None


@dataclass
class AppendResult:
    new: int = 0
    corrected: int = 0
    unchanged: int = 0
    revoked: int = 0
    seqs: list[int] = field(default_factory=list)

    def add(self, other: AppendResult) -> None:
        self.new += other.new
        self.corrected += other.corrected
        self.unchanged += other.unchanged
        self.revoked += other.revoked
        self.seqs.extend(other.seqs)

    @property
    def events(self) -> int:
        return len(self.seqs)


class Ledger:
    def __init__(self, origin: str, key: SigningKey) -> None:
        self.origin = origin
        self.key = key

    async def append(self, conn: Connection, changes: Sequence[Change]) -> AppendResult:
        """Record changes; must run inside a transaction, which it extends with the head lock."""
        result = AppendResult()
        if not changes:
            return result
        for change in changes:
            if change.record.origin != self.origin:
                raise LedgerError(
                    f"record {change.record.record_id} belongs to {change.record.origin}, not {self.origin}"
                )
        head = await self._lock_head(conn)
        ids = list({c.record.record_id for c in changes})
        held: dict[str, tuple[bytes, int]] = {
            r["record_id"]: (bytes(r["digest"]), int(r["status"]))
            for r in await conn.fetch(
                "SELECT record_id, digest, status FROM records WHERE record_id = ANY($1::text[])", ids
            )
        }
        recorded_at = Timestamp()
        recorded_at.GetCurrentTime()
        stored: list[state.StoredEvent] = []
        for change in changes:
            encoded = state.record_bytes(change.record)
            digest = state.record_digest(encoded)
            previous = held.get(change.record.record_id)
            if previous is not None and previous == (digest, lookup_pb2.ENTRY_STATUS_ACTIVE):
                result.unchanged += 1
                continue
            event_type = event_pb2.EVENT_TYPE_UPSERT if previous is None else event_pb2.EVENT_TYPE_CORRECT
            head += 1
            stored.append(self._sign(head, event_type, change, digest, recorded_at))
            held[change.record.record_id] = (digest, lookup_pb2.ENTRY_STATUS_ACTIVE)
            if previous is None:
                result.new += 1
            else:
                result.corrected += 1
        await self._store(conn, stored, head, result)
        return result

    async def revoke(self, conn: Connection, record_id: str, reason: str) -> AppendResult:
        """Withdraw a record of this origin; the event carries the state being withdrawn."""
        result = AppendResult()
        head = await self._lock_head(conn)
        row = await conn.fetchrow("SELECT origin, status, record FROM records WHERE record_id = $1", record_id)
        if row is None:
            raise LedgerError(f"no record {record_id}")
        if row["origin"] != self.origin:
            raise LedgerError(f"record {record_id} belongs to {row['origin']}; only its origin can revoke it")
        if row["status"] == lookup_pb2.ENTRY_STATUS_REVOKED:
            return result
        record = record_pb2.Record.FromString(row["record"])
        recorded_at = Timestamp()
        recorded_at.GetCurrentTime()
        digest = state.record_digest(state.record_bytes(record))
        event = self._sign(head + 1, event_pb2.EVENT_TYPE_REVOKE, Change(record), digest, recorded_at, reason)
        result.revoked = 1
        await self._store(conn, [event], head + 1, result)
        return result

    async def _lock_head(self, conn: Connection) -> int:
        head = await conn.fetchval("SELECT seq FROM ledger_head WHERE origin = $1 FOR UPDATE", self.origin)
        if head is None:
            await conn.execute(
                "INSERT INTO ledger_head (origin, seq) VALUES ($1, 0) ON CONFLICT DO NOTHING", self.origin
            )
            head = await conn.fetchval("SELECT seq FROM ledger_head WHERE origin = $1 FOR UPDATE", self.origin)
        return int(head)

    def _sign(
        self,
        seq: int,
        event_type: int,
        change: Change,
        digest: bytes,
        recorded_at: Timestamp,
        reason: str = "",
    ) -> state.StoredEvent:
        event = event_pb2.Event(
            origin=self.origin,
            seq=seq,
            event_id=str(uuid.uuid4()),
            type=event_type,  # type: ignore[arg-type]
            record_id=change.record.record_id,
            record=change.record,
            recorded_at=recorded_at,
            provenance=change.provenance,
            reason=reason,
            record_digest=digest,
        )
        envelope = seal(self.key, event.SerializeToString(deterministic=True))
        return state.StoredEvent(
            origin=self.origin,
            seq=seq,
            event_id=uuid.UUID(event.event_id),
            event_type=event_type,
            record=change.record,
            envelope=canonical_bytes(envelope),
            recorded_at=recorded_at.ToDatetime(tzinfo=dt.UTC),
        )

    async def _store(self, conn: Connection, events: list[state.StoredEvent], head: int, result: AppendResult) -> None:
        if not events:
            return
        await state.copy_events(conn, events)
        await state.upsert_records(conn, events)
        await conn.execute("UPDATE ledger_head SET seq = $2 WHERE origin = $1", self.origin, head)
        await conn.execute(
            "INSERT INTO origin_progress (origin, contiguous_seq, max_seq) VALUES ($1, $2, $2)"
            " ON CONFLICT (origin) DO UPDATE SET contiguous_seq = $2, max_seq = $2, updated_at = now()",
            self.origin,
            head,
        )
        await conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")
        result.seqs.extend(e.seq for e in events)
