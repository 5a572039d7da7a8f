"""Rules, not mapping: the same for every profile, applied in code after a row's fields are converted.

Who the subject is (a USCC, or the pseudonym of a person's ID number), the
record's identity (:mod:`credex.domain.identity`), whether the decision lies in
the future, and the publicity window the kind's regulations give it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from credex.adapters.profile.schema import MappingContext, Problem
from credex.domain import identity
from credex.domain.normalize import ValueRejected
from credex.domain.publicity import penalty_window
from credex.domain.reasons import Reason
from credex.domain.risk import DEFAULT_SCHEME
from credex.v1 import record_pb2

_SERIOUS_PENALTIES = frozenset(
    {
        record_pb2.PENALTY_TYPE_SUSPEND_BUSINESS,
        record_pb2.PENALTY_TYPE_REVOKE_LICENCE,
        record_pb2.PENALTY_TYPE_DETENTION,
        record_pb2.PENALTY_TYPE_RESTRICT_BUSINESS,
        record_pb2.PENALTY_TYPE_RESTRICT_PRACTICE,
        record_pb2.PENALTY_TYPE_ORDER_CLOSURE,
    }
)


def apply_rules(
    record: record_pb2.Record,
    values: dict[str, Any],
    problems: list[Problem],
    context: MappingContext,
    natural_key: Sequence[str],
) -> None:
    """Complete ``record`` (subject, publicity, record id) or add to ``problems``."""
    subject = _subject_identity(record, values, problems, context)
    decision = values.get("decision_date")
    if isinstance(decision, dt.date) and decision > context.day():
        problems.append(Problem(Reason.DATE_FUTURE, "decision_date", f"decision date {decision} is after today"))
    if record.kind == record_pb2.KIND_RISK_CLASS:
        _risk_class(record, problems, context)
    if record.kind == record_pb2.KIND_PENALTY and isinstance(decision, dt.date):
        _penalty_publicity(record, decision, values, context)
    elif record.kind == record_pb2.KIND_LICENCE and isinstance(decision, dt.date):
        _licence_publicity(record, decision, values, problems)
    elif isinstance(decision, dt.date):
        # Lists, grades, commitments...: public from the decision; an end the source gives
        # (a removal from a list, the end of a validity) stops publication.
        record.publicity.start = decision.isoformat()
        end = values.get("publicity.end")
        if isinstance(end, dt.date):
            if end < decision:
                problems.append(
                    Problem(Reason.DATE_ORDER, "publicity.end", f"end {end} is before the decision {decision}")
                )
            record.publicity.end = end.isoformat()
    if problems or not subject:
        return
    key = [str(values.get(path, "")) for path in natural_key]
    record.record_id = identity.record_id(record.origin, record.kind, subject, key)


def _subject_identity(
    record: record_pb2.Record, values: dict[str, Any], problems: list[Problem], context: MappingContext
) -> str:
    subject = record.subject
    if subject.type == record_pb2.SUBJECT_TYPE_UNSPECIFIED:
        subject.type = record_pb2.SUBJECT_TYPE_LEGAL_ENTITY
    if subject.type == record_pb2.SUBJECT_TYPE_NATURAL_PERSON:
        id_number = values.get("person.id_number")
        if not id_number:
            problems.append(Problem(Reason.RIC_MISSING, "证件号码", "a natural person needs an ID number (证件号码)"))
            return ""
        if context.pseudonymizer is None:
            problems.append(
                Problem(
                    Reason.PERSON_NO_PSEUDONYM_KEY,
                    "证件号码",
                    "this node has no pseudonym key (keys.pseudonym_key), so it cannot take in natural persons",
                )
            )
            return ""
        subject.person_pseudonym = context.pseudonymizer.pseudonym(id_number)
        subject.uscc = ""
    elif not subject.uscc:
        problems.append(Problem(Reason.USCC_MISSING, "统一社会信用代码", "统一社会信用代码 is empty"))
        return ""
    return identity.subject_id(record)


def _risk_class(record: record_pb2.Record, problems: list[Problem], context: MappingContext) -> None:
    """The class's symbol in the scheme it was published under; a class outside its scheme is the row's error.

    A profile that names no scheme publishes the national one (国市监信发〔2022〕6号).
    """
    details = record.risk_class
    details.scheme = details.scheme or DEFAULT_SCHEME
    published = details.class_as_published or details.risk_class
    try:
        found = context.risk_schemes.classify(details.scheme, published)
    except ValueRejected as exc:
        problems.append(Problem(exc.reason, "risk_class", exc.message))
        return
    details.risk_class = found.symbol
    details.class_as_published = published


def _penalty_publicity(
    record: record_pb2.Record, decision: dt.date, values: dict[str, Any], context: MappingContext
) -> None:
    penalty = record.penalty
    if penalty.severity == record_pb2.SEVERITY_UNSPECIFIED:
        serious = any(t in _SERIOUS_PENALTIES for t in penalty.types)
        penalty.severity = record_pb2.SEVERITY_SERIOUS if serious else record_pb2.SEVERITY_GENERAL
    window = penalty_window(context.publicity, decision, penalty.severity, values.get("publicity.end"))
    record.publicity.start = window.start.isoformat()
    record.publicity.end = window.end.isoformat()
    record.publicity.earliest_repair = window.earliest_repair.isoformat()


def _licence_publicity(
    record: record_pb2.Record, decision: dt.date, values: dict[str, Any], problems: list[Problem]
) -> None:
    valid_from, valid_to = values.get("licence.valid_from"), values.get("licence.valid_to")
    if isinstance(valid_from, dt.date) and isinstance(valid_to, dt.date) and valid_to < valid_from:
        problems.append(Problem(Reason.DATE_ORDER, "有效期至", f"有效期至 {valid_to} is before 有效期自 {valid_from}"))
    record.publicity.start = decision.isoformat()
    if isinstance(valid_to, dt.date):
        record.publicity.end = valid_to.isoformat()
