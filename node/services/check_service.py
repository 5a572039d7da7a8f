"""CheckService: 逢办必查 / 联合奖惩 for government offices and operators, and their usage feedback.

The edge has validated the fields and will audit the call; this module refuses callers
who may not check (public), resolves the subjects, asks :mod:`credex.node.checks`, and
records one audit row per subject with the check id, as BatchGetProfiles does, so that
"who checked me" can read the trail by subject.
"""

from __future__ import annotations

from typing import Any

import grpc

from credex.domain import uscc as uscc_codes
from credex.domain.measures import Catalogue, Measure, UnknownScenario
from credex.node import checks
from credex.node.services import edge
from credex.node.services.servicer import Servicer
from credex.v1 import check_pb2, check_pb2_grpc, record_pb2

_MAY_CHECK = frozenset({"government", "operator"})
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
        _may_check(call.caller.role)
        catalogue = Catalogue.shipped()
        try:
            catalogue.scenario(request.scenario)
        except UnknownScenario as exc:
            raise edge.invalid(f"scenario: {exc}") from None
        unit = _code("requesting_unit_uscc", request.requesting_unit_uscc)
        if not request.usccs:
            raise edge.invalid("usccs is required: send the codes of the subjects to check")
        codes = [_code(f"usccs[{i}]", raw) for i, raw in enumerate(request.usccs)]
        caller = call.caller
        check_id, scenario, answers = await checks.run_check(
            self.pool,
            catalogue,
            checks.CheckRequest(
                subjects=codes,
                scenario=request.scenario,
                requesting_unit=unit,
                purpose=request.purpose,
                legal_basis=request.legal_basis,
                caller=caller.identity,
                role=caller.role,
            ),
            caller.sees,
        )
        seen: set[str] = set()
        rows = []
        for answer in answers:
            if answer.subject_id not in seen:
                seen.add(answer.subject_id)
                items = [f"check {check_id} {scenario}", *(h.record.record_id for h in answer.hits)]
                rows.append((answer.subject_id, len(answer.hits), items))
        call.answer_each(rows)
        return check_pb2.CheckResponse(check_id=check_id, scenario=scenario, subjects=[_subject(a) for a in answers])

    async def SubmitFeedback(
        self,
        request: check_pb2.FeedbackRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> check_pb2.FeedbackReceipt:
        call = edge.current()
        _may_check(call.caller.role)
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
            caller=call.caller.identity,
        )
        try:
            at = await checks.record_feedback(self.pool, feedback)
        except checks.CheckFailure as exc:
            raise edge.Refused(grpc.StatusCode[exc.code], exc.message) from None
        call.answer(len(request.measures_applied), [f"feedback on check {request.check_id}", *request.measures_applied])
        return check_pb2.FeedbackReceipt(check_id=request.check_id, subject_id=subject, recorded_at=at.isoformat())


def _may_check(role: str) -> None:
    if role not in _MAY_CHECK:
        raise edge.Refused(grpc.StatusCode.PERMISSION_DENIED, "only government offices and operators may check")


def _code(name: str, raw: str) -> str:
    try:
        return uscc_codes.validate(raw).code
    except uscc_codes.InvalidSubjectCode as exc:
        raise edge.invalid(f"{name}: {exc.message}; nothing was checked") from None


def _measure(m: Measure) -> check_pb2.CheckedMeasure:
    return check_pb2.CheckedMeasure(
        id=m.id,
        name=m.name,
        category=m.category,
        measure_class=m.measure_class or "",
        basis=str(m.basis),
        implementing_body=m.implementing_body,
    )


def _subject(answer: checks.SubjectAnswer) -> check_pb2.SubjectAnswer:
    hits = []
    for hit in answer.hits:
        record = hit.record
        shown, scale = checks.scale_of(record)
        hits.append(
            check_pb2.CheckHit(
                origin=record.origin,
                record_id=record.record_id,
                kind=_kind(record.kind),
                list_or_severity=shown,
                scale=scale,
                decision_date=record.decision_date,
                window_end=hit.window_end.isoformat() if hit.window_end else "",
                disputed=hit.disputed,
                measures=[_measure(m) for m in hit.measures],
                identifying_unit=record.black_list.identifying_unit.name or record.deciding_authority.name,
            )
        )
    return check_pb2.SubjectAnswer(
        subject_id=answer.subject_id,
        hits=hits,
        incentives=[_measure(m) for m in answer.incentives],
        notify_commit_available=answer.notify_commit_available,
        excluded_by=answer.excluded_by,
        status=check_pb2.ANSWER_STATUS_HITS if hits else check_pb2.ANSWER_STATUS_CLEAR,
    )


def _kind(kind: int) -> str:
    return record_pb2.Kind.Name(kind).removeprefix("KIND_").lower()  # type: ignore[arg-type]
