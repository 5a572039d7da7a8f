"""The applicant's own steps on a case it filed: withdrawing it, and asking for 复核 of an objection's outcome.

The applicant acts where it filed (credit-use.md, Objection 6 and Repair 3: the applicant may
withdraw, and may ask for review of the outcome), and only the filer who filed the case may:
a filer is known by (filing node, certificate name), as in :class:`~credex.node.cases.filing.Viewer`.
On a node that is not the record's origin the request is checked against the node's copy of
the case, signed by the node, and put in the same durable outbox as the filing, so the courier
carries it to the origin until it answers; the filer follows it in the case's ``delivery``
and, once the origin acts, in the file the origin sends back. Asking twice puts one request in
the outbox, and the origin takes a request it has already acted on as done.

At the origin a request is taken only from the node the case was filed on, for the filer who
filed it, and is carried out by the same desk operations as an operator's, with the filer as
the actor in the case file.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any

import grpc

from credex.node.cases import messages
from credex.node.cases.model import CLOSED, CaseFailure, Kind, State, invalid, refuse_state
from credex.node.store import Connection
from credex.v1 import case_pb2

if TYPE_CHECKING:
    from credex.node.cases.desk import CaseDesk


class Action(StrEnum):
    WITHDRAW = "withdraw"
    REVIEW = "review"


# The outbox purpose of each request: one of each per case, so asking again queues nothing new.
PURPOSE = {Action.WITHDRAW: "withdrawal", Action.REVIEW: "review"}


def applicant_actor(filer: str, filed_on: str) -> str:
    """The applicant as the origin's case file names it."""
    return f"{filer}@{filed_on}"


async def ask(desk: CaseDesk, case_id: str, action: Action, reason: str, filer: str) -> case_pb2.Case:
    """The filer ``filer`` of this node withdraws its case or asks for review; the case as it now stands here."""
    if not reason.strip():
        raise invalid(f"a {PURPOSE[action]} needs its reason; the origin and its case file are told it")
    async with desk.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM cases WHERE case_id = $1", case_id)
    if row is None or row["filed_on"] != desk.origin:
        raise CaseFailure(grpc.StatusCode.NOT_FOUND, f"no case {case_id[:60]} filed on this node")
    if row["filer"] != filer:
        raise CaseFailure(
            grpc.StatusCode.PERMISSION_DENIED,
            f"case {case_id} was filed by another caller: only its filer may withdraw it or ask for its review;"
            " nothing changed",
        )
    if row["at_origin"]:  # filed at the record's origin: the desk acts at once, with the filer as actor
        actor = applicant_actor(filer, desk.origin)
        if action == Action.WITHDRAW:
            return await desk.withdraw(case_id, reason, actor)
        return await desk.review(case_id, reason, actor)
    async with desk.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT * FROM cases WHERE case_id = $1 FOR UPDATE", case_id)
        assert row is not None  # cases are never deleted
        asked = await conn.fetchrow(
            "SELECT refused FROM case_outbox WHERE case_id = $1 AND purpose = $2", case_id, PURPOSE[action]
        )
        if asked is not None and asked["refused"]:
            raise CaseFailure(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"your {PURPOSE[action]} of case {case_id} was refused by {row['record_origin']}: {asked['refused']}",
            )
        if asked is None:
            _may_ask(row, action)
            filing = await conn.fetchval(
                "SELECT delivered_at IS NOT NULL FROM case_outbox WHERE case_id = $1 AND purpose = 'filing'", case_id
            )
            if not filing:
                # Sent now, the request could overtake the filing; the origin must hold the case first.
                raise CaseFailure(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"case {case_id} has not reached {row['record_origin']} yet (delivery {row['delivery']}): ask"
                    " again once it is delivered; nothing changed",
                )
            await _queue(desk, conn, row, action, reason)
        return await desk.view(conn, await desk.case_row(conn, case_id))


def _may_ask(row: Any, action: Action) -> None:
    """Refuse, on the filing node's copy, what the origin would refuse: a closed case, or review too early."""
    case_id, state = row["case_id"], row["state"]
    if action == Action.WITHDRAW and (state in CLOSED or state == State.PROPAGATING):
        raise refuse_state(case_id, state, "withdrawn")
    if action == Action.REVIEW:
        if row["kind"] != Kind.OBJECTION:
            raise CaseFailure(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"case {case_id} is a repair: 复核 is asked of an objection's outcome (object to a repair result"
                " with an objection on grounds repair_result); nothing changed",
            )
        if state != State.DECIDED:
            raise refuse_state(case_id, state, "reviewed (only a decided objection is, once)")


async def _queue(desk: CaseDesk, conn: Connection, row: Any, action: Action, reason: str) -> None:
    request = case_pb2.ApplicantRequest(case_id=row["case_id"], action=action, reason=reason, filer=row["filer"])
    envelope = messages.seal_message(desk.ledger.key, messages.message_at(desk.origin, request))
    await conn.execute(
        "INSERT INTO case_outbox (case_id, purpose, target, envelope) VALUES ($1, $2, $3, $4)",
        row["case_id"],
        PURPOSE[action],
        row["record_origin"],
        envelope,
    )
    await conn.execute(
        "UPDATE cases SET delivery = $2 WHERE case_id = $1",
        row["case_id"],
        f"{PURPOSE[action]} asked; pending delivery to {row['record_origin']}",
    )


async def take(desk: CaseDesk, request: case_pb2.ApplicantRequest, sender: str) -> case_pb2.DeliverCaseResponse:
    """At the origin: the applicant's request carried by the node ``sender`` it filed on."""
    try:
        action = Action(request.action)
    except ValueError:
        raise invalid(f"action {request.action[:20]!r} is neither withdraw nor review") from None
    if not request.reason.strip() or len(request.reason) > 500:
        raise invalid("the request's reason is missing or longer than 500 characters")
    async with desk.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM cases WHERE case_id = $1", request.case_id)
        if row is None or not row["at_origin"] or row["filed_on"] != sender:
            raise CaseFailure(
                grpc.StatusCode.PERMISSION_DENIED,
                f"no case {request.case_id[:60]} filed on {sender} for a record of {desk.origin}: a request on a"
                " case comes from the node it was filed on; nothing changed",
            )
        if request.filer != row["filer"]:
            raise CaseFailure(
                grpc.StatusCode.PERMISSION_DENIED,
                f"case {request.case_id} was filed by another caller of {sender}: only its filer may withdraw it or"
                " ask for its review; nothing changed",
            )
        actor = applicant_actor(row["filer"], sender)
        if await _done_before(conn, row, action, actor):
            return case_pb2.DeliverCaseResponse(case_id=row["case_id"], state=row["state"], created=False)
    if action == Action.WITHDRAW:
        case = await desk.withdraw(row["case_id"], request.reason, actor)
    else:
        case = await desk.review(row["case_id"], request.reason, actor)
    return case_pb2.DeliverCaseResponse(case_id=case.case_id, state=case.state, created=True)


async def _done_before(conn: Connection, row: Any, action: Action, actor: str) -> bool:
    """Whether this request was carried out already (a second delivery after a lost acknowledgement)."""
    stage = "withdrawal" if action == Action.WITHDRAW else "review"
    return bool(
        await conn.fetchval(
            "SELECT 1 FROM case_steps WHERE case_id = $1 AND stage = $2 AND actor = $3 LIMIT 1",
            row["case_id"],
            stage,
            actor,
        )
    )
