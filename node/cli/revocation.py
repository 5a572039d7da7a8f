"""``credex revoke``, ``credex hide``, ``credex unhide`` and ``credex expire``: the origin's decisions on its records.

Each signs one event in the node's own log, which the relay publishes to every
region; run them against the node's config (its database and signing key). A record
of another origin is refused with the reason, and nothing changes.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated

import asyncpg
import typer

from credex.node.cli.app import NodeConfigOption, app, console, run_on_node
from credex.node.ledger import Ledger
from credex.node.ledger import standing as decisions
from credex.node.ledger.expiry import ExpiryRun, expire_due
from credex.node.store import events as state

if TYPE_CHECKING:
    from credex.node.runtime import Node

RecordArgument = Annotated[str, typer.Argument(help="the record id, e.g. 310000-CF-…")]
ReasonOption = Annotated[str, typer.Option(help="why: signed into the event, shown to every region")]
Decision = Callable[[asyncpg.Pool, Ledger, str, str], Awaitable[state.StoredEvent | None]]


def _decide(config: NodeConfigOption, decision: Decision, record_id: str, reason: str, done: str, already: str) -> None:
    async def work(node: Node) -> state.StoredEvent | None:
        assert node.pool is not None
        return await decision(node.pool, node.ledger, record_id, reason)

    event = run_on_node(config, work)
    if event is None:
        console.print(f"{record_id} is already {already}; nothing changed", soft_wrap=True)
        return
    console.print(f"{record_id} {done}: event {event.origin}#{event.seq} signed; every region follows", soft_wrap=True)


@app.command()
def revoke(record_id: RecordArgument, reason: ReasonOption, config: NodeConfigOption) -> None:
    """Withdraw a record of this origin whose act was annulled (on review, in court): out of every view and check."""
    _decide(config, decisions.revoke, record_id, reason, "revoked", "revoked")


@app.command()
def hide(record_id: RecordArgument, reason: ReasonOption, config: NodeConfigOption) -> None:
    """Hide a record of this origin for now (bankruptcy restructuring): out of public views and checks, reversibly."""
    _decide(config, decisions.hide, record_id, reason, "hidden", "hidden")


@app.command()
def unhide(record_id: RecordArgument, reason: ReasonOption, config: NodeConfigOption) -> None:
    """Lift the temporary hiding of a record of this origin: it is in publication again (until its window ends)."""
    _decide(config, decisions.unhide, record_id, reason, "no longer hidden", "in publication")


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
