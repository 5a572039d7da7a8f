"""Storing events and the record state they produce.

The ledger (this node's own events) and intake (the peers' verified events) store
events the same way, through this module: the events table gets the canonical
envelope, the record_states table the latest state of each record (the highest
seq wins, so applying events late or twice changes nothing), and origin_progress
how far each origin's log is held without a gap. Every function runs inside the
caller's transaction.

A record's bytes are stored once, in the envelope of the event that left it so:
its record_states row says where they are in that envelope, and the view
``records``, which everything reads, takes them from there (migration 0029).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import unicodedata
import uuid
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

from credex.crypto.merkle import leaf_hash
from credex.domain.identity import subject_id
from credex.domain.memo import recurring
from credex.domain.normalize import MEMO_KEY_CHARS, name_key
from credex.domain.records import canonical_bytes
from credex.errors import CredexError
from credex.node.store import lifting, tiles
from credex.node.store.database import ANALYZE_AFTER, Connection
from credex.v1 import event_pb2, lookup_pb2, record_pb2

MAX_SEQ = 2**63 - 1  # a bigint column
# The columns of an events row and of a records row (the view ``records``, which takes rows into
# ``record_states``), in the order of :meth:`StoredEvent.event_row`; whatever COPYs rows into these
# tables (a benchmark too) names them from here.
EVENT_COLUMNS = (
    "origin",
    "seq",
    "event_id",
    "event_type",
    "record_id",
    "subject_id",
    "envelope",
    "recorded_at",
    "leaf_hash",
)
RECORD_COLUMNS = (
    "record_id",
    "origin",
    "subject_id",
    "kind",
    "seq",
    "status",
    "sharing_level",
    "publicity_end",
    "digest",
    "record",
    "disputed",
)
# The store's own row of a record's state (table ``record_states``, behind the view ``records``): the
# columns above, then where in its event's envelope the record's bytes are (``record`` is NULL then).
STATE_COLUMNS = (*RECORD_COLUMNS, "record_at", "record_len")


def record_sql(state: str, event: str | None = None) -> str:
    """SQL for the bytes of the record whose ``record_states`` row is ``state``, as the view ``records`` reads them.

    A query that has the state row in hand takes the bytes with this instead of joining
    the view, which finds the row again by its key (migration 0029 says where they are).
    With ``event``, the alias of that record's event row the query joins already, they
    are cut from it; without, the envelope is read only for the rows the query keeps.
    """
    cut = f"substring({{}}.envelope FROM {state}.record_at + 1 FOR {state}.record_len)"
    if event is not None:
        return f"coalesce({state}.record, {cut.format(event)})"
    found = f"SELECT {cut.format('e')} FROM events e WHERE e.origin = {state}.origin AND e.seq = {state}.seq"
    return f"coalesce({state}.record, ({found}))"


# Where a record stands after an event that does not say (signed before events carried
# their standing). Events that do say are the origin's word: see :func:`standing_of`.
STATUS_BY_TYPE: dict[int, int] = {
    event_pb2.EVENT_TYPE_UPSERT: lookup_pb2.ENTRY_STATUS_ACTIVE,
    event_pb2.EVENT_TYPE_CORRECT: lookup_pb2.ENTRY_STATUS_ACTIVE,
    event_pb2.EVENT_TYPE_REVOKE: lookup_pb2.ENTRY_STATUS_REVOKED,
    event_pb2.EVENT_TYPE_EXPIRE: lookup_pb2.ENTRY_STATUS_EXPIRED,
    event_pb2.EVENT_TYPE_REPAIR: lookup_pb2.ENTRY_STATUS_REPAIRED,
    event_pb2.EVENT_TYPE_HIDE: lookup_pb2.ENTRY_STATUS_HIDDEN,
    event_pb2.EVENT_TYPE_UNHIDE: lookup_pb2.ENTRY_STATUS_ACTIVE,
}
# Standings out of every view but the peers' (and operators'): withdrawn at the source,
# repaired, deleted after an objection, or hidden for now. Kept in the archive.
WITHDRAWN = frozenset(
    {
        lookup_pb2.ENTRY_STATUS_REVOKED,
        lookup_pb2.ENTRY_STATUS_REPAIRED,
        lookup_pb2.ENTRY_STATUS_DELETED,
        lookup_pb2.ENTRY_STATUS_HIDDEN,
    }
)


def standing_of(event_type: int, standing: int) -> int:
    """The EntryStatus a record has after an event: the event's own standing, else its type's."""
    if standing:
        return standing
    return STATUS_BY_TYPE.get(event_type, lookup_pb2.ENTRY_STATUS_ACTIVE)


record_bytes = canonical_bytes  # the store keeps, digests and signs one encoding of a record


def record_digest(encoded: bytes) -> bytes:
    return hashlib.sha256(encoded).digest()


@dataclass(frozen=True, slots=True)
class RecordState:
    """A record serialized once, with the columns the store finds it by.

    Plain bytes and strings, so it crosses process boundaries cheaply (the
    mapping worker of a large ingest builds these) and the ledger never has to
    serialize the record again.
    """

    record_id: str
    origin: str
    subject_id: str
    kind: int
    sharing_level: int
    publicity_end: dt.date | None
    encoded: bytes
    digest: bytes
    subject_type: int = record_pb2.SUBJECT_TYPE_UNSPECIFIED  # for the subjects table (search)
    subject_name: str = ""  # as published

    @classmethod
    def of(cls, record: record_pb2.Record, encoded: bytes | None = None) -> RecordState:
        """The state of ``record``; ``encoded``, when given, must be its canonical bytes (it saves encoding again)."""
        if encoded is None:
            encoded = record_bytes(record)
        end = record.publicity.end
        return cls(
            record_id=record.record_id,
            origin=record.origin,
            subject_id=subject_id(record),
            kind=record.kind,
            sharing_level=record.sharing_level,
            publicity_end=dt.date.fromisoformat(end) if end else None,
            encoded=encoded,
            digest=record_digest(encoded),
            subject_type=record.subject.type,
            subject_name=record.subject.name,
        )

    @classmethod
    def decode(cls, encoded: bytes) -> RecordState:
        return cls.of(record_pb2.Record.FromString(encoded), encoded)


MAX_NAME_CHARS = 500  # of a subject's name kept for search
# Longest record or subject id stored: ids are short codes; a b-tree index entry must fit a page.
MAX_ID_CHARS = 256


class Unstorable(CredexError, ValueError):
    """A validly signed event whose fields the store cannot hold (NUL or control characters, an
    over-long id, a date or id that does not parse). Intake rejects it as ``reason`` instead of
    letting the database refuse the whole batch."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def check_id(name: str, value: str) -> None:
    """Refuse an id PostgreSQL text cannot store (NUL) or that is no id (control characters, too long)."""
    if len(value) > MAX_ID_CHARS:
        raise Unstorable("event.unstorable", f"{name} has {len(value)} characters, at most {MAX_ID_CHARS} allowed")
    if any(ch < " " or ch == "\x7f" for ch in value):
        raise Unstorable("event.unstorable", f"{name} contains NUL or control characters")


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event ready to store: the canonical envelope plus the columns derived from it."""

    origin: str
    seq: int
    event_id: uuid.UUID
    event_type: int
    state: RecordState
    envelope: bytes
    recorded_at: dt.datetime
    status: int = lookup_pb2.ENTRY_STATUS_ACTIVE  # where the record stands after it (EntryStatus)
    disputed: bool = False  # an objection is open against the record
    # The Merkle leaf hash, hashed once where the event is built (the ledger's signing thread),
    # not on the event loop by each of the events table and the tiles.
    leaf: bytes = field(init=False, repr=False, compare=False)
    # Where the record's bytes start in the envelope (its payload's field 6), -1 if they are not there
    # byte for byte (a peer's record not in canonical form): the record's row points there, not a copy.
    record_at: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "leaf", leaf_hash(self.envelope))
        object.__setattr__(self, "record_at", _record_at(self.envelope, self.state.encoded))

    @classmethod
    def from_event(cls, event: event_pb2.Event, envelope: bytes) -> StoredEvent:
        """The columns of a verified event; :class:`Unstorable` if the store could not hold them.

        A signature proves who wrote an event, not that it fits the schema: without
        these checks one such event would fail its whole batch, again on every retry.
        """
        check_id("record_id", event.record_id)
        check_id("subject id", subject_id(event.record))
        if event.seq > MAX_SEQ:
            raise Unstorable("event.seq", f"seq {event.seq} is beyond the largest a log can have ({MAX_SEQ})")
        try:
            return cls(
                origin=event.origin,
                seq=event.seq,
                event_id=uuid.UUID(event.event_id),
                event_type=event.type,
                state=RecordState.of(event.record),
                envelope=envelope,
                recorded_at=event.recorded_at.ToDatetime(tzinfo=dt.UTC),
                status=standing_of(event.type, event.standing),
                disputed=event.disputed,
            )
        except (ValueError, OverflowError) as exc:
            raise Unstorable(
                "event.unstorable", f"event id, time or publicity date does not parse: {exc}"[:200]
            ) from None

    @property
    def record_id(self) -> str:
        return self.state.record_id

    @property
    def subject_id(self) -> str:
        return self.state.subject_id

    def event_row(self) -> tuple[object, ...]:
        return (
            self.origin,
            self.seq,
            self.event_id,
            self.event_type,
            self.state.record_id,
            self.state.subject_id,
            self.envelope,
            self.recorded_at,
            self.leaf,
        )

    def state_row(self) -> tuple[object, ...]:
        """The record's row in ``record_states`` (:data:`STATE_COLUMNS`): its bytes only if the envelope lacks them."""
        state = self.state
        inside = self.record_at >= 0
        return (
            state.record_id,
            self.origin,
            state.subject_id,
            state.kind,
            self.seq,
            self.status,
            state.sharing_level,
            state.publicity_end,
            state.digest,
            None if inside else state.encoded,
            self.disputed,
            self.record_at if inside else None,
            len(state.encoded) if inside else None,
        )


def _record_at(envelope: bytes, encoded: bytes) -> int:
    """Where ``encoded`` starts in ``envelope``, -1 if it is not there.

    A canonical envelope begins with its payload (field 1) and a payload ends with its
    record (field 6, as the ledger writes it), so that place is tried first: one
    comparison instead of a search.
    """
    if envelope[:1] == b"\x0a":  # field 1, length-delimited: the payload's length follows as a varint
        length, shift, at = 0, 0, 1
        while at < len(envelope) and at <= 10:
            byte = envelope[at]
            length |= (byte & 0x7F) << shift
            at += 1
            if byte < 0x80:
                start = at + length - len(encoded)
                if start >= 0 and envelope.startswith(encoded, start):
                    return start
                break
            shift += 7
    return envelope.find(encoded)


async def own_head(conn: Connection, origin: str) -> int:
    """The last seq of the log this node signs for ``origin``, as committed: its head row, 0 before any.

    Not max(seq) over events: while a big file's transaction is open, that backward index scan
    steps over every uncommitted event (16 ms a look at 200k), and the head row is updated in
    the same transaction as every event of the own log.
    """
    return int(await conn.fetchval("SELECT coalesce((SELECT seq FROM ledger_head WHERE origin = $1), 0)", origin))


async def copy_events(conn: Connection, events: Sequence[StoredEvent]) -> None:
    """Append events that cannot conflict (the ledger holds its origin's head lock)."""
    await conn.copy_records_to_table("events", records=[e.event_row() for e in events], columns=EVENT_COLUMNS)


@dataclass(frozen=True, slots=True)
class InsertOutcome:
    new: list[StoredEvent]
    replays: list[StoredEvent]  # already held, byte for byte
    conflicts: list[StoredEvent]  # same (origin, seq) or event id, different content


async def insert_events(conn: Connection, events: Sequence[StoredEvent]) -> InsertOutcome:
    """Insert events that may already be held; sort out replays from conflicting versions."""
    if not events:
        return InsertOutcome([], [], [])
    # Two copies of one (origin, seq) in the same batch: ON CONFLICT would skip the second in
    # silence. Keep the first for the database and judge the others against it here.
    first: dict[tuple[str, int], StoredEvent] = {}
    repeated: list[StoredEvent] = []
    for event in events:
        key = (event.origin, event.seq)
        if key in first:
            repeated.append(event)
        else:
            first[key] = event
    outcome = await _insert_distinct(conn, list(first.values()))
    for event in repeated:
        same = first[(event.origin, event.seq)].envelope == event.envelope
        (outcome.replays if same else outcome.conflicts).append(event)
    return outcome


async def _insert_distinct(conn: Connection, events: Sequence[StoredEvent]) -> InsertOutcome:
    await conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS staged_events (LIKE events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    await conn.execute("TRUNCATE staged_events")
    await conn.copy_records_to_table("staged_events", records=[e.event_row() for e in events], columns=EVENT_COLUMNS)
    inserted = await conn.fetch(
        "INSERT INTO events SELECT * FROM staged_events ON CONFLICT DO NOTHING RETURNING origin, seq"
    )
    new_keys = {(r["origin"], r["seq"]) for r in inserted}
    new = [e for e in events if (e.origin, e.seq) in new_keys]
    rest = [e for e in events if (e.origin, e.seq) not in new_keys]
    if not rest:
        return InsertOutcome(new, [], [])
    same = await conn.fetch(
        "SELECT s.origin, s.seq FROM staged_events s JOIN events e"
        " ON e.origin = s.origin AND e.seq = s.seq AND e.event_id = s.event_id AND e.envelope = s.envelope"
        " WHERE (s.origin, s.seq) IN (SELECT * FROM unnest($1::text[], $2::bigint[]))",
        [e.origin for e in rest],
        [e.seq for e in rest],
    )
    same_keys = {(r["origin"], r["seq"]) for r in same}
    replays = [e for e in rest if (e.origin, e.seq) in same_keys]
    conflicts = [e for e in rest if (e.origin, e.seq) not in same_keys]
    return InsertOutcome(new, replays, conflicts)


async def upsert_records(conn: Connection, events: Iterable[StoredEvent], fresh: Collection[str] = ()) -> None:
    """Make each record's state the one of its highest-seq event; never cross origins.

    ``fresh`` are ids of records the caller knows no row holds: the ledger, under its
    origin's head lock, found none. Their rows are COPYed straight into ``record_states``, which
    costs half of staging them for an upsert (a bulk ingest is nearly all new records); if
    a row did appear meanwhile, the primary key refuses the whole batch rather than either
    row being lost.

    In the same transaction, measures applied because of a record these events take out of
    force are marked lifted (:mod:`credex.node.store.lifting`), so the two cannot part.
    """
    events = list(events)
    latest: dict[str, StoredEvent] = {}
    for event in events:
        held = latest.get(event.record_id)
        if held is None or held.seq < event.seq:
            latest[event.record_id] = event
    if not latest:
        return
    new = [e.state_row() for e in latest.values() if e.record_id in fresh]
    held_rows = [e.state_row() for e in latest.values() if e.record_id not in fresh]
    if new:
        await conn.copy_records_to_table("record_states", records=new, columns=STATE_COLUMNS)
    if held_rows:
        await conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS staged_record_states (LIKE record_states) ON COMMIT DELETE ROWS"
        )
        await conn.execute("TRUNCATE staged_record_states")
        await conn.copy_records_to_table("staged_record_states", records=held_rows, columns=STATE_COLUMNS)
        await conn.execute(
            "INSERT INTO record_states AS r SELECT * FROM staged_record_states"
            " ON CONFLICT (record_id) DO UPDATE SET"
            " subject_id = EXCLUDED.subject_id, kind = EXCLUDED.kind, seq = EXCLUDED.seq,"
            " status = EXCLUDED.status, sharing_level = EXCLUDED.sharing_level,"
            " publicity_end = EXCLUDED.publicity_end, digest = EXCLUDED.digest, record = EXCLUDED.record,"
            " disputed = EXCLUDED.disputed, record_at = EXCLUDED.record_at, record_len = EXCLUDED.record_len"
            " WHERE r.seq < EXCLUDED.seq AND r.origin = EXCLUDED.origin"
        )
    await _upsert_subject_states(conn, (event.state for event in latest.values()))
    await lifting.lift_measures(conn, events)


class Statistics:
    """When a bulk load that keeps on (intake, catch-up) refreshes the planner's statistics: as the table grows.

    A fixed step (every :data:`ANALYZE_AFTER` rows) ANALYZEs a table of ten million rows a
    thousand times while it is taken in, each time sampling it anew, and intake waits for
    each. The statistics steer plans by orders of magnitude, so they are refreshed once the
    rows written since the last refresh reach a share of the table as ANALYZE last saw it
    (autovacuum's own rule, which runs only once a minute), and never before ``floor`` rows:
    a log taken in from empty to 10M events gets 59 refreshes instead of 1,000 (10 up to
    100,000 rows, then about 24 per tenfold growth). Rows are counted as intake applies
    events, nearly one record row each; rows others write are autovacuum's to notice.
    """

    def __init__(self, floor: int = ANALYZE_AFTER, share: float = 0.1) -> None:
        self.floor = floor
        self.share = share
        self._written = 0
        self._due = floor

    def due(self, written: int) -> bool:
        """Count ``written`` rows; whether the statistics are to be refreshed now.

        True once per refresh: the count starts again at once, so batches applied while
        the refresh runs (other origins, sync beside Kafka) do not each start their own,
        and a refresh that fails is tried again only after as many rows again.
        """
        self._written += written
        if self._written < self._due:
            return False
        self._written = 0
        return True

    async def refresh(self, conn: Connection) -> None:
        """ANALYZE, and set the next refresh by the table's size as ANALYZE found it."""
        await analyze_after_bulk_load(conn)
        rows = await conn.fetchval("SELECT reltuples FROM pg_class WHERE oid = 'record_states'::regclass")
        self._due = max(self.floor, int(self.share * max(0.0, rows or 0.0)))


async def analyze_after_bulk_load(conn: Connection) -> None:
    """Refresh the planner's statistics of the tables a bulk load grows; until autovacuum catches
    up, stale ones make every lookup scan. ``records`` is a view, which ANALYZE skips with only a
    warning: its figures are those of ``record_states``, and of ``events``, where the view reads
    record bytes from."""
    await conn.execute("ANALYZE record_states")
    await conn.execute("ANALYZE events")


def entry_status(status: int, publicity_end: dt.date | None, today: dt.date) -> int:
    """A record's status as answered today: an active record past its origin's window end is expired."""
    if status == lookup_pb2.ENTRY_STATUS_ACTIVE and publicity_end is not None and publicity_end < today:
        return lookup_pb2.ENTRY_STATUS_EXPIRED
    return status


def in_force(status: int, publicity_end: dt.date | None, today: dt.date) -> bool:
    """The one definition of "in force" for checks and reports: active, inside the window its origin set."""
    return entry_status(status, publicity_end, today) == lookup_pb2.ENTRY_STATUS_ACTIVE


def search_key(text: str) -> str:
    """``text`` folded as the subjects table's ``name_key``: half width, simplified, no spaces, upper case.

    Stored names and search queries pass the same function, so any form a name is
    typed in (繁體 or 简体, full or half width, spaced or not) meets the same key.
    """
    return name_key(text).upper()


# A subject is named again by every record about it, in batch after batch: its stored name is folded
# once while it keeps recurring, not per batch (a fold is several microseconds of the store step).
# Only stored names pass through this cache, never a caller's query.
_stored_name_key = recurring(maxsize=32768, key_chars=MEMO_KEY_CHARS)(search_key)


def code_key(text: str) -> str:
    """A code or code fragment as codes are stored: half width, no spaces, upper case."""
    return "".join(unicodedata.normalize("NFKC", text).split()).upper()


async def backfill_subjects(conn: Connection, batch: int = 10000) -> int:
    """Fill an empty subjects table from the records already held; returns the subjects written.

    A store that held records before search existed (migration 0010) has none of their
    subjects to search; names live only inside the stored record bytes, so they are
    decoded here, off the event loop, a batch at a time. Does nothing once the table
    has rows: from then on every upsert keeps it in step.
    """
    if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM subjects)"):
        return 0
    written, after = 0, ""
    while True:
        rows = await conn.fetch(
            "SELECT record_id, record FROM records WHERE record_id > $1 ORDER BY record_id LIMIT $2", after, batch
        )
        if not rows:
            return written
        states = await asyncio.to_thread(
            lambda raws: [RecordState.decode(raw) for raw in raws], [bytes(r["record"]) for r in rows]
        )
        await _upsert_subject_states(conn, states)
        written += len({s.subject_id for s in states if s.subject_name})
        after = rows[-1]["record_id"]


async def _upsert_subject_states(conn: Connection, given: Iterable[RecordState]) -> None:
    """Keep each subject's searchable name in step: one statement for the batch, rows rewritten only on change.

    Names are folded once per distinct subject while it recurs (see ``_stored_name_key``),
    so bulk intake pays little; the name of the latest record stored about a subject wins.
    """
    named: dict[str, RecordState] = {}
    for state in given:
        if state.subject_name and state.subject_id:
            named[state.subject_id] = state
    if not named:
        return
    states = list(named.values())
    # A peer's signed record may carry what text columns cannot hold (NUL) or an absurd name:
    # search gets a storable prefix instead of the batch failing.
    names = [s.subject_name.replace("\x00", "")[:MAX_NAME_CHARS] for s in states]
    await conn.execute(
        "INSERT INTO subjects AS s (subject_id, subject_type, name, name_key)"
        " SELECT * FROM unnest($1::text[], $2::smallint[], $3::text[], $4::text[])"
        " ON CONFLICT (subject_id) DO UPDATE SET"
        " subject_type = EXCLUDED.subject_type, name = EXCLUDED.name, name_key = EXCLUDED.name_key"
        " WHERE (s.subject_type, s.name) IS DISTINCT FROM (EXCLUDED.subject_type, EXCLUDED.name)",
        [s.subject_id for s in states],
        [s.subject_type for s in states],
        names,
        [_stored_name_key(name) for name in names],
    )


async def advance_progress(conn: Connection, origin: str) -> tuple[int, int]:
    """Move the origin's gap-free watermark as far as the stored events allow.

    Returns (contiguous_seq, max_seq). The walk starts at the old watermark, so
    its cost is the length of the newly closed stretch, not of the whole log. The
    origin's tiles grow with the watermark, in the same transaction.
    """
    row = await conn.fetchrow(
        "INSERT INTO origin_progress (origin) VALUES ($1) ON CONFLICT (origin) DO UPDATE SET origin = EXCLUDED.origin"
        " RETURNING contiguous_seq",
        origin,
    )
    assert row is not None
    contiguous = int(row["contiguous_seq"])
    new_contiguous = await conn.fetchval(
        "SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM events WHERE origin = $1 AND seq = $2 + 1) THEN $2"
        " ELSE (SELECT min(e.seq) FROM events e WHERE e.origin = $1 AND e.seq > $2"
        "       AND NOT EXISTS (SELECT 1 FROM events n WHERE n.origin = e.origin AND n.seq = e.seq + 1)) END",
        origin,
        contiguous,
    )
    max_seq = await conn.fetchval("SELECT coalesce(max(seq), 0) FROM events WHERE origin = $1", origin)
    await conn.execute(
        "UPDATE origin_progress SET contiguous_seq = $2, max_seq = $3, updated_at = now() WHERE origin = $1",
        origin,
        new_contiguous,
        max_seq,
    )
    await tiles.cover(conn, origin, contiguous, int(new_contiguous))
    return int(new_contiguous), int(max_seq)


async def count(conn: Connection, origin: str, outcome: str, n: int) -> None:
    if n:
        await conn.execute(
            "INSERT INTO intake_counters (origin, outcome, n) VALUES ($1, $2, $3)"
            " ON CONFLICT (origin, outcome) DO UPDATE SET n = intake_counters.n + EXCLUDED.n",
            origin,
            outcome,
            n,
        )
