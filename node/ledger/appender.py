"""The ledger: this node's own log.

Per batch, inside the caller's transaction, it decides what changed (new record,
correction, a withdrawal the platform published, nothing), assigns dense
sequence numbers under the origin's head lock, builds and signs the events,
stores them with the record state, and thereby fills the outbox the relay
publishes from. A crash leaves either the
whole transaction or none of it.

Each record arrives serialized once (:class:`~credex.node.store.events.RecordState`).
An event's payload is the event's own fields followed by those record bytes as
field 6: valid protobuf in any field order, and since verifiers check the exact
payload bytes and never re-encode, the record is never serialized twice.

Building and signing a batch's events is CPU work (an Ed25519 signature and a
serialization per event, 100+ ms for a large batch), kept off the event loop: the
events are built in a thread, their signatures made in the node's signature
worker processes (``cryptography``'s Ed25519 holds the GIL, so a thread would
not use a second core; see :mod:`credex.crypto.parallel`), and sealed in a thread,
in the same order and with the same results. ``credex_events_signed`` counts
what is signed.

A node whose key the trust bundle revokes signs nothing more: ``append``,
``amend`` (and so ``revoke``) and ``expire`` raise
:class:`~credex.crypto.keys.SigningRefused` with the reason and the remedy
before any work, instead of writing events every peer rejects.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from google.protobuf.timestamp_pb2 import Timestamp

from credex.crypto.envelope import EVENT_PAYLOAD_TYPE, pae, sealed_bytes, sealed_size
from credex.crypto.keys import SigningKey
from credex.crypto.parallel import SignatureWorkers
from credex.crypto.tiles import MAX_ENTRY
from credex.errors import CredexError
from credex.node.metrics import METRICS
from credex.node.store import NOTIFY_CHANNEL, Connection, tiles
from credex.node.store import events as state
from credex.protowire import varint
from credex.v1 import event_pb2, lookup_pb2, record_pb2

_RECORD_FIELD_TAG = b"\x32"  # field 6 (record), wire type 2 (length-delimited)


class LedgerError(CredexError):
    """A change cannot be recorded (unknown record, record of another origin)."""


class UnknownRecord(LedgerError):
    """No record has the id: a caller on the wire is told NOT_FOUND rather than a refused change."""


class EntryTooLarge(LedgerError):
    """The change's signed event would be longer than the limit: it is not signed, and takes no seq.

    Every event is a log entry, and tlog-tiles entry bundles give each entry a 16-bit length,
    so a log never holds one of more than 65,535 bytes (it could not serve it).
    """

    def __init__(self, record_id: str, size: int, limit: int) -> None:
        super().__init__(
            f"record {record_id}: signed, its event would be {size:,} bytes; a log entry may be at most {limit:,}"
        )
        self.size = size


# A platform's row is signed only if its event leaves this much room under MAX_ENTRY: the origin's later
# events about the record (a revocation's or an expiry's reason, a case reference) carry it again.
LATER_EVENT_ROOM = 1024


@dataclass(frozen=True, slots=True)
class Change:
    """A record to append, with where it was taken in from."""

    state: state.RecordState
    source: str = ""
    locator: str = ""
    profile: str = ""
    # Why the platform withdrew the record (its own 公示状态 1 撤销 / 2 删除, as the profile maps it);
    # empty for a record in publication. A withdrawn row is signed as a REVOKE carrying this reason.
    withdrawal: str = ""

    @classmethod
    def of(
        cls, record: record_pb2.Record, source: str = "", locator: str = "", profile: str = "", withdrawal: str = ""
    ) -> Change:
        return cls(state.RecordState.of(record), source, locator, profile, withdrawal)


@dataclass
class AppendResult:
    new: int = 0
    corrected: int = 0
    unchanged: int = 0
    revoked: int = 0
    # Withdrawn rows of records this ledger never signed: nothing to revoke, so no event; counted
    # so the file's report says so instead of the row vanishing.
    withdrawn_unknown: int = 0
    seqs: list[int] = field(default_factory=list)
    # Changes not signed because their event would be too long a log entry: the caller quarantines them.
    too_large: list[tuple[Change, EntryTooLarge]] = field(default_factory=list)

    def add(self, other: AppendResult) -> None:
        self.new += other.new
        self.corrected += other.corrected
        self.unchanged += other.unchanged
        self.revoked += other.revoked
        self.withdrawn_unknown += other.withdrawn_unknown
        self.seqs.extend(other.seqs)
        self.too_large.extend(other.too_large)

    @property
    def events(self) -> int:
        return len(self.seqs)


class Ledger:
    def __init__(self, origin: str, key: SigningKey, signatures: SignatureWorkers | None = None) -> None:
        self.origin = origin
        self.key = key
        # Where a batch's signatures are made: the node's worker processes (which it closes on stop);
        # without them, a thread of this process.
        self.signatures = signatures or SignatureWorkers(workers=1)

    async def append(self, conn: Connection, changes: Sequence[Change]) -> AppendResult:
        """Record changes; must run inside a transaction, which it extends with the head lock."""
        appending = self.appending(conn)
        result = await appending.append(conn, changes)
        await appending.flush()
        return result

    def appending(self, conn: Connection) -> Appending:
        """Batch after batch in ``conn``'s transaction, each signed while the one before is stored.

        Call :meth:`Appending.flush` before the transaction commits: the last batch is stored then.
        """
        return Appending(self, conn)

    def prepare(self, changes: Sequence[Change], held: dict[str, Held], head: int) -> Prepared:
        """Decide what ``changes`` make of the records as ``held``, and build their events after ``head``, unsigned.

        Pure CPU work with no connection (run it in a thread or another process): ``held``
        is what the store holds of the records changed (none for records it does not hold),
        and ``head`` the log's head the events follow; :meth:`store` refuses the batch if the
        log's head is not ``head`` then. ``held`` is updated with the batch's decisions.
        """
        for change in changes:
            if change.state.origin != self.origin:
                raise LedgerError(
                    f"record {change.state.record_id} belongs to {change.state.origin}, not {self.origin}"
                )
        result = AppendResult()
        drafts, after = self._draft_changes(changes, held, head, result)
        result.seqs.extend(d.seq for d in drafts)
        # An UPSERT is drafted only for a record ``held`` does not hold: its row is new.
        fresh = frozenset(d.record.record_id for d in drafts if d.event_type == event_pb2.EVENT_TYPE_UPSERT)
        return Prepared(drafts, after, fresh, result)

    def sign_here(self, prepared: Prepared) -> Signed:
        """Sign a prepared batch in this process (a worker process of its own, or a single change)."""
        self.key.check_may_sign()
        events = [self._seal(d, self.key.sign(d.message)) for d in prepared.drafts]
        return Signed(events, prepared.head, prepared.fresh)

    async def sign(self, prepared: Prepared) -> Signed:
        """Sign a prepared batch in the signature workers; seal its events off the loop."""
        self.key.check_may_sign()
        drafts = prepared.drafts
        signatures = await self.signatures.sign(self.key.private, [d.message for d in drafts])
        events = await asyncio.to_thread(lambda: [self._seal(d, s) for d, s in zip(drafts, signatures, strict=True)])
        return Signed(events, prepared.head, prepared.fresh)

    async def store(self, conn: Connection, signed: Signed) -> None:
        """Store a signed batch in ``conn``'s transaction, under the head lock; refused unless it follows the head.

        The batch was numbered from a head read earlier (or, in a bulk load, computed): if
        the log's head is not the one its first event follows, nothing is stored.
        """
        if not signed.events:
            return
        head = await self._lock_head(conn)
        follows = signed.events[0].seq - 1
        if head != follows:
            raise LedgerError(f"{self.origin}: a batch signed after seq {follows} cannot follow the head {head}")
        await self._store(conn, signed.events, signed.head, signed.fresh)

    def _draft_changes(
        self, changes: Sequence[Change], held: dict[str, Held], head: int, result: AppendResult
    ) -> tuple[list[Draft], int]:
        """The events of ``changes`` after ``head``, built but not signed (in a worker thread); and the new head."""
        clock = _Clock()
        stored: list[Draft] = []
        for change in changes:
            previous = held.get(change.state.record_id)
            if change.withdrawal:
                head = self._withdraw(change, previous, head, clock, stored, held, result)
                continue
            # The same content again leaves a record standing where it is, whatever that is. A
            # revocation (an annulled act, Repair rule 8) is not undone by re-exports of the act;
            # an expired record re-reported keeps its ended window (a new window is new content).
            # Changed content is a correction: it brings a revoked or expired record back into
            # publication, but repairs, deletions after objections and hidings are decisions that
            # only the origin's next decision ends (Repair 6, 9): the correction keeps them.
            if previous is not None and previous.digest == change.state.digest:
                result.unchanged += 1
                continue
            event_type = event_pb2.EVENT_TYPE_UPSERT if previous is None else event_pb2.EVENT_TYPE_CORRECT
            disputed = previous is not None and previous.disputed  # a correction leaves an open objection open
            standing = previous.status if previous is not None and previous.status in _DECIDED else _ACTIVE
            try:
                draft = self._draft(
                    head + 1,
                    event_type,
                    change,
                    clock,
                    standing=standing,
                    disputed=disputed,
                    limit=MAX_ENTRY - LATER_EVENT_ROOM,
                )
            except EntryTooLarge as exc:
                result.too_large.append((change, exc))
                continue
            head += 1
            stored.append(draft)
            held[change.state.record_id] = Held(change.state.digest, standing, disputed)
            if previous is None:
                result.new += 1
            else:
                result.corrected += 1
        return stored, head

    def _withdraw(
        self,
        change: Change,
        previous: Held | None,
        head: int,
        clock: _Clock,
        stored: list[Draft],
        held: dict[str, Held],
        result: AppendResult,
    ) -> int:
        """A row the platform marks withdrawn: a REVOKE of the record, once; returns the new head."""
        if previous is None:
            result.withdrawn_unknown += 1
            return head
        if previous.status == lookup_pb2.ENTRY_STATUS_REVOKED:
            result.unchanged += 1
            return head
        revoked = lookup_pb2.ENTRY_STATUS_REVOKED
        try:
            draft = self._draft(
                head + 1,
                event_pb2.EVENT_TYPE_REVOKE,
                change,
                clock,
                change.withdrawal,
                standing=revoked,
                disputed=previous.disputed,
            )
        except EntryTooLarge as exc:  # the platform's reason, with the record, is too long an entry
            result.too_large.append((change, exc))
            return head
        head += 1
        stored.append(draft)
        held[change.state.record_id] = Held(change.state.digest, revoked, previous.disputed)
        result.revoked += 1
        return head

    async def revoke(self, conn: Connection, record_id: str, reason: str) -> AppendResult:
        """Withdraw a record of this origin; the event carries the state being withdrawn."""
        result = AppendResult()
        event = await self.amend(
            conn, record_id, event_pb2.EVENT_TYPE_REVOKE, reason, standing=lookup_pb2.ENTRY_STATUS_REVOKED
        )
        if event is not None:
            result.revoked = 1
            result.seqs.append(event.seq)
        return result

    async def expire(self, conn: Connection, today: dt.date, limit: int) -> list[state.StoredEvent]:
        """Sign an EXPIRE for up to ``limit`` of this origin's active records whose window ended before ``today``.

        Runs inside the caller's transaction, under the head lock: a run killed half-way
        commits nothing of its batch, and the records it expired are no longer active, so
        the next run picks up exactly the ones left.
        """
        self.key.check_may_sign()
        head = await self._lock_head(conn)
        rows = await conn.fetch(
            "SELECT record, disputed FROM records WHERE origin = $1 AND status = $2 AND publicity_end < $3"
            " ORDER BY publicity_end, record_id LIMIT $4",
            self.origin,
            lookup_pb2.ENTRY_STATUS_ACTIVE,
            today,
            limit,
        )
        if not rows:
            return []

        def draft() -> Prepared:
            clock = _Clock()
            reason = f"publicity window ended before {today.isoformat()}"
            drafts = [
                self._draft(
                    head + n,
                    event_pb2.EVENT_TYPE_EXPIRE,
                    Change(state.RecordState.decode(bytes(row["record"]))),
                    clock,
                    reason,
                    standing=lookup_pb2.ENTRY_STATUS_EXPIRED,
                    disputed=bool(row["disputed"]),
                )
                for n, row in enumerate(rows, start=1)
            ]
            return Prepared(drafts, head + len(drafts), frozenset(), AppendResult())

        signed = await self.sign(await asyncio.to_thread(draft))
        await self._store(conn, signed.events, signed.head)
        return signed.events

    async def amend(
        self,
        conn: Connection,
        record_id: str,
        event_type: int,
        reason: str,
        *,
        standing: int | None = None,
        disputed: bool | None = None,
        case: event_pb2.CaseRef | None = None,
        record: record_pb2.Record | None = None,
        from_standings: Collection[int] | None = None,
    ) -> state.StoredEvent | None:
        """Sign one change of where a record of this origin stands; ``None`` when it already stands so.

        ``from_standings``, when given, are the standings the change may start from: any other
        is a :class:`LedgerError` (unhiding a record that is not hidden), checked under the lock.

        ``standing`` and ``disputed`` left as ``None`` keep the record's current ones; ``record``
        replaces its content (a correction after an objection), else the event carries the
        content held. Runs inside the caller's transaction, under the head lock, so the
        decision and the event commit together.
        """
        self.key.check_may_sign()
        head = await self._lock_head(conn)
        row = await conn.fetchrow(
            "SELECT origin, status, disputed, record FROM records WHERE record_id = $1", record_id
        )
        if row is None:
            raise UnknownRecord(f"no record {record_id}")
        if row["origin"] != self.origin:
            raise LedgerError(f"record {record_id} belongs to {row['origin']}; only its origin can change it")
        if from_standings is not None and row["status"] not in from_standings and row["status"] != standing:
            raise LedgerError(
                f"record {record_id} is {_standing_name(int(row['status']))}; this change applies only to a record"
                f" that is {' or '.join(_standing_name(s) for s in sorted(from_standings))}"
            )
        new_standing = int(row["status"]) if standing is None else standing
        new_disputed = bool(row["disputed"]) if disputed is None else disputed
        if record is not None:
            if record.record_id != record_id or record.origin != self.origin:
                raise LedgerError(f"the new content given for {record_id} is of another record")
            content = state.RecordState.of(record)
        else:
            content = state.RecordState.decode(bytes(row["record"]))
        if record is None and case is None and new_standing == row["status"] and new_disputed == row["disputed"]:
            return None
        event = self._sign(
            head + 1,
            event_type,
            Change(content),
            _Clock(),
            reason,
            standing=new_standing,
            disputed=new_disputed,
            case=case,
        )
        await self._store(conn, [event], head + 1)
        return event

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
        clock: _Clock,
        reason: str = "",
        *,
        standing: int,
        disputed: bool,
        case: event_pb2.CaseRef | None = None,
        limit: int = MAX_ENTRY,
    ) -> state.StoredEvent:
        """One event built and signed here (a single change: no worker is worth the round trip)."""
        draft = self._draft(
            seq, event_type, change, clock, reason, standing=standing, disputed=disputed, case=case, limit=limit
        )
        return self._seal(draft, self.key.sign(draft.message))

    def _draft(
        self,
        seq: int,
        event_type: int,
        change: Change,
        clock: _Clock,
        reason: str = "",
        *,
        standing: int,
        disputed: bool,
        case: event_pb2.CaseRef | None = None,
        limit: int = MAX_ENTRY,
    ) -> Draft:
        """The event to sign; :class:`EntryTooLarge`, before any signing, if it would be longer than ``limit``."""
        record = change.state
        event_id = uuid.uuid4()
        event = event_pb2.Event(
            origin=self.origin,
            seq=seq,
            event_id=str(event_id),
            type=event_pb2.EventType.ValueType(event_type),
            record_id=record.record_id,
            recorded_at=clock.stamp,
            provenance=event_pb2.Provenance(source=change.source, locator=change.locator, profile=change.profile)
            if change.source
            else None,
            reason=reason,
            record_digest=record.digest,
            case=case,
            standing=event_pb2.Standing.ValueType(standing),
            disputed=disputed,
        )
        payload = (
            event.SerializeToString(deterministic=True)
            + _RECORD_FIELD_TAG
            + varint(len(record.encoded))
            + record.encoded
        )
        size = sealed_size(len(payload), self.key.key_id)
        if size > limit:
            raise EntryTooLarge(record.record_id, size, limit)
        return Draft(seq, event_id, event_type, record, payload, clock.at, standing, disputed)

    def _seal(self, draft: Draft, signature: bytes) -> state.StoredEvent:
        return state.StoredEvent(
            origin=self.origin,
            seq=draft.seq,
            event_id=draft.event_id,
            event_type=draft.event_type,
            state=draft.record,
            envelope=sealed_bytes(self.key.key_id, draft.payload, signature),
            recorded_at=draft.recorded_at,
            status=draft.standing,
            disputed=draft.disputed,
        )

    async def _store(
        self, conn: Connection, events: list[state.StoredEvent], head: int, fresh: Collection[str] = ()
    ) -> None:
        """Store a signed batch: its events, its records (``fresh``: ids no row holds yet), the head, the tiles.

        The head, the watermark and the relay's wake-up are one statement, which also reads
        how far the tiles reach: the store step is a handful of round trips per batch, each
        doing the batch's rows set-wise.
        """
        if not events:
            return
        await state.copy_events(conn, events)
        await state.upsert_records(conn, events, fresh)
        tiled = await conn.fetchval(
            "WITH head AS (UPDATE ledger_head SET seq = $2 WHERE origin = $1),"
            " progress AS (INSERT INTO origin_progress (origin, contiguous_seq, max_seq) VALUES ($1, $2, $2)"
            " ON CONFLICT (origin) DO UPDATE SET contiguous_seq = $2, max_seq = $2, updated_at = now()"
            " RETURNING tiled_seq)"
            " SELECT tiled_seq FROM progress, pg_notify($3, '')",
            self.origin,
            head,
            NOTIFY_CHANNEL,
        )
        await tiles.cover(conn, self.origin, events[0].seq - 1, head, [e.leaf for e in events], tiled=int(tiled))
        METRICS.events_signed.labels(self.origin).inc(len(events))


class Appending:
    """One transaction's batches, pipelined: batch N+1 is built and signed while batch N is stored.

    Signing is CPU work in the signature workers and storing is waiting on PostgreSQL, so
    the two overlap. :meth:`append` returns with its batch decided, numbered and signed but
    not yet stored, and the connection free for the caller; the next ``append`` (or
    :meth:`flush`) stores it. What the store holds of a record in the batch still unstored
    is read from that batch's decisions instead, so a record changed in two batches in a row
    is judged against its newest content. All of it is one transaction: a crash or an error
    anywhere leaves none of it.
    """

    def __init__(self, ledger: Ledger, conn: Connection) -> None:
        self._ledger = ledger
        self._conn = conn
        self._head: int | None = None  # the head after the last batch decided; the head row is locked
        self._pending: _Pending | None = None  # signed, not yet stored

    async def append(self, conn: Connection, changes: Sequence[Change]) -> AppendResult:
        """Decide, number and sign ``changes``; store the batch before them meanwhile."""
        if conn is not self._conn:
            raise LedgerError("a pipeline of batches appends in the one transaction it was opened in")
        ledger = self._ledger
        if not changes:
            return AppendResult()
        ledger.key.check_may_sign()
        head = self._head if self._head is not None else await ledger._lock_head(conn)
        ids = list({c.state.record_id for c in changes})
        held: dict[str, Held] = {
            r["record_id"]: Held(bytes(r["digest"]), int(r["status"]), bool(r["disputed"]))
            for r in await conn.fetch(
                "SELECT record_id, digest, status, disputed FROM records WHERE record_id = ANY($1::text[])", ids
            )
        }
        if self._pending is not None:  # the batch before is not stored yet: its decisions are the newest
            held.update({i: self._pending.held[i] for i in ids if i in self._pending.held})
        prepared = await asyncio.to_thread(ledger.prepare, changes, held, head)
        self._head = prepared.head
        signing = asyncio.create_task(ledger.sign(prepared))
        try:
            await self.flush()
            signed = await signing
        finally:
            if not signing.done():  # storing failed or we are cancelled: no signing left running
                signing.cancel()
                await asyncio.wait([signing])
        if signed.events:
            self._pending = _Pending(signed, {i: held[i] for i in ids if i in held})
        return prepared.result

    async def flush(self) -> None:
        """Store the batch signed last, if any; call before the transaction commits."""
        pending, self._pending = self._pending, None
        if pending is not None:
            # The pipeline holds the head lock and numbered this batch from the head it holds:
            # nothing for :meth:`Ledger.store` to check, and no round trip to spend on it.
            batch = pending.signed
            await self._ledger._store(self._conn, batch.events, batch.head, batch.fresh)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch decided and numbered, its events built but not signed (:meth:`Ledger.prepare`)."""

    drafts: list[Draft]
    head: int  # the log's head after the batch
    fresh: frozenset[str]  # records of the batch no row holds yet: their rows are COPYed, not upserted
    result: AppendResult  # what the batch does, counted


@dataclass(frozen=True, slots=True)
class Signed:
    """A prepared batch signed, ready for :meth:`Ledger.store`; plain data, so it crosses processes."""

    events: list[state.StoredEvent]
    head: int
    fresh: frozenset[str]


@dataclass(frozen=True, slots=True)
class _Pending:
    """A batch signed and not yet stored, and where its records stand after it."""

    signed: Signed
    held: dict[str, Held]


@dataclass(frozen=True, slots=True)
class Draft:
    """An event built, not yet signed: its payload and the columns the store will want."""

    seq: int
    event_id: uuid.UUID
    event_type: int
    record: state.RecordState
    payload: bytes
    recorded_at: dt.datetime
    standing: int
    disputed: bool

    @property
    def message(self) -> bytes:
        """What the signature covers: the DSSE encoding of the payload."""
        return pae(EVENT_PAYLOAD_TYPE, self.payload)


@dataclass(frozen=True, slots=True)
class Held:
    """What the store holds of a record the ledger is about to change."""

    digest: bytes
    status: int
    disputed: bool


_ACTIVE = lookup_pb2.ENTRY_STATUS_ACTIVE
# Standings only the origin's own decision ends; new content from the platform does not.
_DECIDED = frozenset(
    {lookup_pb2.ENTRY_STATUS_REPAIRED, lookup_pb2.ENTRY_STATUS_DELETED, lookup_pb2.ENTRY_STATUS_HIDDEN}
)


def _standing_name(standing: int) -> str:
    """``revoked`` for ENTRY_STATUS_REVOKED: how an operator reads a standing."""
    return lookup_pb2.EntryStatus.Name(standing).removeprefix("ENTRY_STATUS_").lower()  # type: ignore[arg-type]


class _Clock:
    """One signing time per batch, as both a protobuf timestamp and a datetime."""

    def __init__(self) -> None:
        self.at = dt.datetime.now(dt.UTC)
        self.stamp = Timestamp()
        self.stamp.FromDatetime(self.at)
