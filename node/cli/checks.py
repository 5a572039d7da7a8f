"""``credex check``, ``credex feedback``, ``credex checks overdue|of|lifted``: 逢办必查 and its trail.

A check prints every subject's hits in force with the measures the catalogue holds
for them, each with its legal basis, so an office sees why a measure applies; the
check id it prints is what ``credex feedback`` files against. ``credex checks overdue``
reads the node's own store and lists the checked subjects still awaiting feedback past
the working days the node's config allows; ``credex checks of`` asks a node who checked
a subject (Shanghai Art. 34); ``credex checks lifted`` lists the measures a unit applied whose
record has since left force, and ``credex checks lifted ack ID`` acknowledges one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import asyncpg
import typer
from google.protobuf import json_format
from google.protobuf.message import Message
from rich.table import Table

from credex.node.channels import open_channel
from credex.node.checks import OverdueFeedback, refresh_overdue_metric
from credex.node.cli.app import (
    BundleOption,
    CaOption,
    CertOption,
    ConfigOption,
    CredexTyper,
    FederationKeyOption,
    KeyOption,
    NodeConfigOption,
    app,
    call_node,
    console,
    fail,
    load_settings,
    run_on_store,
    trust_and_tls,
)
from credex.node.cli.person_ids import HIDDEN, read_person_id, read_person_ids
from credex.v1 import authorization_pb2, check_pb2, check_pb2_grpc

NodeOption = Annotated[str, typer.Option(help="host:port of the node to ask")]
PersonOption = Annotated[
    list[str] | None,
    typer.Option(
        help="a natural person's resident ID number (repeat); '-' types it hidden or pipes it in, '@FILE' reads "
        "one per line; the node keeps only its pseudonym"
    ),
]
AuthorizationOption = Annotated[
    list[Path] | None,
    typer.Option(help="a person's authorization for --unit in --scenario: JSON of credex.v1.Authorization (repeat)"),
]
OUTCOMES = {
    "punished": check_pb2.FEEDBACK_OUTCOME_PUNISHED,
    "rewarded": check_pb2.FEEDBACK_OUTCOME_REWARDED,
    "not_adopted": check_pb2.FEEDBACK_OUTCOME_NOT_ADOPTED,
}
# What a unit reading its lifted measures does, unless it says otherwise: the audit row's purpose.
LIFTED_PURPOSE = "停止执行已解除的惩戒措施 (stop applying lifted measures)"
checks_app = CredexTyper(help="checks made at this node: feedback that is overdue", no_args_is_help=True)
app.add_typer(checks_app, name="checks")


def _print_json(message: Message) -> None:
    from google.protobuf.json_format import MessageToDict

    print(json.dumps(MessageToDict(message, preserving_proto_field_name=True), ensure_ascii=False, indent=2))


def read_authorizations(paths: list[Path] | None) -> list[authorization_pb2.Authorization]:
    """Authorizations from files, each the JSON of credex.v1.Authorization: the one reader of check, lookup, report."""
    read = []
    for path in paths or []:
        given = authorization_pb2.Authorization()
        try:
            json_format.Parse(path.read_text(encoding="utf-8"), given)
        except OSError as exc:
            raise typer.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint="--authorization") from None
        except (json_format.ParseError, UnicodeDecodeError):
            # The parser's message may quote the file, and the file holds a person's ID number.
            raise typer.BadParameter(
                f"{path} is not the JSON of a credex.v1.Authorization", param_hint="--authorization"
            ) from None
        read.append(given)
    return read


@app.command()
def check(
    usccs: Annotated[list[str] | None, typer.Argument(help="the subjects' USCCs (up to 1,000)")] = None,
    *,
    scenario: Annotated[str, typer.Option(help="the scenario code, e.g. 政府采购")],
    unit: Annotated[str, typer.Option(help="the requesting unit's USCC")],
    node: NodeOption,
    person: PersonOption = None,
    authorization: AuthorizationOption = None,
    purpose: Annotated[str, typer.Option(help="why you check; goes to the audit log")] = "",
    basis: Annotated[
        str, typer.Option("--legal-basis", "--basis", help="the legal basis of the check (for persons: one allowed)")
    ] = "",
    config: ConfigOption = None,
    bundle: BundleOption = None,
    federation_key: FederationKeyOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Check subjects before granting, buying, funding, hiring or honouring: hits in force and their measures.

    Persons by ID number (--person), with their --authorization or a --legal-basis allowed for persons.
    """
    if not usccs and not person:
        raise typer.BadParameter("name the subjects: USCCs, or --person ID numbers", param_hint="USCCS")
    request = check_pb2.CheckRequest(
        usccs=usccs or [],
        scenario=scenario,
        requesting_unit_uscc=unit,
        purpose=purpose,
        legal_basis=basis,
        person_ids=read_person_ids(person or []),
        authorizations=read_authorizations(authorization),
    )
    _, tls = trust_and_tls(config, bundle, federation_key, ca, cert, key)
    ca, cert, key = tls

    async def ask() -> check_pb2.CheckResponse:
        async with open_channel(node, ca=ca, cert=cert, key=key) as channel:
            return await check_pb2_grpc.CheckServiceStub(channel).Check(request, timeout=60)

    answer = call_node(node, tls, "Check", ask())
    if as_json:
        _print_json(answer)
        return
    console.print(f"check {answer.check_id} · scenario {answer.scenario}", soft_wrap=True)
    table = Table(title_justify="left")
    for column in ("subject", "record", "origin", "list / severity", "window end", "measure", "basis"):
        table.add_column(column, overflow="fold")
    for subject in answer.subjects:
        if not subject.hits:
            table.add_row(subject.subject_id, "no record in force", "", "", "", "", "")
        for hit in subject.hits:
            rows = [(m.id + " " + m.name, m.basis) for m in hit.measures] or [("(no measure in this scenario)", "")]
            shown = hit.record_id + (" (异议中 disputed)" if hit.disputed else "")
            if hit.responsible_person:
                role = check_pb2.ResponsibleRole.Name(hit.responsible_role).removeprefix("RESPONSIBLE_ROLE_").lower()
                shown += f" via {role} {hit.responsible_person}"
            for index, (measure, measure_basis) in enumerate(rows):
                first = index == 0
                table.add_row(
                    subject.subject_id if first else "",
                    shown if first else "",
                    hit.origin if first else "",
                    hit.list_or_severity if first else "",
                    hit.window_end if first else "",
                    measure,
                    measure_basis,
                )
        for incentive in subject.incentives:
            table.add_row(subject.subject_id, "激励", "", "", "", incentive.id + " " + incentive.name, incentive.basis)
        if not subject.notify_commit_available:
            excluded = ", ".join(subject.excluded_by)
            table.add_row(subject.subject_id, "告知承诺 not available", "", "", "", excluded, "")
    console.print(table)


@app.command()
def feedback(
    check_id: Annotated[str, typer.Argument(help="the check id `credex check` printed")],
    subject: Annotated[str, typer.Option(help="the subject the feedback is about")],
    outcome: Annotated[str, typer.Option(help="punished, rewarded or not_adopted")],
    node: NodeOption,
    applied_on: Annotated[str, typer.Option(help="the date applied, YYYY-MM-DD")],
    measure: Annotated[list[str] | None, typer.Option(help="a measure id applied (repeat)")] = None,
    reason: Annotated[str, typer.Option(help="why not adopted (required for not_adopted)")] = "",
    amount: Annotated[str, typer.Option(help="the amount in exact yuan, e.g. 12000.50")] = "",
    basis: Annotated[str, typer.Option(help="the basis of what was applied")] = "",
    district: Annotated[str, typer.Option(help="the GB/T 2260 district code")] = "",
    department: Annotated[str, typer.Option(help="the department that applied it")] = "",
    department_code: Annotated[str, typer.Option(help="the code of the department that applied it")] = "",
    result: Annotated[str, typer.Option(help="what was done, in words, e.g. 罚款10万元")] = "",
    config: ConfigOption = None,
    bundle: BundleOption = None,
    federation_key: FederationKeyOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """File usage feedback (应用情况反馈) against a check: the measures applied must be ones it returned."""
    if outcome not in OUTCOMES:
        raise typer.BadParameter("punished, rewarded or not_adopted", param_hint="--outcome")
    _, tls = trust_and_tls(config, bundle, federation_key, ca, cert, key)
    request = check_pb2.FeedbackRequest(
        check_id=check_id,
        subject_id=subject,
        measures_applied=measure or [],
        outcome=OUTCOMES[outcome],
        reason=reason,
        amount_yuan=amount,
        basis=basis,
        district_code=district,
        department=department,
        applied_on=applied_on,
        result=result,
        department_code=department_code,
    )
    ca, cert, key = tls

    async def send() -> check_pb2.FeedbackReceipt:
        async with open_channel(node, ca=ca, cert=cert, key=key) as channel:
            return await check_pb2_grpc.CheckServiceStub(channel).SubmitFeedback(request, timeout=30)

    receipt = call_node(node, tls, "SubmitFeedback", send())
    if as_json:
        _print_json(receipt)
        return
    console.print(
        f"feedback on check {receipt.check_id} for {receipt.subject_id} recorded at {receipt.recorded_at}",
        soft_wrap=True,
    )
    if receipt.result or receipt.department_code:
        console.print(f"    result: {receipt.result or '—'} · department code: {receipt.department_code or '—'}")


@checks_app.command("overdue")
def checks_overdue(
    config: NodeConfigOption,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Checked subjects still awaiting usage feedback past the working days allowed (official calendar)."""
    settings = load_settings(config)
    due = settings.checks.feedback_due_working_days

    async def work(pool: asyncpg.Pool) -> list[OverdueFeedback]:
        return await refresh_overdue_metric(pool, settings.origin, due)

    overdue = run_on_store(config, work)
    if as_json:
        rows = [
            {
                "check_id": o.check_id,
                "subject_id": o.subject_id,
                "requesting_unit": o.requesting_unit,
                "scenario": o.scenario,
                "checked_at": o.checked_at.isoformat(),
                "working_days_since": o.working_days_since,
            }
            for o in overdue
        ]
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    table = Table(
        title=f"{len(overdue)} checked subjects awaiting feedback for more than {due} working days",
        title_justify="left",
    )
    for column in ("check", "subject", "requesting unit", "scenario", "checked at", "working days since"):
        table.add_column(column, overflow="fold", justify="right" if column == "working days since" else "left")
    for o in overdue:
        table.add_row(
            o.check_id,
            o.subject_id,
            o.requesting_unit,
            o.scenario,
            o.checked_at.isoformat(timespec="seconds"),
            str(o.working_days_since),
        )
    console.print(table)
    if not all(o.calendar_official for o in overdue):
        console.print("some working days fall in years the official calendar does not cover yet: Monday to Friday used")


@checks_app.command("of")
def checks_of(
    uscc: Annotated[str, typer.Argument(help="the subject's USCC (or --person)")] = "",
    *,
    node: NodeOption,
    person: Annotated[
        str,
        typer.Option(
            help="a natural person's resident ID number instead of a USCC ('-' to type it hidden, '@FILE'); "
            "never kept by the node"
        ),
    ] = "",
    page_size: Annotated[int, typer.Option(help="checks per page (at most 500)")] = 50,
    page_token: Annotated[str, typer.Option(help="the next-page token a previous page printed")] = "",
    purpose: Annotated[str, typer.Option(help="why you ask; goes to the audit log")] = "",
    config: ConfigOption = None,
    bundle: BundleOption = None,
    federation_key: FederationKeyOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Who checked a subject, when, for which scenario and purpose (for operators and the subject itself)."""
    if bool(uscc) == bool(person):
        raise typer.BadParameter("give the subject's USCC, or --person with an ID number (not both)", param_hint="USCC")
    request = check_pb2.ListChecksOfSubjectRequest(
        uscc=uscc, person_id=read_person_id(person), page_size=page_size, page_token=page_token, purpose=purpose
    )
    _, tls = trust_and_tls(config, bundle, federation_key, ca, cert, key)
    ca, cert, key = tls

    async def ask() -> check_pb2.ChecksOfSubject:
        async with open_channel(node, ca=ca, cert=cert, key=key) as channel:
            return await check_pb2_grpc.CheckServiceStub(channel).ListChecksOfSubject(request, timeout=30)

    page = call_node(node, tls, "ListChecksOfSubject", ask())
    if as_json:
        _print_json(page)
        return
    table = Table(title=f"checks of {page.subject_id or page.uscc}, newest first", title_justify="left")
    for column in ("checked at", "check", "caller", "requesting unit", "scenario", "purpose", "legal basis"):
        table.add_column(column, overflow="fold")
    for c in page.checks:
        table.add_row(c.checked_at, c.check_id, c.caller, c.requesting_unit, c.scenario, c.purpose, c.legal_basis)
    console.print(table)
    if page.next_page_token:
        console.print(f"more: --page-token {page.next_page_token}", soft_wrap=True)


@checks_app.command("pseudonym")
def checks_pseudonym(
    pseudonym_key: Annotated[Path, typer.Option(help="the federation's pseudonym key file (keys.pseudonym_key)")],
) -> None:
    """Print a person's pseudonym for access.speaks_for; the ID number is typed hidden or piped in, never an argument.

    A person's own caller is bound to the pseudonym, so that no config file holds an ID number.
    """
    from credex.crypto.pseudonym import Pseudonymizer, PseudonymKeyError
    from credex.domain.persons import validate_ric
    from credex.domain.uscc import InvalidSubjectCode

    try:
        pseudonymizer = Pseudonymizer.load(pseudonym_key)
    except PseudonymKeyError as exc:
        raise typer.BadParameter(str(exc), param_hint="--pseudonym-key") from None
    raw = read_person_id(HIDDEN)
    try:
        number = validate_ric(raw)
    except InvalidSubjectCode as exc:
        raise typer.BadParameter(exc.message, param_hint="resident ID number") from None
    print(pseudonymizer.pseudonym(number))


@checks_app.command("lifted")
def checks_lifted(
    node: NodeOption,
    action: Annotated[str, typer.Argument(help="'ack' to acknowledge one lifted measure; omit to list")] = "",
    lifted_id: Annotated[int, typer.Argument(help="with ack: the lifted measure's id, as the list shows it")] = 0,
    unit: Annotated[str, typer.Option(help="only measures this unit (USCC) applied")] = "",
    since: Annotated[str, typer.Option(help="only measures lifted on or after this day (YYYY-MM-DD)")] = "",
    unacknowledged: Annotated[bool, typer.Option(help="only those not yet acknowledged")] = False,
    page_size: Annotated[int, typer.Option(help="measures per page (at most 500)")] = 50,
    page_token: Annotated[str, typer.Option(help="the next-page token a previous page printed")] = "",
    purpose: Annotated[str, typer.Option(help="why you ask; goes to the audit log")] = LIFTED_PURPOSE,
    config: ConfigOption = None,
    bundle: BundleOption = None,
    federation_key: FederationKeyOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Measures your unit applied because of a record since repaired, revoked, deleted or hidden; `ack ID` them."""
    if action not in ("", "ack"):
        raise fail(f"unknown action {action!r}: use `credex checks lifted ack ID`, or no action to list")
    if action == "ack" and lifted_id <= 0:
        raise fail("`credex checks lifted ack` needs the lifted measure's id")
    _, tls = trust_and_tls(config, bundle, federation_key, ca, cert, key)
    ca, cert, key = tls
    if action == "ack":
        acknowledge = check_pb2.AcknowledgeLiftedMeasureRequest(id=lifted_id, purpose=purpose)

        async def ack() -> check_pb2.LiftedMeasure:
            async with open_channel(node, ca=ca, cert=cert, key=key) as channel:
                return await check_pb2_grpc.CheckServiceStub(channel).AcknowledgeLiftedMeasure(acknowledge, timeout=30)

        done = call_node(node, tls, "AcknowledgeLiftedMeasure", ack())
        if as_json:
            _print_json(done)
            return
        console.print(f"lifted measure {done.id} acknowledged at {done.acknowledged_at} by {done.acknowledged_by}")
        return
    request = check_pb2.ListLiftedMeasuresRequest(
        requesting_unit_uscc=unit,
        since=since,
        unacknowledged_only=unacknowledged,
        page_size=page_size,
        page_token=page_token,
        purpose=purpose,
    )

    async def ask() -> check_pb2.LiftedMeasures:
        async with open_channel(node, ca=ca, cert=cert, key=key) as channel:
            return await check_pb2_grpc.CheckServiceStub(channel).ListLiftedMeasures(request, timeout=30)

    page = call_node(node, tls, "ListLiftedMeasures", ask())
    if as_json:
        _print_json(page)
        return
    table = Table(title="measures applied whose record has left force, oldest first", title_justify="left")
    for column in ("id", "unit", "subject", "measure", "record", "why", "lifted on", "acknowledged", "still rests on"):
        table.add_column(column, overflow="fold")
    for m in page.measures:
        why = f"{m.reason} (seq {m.event_seq})"
        if m.reinstated_seq:
            why += f"; reinstated {m.reinstated_on} (seq {m.reinstated_seq})"
        table.add_row(
            str(m.id),
            m.requesting_unit,
            m.subject_id,
            m.measure_id,
            f"{m.record_id} ({m.record_origin})",
            why,
            m.lifted_on,
            m.acknowledged_at or "no",
            ", ".join(m.still_rests_on),
        )
    console.print(table)
    if page.next_page_token:
        console.print(f"more: --page-token {page.next_page_token}", soft_wrap=True)
