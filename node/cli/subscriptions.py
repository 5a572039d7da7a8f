"""``credex subscribe`` and ``credex authorization grant|end``: take a stream, and say who may take whose.

``subscribe`` prints one line per message, checking each with the trust bundle as it
comes (the envelope's signature, the proof against the origin's signed checkpoint, the
seq against the cursor), and saves the cursor atomically after each, so a subscriber
killed at any moment, or cut off by the node, resumes with ``--from`` where it stopped:
no event missed, none taken twice.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Annotated

import grpc
import typer

from credex.domain.publicity import publicity_today
from credex.node.channels import call_failed, open_channel
from credex.node.cli.app import (
    BundleOption,
    CaOption,
    CertOption,
    ConfigOption,
    CredexTyper,
    FederationKeyOption,
    KeyOption,
    app,
    console,
    fail,
    trust_and_tls,
)
from credex.node.cli.person_ids import FROM_FILE, HIDDEN, read_person_id
from credex.node.streams.subscriber import Subscriber, load_cursor, positions, save_cursor
from credex.v1 import authorization_pb2, event_pb2, record_pb2, subscription_pb2, subscription_pb2_grpc

NodeOption = Annotated[str, typer.Option(help="host:port of the node to subscribe to")]
authorization_app = CredexTyper(
    help="authorizations as signed records: checks, reports and streams honour them (operators)", no_args_is_help=True
)
app.add_typer(authorization_app, name="authorization")


def _names(raw: str, enum: type, prefix: str, what: str) -> list[int]:
    """``penalty,black_list`` as enum numbers of ``KIND_PENALTY``…; an unknown name is an error naming the known."""
    numbers = []
    for name in filter(None, (part.strip() for part in raw.split(","))):
        try:
            numbers.append(enum.Value(prefix + name.upper()))  # type: ignore[attr-defined]
        except ValueError:
            known = ", ".join(
                v.name.removeprefix(prefix).lower()
                for v in enum.DESCRIPTOR.values  # type: ignore[attr-defined]
                if v.number
            )
            raise fail(f"unknown {what} {name!r}; known: {known}") from None
    return numbers


def _split(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


@app.command()
def subscribe(
    node: NodeOption,
    cursor_file: Annotated[Path, typer.Option("--from", help="cursor file: read to resume, rewritten as you go")],
    kinds: Annotated[str, typer.Option(help="record kinds, e.g. penalty,black_list")] = "",
    origins: Annotated[str, typer.Option(help="origin codes, e.g. 310000,320000")] = "",
    event_types: Annotated[str, typer.Option(help="event types, e.g. upsert,revoke,repair")] = "",
    subjects: Annotated[str, typer.Option(help="USCCs or person pseudonyms, comma-separated")] = "",
    scenario: Annotated[str, typer.Option(help="a check scenario: only records that trigger its measures")] = "",
    purpose: Annotated[str, typer.Option(help="why you subscribe; goes to the audit log")] = "",
    max_events: Annotated[int, typer.Option(help="stop after this many events and changes (0: run until stopped)")] = 0,
    config: ConfigOption = None,
    bundle: BundleOption = None,
    federation_key: FederationKeyOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
) -> None:
    """Take a node's stream of events, checking every signature and proof, resumable from a cursor file."""
    trust, (ca, cert, key) = trust_and_tls(config, bundle, federation_key, ca, cert, key)
    request = subscription_pb2.SubscribeRequest(
        filter=subscription_pb2.SubscriptionFilter(
            origins=_split(origins),
            kinds=_names(kinds, record_pb2.Kind, "KIND_", "kind"),  # type: ignore[arg-type]
            event_types=_names(event_types, event_pb2.EventType, "EVENT_TYPE_", "event type"),  # type: ignore[arg-type]
            subjects=_split(subjects),
            scenario=scenario,
        ),
        purpose=purpose,
    )
    cursor, proved = load_cursor(cursor_file)
    subscriber = Subscriber(trust, cursor, proved)
    request.cursor.extend(positions(cursor))
    request.proved.extend(positions(proved))

    async def take() -> int:
        taken = 0
        async with open_channel(node, ca=ca, cert=cert, key=key) as channel:
            call = subscription_pb2_grpc.SubscriptionServiceStub(channel).Subscribe(request)
            async for message in call:
                for item in message.items:
                    line = subscriber.take_item(item)
                    save_cursor(cursor_file, subscriber.cursor, subscriber.proved())
                    if line.kind != "heartbeat":
                        console.print(line.line(), soft_wrap=True, markup=False, highlight=False)
                    if line.kind in ("event", "change"):
                        taken += 1
                        if max_events and taken >= max_events:
                            call.cancel()
                            return taken
        return taken

    try:
        asyncio.run(take())
    except grpc.aio.AioRpcError as exc:
        raise call_failed(exc, node, "Subscribe", ca=ca, cert=cert, key=key) from None


@authorization_app.command("grant")
def authorization_grant(
    node: NodeOption,
    authorization_id: Annotated[str, typer.Argument(help="the granting platform's id for the authorization")],
    subject: Annotated[
        str,
        typer.Option(
            help="the enterprise's USCC, or a person's pseudonym or ID number (made the pseudonym); "
            "'-' types an ID number hidden, '@FILE' reads it from a file"
        ),
    ],
    grantee: Annotated[str, typer.Option(help="the unit allowed, by USCC")],
    document: Annotated[Path, typer.Option(help="the signed authorization document (its SHA-256 is kept)")],
    valid_until: Annotated[str, typer.Option(help="last day in force, ISO date")],
    valid_from: Annotated[str, typer.Option(help="first day in force, ISO date (default today)")] = "",
    scope: Annotated[
        str, typer.Option(help="what for, comma-separated: 'stream', 'report', or a check's scenario code")
    ] = "stream",
    config: ConfigOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
) -> None:
    """Sign a subject's authorization into the node's log, for every region (operators only).

    It is a record like any other: checks, reports and streams on every node of the
    federation honour it once they hold it, and ``end`` revokes it everywhere.
    """
    if subject == HIDDEN or subject.startswith(FROM_FILE):
        subject = read_person_id(subject, option="--subject")
    given = authorization_pb2.Authorization(
        authorization_id=authorization_id,
        subject=subject,
        grantee=grantee,
        scope=scope,
        valid_from=valid_from or publicity_today().isoformat(),
        valid_until=valid_until,
        document_sha256=hashlib.sha256(document.read_bytes()).digest(),
    )
    receipt = _call(
        node,
        config,
        ca,
        cert,
        key,
        "GrantAuthorization",
        lambda stub: stub.GrantAuthorization(subscription_pb2.GrantAuthorizationRequest(authorization=given)),
    )
    state = "in force" if receipt.active else "ended before (grant a new one)"
    console.print(
        f"authorization {receipt.authorization_id}: {receipt.subject_id} → {receipt.grantee}, {state};"
        f" record {receipt.record_id}",
        soft_wrap=True,
    )


@authorization_app.command("end")
def authorization_end(
    node: NodeOption,
    authorization_id: Annotated[str, typer.Argument()],
    grantee: Annotated[str, typer.Option(help="the financing platform's unit, by USCC")],
    reason: Annotated[str, typer.Option(help="why it ends (withdrawn by the subject, expired contract …)")] = "",
    config: ConfigOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
) -> None:
    """End an authorization now: the platform's streams stop sending the subject at their next event."""
    receipt = _call(
        node,
        config,
        ca,
        cert,
        key,
        "EndAuthorization",
        lambda stub: stub.EndAuthorization(
            subscription_pb2.EndAuthorizationRequest(authorization_id=authorization_id, grantee=grantee, reason=reason)
        ),
    )
    console.print(
        f"authorization {receipt.authorization_id}: {receipt.subject_id} → {receipt.grantee}, ended;"
        f" record {receipt.record_id} revoked in every region",
        soft_wrap=True,
    )


def _call(
    node: str,
    config: Path | None,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    method: str,
    ask: object,
) -> subscription_pb2.AuthorizationReceipt:
    if config is not None:
        from credex.node.cli.app import load_settings

        tls = load_settings(config).grpc.tls
        ca, cert, key = ca or tls.client_ca, cert or tls.cert, key or tls.key

    async def run() -> subscription_pb2.AuthorizationReceipt:
        async with open_channel(node, ca=ca, cert=cert, key=key) as channel:
            stub = subscription_pb2_grpc.SubscriptionServiceStub(channel)
            answer: subscription_pb2.AuthorizationReceipt = await ask(stub)  # type: ignore[operator]
            return answer

    try:
        return asyncio.run(run())
    except grpc.aio.AioRpcError as exc:
        raise call_failed(exc, node, method, ca=ca, cert=cert, key=key) from None
