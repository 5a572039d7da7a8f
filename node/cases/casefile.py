"""The case file (案卷): its steps, and how a case is shown.

A case's file keeps every step with its actor, stage, the state it left the case in, the
opinion and the time (credit-use.md, Objection 6), numbered densely per case; the view
adds what platforms show: the status code and its label, the deadline and whether it has
passed, and the repair decision's number.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from credex.crypto.trust import TrustBundle
from credex.node.cases import messages
from credex.node.cases.model import Kind, status_code, status_label
from credex.node.store import Connection
from credex.v1 import case_pb2

KINDS = {Kind.OBJECTION: case_pb2.CASE_KIND_OBJECTION, Kind.REPAIR: case_pb2.CASE_KIND_REPAIR}


async def add_step(conn: Connection, case_id: str, actor: str, stage: str, state: str, opinion: str) -> None:
    """Append a step to the case's file, numbered after the last one."""
    await conn.execute(
        "INSERT INTO case_steps (case_id, step, actor, stage, state, opinion)"
        " SELECT $1, coalesce(max(step), 0) + 1, $2, $3, $4, $5 FROM case_steps WHERE case_id = $1",
        case_id,
        actor,
        stage,
        state,
        opinion,
    )


async def view(
    conn: Connection, row: Any, unconfirmed: list[str], bundle: TrustBundle, today: dt.date
) -> case_pb2.Case:
    """The case in ``row`` (a ``cases`` row) with its file, as callers are shown it."""
    steps = await conn.fetch(
        "SELECT step, at, actor, stage, state, opinion FROM case_steps WHERE case_id = $1 ORDER BY step",
        row["case_id"],
    )
    code = status_code(row["state"], row["outcome"])
    number = ""
    if row["decision"] is not None:
        number = messages.verify_decision(bytes(row["decision"]), bundle).decision_number
    return case_pb2.Case(
        case_id=row["case_id"],
        kind=KINDS[Kind(row["kind"])],
        record_id=row["record_id"],
        record_origin=row["record_origin"],
        filed_on=row["filed_on"],
        filer=row["filer"],
        on_behalf_of=row["on_behalf_of"],
        state=row["state"],
        status_code=code,
        status_label=status_label(code),
        outcome=row["outcome"],
        due_on=row["due_on"].isoformat() if row["due_on"] else "",
        filed_at=row["filed_at"].isoformat(),
        closed_at=row["closed_at"].isoformat() if row["closed_at"] else "",
        steps=[
            case_pb2.CaseStep(
                step=s["step"],
                at=s["at"].isoformat(),
                actor=s["actor"],
                stage=s["stage"],
                state=s["state"],
                opinion=s["opinion"],
            )
            for s in steps
        ],
        eligibility=row["eligibility"],
        decision_number=number,
        unconfirmed_peers=unconfirmed,
        overdue=row["closed_at"] is None and row["due_on"] is not None and row["due_on"] < today,
        delivery=row["delivery"],
    )
