"""ReportService: credit reports issued, verified by code, and viewed by a scanned code (合规一码通).

The edge has validated the fields and audits the call (the report number is in the
row's detail); the report register (node/reports/register.py) keeps its own log of
every issue, view and verification by number, caller and time. A natural person's
report goes only to the person or to a holder of the person's authorization for
reports, which the node must hold as a record in force (Zhejiang Art. 19); a report
shows the records its caller may see, in force, never grades or risk classes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import asyncpg
import grpc

from credex.crypto.keys import SigningKey, SigningRefused
from credex.crypto.pseudonym import PREFIX as PSEUDONYM_PREFIX
from credex.crypto.pseudonym import is_pseudonym
from credex.domain import uscc as uscc_codes
from credex.domain.persons import withhold
from credex.domain.publicity import publicity_today
from credex.node.authorizations import held
from credex.node.authorizations import terms as authorization_terms
from credex.node.authorizations.terms import REPORT_SCOPE
from credex.node.chain import CheckpointKeeper, LogBook
from credex.node.config import NodeConfig
from credex.node.reports import (
    FieldsList,
    FieldsListError,
    Issuer,
    ReportRefused,
    ReportRequest,
    ReportUnavailable,
    register,
)
from credex.node.reports.document import SHARING, ReportInvalid
from credex.node.reports.issuing import log_access
from credex.node.reports.rendering import issued_pdf
from credex.node.services import edge
from credex.node.services.access import Caller
from credex.node.services.servicer import Servicer
from credex.node.trust import TrustProvider
from credex.v1 import lookup_pb2, record_pb2, report_pb2, report_pb2_grpc

_KINDS = {report_pb2.REPORT_KIND_SPECIAL: "special", report_pb2.REPORT_KIND_FULL: "full"}
_KIND_CODES = {name: code for code, name in _KINDS.items()}
_LEVELS = (record_pb2.SHARING_LEVEL_PUBLIC, record_pb2.SHARING_LEVEL_GOVERNMENT, record_pb2.SHARING_LEVEL_RESTRICTED)
_ACTIVE = lookup_pb2.ENTRY_STATUS_ACTIVE


class ReportService(Servicer, report_pb2_grpc.ReportServiceServicer):
    def __init__(
        self,
        config: NodeConfig,
        pool: asyncpg.Pool,
        trust: TrustProvider,
        logbook: LogBook,
        keeper: CheckpointKeeper,
    ) -> None:
        super().__init__(config, pool, trust, logbook, keeper)
        key = SigningKey.load(config.keys.signing_key)
        # The node's own key, under the same guard as its ledger: once the bundle revokes it, no report is signed.
        key.guard = lambda key_id: trust.current.signing_refusal(config.origin, key_id)
        self.fields_list = FieldsList.load(config.reports.fields)
        self.issuer = Issuer(config.origin, pool, logbook, keeper, key, config.reports, self.fields_list)

    async def IssueReport(
        self,
        request: report_pb2.IssueReportRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> report_pb2.IssuedReport:
        call = edge.current()
        kind = _KINDS.get(request.kind)
        if kind is None:
            raise edge.invalid("kind is required: REPORT_KIND_SPECIAL or REPORT_KIND_FULL")
        subject, person = _subject(request.subject)
        call.subject_id = subject
        start, end = self._period(request.period_start, request.period_end)
        try:
            fields = self.fields_list.chosen(list(request.fields))
        except FieldsListError as exc:
            raise edge.invalid(f"fields: {exc}") from None
        caller = call.caller
        if person:
            await self._authorized(caller, subject, request)
            levels = frozenset(_LEVELS)  # the person, or the one the person authorized, sees the person's records
        else:
            levels = frozenset(level for level in _LEVELS if caller.sees_level(level, _ACTIVE))
        try:
            issued = await self.issuer.issue(
                ReportRequest(
                    subject_id=subject,
                    kind=kind,
                    period_start=start,
                    period_end=end,
                    fields=fields,
                    caller=caller.identity,
                    role=caller.role,
                    sharing_levels=levels,
                    purpose=request.purpose,
                ),
                self.trust.current,
            )
        except ReportRefused as exc:
            raise edge.Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)) from None
        except ReportUnavailable as exc:
            raise edge.Refused(grpc.StatusCode.UNAVAILABLE, str(exc)) from None
        except SigningRefused as exc:
            raise edge.Refused(grpc.StatusCode.FAILED_PRECONDITION, f"this node may not sign reports: {exc}") from None
        pdf = await self._pdf(issued.signed) if request.pdf else b""
        call.answer(len(issued.records), [f"report {issued.report_number} issued", *issued.records])
        return report_pb2.IssuedReport(
            report_number=issued.report_number,
            verification_code=issued.verification_code,
            issued_at=issued.issued_at.isoformat(),
            verify_url=issued.verify_url,
            signed_report=issued.signed,
            pdf=pdf,
        )

    async def VerifyReport(
        self,
        request: report_pb2.VerifyReportRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> report_pb2.ReportVerdict:
        call = edge.current()
        if len(request.report_sha256) not in (0, 32):
            raise edge.invalid("report_sha256 must be the 32 bytes of a SHA-256 digest, or empty")
        caller = call.caller
        verdict = await register.verify(
            self.pool,
            request.report_number,
            request.verification_code,
            request.report_sha256,
            caller.identity,
            caller.role,
        )
        call.subject_id = verdict.subject_id
        call.answer(
            len(verdict.changes),
            # Any number is answered (not genuine), so the one the caller typed is caller text: no ID number kept.
            [f"report {withhold(request.report_number)} verified: {'genuine' if verdict.genuine else 'not genuine'}"]
            + [f"{c.record_id} {c.change}" for c in verdict.changes],
        )
        held = verdict.held if verdict.genuine else None
        return report_pb2.ReportVerdict(
            subject_id=held.subject_id if held else "",
            kind=_KIND_CODES[held.row["kind"]] if held else report_pb2.REPORT_KIND_UNSPECIFIED,
            period_start=held.row["period_start"].isoformat() if held else "",
            period_end=held.row["period_end"].isoformat() if held else "",
            report_sha256=bytes(held.row["report_sha256"]) if held else b"",
            genuine=verdict.genuine,
            reason=verdict.reason,
            issued_at=verdict.issued_at.isoformat() if verdict.issued_at else "",
            issuer=self.config.origin if verdict.genuine else "",
            report_number=request.report_number,
            changes=[
                report_pb2.RecordChange(
                    record_id=c.record_id,
                    origin=c.origin,
                    seq_in_report=c.seq_in_report,
                    seq_now=c.seq_now,
                    change=c.change,
                    standing_now=c.standing_now,
                )
                for c in verdict.changes
            ],
        )

    async def ViewReport(
        self,
        request: report_pb2.ViewReportRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> report_pb2.IssuedReport:
        call = edge.current()
        caller = call.caller
        async with self.pool.acquire() as conn, conn.transaction():
            held = await register.find(conn, request.report_number, request.verification_code)
            if held is None:
                raise edge.Refused(grpc.StatusCode.NOT_FOUND, register.NOT_ISSUED)
            call.subject_id = held.subject_id
            if is_pseudonym(held.subject_id):
                raise edge.Refused(
                    grpc.StatusCode.PERMISSION_DENIED,
                    "a natural person's report is not shown by code; ask the person for the report itself",
                )
            levels = await conn.fetch(
                "SELECT DISTINCT sharing_level FROM records WHERE record_id = ANY($1)",
                [i["record_id"] for i in json.loads(held.row["included"])],
            )
            hidden = sorted(
                SHARING.get(r["sharing_level"], "restricted")
                for r in levels
                if not caller.sees_level(r["sharing_level"], _ACTIVE)
            )
            if hidden:
                # The code is a bearer token the subject hands to anyone: it opens no more than the viewer may see.
                raise edge.Refused(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"this report holds records shared only at level {', '.join(hidden)}, which you may not see;"
                    " ask the subject for a report issued to you",
                )
            await log_access(conn, held.report_number, caller.identity, caller.role, "view", request.purpose)
            signed = await register.signed_report(conn, held)
        pdf = await self._pdf(signed) if request.pdf else b""
        call.answer(1, [f"report {held.report_number} viewed"])
        return report_pb2.IssuedReport(
            report_number=held.report_number,
            verification_code=request.verification_code,
            issued_at=held.issued_at.isoformat(),
            verify_url=self.issuer.verify_url(held.report_number, request.verification_code),
            signed_report=signed,
            pdf=pdf,
        )

    async def _pdf(self, signed: bytes) -> bytes:
        """The PDF of a report this node signed, its bytes signed by this node's key, rendered off the event loop."""
        try:
            return await asyncio.to_thread(issued_pdf, signed, self.trust.current, self.issuer.key)
        except SigningRefused as exc:
            raise edge.Refused(grpc.StatusCode.FAILED_PRECONDITION, f"this node may not sign reports: {exc}") from None
        except ReportInvalid as exc:  # a report it holds no longer checks out (its key revoked since): say so
            raise edge.Refused(
                grpc.StatusCode.FAILED_PRECONDITION, f"cannot render this report as a PDF: {exc}"
            ) from None

    def _period(self, start_text: str, end_text: str) -> tuple[dt.date, dt.date]:
        """The report period: default the last ``reports.max_period_years`` years, never longer, never ahead."""
        today = publicity_today()
        years = self.config.reports.max_period_years
        end = _date("period_end", end_text) if end_text else today
        start = _date("period_start", start_text) if start_text else _years_before(end, years)
        if end > today:
            raise edge.invalid(f"period_end {end} is after today: a report covers what has happened")
        if start > end:
            raise edge.invalid(f"period_start {start} is after period_end {end}")
        if start < _years_before(end, years):
            raise edge.invalid(f"the period is longer than {years} years, the most a report may cover")
        return start, end

    async def _authorized(self, caller: Caller, subject: str, request: report_pb2.IssueReportRequest) -> None:
        """The person, or a holder of the person's authorization for reports that the node holds in force."""
        if caller.identity == subject:
            return
        refusal = (
            "a natural person's report goes only to the person, or to a holder of the person's authorization"
            " (scope 'report') that the node holds as a record in force"
        )
        if not request.HasField("authorization"):
            raise edge.Refused(grpc.StatusCode.PERMISSION_DENIED, refusal)
        try:
            presented = authorization_terms.of(request.authorization, self.pseudonymizer)
        except authorization_terms.AuthorizationInvalid as exc:
            raise edge.invalid(f"authorization: {exc}") from None
        if presented.subject_id != subject:
            raise edge.Refused(
                grpc.StatusCode.PERMISSION_DENIED, "the authorization presented is about another subject"
            )
        async with self.pool.acquire() as conn:
            if await held.honoured(conn, presented, caller.identity, REPORT_SCOPE, publicity_today()):
                return
        raise edge.Refused(grpc.StatusCode.PERMISSION_DENIED, f"the authorization presented is {held.NOT_HELD}")


def _subject(raw: str) -> tuple[str, bool]:
    """The subject id and whether it is a natural person: a USCC, or the federation's pseudonym of a person."""
    text = raw.strip()
    if is_pseudonym(text):
        return text, True
    try:
        return uscc_codes.validate(raw).code, False
    except uscc_codes.InvalidSubjectCode as exc:
        raise edge.invalid(
            f"subject: {exc.message}; give a USCC, or a natural person's pseudonym ({PSEUDONYM_PREFIX}…),"
            " never an ID number"
        ) from None


def _date(name: str, text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise edge.invalid(f"{name} {edge.quote(text)} is not a date YYYY-MM-DD") from None


def _years_before(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)
