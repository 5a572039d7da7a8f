"""``credex lookup``, ``search``, ``proof``, ``verify``, ``audit``: ask a node, check its answer with the bundle.

Envelopes in JSON output and proof files take DSSE's JSON envelope form
(:func:`credex.node.chain.proofs.envelope_to_dsse`). A call that fails is
explained by :func:`credex.node.channels.call_failed`: a refused TLS handshake
names the missing or wrong flag instead of "Socket closed".
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import grpc
import typer
from rich.table import Table

from credex.node.channels import call_failed, open_channel
from credex.node.cli.app import (
    BundleOption,
    CaOption,
    CertOption,
    ConfigOption,
    FederationKeyOption,
    KeyOption,
    app,
    console,
    fail,
    trust_and_tls,
)
from credex.node.cli.checks import AuthorizationOption, read_authorizations
from credex.node.cli.person_ids import read_person_id

if TYPE_CHECKING:
    from credex.crypto.trust import TrustBundle
    from credex.node.services.client import CheckedEntry
    from credex.v1 import lookup_pb2


def entry_json(checked: Any) -> dict[str, Any]:
    """One profile entry of ``lookup --json``: the verdict, the record, and the envelope in DSSE form."""
    from google.protobuf.json_format import MessageToDict

    from credex.node.chain.proofs import envelope_to_dsse

    entry = MessageToDict(checked.entry, preserving_proto_field_name=True)
    entry["envelope"] = envelope_to_dsse(checked.entry.envelope)
    return {"verified": checked.verified, "problem": checked.problem, **entry}


@app.command()
def lookup(
    uscc: Annotated[str, typer.Argument(help="统一社会信用代码 (or --person)")] = "",
    *,
    node: Annotated[str, typer.Option(help="host:port of any node")],
    person: Annotated[
        str,
        typer.Option(
            help="a natural person's resident ID number instead of a USCC ('-' to type it hidden, '@FILE'); "
            "the node keeps no copy"
        ),
    ] = "",
    scenario: Annotated[str, typer.Option(help="for --person: the scenario you ask in, e.g. 公职录用")] = "",
    unit: Annotated[str, typer.Option(help="for --person: your unit's USCC, the authorization's grantee")] = "",
    authorization: AuthorizationOption = None,
    legal_basis: Annotated[str, typer.Option(help="for --person: a legal basis allowed for persons")] = "",
    config: ConfigOption = None,
    bundle: BundleOption = None,
    federation_key: FederationKeyOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    purpose: Annotated[str, typer.Option(help="why you ask; goes to the audit log")] = "",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Ask a node for a subject's profile and check every origin's signature yourself.

    A person by ID number (--person) with their --authorization for --unit in --scenario, or a --legal-basis.
    """
    from credex.node.services import get_profile
    from credex.v1 import lookup_pb2

    if bool(uscc) == bool(person):
        raise typer.BadParameter("give the subject's USCC, or --person with an ID number (not both)", param_hint="USCC")
    person = read_person_id(person)
    leave = lookup_pb2.PersonLeave(
        scenario=scenario,
        requesting_unit_uscc=unit,
        legal_basis=legal_basis,
        authorizations=read_authorizations(authorization),
    )
    if not person and leave.ByteSize():
        raise typer.BadParameter("--scenario, --unit, --authorization and --legal-basis are for --person")
    trust, (ca, cert, key) = trust_and_tls(config, bundle, federation_key, ca, cert, key)
    asked = (
        _person_profile(node, person, leave, trust, purpose, (ca, cert, key))
        if person
        else get_profile(node, uscc, trust, purpose=purpose, tls=(ca, cert, key))
    )
    try:
        subject, entries = asyncio.run(asked)
    except grpc.aio.AioRpcError as exc:
        raise call_failed(exc, node, "GetProfile", ca=ca, cert=cert, key=key) from None
    if as_json:
        print(json.dumps([entry_json(c) for c in entries], ensure_ascii=False, indent=2))
        return
    table = Table(title=f"{subject}: {len(entries)} records", title_justify="left")
    for column in ("origin", "record", "decided", "authority", "publicity end", "signature"):
        table.add_column(column)
    for c in entries:
        r = c.entry.record
        table.add_row(
            c.entry.origin,
            r.record_id,
            r.decision_date,
            r.deciding_authority.name,
            r.publicity.end,
            "[green]✓ verified[/]" if c.verified else f"[red]✗ {c.problem}[/]",
        )
    console.print(table)
    if not all(c.verified for c in entries):
        raise typer.Exit(2)


async def _person_profile(
    node: str,
    number: str,
    leave: lookup_pb2.PersonLeave,
    trust: TrustBundle,
    purpose: str,
    tls: tuple[Path | None, Path | None, Path | None],
) -> tuple[str, list[CheckedEntry]]:
    """A person's profile under their pseudonym, each entry checked against the bundle as ``get_profile`` does."""
    from credex.crypto.trust import EventVerifier
    from credex.node.services.client import check_entry
    from credex.v1 import lookup_pb2, lookup_pb2_grpc

    ca, cert, key = tls
    request = lookup_pb2.GetProfileRequest(person_id=number, leave=leave, purpose=purpose)
    async with open_channel(node, ca=ca, cert=cert, key=key) as channel:
        profile = await lookup_pb2_grpc.LookupServiceStub(channel).GetProfile(request, timeout=30)
    verifier = EventVerifier(trust)
    return profile.subject_id, [check_entry(e, verifier) for e in profile.entries]


@app.command()
def search(
    name: Annotated[str, typer.Argument(help="a name in any character form, or part of a code")],
    node: Annotated[str, typer.Option(help="host:port of any node")],
    config: ConfigOption = None,
    bundle: BundleOption = None,
    federation_key: FederationKeyOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    purpose: Annotated[str, typer.Option(help="why you ask; goes to the audit log")] = "",
    page_size: Annotated[int, typer.Option(min=1, max=100, help="subjects per page")] = 20,
    page_token: Annotated[str, typer.Option(help="the next-page token a previous search printed")] = "",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Find subjects by name or code fragment, best match first; `credex lookup` then shows one's records."""
    from google.protobuf.json_format import MessageToDict

    from credex.v1 import lookup_pb2, lookup_pb2_grpc, record_pb2

    _, (ca, cert, key) = trust_and_tls(config, bundle, federation_key, ca, cert, key)
    request = lookup_pb2.SearchSubjectsRequest(query=name, page_size=page_size, page_token=page_token, purpose=purpose)

    async def ask() -> lookup_pb2.SearchSubjectsResponse:
        async with open_channel(node, ca=ca, cert=cert, key=key) as channel:
            return await lookup_pb2_grpc.LookupServiceStub(channel).SearchSubjects(request, timeout=30)

    try:
        found = asyncio.run(ask())
    except grpc.aio.AioRpcError as exc:
        raise call_failed(exc, node, "SearchSubjects", ca=ca, cert=cert, key=key) from None
    if as_json:
        print(json.dumps(MessageToDict(found, preserving_proto_field_name=True), ensure_ascii=False, indent=2))
        return
    table = Table(title=f"{name}: {len(found.subjects)} subjects", title_justify="left")
    for column in ("subject", "name", "type", "origins", "records", "score"):
        table.add_column(column)
    for match in found.subjects:
        table.add_row(
            match.subject_id,
            match.name,
            record_pb2.SubjectType.Name(match.type).removeprefix("SUBJECT_TYPE_").lower(),
            " ".join(match.origins),
            str(match.record_count),
            f"{match.score:.2f}",
        )
    console.print(table)
    if found.next_page_token:
        console.print(f"more: --page-token {found.next_page_token}", soft_wrap=True)


@app.command()
def audit(
    node: Annotated[str, typer.Option(help="host:port of the node whose copy to audit")],
    origin: Annotated[str, typer.Option(help="whose log (GB/T 2260 code)")],
    config: ConfigOption = None,
    bundle: BundleOption = None,
    federation_key: FederationKeyOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    state: Annotated[
        Path | None, typer.Option(help="remember what was audited; later audits check consistency")
    ] = None,
    over: Annotated[
        str,
        typer.Option(help="grpc, or http: --node is the node's tile server (tiles_listen), read as tlog-tiles"),
    ] = "grpc",
) -> None:
    """Verify a node's copy of an origin's log end to end. Exit 0: OK; 1: divergence; 2: could not audit."""
    from credex.node.chain import AuditError, AuditReport, audit_origin, audit_origin_over_tiles
    from credex.node.channels import PeerChannels

    if over not in ("grpc", "http"):
        raise fail(f"--over is grpc or http, not {over!r}", code=2)
    trust, (ca, cert, key) = trust_and_tls(config, bundle, federation_key, ca, cert, key)
    remembered = json.loads(state.read_text()) if state is not None and state.exists() else {}

    async def run() -> AuditReport:
        last = remembered.get(origin, {}) if state else None
        if over == "http":
            import httpx

            from credex.crypto.tls import client_context

            # HTTPS with the federation CA, and our certificate when we have one
            context = None if ca is None else client_context(ca, cert, key)
            base = f"{'https' if context else 'http'}://{node}"
            async with httpx.AsyncClient(base_url=base, verify=context or False) as client:
                return await audit_origin_over_tiles(client, origin, trust, last)
        channels = PeerChannels(ca, cert, key)
        try:
            return await audit_origin(channels, node, origin, trust, last)
        finally:
            await channels.close()

    try:
        report = asyncio.run(run())
    except AuditError as exc:
        raise fail(str(exc), code=2) from None
    for check in report.checks:
        console.print(f"  ✓ {check}")
    if report.ok:
        console.print(f"OK {origin} size {report.size} root {report.root.hex()}", soft_wrap=True)
        if state is not None:
            remembered[origin] = {"size": report.size, "root": report.root.hex()}
            state.parent.mkdir(parents=True, exist_ok=True)
            state.write_text(json.dumps(remembered, indent=2))
        return
    console.print(f"[red]DIVERGENCE[/] in {node}'s copy of {origin}: {report.divergence}", soft_wrap=True)
    console.print(json.dumps(report.evidence, ensure_ascii=False, indent=2), soft_wrap=True)
    raise typer.Exit(1)


@app.command()
def proof(
    record_id: Annotated[str, typer.Argument(help="the record whose current state to prove")],
    node: Annotated[str, typer.Option(help="host:port of any node holding the record")],
    config: ConfigOption = None,
    bundle: BundleOption = None,
    federation_key: FederationKeyOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    out: Annotated[Path | None, typer.Option(help="write the proof here (default: print it)")] = None,
    purpose: Annotated[str, typer.Option(help="why you ask; goes to the audit log (government callers must say)")] = "",
) -> None:
    """Fetch a self-contained, offline-verifiable proof of one record (envelope, audit path, checkpoint)."""
    from credex.node.chain import ProofInvalid, check_inclusion, proof_to_json
    from credex.v1 import log_pb2, log_pb2_grpc

    trust, (ca, cert, key) = trust_and_tls(config, bundle, federation_key, ca, cert, key)
    origin = record_id.split("-", 1)[0]

    async def fetch() -> log_pb2.InclusionProof:
        async with open_channel(node, ca=ca, cert=cert, key=key) as channel:
            return await log_pb2_grpc.LogServiceStub(channel).GetInclusionProof(
                log_pb2.GetInclusionProofRequest(origin=origin, record_id=record_id, purpose=purpose),
                timeout=30,
            )

    try:
        fetched = asyncio.run(fetch())
    except grpc.aio.AioRpcError as exc:
        raise call_failed(exc, node, "GetInclusionProof", ca=ca, cert=cert, key=key) from None
    try:
        check_inclusion(fetched, trust)  # never hand out a proof that does not hold
    except ProofInvalid as exc:
        raise fail(f"the node served a proof that does not verify: {exc}") from None
    text = proof_to_json(fetched)
    if out is None:
        print(text)
    else:
        out.write_text(text + "\n")
        console.print(f"wrote {out}: event {fetched.seq} of {origin} in its log of {fetched.tree_size}")


@app.command()
def verify(
    file: Annotated[Path, typer.Argument(help="a proof file written by `credex proof`")],
    config: ConfigOption = None,
    bundle: BundleOption = None,
    federation_key: FederationKeyOption = None,
) -> None:
    """Check a proof file offline with the trust bundle only. Exit 0 when it holds, 1 when not."""
    from credex.node.chain import ProofInvalid, check_inclusion, proof_from_json

    trust, _ = trust_and_tls(config, bundle, federation_key)
    try:
        checked = check_inclusion(proof_from_json(file.read_text()), trust)
    except OSError as exc:
        raise fail(f"cannot read {file}: {exc.strerror}") from None
    except ProofInvalid as exc:
        console.print(f"[red]INVALID[/] {file}: {exc}", soft_wrap=True)
        raise typer.Exit(1) from None
    record = checked.event.event.record
    console.print(
        f"OK {record.record_id}: event {checked.event.event.seq} signed by {record.origin},"
        f" included in its log of {checked.checkpoint.size} (root {checked.checkpoint.root.hex()[:16]}…)",
        soft_wrap=True,
    )
    console.print(f"   {record.subject.name} {record.subject.uscc} {record.document_number} {record.decision_date}")
    if checked.witnesses:
        console.print(f"   checkpoint cosigned by the witnesses {', '.join(checked.witnesses)}")
