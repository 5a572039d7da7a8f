"""The check itself: records in force, hits with their catalogue measures, incentives, 告知承诺; and feedback.

Only records **in force** count (credit-use.md, Check rule 3): status active and inside
the publicity window the ORIGIN set when it published the record (``publicity_end`` is
the origin's own window, computed by its rules with :mod:`credex.domain.publicity` and
signed into the record), so whichever node answers, the origin's rules apply. Revoked
records are out. Repaired records and records corrected away after an objection are
not modelled yet (no repair or objection feature exists); when they are, they must be
excluded here too.

A check and every subject's answer (the measure ids it was told) are stored in one
transaction before the answer leaves, so feedback can be held to what was returned.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import asyncpg

from credex.domain.measures import Catalogue, Measure
from credex.domain.regions import is_origin_code
from credex.errors import CredexError
from credex.node.store.events import in_force
from credex.v1 import lookup_pb2, record_pb2

# (sharing level, entry status) -> whether the caller may see such a record; decided by the services.
Visibility = Callable[[int, int], bool]

_ACTIVE = lookup_pb2.ENTRY_STATUS_ACTIVE
_SEVERITIES = {
    record_pb2.SEVERITY_MINOR: "轻微",
    record_pb2.SEVERITY_GENERAL: "一般",
    record_pb2.SEVERITY_SERIOUS: "严重",
}
_RECORDS_QUERY = (
    "SELECT subject_id, record_id, record, status, sharing_level, publicity_end, disputed FROM records"
    " WHERE subject_id = ANY($1::text[]) ORDER BY subject_id, origin, record_id"
)
_OUTCOMES = ("punished", "rewarded", "not_adopted")
MAX_REASON = 500


class CheckFailure(CredexError):
    """A check or feedback refused; ``code`` is the gRPC status name the service answers with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class CheckRequest:
    """Who checks which subjects, in which scenario, for what, on which basis."""

    subjects: Sequence[str]
    scenario: str
    requesting_unit: str
    purpose: str
    legal_basis: str
    caller: str
    role: str


@dataclass(frozen=True, slots=True)
class Hit:
    """One in-force record of a subject and the punishments it triggers in the scenario."""

    record: record_pb2.Record
    window_end: dt.date | None
    measures: tuple[Measure, ...]
    disputed: bool = False  # an objection is open: the hit counts, and the answer shows the mark


@dataclass(frozen=True, slots=True)
class SubjectAnswer:
    subject_id: str
    hits: tuple[Hit, ...]
    incentives: tuple[Measure, ...]
    notify_commit_available: bool
    excluded_by: tuple[str, ...]

    @property
    def measure_ids(self) -> list[str]:
        """Every measure the subject was told of: what its feedback may name."""
        ids = [m.id for hit in self.hits for m in hit.measures] + [m.id for m in self.incentives]
        return list(dict.fromkeys(ids))


def unit_region(requesting_unit: str) -> str | None:
    """The implementing unit's division (USCC characters 3–8): whose provincial measures it may apply."""
    division = requesting_unit[2:8]
    return division if is_origin_code(division) else None


def scale_of(record: record_pb2.Record) -> tuple[str, str]:
    """(list name or severity, the scale it was published in) as the hit shows them."""
    kind = record.WhichOneof("details") or ""
    if record.kind == record_pb2.KIND_PENALTY:
        return _SEVERITIES.get(record.penalty.severity, "未分级"), "处罚严重程度(轻微/一般/严重)"
    if record.kind == record_pb2.KIND_BLACK_LIST:
        return record.black_list.list_name, "black_list"
    if record.kind == record_pb2.KIND_RED_LIST:
        return record.red_list.list_name, "red_list"
    return "", kind


async def run_check(
    pool: asyncpg.Pool,
    catalogue: Catalogue,
    request: CheckRequest,
    sees: Visibility,
    today: dt.date | None = None,
) -> tuple[str, str, list[SubjectAnswer]]:
    """Answer every subject and store the check with its answers in one transaction: (check id, scenario, answers).

    Only records in force that the caller may see count, for hits, incentives and 告知承诺 alike.
    """
    day = today or dt.date.today()
    scenario = catalogue.scenario(request.scenario).code
    region = unit_region(request.requesting_unit)
    distinct = list(dict.fromkeys(request.subjects))
    by_subject: defaultdict[str, list[tuple[record_pb2.Record, dt.date | None]]] = defaultdict(list)
    check_id = uuid.uuid4()
    disputed: set[str] = set()
    async with pool.acquire() as conn:
        for row in await conn.fetch(_RECORDS_QUERY, distinct):
            if not in_force(row["status"], row["publicity_end"], day) or not sees(row["sharing_level"], _ACTIVE):
                continue
            if row["disputed"]:
                disputed.add(row["record_id"])
            record = record_pb2.Record.FromString(row["record"])
            by_subject[row["subject_id"]].append((record, row["publicity_end"]))
        answers = [_answer(catalogue, code, by_subject[code], scenario, region, day, disputed) for code in distinct]
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO checks (check_id, caller, role, requesting_unit, scenario, purpose, legal_basis, subjects)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                check_id,
                request.caller,
                request.role,
                request.requesting_unit,
                scenario,
                request.purpose,
                request.legal_basis,
                len(distinct),
            )
            await conn.executemany(
                "INSERT INTO check_answers (check_id, subject_id, measure_ids) VALUES ($1, $2, $3)",
                [(check_id, a.subject_id, a.measure_ids) for a in answers],
            )
    by_code = {a.subject_id: a for a in answers}
    return str(check_id), scenario, [by_code[code] for code in request.subjects]


def _answer(
    catalogue: Catalogue,
    subject: str,
    records: list[tuple[record_pb2.Record, dt.date | None]],
    scenario: str,
    region: str | None,
    today: dt.date,
    disputed: set[str],
) -> SubjectAnswer:
    hits = tuple(
        Hit(record, end, measures, record.record_id in disputed)
        for record, end in records
        if (measures := tuple(catalogue.measures_for(record, scenario, region=region))) or catalogue.is_negative(record)
    )
    found = [record for record, _ in records]
    subject_type = found[0].subject.type if found else record_pb2.SUBJECT_TYPE_LEGAL_ENTITY
    incentives = catalogue.incentives_for(found, scenario, today, subject_type, region)
    notify = catalogue.notify_commit(found)
    return SubjectAnswer(subject, hits, tuple(incentives), notify.available, notify.excluded_by)


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


async def record_feedback(pool: asyncpg.Pool, feedback: Feedback) -> dt.datetime:
    """Validate and store one feedback; :class:`CheckFailure` with nothing stored if it is not acceptable."""
    check_id = _check_id(feedback.check_id)
    amount, applied_on = _validate_fields(feedback)
    async with pool.acquire() as conn, conn.transaction():
        owner = await conn.fetchval("SELECT caller FROM checks WHERE check_id = $1", check_id)
        if owner is None:
            raise CheckFailure("NOT_FOUND", f"no check {feedback.check_id} on this node")
        if owner != feedback.caller:
            raise CheckFailure("PERMISSION_DENIED", "the check was made by another caller; only it files feedback")
        returned = await conn.fetchval(
            "SELECT measure_ids FROM check_answers WHERE check_id = $1 AND subject_id = $2",
            check_id,
            feedback.subject_id,
        )
        if returned is None:
            raise CheckFailure("INVALID_ARGUMENT", f"subject {feedback.subject_id} was not part of the check")
        unknown = [m for m in feedback.measures_applied if m not in returned]
        if unknown:
            raise CheckFailure(
                "INVALID_ARGUMENT",
                f"measures_applied names measures the check did not return for the subject: {', '.join(unknown)}",
            )
        at: dt.datetime | None = await conn.fetchval(
            "INSERT INTO check_feedback (check_id, subject_id, caller, measures_applied, outcome, reason,"
            " amount_yuan, basis, district_code, department, applied_on)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            " ON CONFLICT (check_id, subject_id) DO NOTHING RETURNING at",
            check_id,
            feedback.subject_id,
            feedback.caller,
            list(feedback.measures_applied),
            feedback.outcome,
            feedback.reason,
            amount,
            feedback.basis,
            feedback.district_code,
            feedback.department,
            applied_on,
        )
        if at is None:
            raise CheckFailure("ALREADY_EXISTS", "feedback for this check and subject was already filed")
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
    try:
        applied_on = dt.date.fromisoformat(feedback.applied_on)
    except ValueError:
        raise CheckFailure("INVALID_ARGUMENT", "applied_on must be a date YYYY-MM-DD") from None
    return amount, applied_on
