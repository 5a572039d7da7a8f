"""Measures lifted: when a record leaves force, the measures applied because of it are marked lifted.

A department that checked a subject and reported (应用情况反馈) that it applied measures
because of a record must learn when that record is repaired, revoked, deleted or ended by
an objection's outcome, or hidden for a bankruptcy restructuring (credit-use.md, Repair 4,
8 and 9). Every node that holds such feedback marks those measures lifted — with the
origin's event that lifted them, its date and the reason — in the transaction that applies
the event (:func:`credex.node.store.events.upsert_records` calls :func:`lift_measures`), so
a crash cannot apply the event and lose the lift. UNHIDE reinstates what HIDE lifted, unless
it brings the record back expired (its window ended while hidden): then the lift lasts.

The window ending by itself (the daily EXPIRE) lifts nothing here: the measure's term was
known to the department when it applied it; only a decision it could not foresee is news.

credex derives no grade or evaluation from records: an origin's evaluation or grade
record is left as the origin signed it when another of its records is repaired, and a new
grade the origin publishes arrives as a record like any other. Nothing is recomputed here.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from credex.node.store.database import Connection
from credex.v1 import event_pb2, lookup_pb2

if TYPE_CHECKING:
    from credex.node.store.events import StoredEvent

CHINA = ZoneInfo("Asia/Shanghai")
# Standings a record leaves force for, and the reason a lifted measure is shown with.
_REASONS: dict[int, str] = {
    lookup_pb2.ENTRY_STATUS_REPAIRED: "repaired",
    lookup_pb2.ENTRY_STATUS_REVOKED: "revoked",
    lookup_pb2.ENTRY_STATUS_DELETED: "deleted",
    lookup_pb2.ENTRY_STATUS_HIDDEN: "hidden",
    lookup_pb2.ENTRY_STATUS_EXPIRED: "publication_ended",  # only by an objection's outcome (RESOLVE)
}
# Event types that are a decision to take a record out of force; the standing says which.
_LIFTING = frozenset(
    {
        event_pb2.EVENT_TYPE_REPAIR,
        event_pb2.EVENT_TYPE_REVOKE,
        event_pb2.EVENT_TYPE_HIDE,
        event_pb2.EVENT_TYPE_RESOLVE,
    }
)
_UNHIDE = event_pb2.EVENT_TYPE_UNHIDE
_ACTIVE = lookup_pb2.ENTRY_STATUS_ACTIVE

# One statement for every record a batch takes out of force: $1..$5 the lifts (record, origin,
# reason, event seq, date) as parallel arrays; $6..$8 narrow it to one feedback (or NULL). The
# overlap test finds the feedback on answers that hit any of the records through the GIN index on the
# records each feedback's answer hit (copied onto it when filed: only answers with feedback can lift,
# and checks need not index every answer, migration 0024) in one pass.
# A feedback's measure is lifted when the check's answer says that record triggered it.
# A measure lifted for the while (hidden) that a lasting decision now lifts is told again, as lasting.
# A measure a feedback names twice is one row: DO UPDATE may not touch a row twice in one statement,
# and that error would fail the intake of the origin's event, again on every retry.
_LIFT = (
    "INSERT INTO lifted_measures (check_id, subject_id, checked_at, requesting_unit, caller, measure_id,"
    " record_id, record_origin, reason, event_seq, lifted_on)"
    " SELECT f.check_id, f.subject_id, f.checked_at, c.requesting_unit, f.caller, m.measure_id,"
    " t.record_id, t.origin, t.reason, t.seq, t.lifted_on"
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::date[])"
    " AS t (record_id, origin, reason, seq, lifted_on)"
    " JOIN check_feedback f ON t.record_id = ANY (f.hit_records)"
    " JOIN check_answers a ON a.check_id = f.check_id AND a.subject_id = f.subject_id"
    " AND a.checked_at = f.checked_at"
    " JOIN checks c ON c.check_id = a.check_id AND c.at = a.checked_at"
    " CROSS JOIN LATERAL (SELECT DISTINCT unnest(f.measures_applied)) AS m (measure_id)"
    " WHERE f.hit_records && $1::text[] AND f.outcome <> 'not_adopted'"
    " AND coalesce(a.measure_records -> m.measure_id, '[]'::jsonb) ? t.record_id"
    " AND ($6::uuid IS NULL OR (a.check_id = $6 AND a.subject_id = $7 AND a.checked_at = $8))"
    " ON CONFLICT (check_id, subject_id, measure_id, record_id) WHERE reinstated_seq IS NULL DO UPDATE SET"
    " reason = EXCLUDED.reason, event_seq = EXCLUDED.event_seq, lifted_on = EXCLUDED.lifted_on,"
    " lifted_at = now(), acknowledged_at = NULL, acknowledged_by = NULL"
    " WHERE lifted_measures.reason = 'hidden' AND EXCLUDED.reason <> 'hidden'"
)
# The hiding ended after the record's window did: the UNHIDE brings it back expired, so the measure
# stays lifted, for good now, and the unit is told again.
_ENDED_WHILE_HIDDEN = (
    "UPDATE lifted_measures SET reason = 'window_ended', event_seq = $2, lifted_on = $3, lifted_at = now(),"
    " acknowledged_at = NULL, acknowledged_by = NULL"
    " WHERE record_id = $1 AND reason = 'hidden' AND reinstated_seq IS NULL"
)
# Records of one answer that are out of force now, with the event that put them there.
_ALREADY_OUT = (
    "SELECT r.record_id, r.origin, r.seq, r.status, e.event_type, e.recorded_at"
    " FROM check_answers a CROSS JOIN LATERAL unnest(a.hit_records) AS h (record_id)"
    " JOIN records r ON r.record_id = h.record_id JOIN events e ON e.origin = r.origin AND e.seq = r.seq"
    " WHERE a.check_id = $1 AND a.subject_id = $2 AND a.checked_at = $3 AND r.status <> $4"
)
# The department is told again: the measure applies once more.
_REINSTATE = (
    "UPDATE lifted_measures SET reinstated_seq = $2, reinstated_on = $3, acknowledged_at = NULL,"
    " acknowledged_by = NULL WHERE record_id = $1 AND reason = 'hidden' AND reinstated_seq IS NULL"
)


def china_day(at: dt.datetime) -> dt.date:
    return at.astimezone(CHINA).date()


async def lift_measures(conn: Connection, events: Sequence[StoredEvent]) -> int:
    """Mark lifted (or reinstated) the measures applied because of records these events took out of force.

    Called with the events just applied, after the records table holds their outcome. Judged
    against where each record stands now, not event by event, so an event older than what is
    held (catch-up out of order) lifts or reinstates nothing. Returns the rows written.
    """
    by_record: defaultdict[str, list[StoredEvent]] = defaultdict(list)
    for event in events:
        if event.event_type in _LIFTING or event.event_type == _UNHIDE:
            by_record[event.record_id].append(event)
    if not by_record:
        return 0
    rows = await conn.fetch(
        "SELECT record_id, origin, seq, status FROM records WHERE record_id = ANY($1::text[])", list(by_record)
    )
    written = 0
    lifts = []
    for row in rows:
        # Never cross origins: only the record's own origin's events count.
        applied = sorted(
            (e for e in by_record[row["record_id"]] if e.origin == row["origin"] and e.seq <= row["seq"]),
            key=lambda e: e.seq,
        )
        status = int(row["status"])
        unhidden = [e for e in applied if e.event_type == _UNHIDE]
        if status == lookup_pb2.ENTRY_STATUS_EXPIRED and unhidden and unhidden[-1] is applied[-1]:
            last = unhidden[-1]
            done = await conn.execute(_ENDED_WHILE_HIDDEN, row["record_id"], last.seq, china_day(last.recorded_at))
            written += int(done.rsplit(" ", 1)[1])
        elif status in _REASONS:
            lifting = [e for e in applied if e.event_type in _LIFTING and e.status == status]
            if status == lookup_pb2.ENTRY_STATUS_EXPIRED:
                lifting = [e for e in lifting if e.event_type == event_pb2.EVENT_TYPE_RESOLVE]
            if lifting:
                last = lifting[-1]
                lifts.append(Lift(row["record_id"], row["origin"], status, last.seq, last.recorded_at))
        elif status == lookup_pb2.ENTRY_STATUS_ACTIVE and unhidden:
            last = unhidden[-1]
            done = await conn.execute(_REINSTATE, row["record_id"], last.seq, china_day(last.recorded_at))
            written += int(done.rsplit(" ", 1)[1])
    return written + await lift(conn, lifts)


@dataclass(frozen=True, slots=True)
class Lift:
    """A record out of force by its origin's event: what its applied measures are marked lifted with."""

    record_id: str
    origin: str
    status: int
    seq: int
    at: dt.datetime


async def lift(
    conn: Connection, lifts: Sequence[Lift], feedback: tuple[uuid.UUID, str, dt.datetime] | None = None
) -> int:
    """Mark lifted the measures resting on each record of ``lifts`` (of one feedback, if given); rows written."""
    if not lifts:
        return 0
    check_id, subject_id, checked_at = feedback if feedback is not None else (None, None, None)
    done = await conn.execute(
        _LIFT,
        [x.record_id for x in lifts],
        [x.origin for x in lifts],
        [_REASONS[x.status] for x in lifts],
        [x.seq for x in lifts],
        [china_day(x.at) for x in lifts],
        check_id,
        subject_id,
        checked_at,
    )
    return int(done.rsplit(" ", 1)[1])


def leaves_force(status: int) -> bool:
    """Whether a record standing so has its applied measures lifted (an EXPIRED one only by an objection)."""
    return status in _REASONS


async def lift_already_out(conn: Connection, check_id: uuid.UUID, subject_id: str, checked_at: dt.datetime) -> int:
    """Feedback filed after a record it rests on left force: its measures are lifted as it is filed.

    The lifting event is the one that set the record's standing held now (its ``seq``).
    """
    lifts = [
        Lift(row["record_id"], row["origin"], int(row["status"]), row["seq"], row["recorded_at"])
        for row in await conn.fetch(_ALREADY_OUT, check_id, subject_id, checked_at, _ACTIVE)
        if leaves_force(int(row["status"]))
        # the window ended by itself: nothing the unit could not foresee
        and not (row["status"] == lookup_pb2.ENTRY_STATUS_EXPIRED and row["event_type"] != event_pb2.EVENT_TYPE_RESOLVE)
    ]
    return await lift(conn, lifts, (check_id, subject_id, checked_at))


async def forget_dropped_checks(conn: Connection, before: dt.datetime) -> int:
    """Delete lifted rows of checks retention has dropped (checked before ``before`` and gone); how many.

    They are kept as long as their check, no longer: the check, its answer and its feedback
    are what they report on.
    """
    done = await conn.execute(
        "DELETE FROM lifted_measures l WHERE l.checked_at < $1 AND NOT EXISTS"
        " (SELECT 1 FROM checks c WHERE c.check_id = l.check_id AND c.at = l.checked_at)",
        before,
    )
    return int(done.rsplit(" ", 1)[1])
