"""The check itself: records in force, hits with their catalogue measures, incentives, 告知承诺; and feedback.

Only records **in force** count (credit-use.md, Check rule 3): status active and inside
the publicity window the ORIGIN set when it published the record (``publicity_end`` is
the origin's own window, computed by its rules with :mod:`credex.domain.publicity` and
signed into the record), so whichever node answers, the origin's rules apply. Revoked,
repaired, deleted and hidden records are out (:func:`credex.node.store.events.in_force`).
A record under an open objection stays in force and its hit says it is disputed.

A subject's responsible persons (legal representative, principal, actual controller),
named by the caller and already pseudonymized (:mod:`credex.node.checks.persons`), add
their own records in force as hits of the subject, marked with the person and role.
They do not decide the subject's incentives or 告知承诺: those follow the subject's own
records, as the catalogue's triggers are written for the subject.

A check and every subject's answer (the measure ids it was told, and the records each
rests on) are stored before the answer leaves, so feedback can be held to what was
returned and a record's repair or revocation finds the measures applied because of it
(node/store/lifting.py): :func:`run_check` gives their rows, and the service commits them
with the call's audit rows (one group commit for both, node/services/audit_trail.py).
The free text kept with them (purpose, basis, reason, result) has any resident ID number
a caller typed into it withheld: only pseudonyms name persons in these tables.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

import asyncpg

from credex.domain.measures import Catalogue, Measure
from credex.domain.persons import withhold
from credex.domain.publicity import publicity_today
from credex.domain.regions import is_origin_code
from credex.errors import CredexError
from credex.node.checks import verdicts, wire
from credex.node.store import lifting
from credex.node.store.events import record_sql
from credex.v1 import lookup_pb2, record_pb2

# (sharing level, entry status, kind) -> whether the caller may see such a record; decided by the services.
Visibility = Callable[[int, int, int], bool]

_ACTIVE = lookup_pb2.ENTRY_STATUS_ACTIVE
# A check reads only records in force that the caller may see ($3: today; $4: the sharing levels it sees
# of an active record), as :func:`credex.node.store.events.in_force` and Caller.sees decide (a test holds
# the two to each other). Of those it parses the kinds some trigger names ($2), and each subject's first
# record of any kind, whose subject type decides which incentives fit. The record's bytes are read (from
# its event's envelope, migration 0029) only for the rows kept: a subject's licences and the like are
# counted and dropped without them (measured on 100 subjects of about ten records: 3.4-3.5 -> 2.5-2.7 ms),
# and from the state row already in hand rather than through the view ``records``, which found each kept
# row again by its key (100 subjects of five records, 150 kept: 2.2-2.5 -> 1.6-1.8 ms).
_RECORDS_QUERY = (
    "SELECT f.subject_id, f.origin, f.record_id, f.kind, " + record_sql("f") + ", f.disputed, f.publicity_end,"
    " f.relevant FROM ("
    " SELECT subject_id, origin, record_id, kind, disputed, publicity_end, record, record_at, record_len, seq,"
    "  kind = ANY($2::smallint[]) AS relevant,"
    "  row_number() OVER (PARTITION BY subject_id ORDER BY origin, record_id) AS n"
    " FROM record_states"
    " WHERE subject_id = ANY($1::text[]) AND status = " + str(_ACTIVE) + ""
    "  AND (publicity_end IS NULL OR publicity_end >= $3) AND sharing_level = ANY($4::smallint[])"
    ") f WHERE f.relevant OR f.n = 1 ORDER BY f.subject_id, f.origin, f.record_id"
)
# How a check and its answers are stored (migration 0013): the caller commits these rows, before it answers.
CHECK_COLUMNS = (
    "check_id",
    "at",
    "caller",
    "role",
    "requesting_unit",
    "scenario",
    "purpose",
    "legal_basis",
    "subjects",
)
# measure_records: {measure id: [record id, ...]} as JSON; hit_records: every record the check hit.
ANSWER_COLUMNS = ("check_id", "checked_at", "subject_id", "measure_ids", "measure_records", "hit_records")
_OUTCOMES = ("punished", "rewarded", "not_adopted")
# A department's code as platforms send it (Taizhou's bizDept; a USCC of an organ fits too): a code, not a name.
_DEPARTMENT_CODE = re.compile(r"[0-9A-Za-z](?:[0-9A-Za-z.-]*[0-9A-Za-z])?")
MAX_REASON = 500


class CheckFailure(CredexError):
    """A check or feedback refused; ``code`` is the gRPC status name the service answers with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Responsible:
    """A responsible person linked to a subject: whose records (by pseudonym) count as the subject's hits."""

    subject: str
    person: str  # the pseudonym
    role: int  # check_pb2.ResponsibleRole


@dataclass(frozen=True, slots=True)
class CheckRequest:
    """Who checks which subjects (USCCs and persons' pseudonyms), in which scenario, for what, on which basis."""

    subjects: Sequence[str]
    scenario: str
    requesting_unit: str
    purpose: str
    legal_basis: str
    caller: str
    role: str
    responsible: Sequence[Responsible] = ()


@dataclass(slots=True)
class SubjectAnswer:
    """One subject's answer: what the audit trail and the check's row keep of it, and its bytes on the wire.

    The hits are not kept as objects: each is written to the wire (:mod:`credex.node.checks.wire`)
    as it is judged, and named here by its record (and the responsible person it came through).
    """

    subject_id: str
    hits: list[str]  # each hit as the audit trail names it: the record id, "… via <pseudonym>" for a person's
    measure_ids: list[str]  # every measure the subject was told of: what its feedback may name
    measure_records: str  # JSON {measure id: [record id, ...]}: what lifts a hit measure when they leave force
    hit_records: list[str]  # every record hit, once
    notify_commit_available: bool
    excluded_by: tuple[str, ...]
    wire: bytes  # the SubjectAnswer message


def unit_region(requesting_unit: str) -> str | None:
    """The implementing unit's division (USCC characters 3–8): whose provincial measures it may apply."""
    division = requesting_unit[2:8]
    return division if is_origin_code(division) else None


@dataclass(frozen=True, slots=True)
class Check:
    """A check answered: its id and time, the scenario's code, every subject's answer, and its rows to store."""

    check_id: uuid.UUID
    at: dt.datetime
    scenario: str
    answers: list[SubjectAnswer]
    request: CheckRequest

    def check_row(self) -> tuple[object, ...]:
        """The ``checks`` row, in :data:`CHECK_COLUMNS` order."""
        r = self.request
        subjects = len(self.answers)
        return (
            self.check_id,
            self.at,
            r.caller,
            r.role,
            r.requesting_unit,
            self.scenario,
            withhold(r.purpose),
            withhold(r.legal_basis),
            subjects,
        )

    def answer_rows(self) -> list[tuple[object, ...]]:
        """A ``check_answers`` row per subject (the measure ids it was told: what feedback may name)."""
        check_id, at = self.check_id, self.at
        return [(check_id, at, a.subject_id, a.measure_ids, a.measure_records, a.hit_records) for a in self.answers]

    def wire(self) -> bytes:
        """The CheckResponse this check answers, encoded."""
        return wire.response(str(self.check_id), self.scenario, (a.wire for a in self.answers))


async def run_check(
    pool: asyncpg.Pool,
    catalogue: Catalogue,
    request: CheckRequest,
    sees: Visibility,
    today: dt.date | None = None,
) -> Check:
    """Answer every distinct subject once, in the order first named; the check's rows are the caller's to store.

    One statement reads every subject's records. Only records in force that the caller
    may see count, for hits, incentives and 告知承诺 alike. The service commits the
    check's rows with the call's audit rows, in one transaction shared with other calls
    (node/services/audit_trail.py), before the answer leaves: a check answered is a
    check stored, and feedback can be held to what it returned.
    """
    day = today or publicity_today()
    scenario = catalogue.scenario(request.scenario).code
    index = verdicts.index_of(catalogue)
    place = index.place(scenario, unit_region(request.requesting_unit))
    distinct = list(dict.fromkeys(request.subjects))
    linked: defaultdict[str, list[Responsible]] = defaultdict(list)
    for link in dict.fromkeys(request.responsible):
        linked[link.subject].append(link)
    wanted = list(dict.fromkeys([*distinct, *(link.person for link in request.responsible)]))
    async with pool.acquire() as conn:
        levels = _levels(sees)
        rows = await conn.fetch(_RECORDS_QUERY, wanted, _kinds(sees, index.kinds, levels), day, levels)
    found = _found(rows, place)
    answers = [_answer(place, code, found, linked.get(code, ()), day) for code in distinct]
    return Check(uuid.uuid4(), dt.datetime.now(dt.UTC), scenario, answers, request)


def _levels(sees: Visibility) -> list[int]:
    """The sharing levels of which the caller sees an active record: asked of ``sees`` itself, never restated."""
    return [level for level in record_pb2.SharingLevel.values() if sees(level, _ACTIVE, record_pb2.KIND_UNSPECIFIED)]


def _kinds(sees: Visibility, kinds: Iterable[int], levels: Sequence[int]) -> list[int]:
    """Of ``kinds``, those the caller may be shown at a level it sees (a risk class only to supervision)."""
    return [kind for kind in kinds if any(sees(level, _ACTIVE, kind) for level in levels)]


@dataclass(slots=True)
class _Subject:
    """One subject's (or person's) records in force of the kinds a trigger names, judged, and its type.

    Two lists side by side, an item each record: what the catalogue judged (the record, its
    signature, the verdict), and what only a hit shows (origin, record id, window end,
    disputed). Tuples, not objects: a check of a thousand subjects makes thousands.
    """

    subject_type: int = record_pb2.SUBJECT_TYPE_LEGAL_ENTITY  # of a subject with no record in force
    judged: list[verdicts.Judged] = field(default_factory=list)
    held: list[tuple[str, str, dt.date | None, bool]] = field(default_factory=list)


def _found(rows: list[asyncpg.Record], place: verdicts.Place) -> dict[str, _Subject]:
    by_subject: dict[str, _Subject] = {}
    signature, verdict, parse = verdicts.signature, place.verdict, record_pb2.Record.FromString
    for subject_id, origin, record_id, kind, raw, disputed, window_end, relevant in rows:
        record = parse(raw)
        subject = by_subject.get(subject_id)
        if subject is None:  # the subject's first record in force, of whatever kind: its type
            subject = by_subject[subject_id] = _Subject(record.subject.type)
        if relevant:
            signed = signature(record, kind)
            subject.judged.append((record, signed, verdict(record, signed)))
            subject.held.append((origin, record_id, window_end, disputed))
    return by_subject


_NOBODY = _Subject()
_NO_MEASURES = "{}"
_JSON = json.JSONEncoder(ensure_ascii=False)  # what json.dumps(..., ensure_ascii=False) writes, made once


def _identifying_unit(record: record_pb2.Record, signed: verdicts.Signature) -> str:
    """The unit a hit names: a list's identifying unit (认定单位), else the deciding authority."""
    return (signed[2] == "black_list" and record.black_list.identifying_unit.name) or record.deciding_authority.name


# The ids of the incentives a place offers, by the tuple it keeps: most subjects are offered the same few.
_IDS: dict[int, tuple[tuple[Measure, ...], list[str]]] = {}


def _ids(measures: tuple[Measure, ...]) -> list[str]:
    """The measures' ids in order; the list is shared by every answer offered the same measures, never changed."""
    held = _IDS.get(id(measures))
    if held is None or held[0] is not measures:
        if len(_IDS) >= verdicts.MAX_KEPT:
            _IDS.clear()
        held = _IDS[id(measures)] = (measures, [m.id for m in measures])
    return held[1]


def _answer(
    place: verdicts.Place,
    subject: str,
    found: Mapping[str, _Subject],
    responsible: Sequence[Responsible],
    today: dt.date,
) -> SubjectAnswer:
    own = found.get(subject, _NOBODY)
    if not own.judged and not responsible:  # most subjects: nothing in force that the catalogue names
        incentives = place.incentives((), today, own.subject_type)
        return SubjectAnswer(subject, [], _ids(incentives), _NO_MEASURES, [], True, (), wire.clean(subject, incentives))
    hits: list[bytes] = []
    shown: list[str] = []
    hit_records: dict[str, None] = {}
    measure_records: dict[str, list[str]] = {}
    people: list[tuple[Responsible | None, _Subject]] = [(None, own)]
    people += [(person, found.get(person.person, _NOBODY)) for person in responsible]
    for person, held in people:
        for (record, signed, verdict), (origin, record_id, window_end, disputed) in zip(
            held.judged, held.held, strict=True
        ):
            if not verdict.is_hit:
                continue
            hits.append(
                wire.hit(
                    origin,
                    record_id,
                    wire.judged(verdict, record),
                    record.decision_date,
                    window_end.isoformat() if window_end else "",
                    disputed,
                    _identifying_unit(record, signed),
                    person.role if person else 0,
                    person.person if person else "",
                )
            )
            shown.append(f"{record_id} via {person.person}" if person else record_id)
            hit_records[record_id] = None
            for measure in verdict.measures:
                ids = measure_records.setdefault(measure.id, [])
                if record_id not in ids:
                    ids.append(record_id)
    incentives = place.incentives(own.judged, today, own.subject_type)
    offered = _ids(incentives)
    # 告知承诺 follows the subject's own records only (as Catalogue.notify_commit does).
    excluded = tuple(
        record_id
        for (_, _, verdict), (_, record_id, _, _) in zip(own.judged, own.held, strict=True)
        if verdict.excludes_notify_commit
    )
    return SubjectAnswer(
        subject_id=subject,
        hits=shown,
        measure_ids=list(dict.fromkeys([*measure_records, *offered])) if measure_records else offered,
        measure_records=_JSON.encode(measure_records) if measure_records else _NO_MEASURES,
        hit_records=list(hit_records),
        notify_commit_available=not excluded,
        excluded_by=excluded,
        wire=wire.answer(subject, hits, wire.incentives(incentives), not excluded, excluded),
    )


@dataclass(frozen=True, slots=True)
class Feedback:
    """应用情况反馈 against a check: what the unit applied to one subject, with what outcome."""

    check_id: str
    subject_id: str
    measures_applied: Sequence[str]
    outcome: str  # punished, rewarded or not_adopted
    reason: str
    amount_yuan: str
    basis: str
    district_code: str
    department: str
    applied_on: str
    caller: str
    result: str = ""  # what was done, in words (罚款10万元)
    department_code: str = ""


async def record_feedback(pool: asyncpg.Pool, feedback: Feedback) -> dt.datetime:
    """Validate and store one feedback; :class:`CheckFailure` with nothing stored if it is not acceptable."""
    check_id = _check_id(feedback.check_id)
    amount, applied_on = _validate_fields(feedback)
    async with pool.acquire() as conn, conn.transaction():
        made = await conn.fetchrow("SELECT caller, at FROM checks WHERE check_id = $1", check_id)
        if made is None:
            raise CheckFailure("NOT_FOUND", f"no check {feedback.check_id} on this node")
        if made["caller"] != feedback.caller:
            raise CheckFailure("PERMISSION_DENIED", "the check was made by another caller; only it files feedback")
        # Read in this transaction, with the row held: the tables are partitioned, so no foreign key does it.
        answer = await conn.fetchrow(
            "SELECT measure_ids, hit_records FROM check_answers WHERE check_id = $1 AND subject_id = $2 FOR KEY SHARE",
            check_id,
            feedback.subject_id,
        )
        if answer is None:
            raise CheckFailure("INVALID_ARGUMENT", f"subject {feedback.subject_id} was not part of the check")
        returned = answer["measure_ids"]
        unknown = [m for m in feedback.measures_applied if m not in returned]
        if unknown:
            raise CheckFailure(
                "INVALID_ARGUMENT",
                f"measures_applied names measures the check did not return for the subject: {', '.join(unknown)}",
            )
        at: dt.datetime | None = await conn.fetchval(
            "INSERT INTO check_feedback (check_id, subject_id, checked_at, caller, measures_applied, outcome, reason,"
            " amount_yuan, basis, district_code, department, applied_on, result, department_code, hit_records)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
            " ON CONFLICT (check_id, subject_id, checked_at) DO NOTHING RETURNING at",
            check_id,
            feedback.subject_id,
            made["at"],
            feedback.caller,
            list(feedback.measures_applied),
            feedback.outcome,
            withhold(feedback.reason),
            amount,
            withhold(feedback.basis),
            feedback.district_code,
            withhold(feedback.department),
            applied_on,
            withhold(feedback.result),
            withhold(feedback.department_code),
            answer["hit_records"],  # what lifting searches by (node/store/lifting.py): the answer's, copied
        )
        if at is None:
            raise CheckFailure("ALREADY_EXISTS", "feedback for this check and subject was already filed")
        if feedback.outcome != "not_adopted":
            await lifting.lift_already_out(conn, check_id, feedback.subject_id, made["at"])
        return at


def _check_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise CheckFailure("INVALID_ARGUMENT", "check_id is not a check id (a UUID a Check answered)") from None


def _validate_fields(feedback: Feedback) -> tuple[Decimal | None, dt.date]:
    if feedback.outcome not in _OUTCOMES:
        raise CheckFailure("INVALID_ARGUMENT", "outcome is required: punished, rewarded or not_adopted")
    if feedback.outcome == "not_adopted" and not feedback.reason.strip():
        raise CheckFailure("INVALID_ARGUMENT", "a not-adopted outcome (未采纳) needs a reason")
    amount = None
    if feedback.amount_yuan:
        try:
            amount = Decimal(feedback.amount_yuan)
        except InvalidOperation:
            amount = None
        if amount is None or not amount.is_finite() or amount < 0 or amount.as_tuple().exponent < -2:  # type: ignore[operator]
            raise CheckFailure("INVALID_ARGUMENT", "amount_yuan must be an exact amount in yuan such as 12000.50")
    if feedback.district_code and not is_origin_code(feedback.district_code):
        raise CheckFailure("INVALID_ARGUMENT", "district_code must be a GB/T 2260 division code")
    if feedback.department_code and not _DEPARTMENT_CODE.fullmatch(feedback.department_code):
        raise CheckFailure(
            "INVALID_ARGUMENT",
            "department_code must be a code: ASCII letters and digits, with '.' or '-' inside (the name goes in"
            " department)",
        )
    try:
        applied_on = dt.date.fromisoformat(feedback.applied_on)
    except ValueError:
        raise CheckFailure("INVALID_ARGUMENT", "applied_on must be a date YYYY-MM-DD") from None
    return amount, applied_on
