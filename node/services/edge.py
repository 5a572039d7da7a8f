"""The node's edge: every gRPC call of every credex service passes through here first.

One place, so that no RPC (nor any added later) can forget a rule:

- **Admission.** A caller may have ``grpc.max_concurrent_calls_per_caller`` calls in
  progress, public callers together ``grpc.public_share`` of the node's
  ``grpc.max_concurrent_calls``, and the node that many; a call over a limit is
  refused at once, before its bytes are even decoded, with RESOURCE_EXHAUSTED (your
  share is used up) or UNAVAILABLE (the node, or its public share, is busy) and a
  reason. The calls that are admitted keep their latency; no caller can take the
  node for itself, and no number of public callers can lock out government callers
  and peers (the rest of the node is theirs). Callers without a certificate count
  by IP address (node/access.py), not by connection.
- **Validation.** The raw request is size-checked, then decoded (bytes that are not
  the method's message are INVALID_ARGUMENT, not UNKNOWN); every text field is
  checked for length and control characters *before* anything normalizes it
  (NFKC can expand a character 18-fold), every integer is in 0..2^63-1 (what the
  database's bigint holds), every ``origin`` is a well-formed division code.
  Error messages quote at most a few characters of what was sent.
- **Audit.** Every call answered, refused or invalid is in the audit trail saying who
  asked what, why, and what was answered; an answer is sent only after its row is
  committed. Calls answered (and NOT_FOUND, an answer about a subject too) have a
  row each. Refusals have a row each only for the first few of one caller, method
  and status in a second (node/services/refusals.py, which the HTTP server shares);
  the rest of that second are summed up in
  one row whose ``calls`` column says how many it stands for, as are calls refused
  for overload, so a caller sending junk cannot grow the audit table faster than a
  few rows a second. Rows older than ``audit.retention_days`` are trimmed
  (node/audit.py).
- **Accounting.** Every outcome, including calls the caller cancelled (its deadline
  passed or it went away), is counted in ``credex_rpc_calls`` by method and status.

A service method reads what the edge learnt with :func:`current` (the caller, for
its role) and records what it answers on the same :class:`Call`; it refuses by
raising :class:`Refused`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import datetime as dt
import functools
import itertools
import logging
import re
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message

from credex.crypto.trust import TrustBundle
from credex.domain import uscc as uscc_codes
from credex.domain.persons import looks_like_ric, withhold
from credex.domain.regions import is_origin_code
from credex.errors import CredexError
from credex.node.config import NodeConfig
from credex.node.metrics import METRICS
from credex.node.services.access import Caller, Callers
from credex.node.services.audit_trail import AuditEntry, AuditLog, AuditUnavailable
from credex.node.services.refusals import Refusals
from credex.node.store.database import CONNECTION_LOST
from credex.node.store.inserts import Rows
from credex.node.trust import TrustProvider

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
Behavior = Callable[[Any, Context], Awaitable[Message]]
# A server-streaming method: validates and refuses like a unary one, then returns the messages to send.
StreamBehavior = Callable[[Any, Context], Awaitable[AsyncGenerator[Message, None]]]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # not subscriptable at run time

# Every credex request is small; anything bigger is refused before it is decoded.
MAX_REQUEST_BYTES = 64 * 1024
MAX_QUOTE = 12  # characters of caller input an error message may repeat
MAX_DETAILS = 300  # characters of any error message
MAX_INTEGER = 2**63 - 1  # PostgreSQL bigint: larger values must not reach the driver
MAX_DEPTH = 8  # nesting of messages inside a request
MAX_ITEMS = 100  # records named in one audit row's detail
# Statuses audited row by row whatever their number: answers. NOT_FOUND answers a lookup about a subject.
_ANSWERS = frozenset({"OK", "NOT_FOUND"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff]")
_INTEGERS = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
    }
)
_CURRENT: contextvars.ContextVar[Call] = contextvars.ContextVar("credex_call")
_Key: TypeAlias = tuple[str, str, str]  # caller identity, role, method


class Refused(CredexError):
    """Refuse the call with ``code``; ``message`` says what to do and is cut to :data:`MAX_DETAILS`."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        message = withhold(message)  # a message quoting what was sent must not carry an ID number onward
        if len(message) > MAX_DETAILS:
            message = message[: MAX_DETAILS - 1] + "…"
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> Refused:
    return Refused(grpc.StatusCode.INVALID_ARGUMENT, message)


def quote(text: str, limit: int = MAX_QUOTE) -> str:
    """``text`` as a Python literal, cut to ``limit`` characters: safe to put in an error message or a log."""
    if len(text) <= limit:
        return repr(text)
    return repr(text[:limit]) + f"… ({len(text):,} characters)"


# -- request rules ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Text:
    """How long a text field may be and whether it must be given; ``subject``: audit it as the subject.

    For a repeated field the rule holds for every item, and ``max_items`` bounds how many may be sent.
    """

    max_chars: int
    required: bool = False
    subject: bool = False
    max_items: int = 0


DEFAULT_TEXT = Text(256)  # any text field without a rule of its own, including fields added later
DEFAULT_BYTES = 4096
# Bytes fields that may be longer: a case message delivered between nodes (a case's status carries its file).
BYTES_LIMITS: dict[tuple[str, str], int] = {("credex.v1.Envelope", "payload"): 48 * 1024}
MAX_BATCH = 1000  # subjects asked about in one call
MAX_FETCH = 5000  # events one FetchEvents serves, as a stretch or as seqs named
# uscc: 18 characters, plus the spaces and full-width forms platforms send; checked raw, before NFKC.
RULES: dict[str, dict[str, Text]] = {
    "credex.v1.GetProfileRequest": {"uscc": Text(64, subject=True), "purpose": Text(500), "person_id": Text(64)},
    # Leave to look up persons: a check's scenario, unit and basis (node/checks/persons.py says what they must be).
    "credex.v1.PersonLeave": {
        "scenario": Text(64),
        "requesting_unit_uscc": Text(64),
        "legal_basis": Text(500),
        "authorizations": Text(0, max_items=MAX_BATCH),
    },
    "credex.v1.FetchEventsRequest": {"seqs": Text(0, max_items=MAX_FETCH)},
    "credex.v1.GetRecordRequest": {"record_id": Text(100, required=True, subject=True), "purpose": Text(500)},
    "credex.v1.GetInclusionProofRequest": {"record_id": Text(100, subject=True), "purpose": Text(500)},
    "credex.v1.GetQualityReportRequest": {"unit_uscc": Text(64, subject=True)},
    # query: bounded before it is folded (NFKC, traditional to simplified) for matching.
    "credex.v1.SearchSubjectsRequest": {
        "query": Text(100, required=True),
        "page_token": Text(200),
        "purpose": Text(500),
    },
    "credex.v1.BatchGetProfilesRequest": {
        "usccs": Text(64, max_items=MAX_BATCH),
        "purpose": Text(500),
        "person_ids": Text(64, max_items=MAX_BATCH),
    },
    # A check names its scenario and the unit that will apply the measures (credit-use.md, Check rule 1).
    "credex.v1.CheckRequest": {
        "usccs": Text(64, max_items=MAX_BATCH),
        "scenario": Text(64, required=True),
        "requesting_unit_uscc": Text(64, required=True),
        "purpose": Text(500),
        "legal_basis": Text(500),
        # Resident ID numbers: 18 characters, plus the spaces and full-width forms platforms send.
        "person_ids": Text(64, max_items=MAX_BATCH),
        # Messages: only how many may be sent is bounded here; their own fields have rules of their own below.
        "authorizations": Text(0, max_items=MAX_BATCH),
        "responsible_persons": Text(0, max_items=MAX_BATCH),
    },
    "credex.v1.ResponsiblePerson": {"subject": Text(64), "id_number": Text(64)},
    "credex.v1.ListLiftedMeasuresRequest": {
        "requesting_unit_uscc": Text(64),
        "since": Text(10),
        "page_token": Text(32),
        "purpose": Text(500),
    },
    "credex.v1.AcknowledgeLiftedMeasureRequest": {"purpose": Text(500)},
    # A subject by USCC, or a person by ID number (person_id: never audited; the service audits the pseudonym).
    "credex.v1.ListChecksOfSubjectRequest": {
        "uscc": Text(64, subject=True),
        "person_id": Text(64),
        "page_token": Text(200),
        "purpose": Text(500),
    },
    # tlog-witness: at most 63 consistency proof lines (each hash's length is the witness's to check).
    "credex.v1.AddCheckpointRequest": {"consistency": Text(0, max_items=63)},
    # A subscription names at most a batch's worth of subjects; origins are member codes.
    "credex.v1.SubscriptionFilter": {
        "origins": Text(16, max_items=100),
        "subjects": Text(64, max_items=MAX_BATCH),
        "scenario": Text(64),
    },
    "credex.v1.SubscribeRequest": {"purpose": Text(500)},
    # An authorization travels inside checks, reports and grants; each says what it requires of one
    # (node/checks/persons.py, node/services/report_service.py, node/authorizations/terms.py).
    "credex.v1.Authorization": {
        "authorization_id": Text(128),
        "subject": Text(64),
        "grantee": Text(64),
        "scope": Text(64),
        "valid_from": Text(10),
        "valid_until": Text(10),
    },
    "credex.v1.EndAuthorizationRequest": {
        "authorization_id": Text(128, required=True),
        "grantee": Text(64, required=True),
        "reason": Text(500),
    },
    "credex.v1.FeedbackRequest": {
        "check_id": Text(64, required=True),
        "subject_id": Text(100, required=True, subject=True),
        "measures_applied": Text(100, max_items=MAX_BATCH),
        "reason": Text(500),
        "amount_yuan": Text(32),
        "basis": Text(500),
        "district_code": Text(16),
        "department": Text(200),
        "applied_on": Text(10, required=True),
        "result": Text(500),
        "department_code": Text(32),
    },
    # Reports: the subject is audited by the service once it is known to be a USCC or a pseudonym (never an ID number).
    "credex.v1.IssueReportRequest": {
        "subject": Text(64, required=True),
        "period_start": Text(10),
        "period_end": Text(10),
        "fields": Text(64, max_items=100),
        "purpose": Text(500),
    },
    "credex.v1.VerifyReportRequest": {
        "report_number": Text(40, required=True),
        "verification_code": Text(20, required=True),
    },
    "credex.v1.ViewReportRequest": {
        "report_number": Text(40, required=True),
        "verification_code": Text(20, required=True),
        "purpose": Text(500),
    },
    # Cases: a filing travels to the origin signed in one envelope (bytes fields hold DEFAULT_BYTES), so its
    # texts are bounded to fit in UTF-8 with room to spare.
    "credex.v1.FileObjectionRequest": {
        "request_id": Text(64, required=True),
        "record_id": Text(100, required=True),
        "on_behalf_of": Text(100, required=True, subject=True),
        "grounds": Text(16, required=True),
        "statement": Text(500),
        "purpose": Text(500),
    },
    "credex.v1.FileRepairRequest": {
        "request_id": Text(64, required=True),
        "record_id": Text(100, required=True),
        "on_behalf_of": Text(100, required=True, subject=True),
        "proof_of_duty": Text(200),
        "commitment": Text(200),
        "statement": Text(300),
        "purpose": Text(500),
    },
    "credex.v1.GetCaseRequest": {"case_id": Text(64, required=True), "purpose": Text(500)},
    "credex.v1.ListCasesRequest": {"state": Text(32), "purpose": Text(500), "after": Text(64)},
    "credex.v1.AcceptCaseRequest": {"case_id": Text(64, required=True), "opinion": Text(1000), "actor": Text(100)},
    "credex.v1.DecideCaseRequest": {
        "case_id": Text(64, required=True),
        "outcome": Text(32, required=True),
        "opinion": Text(1000),
        "decided_by": Text(200),
        "actor": Text(100),
    },
    "credex.v1.FieldChange": {
        "field": Text(100, required=True),
        "old_value": Text(1000),
        "new_value": Text(1000),
    },
    "credex.v1.ExtendCaseRequest": {"case_id": Text(64, required=True), "reason": Text(500), "actor": Text(100)},
    "credex.v1.ReviewCaseRequest": {"case_id": Text(64, required=True), "reason": Text(500), "actor": Text(100)},
    "credex.v1.WithdrawCaseRequest": {"case_id": Text(64, required=True), "reason": Text(500), "actor": Text(100)},
    # An operator's decision on a record of this origin: the record is audited as the subject.
    "credex.v1.StandingRequest": {
        "record_id": Text(100, required=True, subject=True),
        "reason": Text(500, required=True),
    },
    "credex.v1.Envelope": {"payload_type": Text(100, required=True), "key_id": Text(100, required=True)},
}


def check_text(name: str, value: str, rule: Text = DEFAULT_TEXT) -> None:
    """Length first (cheap, and bounds every later step), then control and direction-override characters."""
    if len(value) > rule.max_chars:
        raise invalid(f"{name} has {len(value):,} characters; at most {rule.max_chars} are accepted")
    if rule.required and not value:
        raise invalid(f"{name} is required")
    if not value.isprintable():  # the common case is settled in C
        found = _CONTROL.search(value)
        if found:
            raise invalid(
                f"{name} contains the control character U+{ord(found.group()):04X} at position {found.start() + 1};"
                " send plain text"
            )


def check_integer(name: str, value: int) -> None:
    if not 0 <= value <= MAX_INTEGER:
        raise invalid(f"{name} must be between 0 and 2^63-1, got {str(value)[:24]}")


def check_origin(name: str, value: str) -> None:
    if not is_origin_code(value):
        raise invalid(f"{name} {quote(value, 8)} is not a GB/T 2260 division code such as 310000")


def check_request(message: Message) -> None:
    """Every field of ``message`` (and of messages inside it) against the rules; raise :class:`Refused`."""
    _check_message(message, message.DESCRIPTOR.full_name, 0)


def _check_message(message: Message, path: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise invalid(f"{path} is nested more than {MAX_DEPTH} messages deep")
    for field_name, check in _plan(message.DESCRIPTOR):  # unset fields too: required ones and origins must be checked
        check(message, field_name if depth == 0 else f"{path}.{field_name}", depth)


# A field's check: (the message holding it, the field's name as errors show it, the message's depth).
_FieldCheck: TypeAlias = Callable[[Message, str, int], None]
# A value's check: (the field's name or item as errors show it, the value, the depth of its message).
_ValueCheck: TypeAlias = Callable[[str, Any, int], None]
_ORIGIN_TEXT = Text(16)


@functools.cache
def _plan(descriptor: Any) -> tuple[tuple[str, _FieldCheck], ...]:
    """The checks of every field of a message type, worked out once per type from :data:`RULES`.

    The rules, the field's kind and its limits are looked up here, not on every call;
    the checks run are the same ones, in the same order. Fields without a check
    (booleans, enums, floats) are left out.
    """
    rules = RULES.get(descriptor.full_name, {})
    plan: list[tuple[str, _FieldCheck]] = []
    for fd in descriptor.fields:
        field_check = _field_check(fd, rules)
        if field_check is not None:
            plan.append((fd.name, field_check))
    return tuple(plan)


def _field_check(fd: Any, rules: dict[str, Text]) -> _FieldCheck | None:
    attribute = fd.name
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        check_key = _value_check(fd.message_type.fields_by_name["key"], {})
        check_item = _value_check(fd.message_type.fields_by_name["value"], {})

        def check_map(message: Message, name: str, depth: int) -> None:
            for key, item in getattr(message, attribute).items():
                if check_key is not None:
                    check_key(f"{name} key", key, depth)
                if check_item is not None:
                    check_item(f"{name}[…]", item, depth)

        return check_map
    check_value = _value_check(fd, rules)
    if fd.is_repeated:
        limit = rules.get(fd.name, DEFAULT_TEXT).max_items

        def check_repeated(message: Message, name: str, depth: int) -> None:
            values = getattr(message, attribute)
            if limit and len(values) > limit:
                raise invalid(f"{name} has {len(values):,} items; at most {limit:,} are accepted in one call")
            if check_value is not None:
                for index, item in enumerate(values):
                    check_value(f"{name}[{index}]", item, depth)

        return check_repeated
    if check_value is None:
        return None
    if fd.type == FieldDescriptor.TYPE_MESSAGE:

        def check_set_message(message: Message, name: str, depth: int) -> None:
            if message.HasField(attribute):
                check_value(name, getattr(message, attribute), depth)

        return check_set_message

    def check_single(message: Message, name: str, depth: int) -> None:
        check_value(name, getattr(message, attribute), depth)

    return check_single


def _value_check(fd: Any, rules: dict[str, Text]) -> _ValueCheck | None:
    if fd.type == FieldDescriptor.TYPE_STRING:
        if fd.name == "origin":

            def check_origin_text(name: str, value: Any, depth: int) -> None:
                check_text(name, value, _ORIGIN_TEXT)
                check_origin(name, value)

            return check_origin_text
        rule = rules.get(fd.name, DEFAULT_TEXT)
        return lambda name, value, depth: check_text(name, value, rule)
    if fd.type == FieldDescriptor.TYPE_BYTES:
        limit = BYTES_LIMITS.get((fd.containing_type.full_name, fd.name), DEFAULT_BYTES)

        def check_bytes(name: str, value: Any, depth: int) -> None:
            if len(value) > limit:
                raise invalid(f"{name} has {len(value):,} bytes; at most {limit:,} are accepted")

        return check_bytes
    if fd.type in _INTEGERS:
        return lambda name, value, depth: check_integer(name, value)
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return lambda name, value, depth: _check_message(value, name, depth + 1)
    return None


# -- the call ---------------------------------------------------------------------------


@dataclass
class Call:
    """One call as the audit trail will show it; the service fills in what it answered."""

    method: str
    caller: Caller
    subject_id: str = ""
    purpose: str = ""
    answered: int = 0
    detail: str = ""
    started: float = field(default_factory=time.perf_counter)
    # Further subjects a batch answered about: (subject id, records, detail), a row each.
    more: list[tuple[str, int, str]] = field(default_factory=list)
    # A stream's own account of what it sent, for the row written when it ends: (items, detail).
    summary: Callable[[], tuple[int, str]] | None = None
    # Rows the answer stands on (a check and its answers), committed with the call's audit rows.
    stored: list[Rows] = field(default_factory=list)
    # A code this call has validated already: (as sent, canonical USCC); see :meth:`uscc`.
    validated: tuple[str, str] | None = None

    def uscc(self, sent: str) -> str:
        """``sent`` as its canonical USCC, or :class:`~credex.domain.uscc.InvalidSubjectCode`: validated once a call.

        The edge validates a subject that might be an ID number before it audits it, and the
        service validates the same text again before it looks it up; the second asks here.
        """
        held = self.validated
        if held is not None and held[0] == sent:
            return held[1]
        code = uscc_codes.validate(sent).code
        self.validated = (sent, code)
        return code

    def answer(self, count: int, items: Iterable[str] = ()) -> None:
        """Record what is being answered: how many records, and which (the first :data:`MAX_ITEMS` of them)."""
        self.answered = count
        self.detail = _shown(count, items)

    def answer_each(self, answers: Iterable[tuple[str, int, Iterable[str]]]) -> None:
        """Record a batch answer about many subjects: each gets a row of its own when the call is audited.

        The audit trail is read by subject (who asked about me?), and one row's detail
        cannot name a thousand subjects, so a batch is audited as its single calls would be.
        """
        rows = [(subject, count, _shown(count, items)) for subject, count, items in answers]
        if rows:
            (self.subject_id, self.answered, self.detail), *self.more = rows

    def entry(self, status: str, detail: str | None = None) -> AuditEntry:
        return AuditEntry(
            caller=self.caller.identity,
            role=self.caller.role,
            method=self.method,
            subject_id=self.subject_id,
            purpose=self.purpose,
            answered=self.answered if status == "OK" else 0,
            status=status,
            at=dt.datetime.now(dt.UTC),
            detail=self.detail if detail is None else detail,
        )

    def entries(self, status: str) -> list[AuditEntry]:
        """The rows of an answered call: one, or one per subject of a batch (:meth:`answer_each`)."""
        first = self.entry(status)
        if not self.more:
            return [first]
        caller, role, method, purpose, at = first.caller, first.role, first.method, first.purpose, first.at
        return [first] + [
            AuditEntry(caller, role, method, subject, purpose, count, status, at, detail)
            for subject, count, detail in self.more
        ]

    @property
    def key(self) -> _Key:
        """What refusals are summed up by."""
        return (self.caller.identity, self.caller.role, self.method)


def _shown(count: int, items: Iterable[str]) -> str:
    shown = list(itertools.islice(items, MAX_ITEMS + 1))
    cut = len(shown) > MAX_ITEMS
    return " ".join(shown[:MAX_ITEMS]) + (f" … ({count} in all)" if cut else "")


def _require_region(caller: Caller) -> None:
    """A supervisor is answered only once an operator has said which region it supervises: what it
    sees for being a supervisor (risk classes) is its region's, and no region is not every region."""
    if caller.lacks_region:
        raise Refused(
            grpc.StatusCode.PERMISSION_DENIED,
            f"supervision caller {quote(caller.identity, 40)} has no region in access.regions: an operator must"
            " name the GB/T 2260 division it supervises before it is answered; nothing was looked up",
        )


def current() -> Call:
    """The call being served by this task (set by the edge before the service method runs)."""
    return _CURRENT.get()


# -- admission --------------------------------------------------------------------------


class Admission:
    """Counts what is in progress (calls, or open streams), per caller, of public callers and in total;
    refuses instead of queueing.

    Public callers (anyone with a CA-issued certificate, or none) are many and
    unknown, so together they get a share of the node, not all of it: what they
    cannot take stays free for the government callers and peers the config and the
    trust bundle name, each of whom is still held to the per-caller limit. A stream
    holds no call slot (it may last for days), so streams are counted by an
    Admission of their own. A caller over its share is refused RESOURCE_EXHAUSTED
    saying how many it holds; the node over its limit, or public callers over their
    share, UNAVAILABLE. Callers without a certificate count by address.
    """

    def __init__(
        self,
        total: int,
        per_caller: int,
        public_share: float = 1.0,
        *,
        held: str = "calls in progress",
        caller_advice: str = "the most one caller may have; wait for answers before sending more",
    ) -> None:
        self.total = total
        self.per_caller = per_caller
        self.public_total = max(1, int(total * public_share))
        self.in_flight = 0
        self.public_in_flight = 0
        self._held = held  # what is counted, as a refusal names it
        self._caller_advice = caller_advice
        self._by_caller: dict[str, int] = {}  # only callers with something in progress: bounded by ``total``

    def enter(self, caller: Caller) -> Refused | None:
        held = self._by_caller.get(caller.identity, 0)
        if held >= self.per_caller:
            return Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many {self._held} for caller {quote(caller.identity, 40)}: {held}, {self._caller_advice}",
            )
        if self.in_flight >= self.total:
            return Refused(
                grpc.StatusCode.UNAVAILABLE,
                f"node busy: {self.in_flight} {self._held}, its limit; retry after a short backoff",
            )
        public = caller.role == "public"
        if public and self.public_in_flight >= self.public_total:
            return Refused(
                grpc.StatusCode.UNAVAILABLE,
                f"node busy: {self.public_in_flight} {self._held} of public callers, the most they may have"
                " together; retry after a short backoff",
            )
        self._by_caller[caller.identity] = held + 1
        self.in_flight += 1
        self.public_in_flight += public
        return None

    def leave(self, caller: Caller) -> None:
        self.in_flight -= 1
        self.public_in_flight -= caller.role == "public"
        held = self._by_caller.pop(caller.identity) - 1
        if held:
            self._by_caller[caller.identity] = held


# -- the gate ---------------------------------------------------------------------------


class Gate:
    """Wraps every method of the credex services with admission, validation, audit and accounting."""

    def __init__(self, config: NodeConfig, trust: TrustProvider, audit: AuditLog) -> None:
        self.config = config
        self.trust = trust
        self.audit = audit
        self.origin = config.origin
        self._callers = Callers()
        # Metric children by label (the methods and statuses are few): see _count.
        self._counters: dict[tuple[str, str], Any] = {}
        self._timers: dict[str, Any] = {}
        grpc_config = config.grpc
        self.admission = Admission(
            grpc_config.max_concurrent_calls, grpc_config.max_concurrent_calls_per_caller, grpc_config.public_share
        )
        self.streams = Admission(
            config.subscriptions.max_streams,
            config.subscriptions.max_streams_per_caller,
            grpc_config.public_share,
            held="streams open",
            caller_advice="the most one caller may have (subscriptions.max_streams_per_caller);"
            " close one before opening another",
        )
        self._in_flight = METRICS.rpc_in_flight.labels(config.origin)
        # Every call admitted hands in audit rows before it answers: the writers wait for those, no longer.
        audit.expect(lambda: self.admission.in_flight)
        # A cancelled call answered nothing: counted and logged is enough.
        self.refusals = Refusals(audit, config.origin, unaudited=frozenset({"CANCELLED"}))

    def method_handlers(self, servicer: object, service: ServiceDescriptor) -> dict[str, Handler]:
        """A handler per method of ``service``, calling ``servicer`` through the edge."""
        handlers: dict[str, Handler] = {}
        for method in service.methods:
            if method.client_streaming:
                raise TypeError(
                    f"{method.full_name} takes a stream; node/edge.py serves unary requests only, extend it first"
                )
            if method.server_streaming:
                handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                    functools.partial(
                        self._serve_stream,
                        method.name,
                        message_factory.GetMessageClass(method.input_type),
                        getattr(servicer, method.name),
                    ),
                    request_deserializer=None,
                    response_serializer=_serialize,
                )
                continue
            serve = functools.partial(
                self._serve,
                method.name,
                message_factory.GetMessageClass(method.input_type),
                getattr(servicer, method.name),
            )
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                serve, request_deserializer=None, response_serializer=_serialize
            )
        return handlers

    async def _serve(
        self, method: str, request_class: type[Message], behavior: Behavior, raw: bytes, context: Context
    ) -> Message:
        caller = self._callers.identify(context, self.config.access, self.trust.current)
        call = Call(method, caller)
        refusal = self.admission.enter(caller)
        if refusal is not None:
            self._count(method, refusal.code.name)
            self.refusals.sum_up((*call.key, refusal.code.name), refusal.message.split(":")[0])
            await context.abort(refusal.code, refusal.message)
        self._in_flight.inc()
        token = _CURRENT.set(call)
        try:
            response = await self._answer(call, request_class, behavior, raw, context)
        except asyncio.CancelledError:
            self._count(method, "CANCELLED")
            self.refusals.sum_up((*call.key, "CANCELLED"), "cancelled by the caller (deadline passed or caller gone)")
            raise
        finally:
            _CURRENT.reset(token)
            self.admission.leave(caller)
            self._in_flight.dec()
        timer = self._timers.get(method)
        if timer is None:
            timer = self._timers[method] = METRICS.rpc_seconds.labels(self.origin, method)
        timer.observe(time.perf_counter() - call.started)
        return response

    async def _answer(
        self, call: Call, request_class: type[Message], behavior: Behavior, raw: bytes, context: Context
    ) -> Message:
        try:
            request = _decode(call.method, request_class, raw)
            _prefill(call, request)
            check_request(request)
            self._require_purpose(call, request)
            _require_region(call.caller)
            response = await behavior(request, context)
        except Refused as refused:
            await self._refuse(call, refused, context)
        except grpc.aio.AbortError:
            # A method (or access check) that aborted by itself: still audited and counted.
            code = context.code()
            status = code.name if isinstance(code, grpc.StatusCode) else str(code)
            await self._audit_refusal(call, status, str(context.details() or ""))
            self._count(call.method, status)
            raise
        except CONNECTION_LOST as exc:
            log.warning("%s for %s: database unavailable: %s", call.method, call.caller.identity, exc)
            await self._refuse(
                call, Refused(grpc.StatusCode.UNAVAILABLE, "the node's database is unavailable; retry later"), context
            )
        except Exception:
            log.exception("%s for %s failed", call.method, call.caller.identity)
            await self._refuse(
                call, Refused(grpc.StatusCode.INTERNAL, "internal error; the node's log has the details"), context
            )
        try:
            await self.audit.record_all(call.entries("OK"), tuple(call.stored))
        except AuditUnavailable as exc:
            self._count(call.method, "UNAVAILABLE")
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{exc}; nothing is answered without an audit trail")
        self._count(call.method, "OK")
        return response

    async def _serve_stream(
        self, method: str, request_class: type[Message], behavior: StreamBehavior, raw: bytes, context: Context
    ) -> None:
        """A server stream: the unary call's rules to open it, then one audit row at open and one at close.

        Opening is admitted against the stream limits, not the call limits. The request is
        validated and the service decides before anything is sent; the open row (who, the
        filter) is committed before the first message, and the close row (what was sent, how
        it ended) is queued whatever ends the stream, the caller going away included.
        """
        caller = self._callers.identify(context, self.config.access, self.trust.current)
        call = Call(method, caller)
        refusal = self.streams.enter(caller)
        if refusal is not None:
            self._count(method, refusal.code.name)
            await self._audit_refusal(call, refusal.code.name, refusal.message)
            await context.abort(refusal.code, refusal.message)
        token = _CURRENT.set(call)
        status, why = "OK", "ended by the node"
        opened = False
        try:
            messages = await self._open_stream(call, request_class, behavior, raw, context)
            opened = True
            bundle = self.trust.current
            async with contextlib.aclosing(messages):
                async for message in messages:
                    if self.trust.current is not bundle:
                        bundle = self.trust.current
                        await self._still_the_caller(caller, bundle, context)
                    await context.write(message)
        except asyncio.CancelledError:
            status, why = "CANCELLED", "the subscriber went away (or its deadline passed)"
            raise
        except grpc.aio.AbortError:
            code = context.code()
            status = code.name if isinstance(code, grpc.StatusCode) else str(code)
            why = str(context.details() or "")
            raise
        except CONNECTION_LOST as exc:
            log.warning("%s for %s: database unavailable: %s", method, caller.identity, exc)
            status, why = "UNAVAILABLE", "the node's database is unavailable; resume from your cursor later"
            await self._stream_failed(call, opened, grpc.StatusCode.UNAVAILABLE, why, context)
        except Exception:
            log.exception("%s for %s failed", method, caller.identity)
            status, why = "INTERNAL", "internal error; the node's log has the details"
            await self._stream_failed(call, opened, grpc.StatusCode.INTERNAL, why, context)
        finally:
            _CURRENT.reset(token)
            self.streams.leave(caller)
            if opened:
                self._count(method, status)
                answered, detail = call.summary() if call.summary is not None else (0, "")
                self.audit.note(
                    dataclasses.replace(call.entry(status), answered=answered, detail=f"stream closed: {why}; {detail}")
                )

    async def _still_the_caller(self, caller: Caller, bundle: TrustBundle, context: Context) -> None:
        """End a stream whose caller a new trust bundle makes someone else (a member removed, a key rebound).

        The stream was entitled by who the caller was when it opened; a stream lasts for
        days, so nothing more is written to it under a bundle that says otherwise.
        """
        now = self._callers.identify(context, self.config.access, bundle)
        if now != caller:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"the trust bundle changed (version {bundle.version}): this caller is now {quote(now.identity, 40)}"
                f" with role {now.role}, not {caller.role}; subscribe again to get what that role may have",
            )

    async def _stream_failed(self, call: Call, opened: bool, code: grpc.StatusCode, why: str, context: Context) -> None:
        """End a stream on a failure; one that failed before it opened is audited and counted as a refusal."""
        if not opened:
            await self._audit_refusal(call, code.name, why)
            self._count(call.method, code.name)
        await context.abort(code, why)

    async def _open_stream(
        self, call: Call, request_class: type[Message], behavior: StreamBehavior, raw: bytes, context: Context
    ) -> AsyncGenerator[Message, None]:
        try:
            request = _decode(call.method, request_class, raw)
            _prefill(call, request)
            check_request(request)
            self._require_purpose(call, request)
            _require_region(call.caller)
            messages = await behavior(request, context)
        except Refused as refused:
            await self._refuse(call, refused, context)
        except grpc.aio.AbortError:
            code = context.code()
            status = code.name if isinstance(code, grpc.StatusCode) else str(code)
            await self._audit_refusal(call, status, str(context.details() or ""))
            self._count(call.method, status)
            raise
        try:
            await self.audit.record(call.entry("OK", f"stream opened: {call.detail}"))
        except AuditUnavailable as exc:
            self._count(call.method, "UNAVAILABLE")
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{exc}; nothing is sent without an audit trail")
        return messages

    def _require_purpose(self, call: Call, request: Message) -> None:
        if (
            call.caller.role == "government"
            and self.config.access.purpose_required_for_government
            and _audited_fields(request.DESCRIPTOR)[0]  # the request has a purpose
            and not call.purpose.strip()
        ):
            raise invalid(
                "purpose is required for government callers: say why you ask (it is written to the audit log),"
                " e.g. purpose='政府采购 供应商审查'"
            )

    async def _refuse(self, call: Call, refused: Refused, context: Context) -> Message:
        await self._audit_refusal(call, refused.code.name, refused.message)
        self._count(call.method, refused.code.name)
        await context.abort(refused.code, refused.message)
        raise AssertionError("abort returns only by raising")

    async def _audit_refusal(self, call: Call, status: str, message: str) -> None:
        """Refusals are audited too (probing is worth seeing); a failed write is logged, the refusal stands.

        The first few of a caller's refusals each second get a row with what was
        sent; the rest are summed up (:mod:`credex.node.services.refusals`), so junk
        sent in a loop costs the audit table a few rows a second, not a row a call.
        """
        entry = call.entry(status, message)
        if status not in _ANSWERS and not self.refusals.own_row(entry):
            return
        try:
            await self.audit.record(entry)
        except AuditUnavailable as exc:
            log.warning("refused %s of %s not audited: %s", call.method, call.caller.identity, exc)

    def _count(self, method: str, status: str) -> None:
        counter = self._counters.get((method, status))
        if counter is None:  # a label lookup takes a lock and builds a key: once per method and status
            counter = self._counters[(method, status)] = METRICS.rpcs.labels(self.origin, method, status)
        counter.inc()


def _decode(method: str, request_class: type[Message], raw: bytes) -> Message:
    if len(raw) > MAX_REQUEST_BYTES:
        raise invalid(f"the request has {len(raw):,} bytes; a {method} request has at most {MAX_REQUEST_BYTES:,}")
    try:
        return request_class.FromString(raw)
    except (DecodeError, RecursionError, ValueError):
        raise invalid(
            f"the request is not a valid {request_class.DESCRIPTOR.full_name} message;"
            " send the message the method's .proto defines"
        ) from None


def _prefill(call: Call, request: Message) -> None:
    """What the audit row shows even if the request is refused below: purpose and subject as sent."""
    purpose, subjects, origin = _audited_fields(request.DESCRIPTOR)
    if purpose:
        call.purpose = getattr(request, "purpose")  # noqa: B009 (a generic Message; the field is in its descriptor)
    for name in subjects:
        if sent := getattr(request, name):
            call.subject_id = _auditable_subject(call, sent)
            return
    if origin:
        call.subject_id = getattr(request, "origin")  # noqa: B009


@functools.cache
def _audited_fields(descriptor: Any) -> tuple[bool, tuple[str, ...], bool]:
    """Whether a request type has a purpose, its fields audited as the subject (:data:`RULES`), and an origin."""
    fields = descriptor.fields_by_name
    subjects = tuple(name for name, rule in RULES.get(descriptor.full_name, {}).items() if rule.subject)
    return "purpose" in fields, subjects, "origin" in fields


WITHHELD_ID = "(a resident ID number, withheld)"


def _auditable_subject(call: Call, sent: str) -> str:
    """A subject as sent, for the audit row of a call refused before its service names the subject.

    The subject is audited before anything checks what it is, and a caller may put an ID
    number where a USCC or record id belongs (by mistake, or one typo away from valid).
    Only the origin ever holds a raw ID number (domain/persons.py), so one is withheld
    here; a valid USCC that happens to be all digits is kept. The regular expression runs
    first, so the common call pays no USCC validation.
    """
    if not looks_like_ric(sent):
        return sent
    try:
        return call.uscc(sent)
    except uscc_codes.InvalidSubjectCode:
        return WITHHELD_ID


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()
