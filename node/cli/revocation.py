"""``credex revoke``, ``credex hide``, ``credex unhide`` and ``credex expire``: the origin's decisions on its records.

Each signs one event in the node's own log, which the relay publishes to every
region. With ``--node`` the decision is asked of the running node over gRPC with an
operator's certificate; with ``--config`` alone it is taken on the node's own store,
which the embedded PostgreSQL allows only while the node is stopped. Both run
:mod:`credex.node.ledger.standing`. A record of another origin is refused with the
reason, and nothing changes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from credex.node.channels import open_channel
from credex.node.cli.app import (
    CaOption,
    CertOption,
    KeyOption,
    NodeConfigOption,
    app,
    call_node,
    console,
    fail,
    load_settings,
    run_on_node,
)
from credex.node.ledger import standing as decisions
from credex.node.ledger.expiry import ExpiryRun, expire_due
from credex.node.store import events as state
from credex.v1 import standing_pb2, standing_pb2_grpc

if TYPE_CHECKING:
    from credex.node.runtime import Node

RecordArgument = Annotated[str, typer.Argument(help="the record id, e.g. 310000-CF-…")]
ReasonOption = Annotated[str, typer.Option(help="why: signed into the event, shown to every region")]
RunningNodeOption = Annotated[
    str | None, typer.Option("--node", help="host:port of the running node to ask (with an operator's certificate)")
]
StoreConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="the node's node.toml: without --node, decide on its store (the node stopped)"),
]


def _decide(
    decision: decisions.Decision,
    method: str,
    record_id: str,
    reason: str,
    done: str,
    already: str,
    running: tuple[str | None, Path | None, Path | None, Path | None, Path | None],
) -> None:
    node, config, ca, cert, key = running
    if node is not None:
        answer = _ask(
            node, config, (ca, cert, key), method, standing_pb2.StandingRequest(record_id=record_id, reason=reason)
        )
        changed, origin, seq = answer.changed, answer.origin, answer.seq
    else:
        if config is None:
            raise fail("give --node ADDR (a running node) or --config (the node's node.toml, the node stopped)")
        store_config = config

        async def work(running_node: Node) -> state.StoredEvent | None:
            assert running_node.pool is not None
            return await decision(running_node.pool, running_node.ledger, record_id, reason)

        event = run_on_node(store_config, work)
        changed, origin, seq = event is not None, event.origin if event else "", event.seq if event else 0
    if not changed:
        console.print(f"{record_id} is already {already}; nothing changed", soft_wrap=True)
        return
    console.print(f"{record_id} {done}: event {origin}#{seq} signed; every region follows", soft_wrap=True)


def _ask(
    node: str,
    config: Path | None,
    tls: tuple[Path | None, Path | None, Path | None],
    method: str,
    request: standing_pb2.StandingRequest,
) -> standing_pb2.StandingResponse:
    """One StandingService call; the TLS files not given come from --config's node certificate."""
    ca, cert, key = tls
    if config is not None:
        settings = load_settings(config).grpc.tls
        ca, cert, key = ca or settings.client_ca, cert or settings.cert, key or settings.key

    async def ask() -> standing_pb2.StandingResponse:
        async with open_channel(node, ca=ca, cert=cert, key=key) as channel:
            stub = standing_pb2_grpc.StandingServiceStub(channel)
            answer: standing_pb2.StandingResponse = await getattr(stub, method)(request, timeout=60)
            return answer

    return call_node(node, (ca, cert, key), method, ask())


@app.command()
def revoke(
    record_id: RecordArgument,
    reason: ReasonOption,
    node: RunningNodeOption = None,
    config: StoreConfigOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
) -> None:
    """Withdraw a record of this origin whose act was annulled (on review, in court): out of every view and check."""
    _decide(decisions.revoke, "Revoke", record_id, reason, "revoked", "revoked", (node, config, ca, cert, key))


@app.command()
def hide(
    record_id: RecordArgument,
    reason: ReasonOption,
    node: RunningNodeOption = None,
    config: StoreConfigOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
) -> None:
    """Hide a record of this origin for now (bankruptcy restructuring): out of public views and checks, reversibly."""
    _decide(decisions.hide, "Hide", record_id, reason, "hidden", "hidden", (node, config, ca, cert, key))


@app.command()
def unhide(
    record_id: RecordArgument,
    reason: ReasonOption,
    node: RunningNodeOption = None,
    config: StoreConfigOption = None,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
) -> None:
    """Lift the temporary hiding of a record of this origin: it is in publication again (until its window ends)."""
    _decide(
        decisions.unhide,
        "Unhide",
        record_id,
        reason,
        "no longer hidden",
        "in publication",
        (node, config, ca, cert, key),
    )


@app.command()
def expire(
    config: NodeConfigOption,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list what is due; sign nothing")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Sign EXPIRE now for this origin's records whose publicity window ended before today (China time)."""

    async def work(node: Node) -> ExpiryRun:
        assert node.pool is not None
        return await expire_due(node.pool, node.ledger, node.config.expiry.batch_size, dry_run=dry_run)

    run = run_on_node(config, work)
    if as_json:
        body = {"today": run.today.isoformat(), "expired": run.expired, "batches": run.batches}
        if run.record_ids is not None:
            body["due"] = run.record_ids
        print(json.dumps(body, ensure_ascii=False, indent=2))
        return
    if run.record_ids is not None:
        console.print(f"{len(run.record_ids)} records due to expire (windows ended before {run.today}):")
        for record_id in run.record_ids:
            console.print(f"    {record_id}", soft_wrap=True)
        return
    console.print(f"{run.expired} records expired in {run.batches} batches (windows ended before {run.today})")
