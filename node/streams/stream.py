"""One subscriber's stream: the store's events in seq order per origin, from a cursor on, as messages.

Read from the store, not from Kafka, so that a stream resumes exactly where its cursor says
after the subscriber or the node went away: an origin's events are sent only up to the
seq its log is held without a gap (``origin_progress.contiguous_seq``), so a cursor never
passes over an event that arrives late, and nothing at or below the cursor is sent again.

Memory is bounded per stream whatever the subscriber does: at most ``batch_size`` events
of one origin are read at a time, with no database connection held while they are
written, and each write is awaited (gRPC's flow control holds a subscriber that does not
read). Items go out gathered in messages of at most :data:`MAX_MESSAGE_ITEMS` items and about
:data:`MAX_MESSAGE_BYTES`, so a fast subscriber is not held to one gRPC write per event.
:attr:`Stream.buffered_bytes` is what the stream holds read and not yet written.

A stream sleeps on the store's notification channel (node/streams/bell.py), with a poll
as a safety net, and sends a heartbeat carrying the cursor to save when it has sent nothing for a while
or has passed over events its filter did not take.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp

from credex.domain.measures import Measure
from credex.domain.publicity import publicity_today
from credex.node.authorizations import held as authorizations
from credex.node.authorizations.terms import STREAM_SCOPE
from credex.node.cancellation import wait_for_event
from credex.node.chain import CheckpointKeeper, LogBook, checkpoint_message
from credex.node.config import SubscriptionsConfig
from credex.node.store.events import entry_status, standing_of
from credex.node.streams.bell import SAFETY_POLL_SECONDS, Bell
from credex.node.streams.entitlement import Delivery, Entitlement
from credex.v1 import event_pb2, log_pb2, lookup_pb2, subscription_pb2

PROOF_POLL_SECONDS = 1.0  # while proofs are owed, look for a covering checkpoint this often
_ITEM = subscription_pb2.StreamItem
MAX_MESSAGE_ITEMS = 256  # items of one SubscribeResponse
MAX_MESSAGE_BYTES = 256 * 1024  # and their bytes (one item may go over): what a stream holds while writing
# One read of the store looks at most this many batches' worth of seqs, however few the filter passes.
SCAN_WINDOW_BATCHES = 16


@dataclass(frozen=True, slots=True)
class Filter:
    """What the subscriber asked for, validated (node/services/subscription_service.py); empty: no restriction."""

    origins: frozenset[str] = frozenset()
    kinds: frozenset[int] = frozenset()
    event_types: frozenset[int] = frozenset()
    subjects: tuple[str, ...] = ()
    measures: tuple[Measure, ...] | None = None  # a scenario's measures: a record passes if it triggers one

    def describe(self) -> str:
        parts = []
        if self.origins:
            parts.append("origins=" + ",".join(sorted(self.origins)))
        if self.kinds:
            parts.append("kinds=" + ",".join(str(k) for k in sorted(self.kinds)))
        if self.event_types:
            parts.append("event_types=" + ",".join(str(t) for t in sorted(self.event_types)))
        if self.subjects:
            parts.append(f"subjects={len(self.subjects)}")
        if self.measures is not None:
            parts.append(f"scenario measures={len(self.measures)}")
        return " ".join(parts) or "everything"


@dataclass(slots=True)
class Counts:
    events: int = 0
    changes: int = 0
    proofs: int = 0
    heartbeats: int = 0


@dataclass(frozen=True, slots=True)
class _Row:
    seq: int
    event_type: int
    subject_id: str
    envelope: bytes
    leaf_hash: bytes
    standing_now: int  # the event's record as answered today (status, its window now), 0 if not held


@dataclass(slots=True)
class _Owed:
    """An event sent before a checkpoint covered it: its proof follows."""

    origin: str
    seq: int
    full: bool  # False: a change, whose proof carries no envelope
    subject: str  # the event's subject, asked again for a financing caller before the proof is written


# An item ready to go out, with the subject of the event it carries ("" for a heartbeat).
_Out = tuple[subscription_pb2.StreamItem, str]


@dataclass(eq=False)  # one stream is one subscriber's: kept in sets by identity
class Stream:
    pool: asyncpg.Pool
    logbook: LogBook
    keeper: CheckpointKeeper
    bell: Bell
    settings: SubscriptionsConfig
    entitlement: Entitlement
    filter: Filter
    positions: dict[str, int]  # origin -> highest seq taken or passed over
    proved: dict[str, int] = field(default_factory=dict)  # origin -> seq the subscriber holds proofs up to
    resending: dict[str, int] = field(default_factory=dict)  # origin -> seq proofs are owed again up to
    counts: Counts = field(default_factory=Counts)
    held_rows: int = 0  # bytes of events read from the store and not yet judged
    held_message: int = 0  # bytes of the message gathered or being written
    owed: list[_Owed] = field(default_factory=list)

    async def messages(self) -> AsyncIterator[subscription_pb2.SubscribeResponse]:
        """The stream, without end, as messages of the items ready; the caller writes each before asking for more."""
        message = subscription_pb2.SubscribeResponse()
        subjects: list[str] = []
        size = 0
        async for out in self.items():
            if out is not None:
                item, subject = out
                message.items.append(item)
                subjects.append(subject)
                size += item.ByteSize()
                self.held_message = size
            full = len(message.items) >= MAX_MESSAGE_ITEMS or size >= MAX_MESSAGE_BYTES
            if message.items and (out is None or full):  # None: nothing more is ready now, send what is gathered
                ready = await self._still_entitled(message, subjects)
                if ready.items:
                    yield ready
                message, subjects, size = subscription_pb2.SubscribeResponse(), [], 0
                self.held_message = 0

    async def items(self) -> AsyncIterator[_Out | None]:
        """Every item in order, and None whenever the stream is about to wait (or read the store again)."""
        wake = self.bell.join()
        try:
            await self._owe_again()
            reported = dict(self.positions)
            last_sent = time.monotonic()
            while True:
                wake.clear()
                read_any = False
                if len(self.owed) < self.settings.max_pending_proofs:
                    for origin, head in await self._heads():
                        async for out in self._origin_round(origin, head):
                            read_any = True
                            yield out
                            last_sent = time.monotonic()
                        read_any = read_any or self.positions.get(origin, 0) > reported.get(origin, 0)
                        yield None
                async for out in self._owed_proofs():
                    yield out
                    last_sent = time.monotonic()
                resent = self._resent()
                if resent:
                    heartbeat = self._heartbeat()
                    heartbeat.heartbeat.proofs_resent.extend(resent)
                    yield heartbeat, ""
                    last_sent = time.monotonic()
                if read_any:
                    if self.positions != reported:
                        reported = dict(self.positions)
                        yield self._heartbeat(), ""
                        last_sent = time.monotonic()
                    yield None
                    continue
                yield None
                timeout = min(self.settings.heartbeat_seconds, SAFETY_POLL_SECONDS)
                if self.owed:
                    timeout = min(timeout, PROOF_POLL_SECONDS)
                await wait_for_event(wake, timeout)
                if time.monotonic() - last_sent >= self.settings.heartbeat_seconds:
                    reported = dict(self.positions)
                    yield self._heartbeat(), ""
                    yield None
                    last_sent = time.monotonic()
        finally:
            self.bell.leave(wake)

    async def _still_entitled(
        self, message: subscription_pb2.SubscribeResponse, subjects: list[str]
    ) -> subscription_pb2.SubscribeResponse:
        """``message`` as it may be written now: a financing caller's items of subjects no longer authorized out.

        Judged when read, an item may wait long for a subscriber that holds the stream up with
        flow control; an authorization ended meanwhile ends what the subscriber gets at the
        next message written, not at the next batch read. What is taken out is passed over
        (the cursor moves past it, as past what the filter leaves out) and owes no proof.
        """
        wanted = {subject for subject in subjects if subject}
        if not self.entitlement.needs_authorization or not wanted:
            return message
        async with self.pool.acquire() as conn:
            allowed = await authorizations.authorized(
                conn, self.entitlement.grantee, wanted, STREAM_SCOPE, publicity_today()
            )
        if wanted <= allowed:
            return message
        kept = subscription_pb2.SubscribeResponse()
        dropped: set[tuple[str, int]] = set()
        for item, subject in zip(message.items, subjects, strict=True):
            if not subject or subject in allowed:
                kept.items.append(item)
                continue
            body = item.WhichOneof("body")
            if body == "event":
                self.counts.events -= 1
                dropped.add((item.event.origin, item.event.seq))
            elif body == "change":
                self.counts.changes -= 1
                dropped.add((item.change.origin, item.change.seq))
            elif body == "proof":
                self.counts.proofs -= 1
        if dropped:
            self.owed = [o for o in self.owed if (o.origin, o.seq) not in dropped]
        return kept

    @property
    def buffered_bytes(self) -> int:
        """What this stream holds for its subscriber: events read and not judged, and the message not yet written."""
        return self.held_rows + self.held_message

    def cursor(self) -> list[subscription_pb2.Position]:
        return [subscription_pb2.Position(origin=o, seq=s) for o, s in sorted(self.positions.items())]

    def _resent(self) -> list[subscription_pb2.Position]:
        """Origins whose proofs owed again are all sent now: no longer owed, said once."""
        done = [
            subscription_pb2.Position(origin=origin, seq=upto)
            for origin, upto in sorted(self.resending.items())
            if not any(o.origin == origin and o.seq <= upto for o in self.owed)
        ]
        for position in done:
            del self.resending[position.origin]
        return done

    def _heartbeat(self) -> subscription_pb2.StreamItem:
        self.counts.heartbeats += 1
        at = Timestamp()
        at.GetCurrentTime()
        return _ITEM(heartbeat=subscription_pb2.Heartbeat(cursor=self.cursor(), at=at))

    async def _heads(self) -> list[tuple[str, int]]:
        """Each origin the stream may take, with how far its log is held without a gap."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch("SELECT origin, contiguous_seq FROM origin_progress ORDER BY origin")
        heads = []
        for row in rows:
            origin, head = row["origin"], int(row["contiguous_seq"])
            if self.filter.origins and origin not in self.filter.origins:
                continue
            if not self.entitlement.covers_origin(origin):
                continue
            if head > self.positions.get(origin, 0):
                heads.append((origin, head))
        return heads

    async def _origin_round(self, origin: str, head: int) -> AsyncIterator[_Out]:
        today = publicity_today()
        batch, allowed, scanned_to = await self._read(origin, self.positions.get(origin, 0), head, today)
        self.held_rows += sum(len(r.envelope) for r in batch)
        try:
            checkpoint = await self.keeper.latest(origin)
            covered = 0
            tree = None
            if checkpoint is not None:
                tree = await self.logbook.tree(origin)
                covered = checkpoint.size if checkpoint.size <= tree.size else 0
            judged: list[tuple[int, _ITEM | None, str]] = []
            for index, row in enumerate(batch):
                judged.append((row.seq, self._judge(origin, row, today, row.subject_id in allowed), row.subject_id))
                self.held_rows -= len(row.envelope)
                batch[index] = _Row(row.seq, 0, "", b"", b"", 0)  # let go of what is judged
            # The batch's proofs from one read of the tiles they need, not a read per event.
            proved = [seq for seq, message, _ in judged if message is not None and seq <= covered]
            hashes: dict[int, list[bytes]] = {}
            if proved and checkpoint is not None and tree is not None:
                found = await tree.inclusion_proofs([seq - 1 for seq in proved], covered)
                hashes = dict(zip(proved, found, strict=True))
            for seq, message, subject in judged:
                if message is not None:
                    full = message.HasField("event")
                    if seq in hashes and checkpoint is not None:
                        proof = log_pb2.InclusionProof(
                            origin=origin,
                            seq=seq,
                            leaf_index=seq - 1,
                            tree_size=covered,
                            hashes=hashes[seq],
                            checkpoint=checkpoint_message(checkpoint),
                        )
                        if full:  # the envelope is the event's own: not sent twice
                            message.event.proof.CopyFrom(proof)
                        else:
                            message.change.proof.CopyFrom(proof)
                    else:
                        self.owed.append(_Owed(origin, seq, full, subject))
                    yield message, subject
                self.positions[origin] = seq
            self.positions[origin] = max(self.positions.get(origin, 0), scanned_to)
        finally:
            self.held_rows = 0

    def _judge(self, origin: str, row: _Row, today: dt.date, authorized: bool, count: bool = True) -> _ITEM | None:
        envelope = event_pb2.Envelope.FromString(row.envelope)
        event = event_pb2.Event.FromString(envelope.payload)
        record = event.record
        if self.filter.kinds and record.kind not in self.filter.kinds:
            return None
        if self.filter.measures is not None and not any(m.triggered_by(record) for m in self.filter.measures):
            return None
        standing = standing_of(event.type, event.standing)
        if row.standing_now and row.standing_now != lookup_pb2.ENTRY_STATUS_ACTIVE:
            standing = row.standing_now  # withdrawn or expired since: its old events are what the caller may not see
        delivery = self.entitlement.delivery(origin, record, standing, today, authorized)
        if delivery is Delivery.FULL:
            self.counts.events += count
            streamed = subscription_pb2.StreamedEvent(origin=origin, seq=row.seq, envelope=envelope)
            sampling = self.entitlement.sampling(record)
            if sampling is not None:
                streamed.sampling.CopyFrom(sampling)
            return _ITEM(event=streamed)
        if delivery is Delivery.CHANGE:
            self.counts.changes += count
            return _ITEM(
                change=subscription_pb2.StreamedChange(
                    origin=origin,
                    seq=row.seq,
                    record_id=event.record_id,
                    type=event.type,
                    standing=standing,  # type: ignore[arg-type]  # the Standing numbers equal EntryStatus's
                    leaf_hash=row.leaf_hash,
                )
            )
        return None

    async def _read(self, origin: str, after: int, upto: int, today: dt.date) -> tuple[list[_Row], set[str], int]:
        """The next batch of ``origin``'s events in (after, upto] that pass the SQL part of the filter,
        which of their subjects a financing caller is authorized for now, and the seq read up to.

        One read looks at a window of :data:`SCAN_WINDOW_BATCHES` batches' worth of seqs at most:
        a filter that passes one event in a million costs the store a bounded read each round,
        not a scan of the whole log in one statement, and the cursor moves on between reads.

        Each row carries where its record stands now: an event of a record revoked or repaired
        since, or whose window a correction has ended, is judged as the record is answered
        today, so replaying history never hands out what lookups no longer show.
        Authorizations are asked after the events were read, on the same connection: an
        authorization ended before an event was stored is seen ended when that event is judged.
        No connection is held once this returns, however long the subscriber takes to read.
        """
        limit = self.settings.batch_size
        upto = min(upto, after + limit * SCAN_WINDOW_BATCHES)
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT e.seq, e.event_type, e.subject_id, e.envelope, e.leaf_hash, r.status, r.publicity_end"
                " FROM events e LEFT JOIN records r ON r.record_id = e.record_id"
                " WHERE e.origin = $1 AND e.seq > $2 AND e.seq <= $3"
                " AND (cardinality($4::text[]) = 0 OR e.subject_id = ANY($4::text[]))"
                " AND (cardinality($5::smallint[]) = 0 OR e.event_type = ANY($5::smallint[]))"
                " ORDER BY e.seq LIMIT $6",
                origin,
                after,
                upto,
                list(self.filter.subjects),
                sorted(self.filter.event_types),
                limit,
            )
            allowed: set[str] = set()
            if self.entitlement.needs_authorization and rows:
                allowed = await authorizations.authorized(
                    conn, self.entitlement.grantee, (r["subject_id"] for r in rows), STREAM_SCOPE, today
                )
        batch = [
            _Row(
                r["seq"],
                r["event_type"],
                r["subject_id"],
                bytes(r["envelope"]),
                bytes(r["leaf_hash"]),
                entry_status(r["status"], r["publicity_end"], today) if r["status"] is not None else 0,
            )
            for r in rows
        ]
        return batch, allowed, batch[-1].seq if len(batch) == limit else upto

    async def _owe_again(self) -> None:
        """Owe again the proofs of events the subscriber took after what it says it holds proofs for.

        Only events it may see in full now are owed again (their proof carries the envelope, so
        it is checked on its own); at most ``max_pending_proofs``, the rest on a later resume.
        """
        today = publicity_today()
        room = self.settings.max_pending_proofs
        for origin, proved_to in sorted(self.proved.items()):
            upto, after = self.positions.get(origin, 0), proved_to
            while after < upto and len(self.owed) < room:
                rows, allowed, scanned_to = await self._read(origin, after, upto, today)
                for row in rows:
                    item = self._judge(origin, row, today, row.subject_id in allowed, count=False)
                    if item is not None and item.HasField("event"):
                        if len(self.owed) >= room:
                            break
                        self.owed.append(_Owed(origin, row.seq, True, row.subject_id))
                    after = row.seq
                else:
                    after = scanned_to
                    continue
                break
            self.resending[origin] = max(after, proved_to)

    async def _owed_proofs(self) -> AsyncIterator[_Out]:
        """Proofs of events sent earlier, for every origin whose agreed checkpoint now covers them."""
        if not self.owed:
            return
        by_origin: dict[str, list[_Owed]] = {}
        for owed in self.owed:
            by_origin.setdefault(owed.origin, []).append(owed)
        still: list[_Owed] = []
        for origin, owed_here in by_origin.items():
            checkpoint = await self.keeper.latest(origin)
            tree = await self.logbook.tree(origin) if checkpoint is not None else None
            if checkpoint is None or tree is None or checkpoint.size > tree.size:
                still.extend(owed_here)
                continue
            due = [o for o in owed_here if o.seq <= checkpoint.size]
            still.extend(o for o in owed_here if o.seq > checkpoint.size)
            for chunk in _chunks(due, self.settings.batch_size):
                envelopes = await self._envelopes(origin, [o.seq for o in chunk if o.full])
                found = await tree.inclusion_proofs([o.seq - 1 for o in chunk], checkpoint.size)
                for owed, owed_hashes in zip(chunk, found, strict=True):
                    proof = log_pb2.InclusionProof(
                        origin=origin,
                        seq=owed.seq,
                        leaf_index=owed.seq - 1,
                        tree_size=checkpoint.size,
                        hashes=owed_hashes,
                        checkpoint=checkpoint_message(checkpoint),
                    )
                    if owed.full:
                        proof.envelope.CopyFrom(event_pb2.Envelope.FromString(envelopes[owed.seq]))
                    self.counts.proofs += 1
                    yield _ITEM(proof=proof), owed.subject
        self.owed = still

    async def _envelopes(self, origin: str, seqs: Sequence[int]) -> dict[int, bytes]:
        if not seqs:
            return {}
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT seq, envelope FROM events WHERE origin = $1 AND seq = ANY($2::bigint[])", origin, list(seqs)
            )
        return {int(r["seq"]): bytes(r["envelope"]) for r in rows}


def _chunks(items: list[_Owed], size: int) -> list[list[_Owed]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
