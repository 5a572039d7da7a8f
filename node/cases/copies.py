"""The filing node's copy of a case: the origin queues where the case stands, the filing node takes it in.

The origin sends its whole view of the case (state, deadline, file, and the signed
repair decision) after every change, replacing any undelivered older one; the filing
node keeps the newest version, so a filer follows its case where it filed it.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import grpc

from credex.node.cases import messages
from credex.node.cases.filing import parse_time
from credex.node.cases.model import CaseFailure, State, invalid
from credex.node.store import Connection
from credex.v1 import case_pb2

if TYPE_CHECKING:
    from credex.node.cases.desk import CaseDesk

MAX_STEPS = 200
STATUS_BYTES = 40 * 1024  # well inside the edge's bound on a delivered envelope


async def queue_status(desk: CaseDesk, conn: Connection, case_id: str) -> None:
    """Queue where a case stands for the node it was filed on; an undelivered older status is replaced."""
    row = await desk.case_row(conn, case_id)
    if not row["at_origin"] or row["filed_on"] == desk.origin:
        return
    view = await desk.view(conn, row)
    status = case_pb2.CaseStatus(
        case_id=case_id,
        state=view.state,
        outcome=view.outcome,
        due_on=view.due_on,
        closed_at=view.closed_at,
        version=len(view.steps),
        steps=view.steps,
    )
    if row["decision"] is not None:
        status.decision.ParseFromString(bytes(row["decision"]))
    fit(status)
    envelope = messages.seal_message(desk.ledger.key, messages.message_at(desk.origin, status))
    await conn.execute(
        "INSERT INTO case_outbox (case_id, purpose, target, envelope) VALUES ($1, 'status', $2, $3)"
        " ON CONFLICT (case_id, purpose, target) DO UPDATE SET envelope = excluded.envelope, attempts = 0,"
        " next_attempt_at = now(), last_error = '', delivered_at = NULL, refused = ''",
        case_id,
        row["filed_on"],
        envelope,
    )


async def take_status(desk: CaseDesk, status: case_pb2.CaseStatus, origin: str) -> case_pb2.DeliverCaseResponse:
    """The origin's word on a case filed here: the newest version replaces the state and the file held."""
    async with desk.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT * FROM cases WHERE case_id = $1 FOR UPDATE", status.case_id)
        if row is None or row["at_origin"] or row["record_origin"] != origin:
            raise CaseFailure(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"no case {status.case_id[:60]} filed here for a record of {origin}; status not taken",
            )
        if status.state not in set(State) or len(status.steps) > MAX_STEPS:
            raise invalid("the status names an unknown state or too many steps")
        decision = b""
        if status.HasField("decision"):
            decision = status.decision.SerializeToString(deterministic=True)
            try:
                if messages.verify_decision(decision, desk.trust.current).case_id != status.case_id:
                    raise invalid("the repair decision sent is of another case")
            except messages.MessageRejected as exc:
                raise invalid(f"the repair decision sent does not verify: {exc}") from None
        if status.version <= row["origin_version"]:
            return case_pb2.DeliverCaseResponse(case_id=status.case_id, state=row["state"], created=False)
        await conn.execute(
            "UPDATE cases SET state = $2, outcome = $3, due_on = $4, closed_at = $5, origin_version = $6,"
            " decision = coalesce($7, decision) WHERE case_id = $1",
            status.case_id,
            status.state,
            status.outcome[:64],
            _date_or_none(status.due_on),
            _time_or_none(status.closed_at),
            status.version,
            decision or None,
        )
        await conn.execute("DELETE FROM case_steps WHERE case_id = $1", status.case_id)
        await conn.executemany(
            "INSERT INTO case_steps (case_id, step, at, actor, stage, state, opinion)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [
                (status.case_id, index, parse_time(s.at), s.actor, s.stage, s.state, s.opinion)
                for index, s in enumerate(status.steps, start=1)
            ],
        )
        return case_pb2.DeliverCaseResponse(case_id=status.case_id, state=status.state, created=True)


def fit(status: case_pb2.CaseStatus) -> None:
    """Shorten long opinions, then drop the oldest steps, until the status fits one delivery."""
    if status.ByteSize() > STATUS_BYTES:
        for step in status.steps:
            if len(step.opinion) > 200:
                step.opinion = step.opinion[:199] + "…"
    while status.ByteSize() > STATUS_BYTES or len(status.steps) > MAX_STEPS:
        del status.steps[0]


def _date_or_none(text: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(text) if text else None
    except ValueError:
        return None


def _time_or_none(text: str) -> dt.datetime | None:
    return parse_time(text) if text else None
