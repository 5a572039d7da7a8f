"""CheckService: 逢办必查 / 联合奖惩 for government offices and operators, their usage feedback, and who checked me.

The edge has validated the fields and will audit the call; this module refuses callers
who may not check (public), resolves the subjects — natural persons' ID numbers become
pseudonyms first, and only with leave (:mod:`credex.node.checks.persons`) — asks
:mod:`credex.node.checks`, and records one audit row per subject with the check id, as
BatchGetProfiles does, so that the trail can be read by subject. The check's own rows
are committed with those audit rows in the edge's group commit, before the answer
leaves: one commit a call, shared with the calls around it, instead of one each. ID numbers appear in
no row, message or log: only their pseudonyms do.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import uuid
from collections.abc import Sequence
from typing import Any

import grpc

from credex.domain import uscc as uscc_codes
from credex.domain.measures import Catalogue, Scenario, UnknownScenario
from credex.domain.persons import looks_like_ric, validate_ric, withhold
from credex.node import checks
from credex.node.checks import history, lifted, persons
from credex.node.services import access, edge
from credex.node.services.servicer import Servicer
from credex.node.store.inserts import Rows
from credex.v1 import check_pb2, check_pb2_grpc

_OUTCOMES = {
    check_pb2.FEEDBACK_OUTCOME_PUNISHED: "punished",
    check_pb2.FEEDBACK_OUTCOME_REWARDED: "rewarded",
    check_pb2.FEEDBACK_OUTCOME_NOT_ADOPTED: "not_adopted",
}


class CheckService(Servicer, check_pb2_grpc.CheckServiceServicer):
    async def Check(
        self,
        request: check_pb2.CheckRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> check_pb2.CheckResponse:
        call = edge.current()
        _may_check(call)
        catalogue = Catalogue.shipped()
        try:
            scenario = catalogue.scenario(request.scenario)
        except UnknownScenario as exc:
            raise edge.invalid(f"scenario: {exc}") from None
        unit = _code("requesting_unit_uscc", request.requesting_unit_uscc)
        if not request.usccs and not request.person_ids:
            raise edge.invalid("usccs or person_ids is required: send the subjects to check")
        codes = _codes("usccs", request.usccs)
        leaves, responsible = await self._persons(request, catalogue, unit, scenario, set(codes))
        caller = call.caller
        made = await checks.run_check(
            self.pool,
            catalogue,
            checks.CheckRequest(
                subjects=[*codes, *(leave.pseudonym for leave in leaves)],
                scenario=scenario.code,
                requesting_unit=unit,
                purpose=request.purpose,
                legal_basis=request.legal_basis,
                caller=_kept(call),
                role=caller.role,
                responsible=responsible,
            ),
            caller.sees,
        )
        check_id = str(made.check_id)
        # Stored with the call's audit rows, in the edge's group commit, before the answer leaves.
        call.stored += [
            Rows("checks", checks.CHECK_COLUMNS, [made.check_row()]),
            Rows("check_answers", checks.ANSWER_COLUMNS, made.answer_rows()),
        ]
        grounds = {leave.pseudonym: leave.ground for leave in leaves}
        header = f"check {check_id} {made.scenario}"
        call.answer_each(
            (
                answer.subject_id,
                len(answer.hits),
                [header, grounds[answer.subject_id], *answer.hits]
                if answer.subject_id in grounds
                else [header, *answer.hits],
            )
            for answer in made.answers
        )
        # Hits go on the wire as the check encoded them (node/checks/wire.py), parsed here once in C.
        return check_pb2.CheckResponse.FromString(made.wire())

    async def _persons(
        self,
        request: check_pb2.CheckRequest,
        catalogue: Catalogue,
        unit: str,
        scenario: Scenario,
        named: set[str],
    ) -> tuple[list[persons.Leave], list[checks.Responsible]]:
        """Every person the request names, as pseudonyms with their leave; refused before any other work."""
        if not request.person_ids and not request.responsible_persons:
            return [], []
        try:
            people = [(f"person_ids[{i}]", raw) for i, raw in enumerate(request.person_ids)]
            links = []
            for i, link in enumerate(request.responsible_persons):
                name = f"responsible_persons[{i}]"
                subject = _code(f"{name}.subject", link.subject)
                if subject not in named:
                    raise checks.CheckFailure("INVALID_ARGUMENT", f"{name}.subject must be one of the usccs checked")
                if link.role not in _ROLES:
                    raise checks.CheckFailure(
                        "INVALID_ARGUMENT",
                        f"{name}.role must be a legal representative, a principal or an actual controller",
                    )
                people.append((f"{name}.id_number", link.id_number))
                links.append((subject, link.role))
            admitted = await persons.admit_all(
                self.pool,
                people,
                catalogue,
                scenario,
                unit,
                request.legal_basis,
                request.authorizations,
                self.pseudonymizer,
            )
        except checks.CheckFailure as exc:
            raise edge.Refused(grpc.StatusCode[exc.code], exc.message) from None
        leaves = admitted[: len(request.person_ids)]
        responsible = [
            checks.Responsible(subject, leave.pseudonym, role)
            for (subject, role), leave in zip(links, admitted[len(request.person_ids) :], strict=True)
        ]
        return leaves, responsible

    async def SubmitFeedback(
        self,
        request: check_pb2.FeedbackRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> check_pb2.FeedbackReceipt:
        call = edge.current()
        _may_check(call)
        # The check stored each subject as its canonical code; feedback may name it in another form.
        subject = _code("subject_id", request.subject_id)
        call.subject_id = subject
        feedback = checks.Feedback(
            check_id=request.check_id,
            subject_id=subject,
            measures_applied=list(request.measures_applied),
            outcome=_OUTCOMES.get(request.outcome, ""),
            reason=request.reason,
            amount_yuan=request.amount_yuan,
            basis=request.basis,
            district_code=request.district_code,
            department=request.department,
            applied_on=request.applied_on,
            caller=_kept(call),
            result=request.result,
            department_code=request.department_code,
        )
        try:
            at = await checks.record_feedback(self.pool, feedback)
        except checks.CheckFailure as exc:
            raise edge.Refused(grpc.StatusCode[exc.code], exc.message) from None
        call.answer(len(request.measures_applied), [f"feedback on check {request.check_id}", *request.measures_applied])
        return check_pb2.FeedbackReceipt(
            check_id=request.check_id,
            subject_id=subject,
            recorded_at=at.isoformat(),
            result=feedback.result,
            department_code=feedback.department_code,
        )

    async def ListChecksOfSubject(
        self,
        request: check_pb2.ListChecksOfSubjectRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> check_pb2.ChecksOfSubject:
        call = edge.current()
        subject = self._subject_asked_about(request)
        call.subject_id = subject
        caller = call.caller
        if caller.role != "operator" and subject not in access.speaks_for(self.config.access, caller):
            raise edge.Refused(
                grpc.StatusCode.PERMISSION_DENIED,
                "who checked a subject is told to operators and to the subject itself (access.speaks_for) only",
            )
        if request.page_size > history.MAX_PAGE:
            raise edge.invalid(f"page_size is at most {history.MAX_PAGE}")
        size = request.page_size or history.DEFAULT_PAGE
        after = _read_position(request.page_token, subject) if request.page_token else None
        found, more = await history.checks_of_subject(self.pool, subject, size, after)
        call.answer(len(found), (f"check {c.check_id}" for c in found))
        return check_pb2.ChecksOfSubject(
            uscc="" if request.person_id else subject,
            subject_id=subject,
            checks=[
                check_pb2.CheckOfSubject(
                    check_id=str(c.check_id),
                    checked_at=c.at.isoformat(),
                    caller=c.caller,
                    requesting_unit=c.requesting_unit,
                    scenario=c.scenario,
                    purpose=c.purpose,
                    legal_basis=c.legal_basis,
                )
                for c in found
            ],
            next_page_token=_position(subject, found[-1]) if more else "",
        )

    def _subject_asked_about(self, request: check_pb2.ListChecksOfSubjectRequest) -> str:
        """The USCC, or the pseudonym of the person whose ID number is given (never kept)."""
        if not request.person_id:
            if not request.uscc:
                raise edge.invalid("uscc is required (or person_id, for a natural person)")
            return _code("uscc", request.uscc)
        if request.uscc:
            raise edge.invalid("send uscc or person_id, not both")
        try:
            return persons.pseudonym_of("person_id", request.person_id, self.pseudonymizer)
        except checks.CheckFailure as exc:
            raise edge.Refused(grpc.StatusCode[exc.code], exc.message) from None

    async def ListLiftedMeasures(
        self,
        request: check_pb2.ListLiftedMeasuresRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> check_pb2.LiftedMeasures:
        call = edge.current()
        _may_check(call)
        unit = _code("requesting_unit_uscc", request.requesting_unit_uscc) if request.requesting_unit_uscc else None
        since = _date("since", request.since) if request.since else None
        if request.page_size > lifted.MAX_PAGE:
            raise edge.invalid(f"page_size is at most {lifted.MAX_PAGE}")
        after = _lifted_position(request.page_token) if request.page_token else 0
        found, more = await checks.lifted_measures(
            self.pool,
            caller=_own(call),
            unit=unit,
            since=since,
            unacknowledged_only=request.unacknowledged_only,
            after=after,
            page_size=request.page_size or lifted.DEFAULT_PAGE,
        )
        call.answer(len(found), (f"lifted {m.id} {m.measure_id} of {m.subject_id} ({m.record_id})" for m in found))
        return check_pb2.LiftedMeasures(
            measures=[_lifted(m) for m in found], next_page_token=str(found[-1].id) if more else ""
        )

    async def AcknowledgeLiftedMeasure(
        self,
        request: check_pb2.AcknowledgeLiftedMeasureRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> check_pb2.LiftedMeasure:
        call = edge.current()
        _may_check(call)
        if not request.id:
            raise edge.invalid("id is required: the lifted measure's id as ListLiftedMeasures gave it")
        try:
            acknowledged = await checks.acknowledge(self.pool, request.id, _own(call), _kept(call))
        except checks.CheckFailure as exc:
            raise edge.Refused(grpc.StatusCode[exc.code], exc.message) from None
        call.subject_id = acknowledged.subject_id
        call.answer(1, [f"acknowledged lifted {acknowledged.id} {acknowledged.measure_id}"])
        return _lifted(acknowledged)


def _own(call: edge.Call) -> str | None:
    """Whose feedback the caller may read lifted measures of: its own, or every one for an operator."""
    return None if call.caller.role == "operator" else _kept(call)


def _kept(call: edge.Call) -> str:
    """The caller's name as the check tables keep it: withheld as in the audit trail, since the subject is shown it.

    A personal certificate may be named by its holder's ID number; every check, feedback and
    lifted-measure row names the caller in this one form, so the caller still finds its own.
    """
    return withhold(call.caller.identity)


def _date(name: str, raw: str) -> dt.date:
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise edge.invalid(f"{name} must be a date YYYY-MM-DD") from None


def _lifted_position(token: str) -> int:
    if token.isascii() and token.isdigit() and int(token) < 2**63:
        return int(token)
    raise edge.invalid("page_token is not one this list gave; start again without it")


def _lifted(m: checks.LiftedMeasure) -> check_pb2.LiftedMeasure:
    return check_pb2.LiftedMeasure(
        id=m.id,
        check_id=str(m.check_id),
        subject_id=m.subject_id,
        checked_at=m.checked_at.isoformat(),
        requesting_unit=m.requesting_unit,
        caller=m.caller,
        measure_id=m.measure_id,
        record_id=m.record_id,
        record_origin=m.record_origin,
        reason=m.reason,
        event_seq=m.event_seq,
        lifted_on=m.lifted_on.isoformat(),
        temporary=m.temporary,
        reinstated_seq=m.reinstated_seq or 0,
        reinstated_on=m.reinstated_on.isoformat() if m.reinstated_on else "",
        acknowledged_at=m.acknowledged_at.isoformat() if m.acknowledged_at else "",
        acknowledged_by=m.acknowledged_by or "",
        still_rests_on=m.still_rests_on,
    )


_ROLES = frozenset(
    {
        check_pb2.RESPONSIBLE_ROLE_LEGAL_REPRESENTATIVE,
        check_pb2.RESPONSIBLE_ROLE_PRINCIPAL,
        check_pb2.RESPONSIBLE_ROLE_ACTUAL_CONTROLLER,
    }
)


def _may_check(call: edge.Call) -> None:
    if not call.caller.may_check:
        raise edge.Refused(grpc.StatusCode.PERMISSION_DENIED, "only government offices and operators may check")


def _code(name: str, raw: str) -> str:
    """The canonical USCC; a resident ID number sent in its place is refused without repeating it."""
    try:
        return uscc_codes.validate(raw).code
    except uscc_codes.InvalidSubjectCode as exc:
        if _is_id_number(raw):
            raise edge.invalid(f"{name} is a resident ID number; send persons in person_ids") from None
        if looks_like_ric(raw):  # a mistyped ID number is still a person's: the USCC's message would quote it
            raise edge.invalid(
                f"{name} has the form of a resident ID number and is no USCC; send persons in person_ids"
            ) from None
        raise edge.invalid(f"{name}: {exc.message}; nothing was checked") from None


def _codes(name: str, raws: Sequence[str]) -> list[str]:
    """:func:`_code` of every item, the item's name made only for the one refused (a batch holds up to 1,000)."""
    codes = []
    for index, raw in enumerate(raws):
        try:
            codes.append(uscc_codes.validate(raw).code)
        except uscc_codes.InvalidSubjectCode:
            codes.append(_code(f"{name}[{index}]", raw))  # refuses, saying why
    return codes


def _is_id_number(raw: str) -> bool:
    try:
        validate_ric(raw)
    except uscc_codes.InvalidSubjectCode:
        return False
    return True


def _position(subject: str, last: history.CheckOfSubject) -> str:
    """The page token after ``last``, bound to the subject so it cannot page another's checks."""
    text = json.dumps([subject, last.at.isoformat(), str(last.check_id)], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _read_position(token: str, subject: str) -> tuple[dt.datetime, uuid.UUID]:
    try:
        held, at, check_id = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if held == subject:
            return dt.datetime.fromisoformat(at), uuid.UUID(check_id)
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
        pass
    raise edge.invalid("page_token is not one this list gave for this subject; start again without it")
