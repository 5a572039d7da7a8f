"""Late cases raise an alarm: a deadline passed at the origin is for an operator to act on, not only a note.

Every open case the origin decides has one current deadline (``due_on``, counted on the
official calendar, adjusted working weekends included) and the state says which one:
taking the case in (acceptance), deciding it (decision), the providing unit deciding an
objection passed to it (provider_review, 部门审核: the alarm names the unit, since it is the
unit that must act, and the platform only extends), or every region confirming an approved
repair (propagation). Once the day after the deadline comes, a ``case.late``
alarm is raised — once per case and deadline, so an operator who clears it is not
asked again for the same deadline — and the node resolves it itself when the case moves
on: decided, extended to a later day, closed. The file note and the overdue gauge
(:meth:`CaseDesk.note_overdue`) stay as they are; this adds the alarm ``credex alarm
list`` shows.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from credex.domain.workdays import working_days_between
from credex.node.cases.model import State
from credex.node.chain.alarms import AlarmKind

if TYPE_CHECKING:
    from credex.node.cases.desk import CaseDesk
    from credex.node.chain import Alarms

# Which deadline a case in each open state is waiting on.
DEADLINES: dict[str, str] = {
    State.SUBMITTED: "acceptance",
    State.PLATFORM_REVIEW: "decision",
    State.PROVIDER_REVIEW: "provider_review",
    State.REVIEW: "decision",
    State.ACCEPTED: "decision",
    State.UNDER_REVIEW: "decision",
    State.EXTENDED: "decision",
    State.APPROVED: "propagation",
    State.PROPAGATING: "propagation",
}
# One pass at a time on this database, so two replicas (or two rounds) never raise one alarm twice.
_LOCK = (1668571493, 1818326117)  # "case" "late"


def deadline_of(state: str) -> str:
    """The deadline a case in ``state`` waits on; a state added later is named as itself, never dropped."""
    return DEADLINES.get(state, state)


async def alarm_late_cases(desk: CaseDesk, alarms: Alarms) -> tuple[int, int]:
    """Raise an alarm for each case past its deadline, resolve those whose case moved on; (raised, resolved)."""
    today = desk.clock()
    raised = 0
    async with desk.pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", *_LOCK)
        late = await conn.fetch(
            "SELECT case_id, kind, state, due_on, record_id, provider_unit FROM cases"
            " WHERE at_origin AND closed_at IS NULL AND due_on < $1 ORDER BY due_on, case_id",
            today,
        )
        current: set[tuple[object, ...]] = set()
        for row in late:
            deadline = deadline_of(row["state"])
            due: dt.date = row["due_on"]
            key = {"case_id": row["case_id"], "deadline": deadline, "due_on": due.isoformat()}
            current.add((row["case_id"], deadline, due.isoformat()))
            days, _ = working_days_between(due, today)
            evidence = {**key, "kind": row["kind"], "state": row["state"], "working_days_late": days}
            act = "decide it, or extend it with a reason"
            if row["state"] == State.PROVIDER_REVIEW:
                evidence["provider_unit"] = row["provider_unit"]
                act = (
                    f"its providing unit {row['provider_unit']} decides it; remind the unit, or extend it with a reason"
                )
            raised += await alarms.raise_once_per(
                conn,
                desk.origin,
                AlarmKind.CASE_LATE,
                f"{row['kind']} case {row['case_id']} (record {row['record_id']}) passed its {deadline} deadline"
                f" {due} and is {row['state']}: {act} (`credex cases show {row['case_id']}`)",
                evidence,
                key,
            )
        resolved = await alarms.resolve_all_but(
            conn,
            AlarmKind.CASE_LATE,
            current,
            ("case_id", "deadline", "due_on"),
            "the case moved on: decided, extended or closed",
            origin=desk.origin,
        )
    return raised, resolved
