"""CaseService: objections and repairs, filed on any node and decided by the record's origin.

The edge has validated every field and audits the call; this module decides who may
do what (government callers and platforms file, on behalf of the record's subject, and
withdraw or ask for review of what they filed; operators decide at the origin; only peers
deliver), hands the work to the
:class:`~credex.node.cases.CaseDesk`, and names the case and its record in the audit row.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

import grpc

from credex.node.cases import CaseDesk, CaseFailure, Filing, Kind, Viewer
from credex.node.cases.applicant import Action, ask
from credex.node.services import edge
from credex.node.services.servicer import Servicer
from credex.v1 import case_pb2, case_pb2_grpc, event_pb2

_MAY_FILE = frozenset({"government", "operator"})
MAX_LIST = 1000
T = TypeVar("T")


class CaseService(Servicer, case_pb2_grpc.CaseServiceServicer):
    # The node's own desk, handed over by the server (one clock and one signing key for service and courier).
    desk: CaseDesk

    def _viewer(self) -> Viewer:
        caller = edge.current().caller
        if caller.role not in _MAY_FILE:
            raise edge.Refused(grpc.StatusCode.PERMISSION_DENIED, "only government callers and operators read cases")
        return Viewer(caller.identity, caller.role == "operator", self._provider_unit())

    def _provider_unit(self) -> str:
        """The providing unit the caller decides for (部门审核), bound in access.provider_units; "" for none."""
        caller = edge.current().caller
        if caller.role not in _MAY_FILE:
            return ""
        return self.config.access.provider_units.get(caller.identity, "")

    async def FileObjection(
        self, request: case_pb2.FileObjectionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> case_pb2.FileCaseResponse:
        return await self._file(
            Filing(
                kind=Kind.OBJECTION,
                request_id=request.request_id,
                record_id=request.record_id,
                filer=edge.current().caller.identity,
                on_behalf_of=request.on_behalf_of,
                grounds=request.grounds,
                statement=request.statement,
            )
        )

    async def FileRepair(
        self, request: case_pb2.FileRepairRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> case_pb2.FileCaseResponse:
        return await self._file(
            Filing(
                kind=Kind.REPAIR,
                request_id=request.request_id,
                record_id=request.record_id,
                filer=edge.current().caller.identity,
                on_behalf_of=request.on_behalf_of,
                statement=request.statement,
                proof_of_duty=request.proof_of_duty,
                commitment=request.commitment,
            )
        )

    async def _file(self, filing: Filing) -> case_pb2.FileCaseResponse:
        call = edge.current()
        if call.caller.role not in _MAY_FILE:
            raise edge.Refused(
                grpc.StatusCode.PERMISSION_DENIED,
                "only government callers and platforms acting for the subject may file objections and repairs",
            )
        case, created = await _run(self.desk.file(filing, call.caller.sees))
        _answer(case)
        return case_pb2.FileCaseResponse(case=case, created=created)

    async def GetCase(
        self, request: case_pb2.GetCaseRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> case_pb2.Case:
        case = await _run(self.desk.get(request.case_id, self._viewer()))
        _answer(case)
        return case

    async def ListCases(
        self, request: case_pb2.ListCasesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> case_pb2.ListCasesResponse:
        viewer = self._viewer()
        if request.limit > MAX_LIST:
            raise edge.invalid(f"limit is at most {MAX_LIST}")
        cases, after = await _run(
            self.desk.list(viewer, request.state, request.overdue, request.limit or 100, request.after)
        )
        edge.current().answer(len(cases), (c.case_id for c in cases))
        return case_pb2.ListCasesResponse(cases=cases, next_after=after)

    async def AcceptCase(
        self, request: case_pb2.AcceptCaseRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> case_pb2.Case:
        actor = _operator(request.actor)
        case = await _run(
            self.desk.accept(request.case_id, request.accept, request.opinion, request.to_provider, actor)
        )
        _answer(case)
        return case

    async def DecideCase(
        self, request: case_pb2.DecideCaseRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> case_pb2.Case:
        caller = edge.current().caller
        changes = list(request.changes)
        unit = self._provider_unit()
        if unit and caller.role != "operator":  # 部门审核: the unit decides, and is named as the decider
            actor = f"{request.actor} ({caller.identity})" if request.actor else caller.identity
            work = self.desk.decide(request.case_id, request.outcome, request.opinion, changes, unit, actor, unit)
        else:
            actor = _operator(request.actor)
            work = self.desk.decide(
                request.case_id, request.outcome, request.opinion, changes, request.decided_by, actor
            )
        case = await _run(work)
        _answer(case)
        return case

    async def ExtendCase(
        self, request: case_pb2.ExtendCaseRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> case_pb2.Case:
        actor = _operator(request.actor)
        case = await _run(self.desk.extend(request.case_id, request.reason, request.working_days, actor))
        _answer(case)
        return case

    async def WithdrawCase(
        self, request: case_pb2.WithdrawCaseRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> case_pb2.Case:
        applicant = _applicant()
        if applicant is not None:
            case = await _run(ask(self.desk, request.case_id, Action.WITHDRAW, request.reason, applicant))
        else:
            case = await _run(self.desk.withdraw(request.case_id, request.reason, _operator(request.actor)))
        _answer(case)
        return case

    async def ReviewCase(
        self, request: case_pb2.ReviewCaseRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> case_pb2.Case:
        applicant = _applicant()
        if applicant is not None:
            case = await _run(ask(self.desk, request.case_id, Action.REVIEW, request.reason, applicant))
        else:
            case = await _run(self.desk.review(request.case_id, request.reason, _operator(request.actor)))
        _answer(case)
        return case

    async def GetRepairDecision(
        self, request: case_pb2.GetCaseRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> case_pb2.RepairDecisionDocument:
        raw = await _run(self.desk.decision(request.case_id, self._viewer()))
        edge.current().answer(1, [f"repair decision of {request.case_id}"])
        return case_pb2.RepairDecisionDocument(envelope=_envelope(raw))

    async def DeliverCase(
        self, request: case_pb2.DeliverCaseRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> case_pb2.DeliverCaseResponse:
        call = edge.current()
        if call.caller.role != "peer":
            raise edge.Refused(grpc.StatusCode.PERMISSION_DENIED, "only federation members deliver case messages")
        if not request.HasField("envelope"):
            raise edge.invalid("envelope is required: a case message signed by the sending node")
        answer = await _run(self.desk.take_in(request.envelope, call.caller.identity))
        call.answer(1, [f"case {answer.case_id} {answer.state}"])
        return answer


async def _run(work: Awaitable[T]) -> T:
    try:
        return await work
    except CaseFailure as exc:
        raise edge.Refused(exc.code, exc.message) from None


def _applicant() -> str | None:
    """The government caller acting on a case it filed on this node (withdrawal, 复核); ``None`` for others."""
    caller = edge.current().caller
    return caller.identity if caller.role == "government" else None


def _operator(actor: str) -> str:
    """Who decides: the operator's own name for the file, beside the certificate it called with."""
    caller = edge.current().caller
    if caller.role != "operator":
        raise edge.Refused(grpc.StatusCode.PERMISSION_DENIED, "only the origin's operators decide cases")
    return f"{actor} ({caller.identity})" if actor else caller.identity


def _answer(case: case_pb2.Case) -> None:
    call = edge.current()
    call.subject_id = case.on_behalf_of
    call.answer(1, [f"case {case.case_id} {case.state}", case.record_id])


def _envelope(raw: bytes) -> event_pb2.Envelope:
    return event_pb2.Envelope.FromString(raw)
