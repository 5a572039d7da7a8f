"""An approved repair's spread: every other region confirms that its verified copy of this log holds it.

A peer's signed receipt says its verified checkpoint of this origin covers the REPAIR
event; the case is done when every member of the trust bundle has said so, and a repair
still unconfirmed past its deadline is late (the courier raises the alarm per peer).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import grpc

from credex.node.cases import casefile, copies
from credex.node.cases.model import CaseFailure, Kind, State, invalid
from credex.node.store import Connection
from credex.v1 import case_pb2

if TYPE_CHECKING:
    from credex.node.cases.desk import CaseDesk


async def confirm(desk: CaseDesk, receipt: case_pb2.RepairReceipt, peer: str) -> case_pb2.DeliverCaseResponse:
    """A peer's signed word that its verified copy of this log holds a repair."""
    async with desk.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT * FROM cases WHERE case_id = $1 FOR UPDATE", receipt.case_id)
        if row is None or not row["at_origin"] or row["kind"] != Kind.REPAIR or row["repair_seq"] is None:
            raise CaseFailure(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"no approved repair {receipt.case_id[:60]} decided here; receipt not taken",
            )
        if receipt.record_origin != desk.origin or receipt.seq != row["repair_seq"]:
            raise invalid(f"the receipt names seq {receipt.seq} of {receipt.record_origin[:16]}, not the repair's")
        if receipt.checkpoint_size < receipt.seq:
            raise invalid("a checkpoint smaller than the repair's seq does not cover it")
        created = await conn.fetchval(
            "INSERT INTO repair_confirmations (case_id, peer, seq, checkpoint_size) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT DO NOTHING RETURNING 1",
            receipt.case_id,
            peer,
            receipt.seq,
            receipt.checkpoint_size,
        )
        if created:
            await casefile.add_step(
                conn,
                receipt.case_id,
                peer,
                "propagation",
                row["state"],
                f"applied: verified checkpoint {receipt.checkpoint_size} covers seq {receipt.seq}",
            )
        state = await finish_if_confirmed(desk, conn, receipt.case_id)
        if created:
            await copies.queue_status(desk, conn, receipt.case_id)
        return case_pb2.DeliverCaseResponse(case_id=receipt.case_id, state=state, created=bool(created))


async def finish_if_confirmed(desk: CaseDesk, conn: Connection, case_id: str) -> str:
    missing = await unconfirmed(desk, conn, case_id)
    state = await conn.fetchval("SELECT state FROM cases WHERE case_id = $1", case_id)
    if state == State.PROPAGATING and not missing:
        await conn.execute(
            "UPDATE cases SET state = 'done', closed_at = now(), due_on = NULL WHERE case_id = $1", case_id
        )
        await casefile.add_step(conn, case_id, desk.origin, "propagation", State.DONE, "every region confirmed")
        return str(State.DONE)
    return str(state)


async def unconfirmed(desk: CaseDesk, conn: Connection, case_id: str) -> list[str]:
    confirmed = {
        r["peer"] for r in await conn.fetch("SELECT peer FROM repair_confirmations WHERE case_id = $1", case_id)
    }
    return [peer for peer in desk.peers() if peer not in confirmed]


async def late_repairs(desk: CaseDesk) -> list[tuple[str, list[str], dt.date]]:
    """Repairs propagating past their deadline, with the peers that have not confirmed."""
    today = desk.clock()
    late = []
    async with desk.pool.acquire() as conn:
        for row in await conn.fetch(
            "SELECT case_id, due_on FROM cases WHERE at_origin AND state = 'propagating' AND due_on < $1", today
        ):
            missing = await unconfirmed(desk, conn, row["case_id"])
            if missing:
                late.append((row["case_id"], missing, row["due_on"]))
    return late
