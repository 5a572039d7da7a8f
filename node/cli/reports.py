"""``credex report``: issue a credit report to PDF/HTML, verify one (offline, and with --node online), view by code.

``credex report USCC --kind special --period 5y --out report.pdf`` asks a node for the
signed report, checks it with the trust bundle before writing anything (the CLI
trusts the origins' and the issuer's signatures, not the node it asked), and writes
it: a PDF as the issuing node rendered and signed it (its bytes are what the
signature covers), HTML rendered here. ``credex report verify FILE`` checks a report
file with the trust bundle alone, renderer or no renderer;
with ``--node`` it also asks the issuing node whether it issued it and what has since
become of each included record.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from credex.crypto.trust import TrustBundle
from credex.domain.publicity import publicity_today
from credex.node.channels import open_channel
from credex.node.cli.app import (
    BundleOption,
    CaOption,
    CertOption,
    ConfigOption,
    CredexTyper,
    FederationKeyOption,
    KeyOption,
    app,
    call_node,
    console,
    fail,
    trust_and_tls,
)
from credex.node.cli.checks import read_authorizations
from credex.node.reports import CheckedReport, ReportInvalid, check_report
from credex.node.reports.document import report_sha256
from credex.node.reports.rendering import MAX_FILE_BYTES, check_file, render
from credex.v1 import report_pb2, report_pb2_grpc

_KINDS = {"special": report_pb2.REPORT_KIND_SPECIAL, "full": report_pb2.REPORT_KIND_FULL}
_PERIOD = re.compile(r"([1-9])y")


class _SubjectFirst(TyperGroup):
    """``credex report USCC …`` issues: a first word that is no subcommand is the subject of ``issue``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["issue", *args]
        return super().parse_args(ctx, args)


report_app = CredexTyper(
    cls=_SubjectFirst,
    help="credit reports: `credex report USCC --kind special|full --out FILE`, `credex report verify FILE`",
    no_args_is_help=True,
)
app.add_typer(report_app, name="report")


def _period_start(period: str, today: dt.date) -> dt.date:
    found = _PERIOD.fullmatch(period)
    if found is None:
        raise typer.BadParameter("a number of years from 1 to 5, e.g. 5y", param_hint="--period")
    years = int(found.group(1))
    try:
        return today.replace(year=today.year - years)
    except ValueError:  # 29 February
        return today.replace(year=today.year - years, day=28)


def _wants_pdf(out: Path) -> bool:
    """Whether to ask the node for its signed PDF; an unknown suffix is refused before any call."""
    suffix = out.suffix.lower()
    if suffix not in {".pdf", ".html", ".htm", ".json"}:
        raise typer.BadParameter(f"cannot write a report as {suffix!r}: use .pdf, .html or .json", param_hint="--out")
    return suffix == ".pdf"


def _write(checked: CheckedReport, answer: report_pb2.IssuedReport, out: Path, trust: TrustBundle) -> None:
    """Write the report; the node's PDF only once it verifies as a whole file and holds the report checked."""
    if out.suffix.lower() == ".pdf":
        try:
            in_pdf = check_file(answer.pdf, trust)
        except ReportInvalid as exc:
            raise fail(f"the node's PDF does not verify, nothing written: {exc}") from None
        if in_pdf.signed != checked.signed:
            raise fail("the node's PDF holds another report than the one it signed for you; nothing written")
        out.write_bytes(answer.pdf)
        return
    out.write_bytes(render(checked, out.suffix.lower()))


@report_app.command("issue")
def issue(
    subject: Annotated[str, typer.Argument(help="the subject's USCC (or a natural person's pseudonym)")],
    node: Annotated[str, typer.Option(help="host:port of the node to ask")],
    out: Annotated[Path, typer.Option(help="where to write the report: .pdf, .html or .json")],
    kind: Annotated[str, typer.Option(help="special (专项信用报告) or full (公共信用信息报告)")] = "special",
    period: Annotated[str, typer.Option(help="years back from --to, 1y to 5y")] = "5y",
    to: Annotated[str, typer.Option("--to", help="the period's last day, YYYY-MM-DD (default today)")] = "",
    fields: Annotated[str, typer.Option(help="field codes or names, comma-separated (default all)")] = "",
    purpose: Annotated[str, typer.Option(help="why the report is asked; goes to the audit log")] = "",
    authorization: Annotated[
        Path | None,
        typer.Option(help="a person's authorization for you (JSON of credex.v1.Authorization, scope report)"),
    ] = None,
    config: ConfigOption = None,
    bundle: BundleOption = None,
    federation_key: FederationKeyOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
) -> None:
    """Issue a credit report and write it, after checking its signature and every record's proof."""
    if kind not in _KINDS:
        raise typer.BadParameter("special or full", param_hint="--kind")
    try:
        end = dt.date.fromisoformat(to) if to else publicity_today()
    except ValueError:
        raise typer.BadParameter(f"{to!r} is not a date YYYY-MM-DD", param_hint="--to") from None
    request = report_pb2.IssueReportRequest(
        pdf=_wants_pdf(out),
        subject=subject,
        kind=_KINDS[kind],
        period_start=_period_start(period, end).isoformat(),
        period_end=end.isoformat(),
        fields=[f.strip() for f in fields.split(",") if f.strip()],
        purpose=purpose,
    )
    if authorization is not None:
        request.authorization.CopyFrom(read_authorizations([authorization])[0])
    trust, tls = trust_and_tls(config, bundle, federation_key, ca, cert, key)
    ca, cert, key = tls

    async def ask() -> report_pb2.IssuedReport:
        async with open_channel(node, ca=ca, cert=cert, key=key) as channel:
            return await report_pb2_grpc.ReportServiceStub(channel).IssueReport(request, timeout=120)

    issued = call_node(node, tls, "IssueReport", ask())
    checked = check_report(issued.signed_report, trust)
    _write(checked, issued, out, trust)
    document = checked.document
    console.print(
        f"{document['title']} {issued.report_number} for {document['subject']['id']} written to {out}\n"
        f"verification code {issued.verification_code} · {len(document['items'])} records · {issued.verify_url}",
        soft_wrap=True,
        markup=False,  # what a report or a node says is text
    )


@report_app.command("verify")
def verify(
    file: Annotated[Path, typer.Argument(help="the report: .pdf, .html or the signed .json", exists=True)],
    node: Annotated[str, typer.Option(help="host:port of the issuing node, to ask what changed since")] = "",
    config: ConfigOption = None,
    bundle: BundleOption = None,
    federation_key: FederationKeyOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
) -> None:
    """Say whether a report is genuine, when it was issued, and (with --node) what changed since."""
    size = file.stat().st_size
    if size > MAX_FILE_BYTES:  # refused before it is read: a report file is never that large
        raise fail(f"NOT GENUINE: {file} has {size:,} bytes; a credex report file has at most {MAX_FILE_BYTES:,}")
    trust, tls = trust_and_tls(config, bundle, federation_key, ca, cert, key)
    try:
        checked = check_file(file.read_bytes(), trust)
    except ReportInvalid as exc:
        raise fail(f"NOT GENUINE: {exc}") from None
    document = checked.document
    console.print(
        f"genuine: {document['title']} {checked.report_number}, issued {checked.issued_at.isoformat()} by"
        f" {checked.issuer} (key {checked.key_id}) for {document['subject']['id']};"
        f" {len(document['items'])} records, each signed by its origin and in its log",
        soft_wrap=True,
        markup=False,  # what a report or a node says is text
    )
    if not node:
        console.print("checked offline with the trust bundle; give --node to learn what changed since issue")
        return
    ca, cert, key = tls
    request = report_pb2.VerifyReportRequest(
        report_number=checked.report_number,
        verification_code=checked.verification_code,
        report_sha256=report_sha256(checked.signed),
    )

    async def ask() -> report_pb2.ReportVerdict:
        async with open_channel(node, ca=ca, cert=cert, key=key) as channel:
            return await report_pb2_grpc.ReportServiceStub(channel).VerifyReport(request, timeout=60)

    verdict = call_node(node, tls, "VerifyReport", ask())
    if not verdict.genuine:
        raise fail(f"NOT GENUINE according to {node}: {verdict.reason}")
    if not verdict.changes:
        console.print(
            f"{node}: issued by it at {verdict.issued_at}; no included record has changed since", markup=False
        )
        return
    console.print(f"{node}: issued by it at {verdict.issued_at}; changed since:", markup=False)
    for change in verdict.changes:
        console.print(
            f"  {change.record_id} ({change.origin} #{change.seq_in_report} → #{change.seq_now}): {change.change}",
            soft_wrap=True,
            markup=False,
        )


@report_app.command("view")
def view(
    number: Annotated[str, typer.Argument(help="the report number")],
    code: Annotated[str, typer.Option(help="the verification code shown with it")],
    node: Annotated[str, typer.Option(help="host:port of the issuing node")],
    out: Annotated[Path, typer.Option(help="where to write the report: .pdf, .html or .json")],
    purpose: Annotated[str, typer.Option(help="why you view it; goes to the audit log")] = "",
    config: ConfigOption = None,
    bundle: BundleOption = None,
    federation_key: FederationKeyOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
) -> None:
    """View an enterprise's report by the number and code it showed you (合规一码通); the view is logged."""
    trust, tls = trust_and_tls(config, bundle, federation_key, ca, cert, key)
    ca, cert, key = tls
    request = report_pb2.ViewReportRequest(
        report_number=number, verification_code=code, purpose=purpose, pdf=_wants_pdf(out)
    )

    async def ask() -> report_pb2.IssuedReport:
        async with open_channel(node, ca=ca, cert=cert, key=key) as channel:
            return await report_pb2_grpc.ReportServiceStub(channel).ViewReport(request, timeout=60)

    viewed = call_node(node, tls, "ViewReport", ask())
    checked = check_report(viewed.signed_report, trust)
    _write(checked, viewed, out, trust)
    console.print(f"{checked.document['title']} {checked.report_number} written to {out}", soft_wrap=True, markup=False)
