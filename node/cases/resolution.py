"""An objection's outcome as a signed RESOLVE: the standing it gives, what a 复核 that overturns it restores,
and when nothing may be signed at all.

Two rules beyond the plain outcome (credit-use.md, Objection 5-6):

- **Overturned on review.** When the review body overturns an outcome that took the record
  out of publication (deleted, delisted, publication ended), the record comes back with the
  standing it had before that outcome, read from the origin's own log (the event just before
  the case's RESOLVE). A record whose window has ended meanwhile comes back expired, never
  active: the origin's window rule is the same whichever event brings a record back. Peers
  see one RESOLVE carrying the restored standing, as with any other outcome. When the review
  overturns a correction or supplement (any review outcome but another correction), the
  content comes back too: the fields the case changed return to the values they had before the
  case's outcome, as the outcome's signed RESOLVE in the origin's log records them (old → new,
  checked against the content held when it was signed), signed in the review's RESOLVE as a
  field-level correction (new → old) with the case reference. A field changed again since (the
  source corrected it meanwhile) is refused, naming it, rather than overwriting the later change.
- **Withdrawn meanwhile.** When the record left publication for good by another act while the
  case was open (revoked at the source, repaired, or deleted by another case), the objection is
  moot: the case is closed ``moot`` and no outcome is signed over the withdrawn record, because an
  outcome over it would either change nothing or bring back what the other act withdrew. Its
  dispute mark goes with it, though: a mark is held by an open case only, so the close signs one
  RESOLVE (outcome ``moot``) that lifts the mark and keeps the withdrawn standing, unless another
  objection to the record is still open. Without it, a correction that later brings a revoked
  record back would show it disputed with no case behind the mark, in every region. A
  record hidden for now (bankruptcy restructuring) is not withdrawn for good: its objection is
  decided as usual and the outcome keeps it hidden (or ends it, if deleted), so that when the
  hiding is lifted the record comes back as decided and without a stale dispute mark.
"""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import grpc

from credex.node.cases.corrections import apply_changes
from credex.node.cases.model import OBJECTION_OUTCOMES, CaseFailure, Kind, State
from credex.node.ledger import Ledger
from credex.node.store import Connection
from credex.node.store.events import WITHDRAWN, standing_of
from credex.v1 import case_pb2, event_pb2, lookup_pb2, record_pb2

MOOT = "moot"
ACTIVE = lookup_pb2.ENTRY_STATUS_ACTIVE
EXPIRED = lookup_pb2.ENTRY_STATUS_EXPIRED
# Standings that end publication for good: an objection to a record that reached one meanwhile is moot.
FINAL = frozenset(WITHDRAWN) - {lookup_pb2.ENTRY_STATUS_HIDDEN}
# The standing each outcome gives; the others keep the record's standing (or restore it, on review).
STANDING_OF: dict[str, int] = {
    "deleted": lookup_pb2.ENTRY_STATUS_DELETED,
    "delisted": lookup_pb2.ENTRY_STATUS_DELETED,
    "publication_ended": EXPIRED,
}
# Outcomes that change the record's content, field by field.
CORRECTING = frozenset({"corrected", "supplemented"})


def standing_name(status: int) -> str:
    return lookup_pb2.EntryStatus.Name(lookup_pb2.EntryStatus.ValueType(status)).removeprefix("ENTRY_STATUS_").lower()


async def record_now(conn: Connection, record_id: str) -> Any:
    row = await conn.fetchrow("SELECT status, disputed, publicity_end FROM records WHERE record_id = $1", record_id)
    assert row is not None  # a case's record is never deleted from the store
    return row


def withdrawn_meanwhile(case: Any, status: int) -> bool:
    """Whether the record is out of publication for good by an act other than the one the case is about.

    Two exceptions: a case under review whose first outcome withdrew the record (that
    withdrawal is what the review is about), and an objection to a repair result (the repair).
    """
    if status not in FINAL:
        return False
    if status == lookup_pb2.ENTRY_STATUS_REPAIRED and _grounds(case) == "repair_result":
        return False  # an objection to a repair result is about the repaired record itself
    own = case["state"] == State.REVIEW and STANDING_OF.get(case["outcome"]) == status
    return not own


def _grounds(case: Any) -> str:
    return case_pb2.CaseFiling.FromString(bytes(case["filing"])).grounds


def moot_reason(record_id: str, status: int) -> str:
    return (
        f"record {record_id} is {standing_name(status)} since the objection was filed: the objection is moot,"
        " and no outcome is signed over a withdrawn record; its dispute mark is lifted, its standing kept"
    )


async def resolve(
    conn: Connection,
    ledger: Ledger,
    case: Any,
    outcome: str,
    opinion: str,
    decided_by: str,
    today: dt.date,
    changes: list[event_pb2.FieldChange] | None = None,
) -> bool:
    """Sign the RESOLVE that carries an objection's outcome; ``False`` (the case is moot) over a record withdrawn
    meanwhile, when only its dispute mark is lifted. The mark stays while another objection to the record is open."""
    record_id = case["record_id"]
    now = await record_now(conn, record_id)
    still_open = await conn.fetchval(
        "SELECT count(*) FROM cases WHERE record_id = $1 AND kind = 'objection' AND at_origin"
        " AND closed_at IS NULL AND case_id <> $2",
        record_id,
        case["case_id"],
    )
    if withdrawn_meanwhile(case, now["status"]):
        if now["disputed"] and not still_open:
            await ledger.amend(
                conn,
                record_id,
                event_pb2.EVENT_TYPE_RESOLVE,
                moot_reason(record_id, now["status"]),
                disputed=False,
                case=event_pb2.CaseRef(
                    case_id=case["case_id"], kind=Kind.OBJECTION, outcome=MOOT, decided_by=decided_by
                ),
            )
        return False
    standing = STANDING_OF.get(outcome)
    # A review decided (not withdrawn: then the first outcome stands) replaces the first outcome.
    reviewed = case["state"] == State.REVIEW and outcome in OBJECTION_OUTCOMES
    if standing is None and reviewed and case["outcome"] in STANDING_OF:
        standing = await _restored(conn, ledger.origin, case, now["publicity_end"], today)
    new_record: record_pb2.Record | None = None
    if outcome in CORRECTING:
        new_record = apply_changes(await _content(conn, record_id), changes or [])
    elif reviewed and case["outcome"] in CORRECTING:
        changes = await _undone(conn, ledger.origin, case)
        try:
            new_record = apply_changes(await _content(conn, record_id), changes)
        except CaseFailure as exc:
            raise CaseFailure(
                exc.code,
                f"the {case['outcome']} outcome of case {case['case_id']} cannot be undone: {exc.message} (the field"
                " was changed again since); decide the review as corrected with the changes meant",
            ) from None
    await ledger.amend(
        conn,
        record_id,
        event_pb2.EVENT_TYPE_RESOLVE,
        opinion or outcome,
        standing=standing,
        disputed=bool(still_open),
        case=event_pb2.CaseRef(
            case_id=case["case_id"],
            kind=Kind.OBJECTION,
            outcome=outcome,
            changes=changes or [],
            decided_by=decided_by,
        ),
        record=new_record,
    )
    return True


async def _restored(conn: Connection, origin: str, case: Any, window_end: dt.date | None, today: dt.date) -> int:
    """The standing the record had before this case's first outcome withdrew it; expired if its window ended since."""
    _, before = await _outcome_in_log(conn, origin, case)
    prior = standing_of(before.type, before.standing)
    if prior == ACTIVE and window_end is not None and window_end < today:
        return EXPIRED
    return prior


async def _content(conn: Connection, record_id: str) -> record_pb2.Record:
    held = await conn.fetchval("SELECT record FROM records WHERE record_id = $1", record_id)
    return record_pb2.Record.FromString(bytes(held))


async def _undone(conn: Connection, origin: str, case: Any) -> list[event_pb2.FieldChange]:
    """The changes that take back the fields this case's first outcome changed, new → old, read from the log."""
    outcome_event, _ = await _outcome_in_log(conn, origin, case)
    return [
        event_pb2.FieldChange(field=c.field, old_value=c.new_value, new_value=c.old_value)
        for c in outcome_event.case.changes
    ]


async def _outcome_in_log(conn: Connection, origin: str, case: Any) -> tuple[event_pb2.Event, event_pb2.Event]:
    """The RESOLVE that signed this case's first outcome, and the record's event just before it, from the log."""
    rows = await conn.fetch(
        "SELECT seq, event_type, envelope FROM events WHERE origin = $1 AND record_id = $2 ORDER BY seq DESC",
        origin,
        case["record_id"],
    )
    events = [event_pb2.Event.FromString(_payload(row["envelope"])) for row in rows]
    for event, before in itertools.pairwise(events):
        ours = event.case.case_id == case["case_id"] and event.case.outcome == case["outcome"]
        if event.type == event_pb2.EVENT_TYPE_RESOLVE and ours:
            return event, before
    raise CaseFailure(
        grpc.StatusCode.FAILED_PRECONDITION,
        f"the origin's log holds no {case['outcome']} outcome of case {case['case_id']} to overturn; nothing signed",
    )


def _payload(envelope: bytes) -> bytes:
    return event_pb2.Envelope.FromString(bytes(envelope)).payload
