"""``credex cases …``, ``credex objection file`` and ``credex repair file|decision|verify``.

Filing and reading go to any node over gRPC with the caller's certificate (a government
office, or a platform acting for the subject); decisions go to the record's origin with an
operator's certificate. ``credex repair verify`` needs no node at all: the repair decision
(修复决定书) is checked against the trust bundle offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from google.protobuf.message import Message
from rich.table import Table

from credex.crypto.keys import load_public
from credex.crypto.trust import TrustBundle, TrustBundleError
from credex.domain.case_rules import CaseRules, RegionRules
from credex.node.cases import MessageRejected, verify_decision
from credex.node.channels import open_channel
from credex.node.cli.app import (
    BundleOption,
    CaOption,
    CertOption,
    ConfigOption,
    CredexTyper,
    FederationKeyOption,
    KeyOption,
    TlsFiles,
    app,
    call_node,
    console,
    fail,
    trust_and_tls,
)
from credex.node.cli.checks import NodeOption, _print_json
from credex.v1 import case_pb2, case_pb2_grpc, event_pb2

cases_app = CredexTyper(
    help="objection and repair cases: list, show, and decide them at the origin", no_args_is_help=True
)
objection_app = CredexTyper(help="objections (异议) to a record, filed on any node", no_args_is_help=True)
repair_app = CredexTyper(help="credit repair (信用修复): file, download and verify the decision", no_args_is_help=True)
app.add_typer(cases_app, name="cases")
app.add_typer(objection_app, name="objection")
app.add_typer(repair_app, name="repair")

ActorOption = Annotated[str, typer.Option(help="who decides, by name (kept in the case file)")]
JsonOption = Annotated[bool, typer.Option("--json")]


def _tls(
    config: Path | None,
    bundle: Path | None,
    federation_key: Path | None,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
) -> TlsFiles:
    if config is None and bundle is None:
        return (ca, cert, key)  # no signature is checked by these commands: TLS files alone will do
    return trust_and_tls(config, bundle, federation_key, ca, cert, key)[1]


def _call(node: str, tls: TlsFiles, method: str, request: Message) -> Message:
    """One CaseService call; the caller narrows the answer to the method's message."""
    ca, cert, key = tls

    async def ask() -> Message:
        async with open_channel(node, ca=ca, cert=cert, key=key) as channel:
            stub = case_pb2_grpc.CaseServiceStub(channel)
            answer: Message = await getattr(stub, method)(request, timeout=60)
            return answer

    return call_node(node, tls, method, ask())


def _show(case: case_pb2.Case, as_json: bool) -> None:
    if as_json:
        _print_json(case)
        return
    kind = case_pb2.CaseKind.Name(case.kind).removeprefix("CASE_KIND_").lower()
    console.print(
        f"{case.case_id} · {kind} · record {case.record_id} ({case.record_origin}) · {case.state}"
        f" {case.status_label}{' · ' + case.outcome if case.outcome else ''}"
        f"{' · due ' + case.due_on if case.due_on else ''}{' · OVERDUE' if case.overdue else ''}",
        soft_wrap=True,
    )
    for line in (
        f"filed on {case.filed_on} by {case.filer} for {case.on_behalf_of} at {case.filed_at}",
        case.eligibility and f"eligibility: {case.eligibility}",
        case.delivery and f"delivery: {case.delivery}",
        case.decision_number and f"repair decision: {case.decision_number}",
        case.unconfirmed_peers and f"not yet confirmed by: {', '.join(case.unconfirmed_peers)}",
    ):
        if line:
            console.print(line, soft_wrap=True)
    table = Table(title_justify="left")
    for column in ("#", "at", "actor", "stage", "state", "opinion"):
        table.add_column(column, overflow="fold")
    for step in case.steps:
        table.add_row(str(step.step), step.at, step.actor, step.stage, step.state, step.opinion)
    console.print(table)


@cases_app.command("rules")
def cases_rules(
    file: Annotated[Path | None, typer.Argument(help="an edited rules file; default: the shipped one")] = None,
) -> None:
    """Check a case rules file (deadlines per region) and show what each region gets; exit 1 naming each problem."""
    rules = CaseRules.load(file)  # a CaseRulesError names the file and every problem
    title = f"case rules: {file or 'shipped'} (working days on the official calendar)"
    table = Table(title=title, title_justify="left")
    for column in ("region", *RegionRules.model_fields):
        table.add_column(column, overflow="fold")
    for region, values in (("default", rules.default), *sorted(rules.regions.items())):
        table.add_row(region, *(_shown(getattr(values, name)) for name in RegionRules.model_fields))
    console.print(table)


def _shown(value: object) -> str:
    return ", ".join(map(str, value)) if isinstance(value, tuple) else str(value)


@cases_app.command("list")
def cases_list(
    node: NodeOption,
    state: Annotated[str, typer.Option(help="only cases in this state")] = "",
    overdue: Annotated[bool, typer.Option("--overdue", help="only open cases past their deadline")] = False,
    page_size: Annotated[int, typer.Option("--page-size", "--limit", min=1, max=1000, help="cases per page")] = 100,
    after: Annotated[str, typer.Option(help="the page after this case (the cursor the last page printed)")] = "",
    purpose: Annotated[str, typer.Option(help="why you ask; goes to the audit log")] = "",
    config: ConfigOption = None,
    bundle: BundleOption = None,
    federation_key: FederationKeyOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """The cases a node holds (an operator sees all; a government caller those it filed), a page at a time."""
    tls = _tls(config, bundle, federation_key, ca, cert, key)
    request = case_pb2.ListCasesRequest(state=state, overdue=overdue, limit=page_size, after=after, purpose=purpose)
    answer = _call(node, tls, "ListCases", request)
    assert isinstance(answer, case_pb2.ListCasesResponse)
    if as_json:
        _print_json(answer)
        return
    table = Table(title_justify="left")
    for column in ("case", "kind", "record", "origin", "state", "status", "due", "filed on"):
        table.add_column(column, overflow="fold")
    for case in answer.cases:
        kind = case_pb2.CaseKind.Name(case.kind).removeprefix("CASE_KIND_").lower()
        due = case.due_on + (" OVERDUE" if case.overdue else "")
        table.add_row(
            case.case_id, kind, case.record_id, case.record_origin, case.state, case.status_label, due, case.filed_on
        )
    console.print(table if answer.cases else "no cases")
    if answer.next_after:
        console.print(f"more: --after {answer.next_after}", soft_wrap=True)


@cases_app.command("show")
def cases_show(
    case_id: Annotated[str, typer.Argument()],
    node: NodeOption,
    purpose: Annotated[str, typer.Option(help="why you ask; goes to the audit log")] = "",
    config: ConfigOption = None,
    bundle: BundleOption = None,
    federation_key: FederationKeyOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """One case with its full file: every step, actor, opinion and time."""
    tls = _tls(config, bundle, federation_key, ca, cert, key)
    answer = _call(node, tls, "GetCase", case_pb2.GetCaseRequest(case_id=case_id, purpose=purpose))
    assert isinstance(answer, case_pb2.Case)
    _show(answer, as_json)


@cases_app.command("accept")
def cases_accept(
    case_id: Annotated[str, typer.Argument()],
    node: NodeOption,
    refuse: Annotated[bool, typer.Option("--refuse", help="do not accept the case (give --opinion)")] = False,
    to_provider: Annotated[bool, typer.Option("--to-provider", help="objection: pass to the source unit")] = False,
    opinion: Annotated[str, typer.Option()] = "",
    actor: ActorOption = "",
    config: ConfigOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Take a case in at the origin (or refuse it, with the reason)."""
    tls = _tls(config, None, None, ca, cert, key)
    request = case_pb2.AcceptCaseRequest(
        case_id=case_id, accept=not refuse, opinion=opinion, to_provider=to_provider, actor=actor
    )
    answer = _call(node, tls, "AcceptCase", request)
    assert isinstance(answer, case_pb2.Case)
    _show(answer, as_json)


@cases_app.command("decide")
def cases_decide(
    case_id: Annotated[str, typer.Argument()],
    outcome: Annotated[str, typer.Argument(help="objection: deleted, corrected, ...; repair: approved or denied")],
    node: NodeOption,
    opinion: Annotated[str, typer.Option()] = "",
    change: Annotated[
        list[str] | None, typer.Option(help="FIELD=OLD=>NEW, for corrected or supplemented; repeat for each field")
    ] = None,
    decided_by: Annotated[str, typer.Option(help="the identifying unit that decided")] = "",
    actor: ActorOption = "",
    config: ConfigOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Decide a case at the origin; the outcome is signed into the origin's log."""
    changes = []
    for given in change or []:
        field, sep, rest = given.partition("=")
        old, arrow, new = rest.partition("=>")
        if not sep or not arrow or not field:
            raise fail(f"--change {given!r}: write FIELD=OLD=>NEW, e.g. penalty.fine_yuan=20000=>2000")
        changes.append(event_pb2.FieldChange(field=field, old_value=old, new_value=new))
    tls = _tls(config, None, None, ca, cert, key)
    request = case_pb2.DecideCaseRequest(
        case_id=case_id, outcome=outcome, opinion=opinion, changes=changes, decided_by=decided_by, actor=actor
    )
    answer = _call(node, tls, "DecideCase", request)
    assert isinstance(answer, case_pb2.Case)
    _show(answer, as_json)


@cases_app.command("extend")
def cases_extend(
    case_id: Annotated[str, typer.Argument()],
    node: NodeOption,
    reason: Annotated[str, typer.Option(help="why; the applicant is told")],
    days: Annotated[int, typer.Option(min=1, max=20, help="working days more")],
    actor: ActorOption = "",
    config: ConfigOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Take more working days for a case, with the reason."""
    tls = _tls(config, None, None, ca, cert, key)
    request = case_pb2.ExtendCaseRequest(case_id=case_id, reason=reason, working_days=days, actor=actor)
    answer = _call(node, tls, "ExtendCase", request)
    assert isinstance(answer, case_pb2.Case)
    _show(answer, as_json)


@cases_app.command("withdraw")
def cases_withdraw(
    case_id: Annotated[str, typer.Argument()],
    node: NodeOption,
    reason: Annotated[str, typer.Option()],
    actor: ActorOption = "",
    config: ConfigOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Close an open case at the applicant's request; an objection's mark is removed."""
    tls = _tls(config, None, None, ca, cert, key)
    answer = _call(node, tls, "WithdrawCase", case_pb2.WithdrawCaseRequest(case_id=case_id, reason=reason, actor=actor))
    assert isinstance(answer, case_pb2.Case)
    _show(answer, as_json)


@cases_app.command("review")
def cases_review(
    case_id: Annotated[str, typer.Argument()],
    node: NodeOption,
    reason: Annotated[str, typer.Option(help="the objector's grounds for review")],
    actor: ActorOption = "",
    config: ConfigOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """复核: reopen a decided objection for review (once); decide it again with `credex cases decide`."""
    tls = _tls(config, None, None, ca, cert, key)
    answer = _call(node, tls, "ReviewCase", case_pb2.ReviewCaseRequest(case_id=case_id, reason=reason, actor=actor))
    assert isinstance(answer, case_pb2.Case)
    _show(answer, as_json)


@objection_app.command("file")
def objection_file(
    record_id: Annotated[str, typer.Argument()],
    node: NodeOption,
    subject: Annotated[str, typer.Option(help="the record's subject, on whose behalf you file")],
    request_id: Annotated[str, typer.Option(help="your own id of this request: filing it again makes no new case")],
    grounds: Annotated[str, typer.Option(help="error, omission, window, listing or repair_result")],
    statement: Annotated[str, typer.Option()] = "",
    purpose: Annotated[str, typer.Option(help="goes to the audit log")] = "异议申请",
    config: ConfigOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """File an objection on this node; it is routed to the record's origin."""
    tls = _tls(config, None, None, ca, cert, key)
    request = case_pb2.FileObjectionRequest(
        request_id=request_id,
        record_id=record_id,
        on_behalf_of=subject,
        grounds=grounds,
        statement=statement,
        purpose=purpose,
    )
    answer = _call(node, tls, "FileObjection", request)
    assert isinstance(answer, case_pb2.FileCaseResponse)
    if not answer.created and not as_json:
        console.print("filed before with this request id: the same case")
    _show(answer.case, as_json)


ReasonOption = Annotated[str, typer.Option(help="why; the origin keeps it in the case file")]


def _applicant(method: str, request: Message, node: str, tls: TlsFiles, as_json: bool) -> None:
    """The filer's own step, asked on the node it filed on; that node carries it to the origin."""
    answer = _call(node, tls, method, request)
    assert isinstance(answer, case_pb2.Case)
    _show(answer, as_json)  # its delivery line says whether the origin has the request yet


@objection_app.command("withdraw")
def objection_withdraw(
    case_id: Annotated[str, typer.Argument()],
    node: NodeOption,
    reason: ReasonOption,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Withdraw an objection you filed, on the node you filed it on; the record's mark comes off."""
    request = case_pb2.WithdrawCaseRequest(case_id=case_id, reason=reason)
    _applicant("WithdrawCase", request, node, _tls(None, None, None, ca, cert, key), as_json)


@objection_app.command("review")
def objection_review(
    case_id: Annotated[str, typer.Argument()],
    node: NodeOption,
    reason: Annotated[str, typer.Option(help="your grounds for review (复核) of the outcome")],
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Ask for review (复核) of a decided objection you filed, once, on the node you filed it on."""
    request = case_pb2.ReviewCaseRequest(case_id=case_id, reason=reason)
    _applicant("ReviewCase", request, node, _tls(None, None, None, ca, cert, key), as_json)


# The same step for a repair: one command, registered under both verbs' groups.
repair_app.command("withdraw", help="Withdraw a repair you filed, on the node you filed it on, while it is undecided.")(
    objection_withdraw
)


@repair_app.command("file")
def repair_file(
    record_id: Annotated[str, typer.Argument()],
    node: NodeOption,
    subject: Annotated[str, typer.Option(help="the record's subject, on whose behalf you file")],
    request_id: Annotated[str, typer.Option(help="your own id of this request: filing it again makes no new case")],
    proof: Annotated[str, typer.Option(help="reference to the proof that the legal duty is fully met")] = "",
    commitment: Annotated[str, typer.Option(help="reference to the signed credit commitment (信用承诺书)")] = "",
    statement: Annotated[str, typer.Option()] = "",
    purpose: Annotated[str, typer.Option(help="goes to the audit log")] = "信用修复",
    config: ConfigOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """File a credit repair; eligibility is judged at once and explained."""
    tls = _tls(config, None, None, ca, cert, key)
    request = case_pb2.FileRepairRequest(
        request_id=request_id,
        record_id=record_id,
        on_behalf_of=subject,
        proof_of_duty=proof,
        commitment=commitment,
        statement=statement,
        purpose=purpose,
    )
    answer = _call(node, tls, "FileRepair", request)
    assert isinstance(answer, case_pb2.FileCaseResponse)
    _show(answer.case, as_json)


@repair_app.command("decision")
def repair_decision(
    case_id: Annotated[str, typer.Argument()],
    node: Annotated[str, typer.Option(help="host:port of the origin's node, which issues the decision")],
    out: Annotated[Path, typer.Option(help="where to write the signed decision")],
    purpose: Annotated[str, typer.Option(help="goes to the audit log")] = "下载信用修复决定书",
    config: ConfigOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
) -> None:
    """Download the repair decision (修复决定书) of an approved repair, signed by the origin."""
    tls = _tls(config, None, None, ca, cert, key)
    answer = _call(node, tls, "GetRepairDecision", case_pb2.GetCaseRequest(case_id=case_id, purpose=purpose))
    assert isinstance(answer, case_pb2.RepairDecisionDocument)
    out.write_bytes(answer.envelope.SerializeToString())
    console.print(f"wrote {out}; check it with `credex repair verify {out} --trust BUNDLE`")


@repair_app.command("verify")
def repair_verify(
    file: Annotated[Path, typer.Argument(help="a repair decision written by `credex repair decision`")],
    trust: Annotated[Path, typer.Option(help="the federation's signed trust bundle")],
    federation_key: Annotated[
        Path | None, typer.Option(help="the federation public key: checks the bundle's own signature too")
    ] = None,
) -> None:
    """Check a repair decision offline: signed by the origin it names, with a key the trust bundle lists."""
    try:
        if federation_key is not None:
            bundle = TrustBundle.load_signed(trust, load_public(federation_key))
        else:
            bundle = _unverified_bundle(trust)
        decision = verify_decision(file.read_bytes(), bundle)
    except (MessageRejected, TrustBundleError) as exc:
        raise fail(f"{file}: NOT valid: {exc}") from None
    console.print(
        f"valid: 修复决定书 {decision.decision_number}, case {decision.case_id}: record {decision.record_id} of"
        f" {decision.record_origin} {decision.decision} on {decision.decided_on} by {decision.unit}"
        f" (REPAIR event {decision.repair_seq})",
        soft_wrap=True,
    )
    if federation_key is None:
        console.print("note: the trust bundle's own signature was not checked (give --federation-key)")


def _unverified_bundle(path: Path) -> TrustBundle:
    """The members of a signed bundle file, read without the federation key (the caller says so)."""
    import base64
    import json

    try:
        envelope = json.loads(path.read_bytes())
        return TrustBundle.model_validate_json(base64.b64decode(envelope["payload"], validate=True))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TrustBundleError(f"{path} is not a signed trust bundle: {exc}") from None
