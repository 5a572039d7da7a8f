"""A case past a deadline raises an alarm at its origin, once per case and deadline, resolved when it moves on.

Deadlines are counted on the official calendar: a repair Jiangsu (320000) takes in on Friday
13 February 2026 is due for acceptance three working days later — Saturday the 14th is an
adjusted working day and the Spring Festival holiday follows — on Wednesday the 25th.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json

from typer.testing import CliRunner

from credex.node.cases import lateness
from credex.node.cli import app
from credex.v1 import case_pb2

from .cases_support import (
    SOURCE_UNIT,
    Regions,
    arrived,
    objection,
    penalty,
    publish,
    regions_fixture,  # noqa: F401 (the regions fixture)
    repair,
)
from .conftest import eventually


async def late_alarms(regions: Regions, open_only: bool = True) -> list[dict[str, object]]:
    assert regions.jiangsu.pool is not None
    async with regions.jiangsu.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT evidence, cleared_by FROM alarms WHERE kind = 'case.late'"
            + (" AND cleared_at IS NULL" if open_only else "")
            + " ORDER BY id"
        )
    return [{**json.loads(r["evidence"]), "cleared_by": r["cleared_by"]} for r in rows]


def on(regions: Regions, day: dt.date) -> None:
    regions.jiangsu.cases.clock = lambda: day


async def test_a_repair_filed_the_friday_before_an_adjusted_working_weekend_alarms_only_after_its_due_day(
    regions: Regions,
) -> None:
    on(regions, dt.date(2026, 2, 13))
    record = penalty(70, decided="2025-06-01")  # repairable by then: more than three months before
    await publish(regions.jiangsu, [record], regions.shanghai)
    filed = await regions.filer().FileRepair(repair(record, "late-1"), timeout=30)
    row = await arrived(regions, filed.case.case_id)
    assert (row["received_on"], row["due_on"]) == (dt.date(2026, 2, 13), dt.date(2026, 2, 25))
    desk, alarms = regions.jiangsu.cases, regions.jiangsu.alarms

    for day in (dt.date(2026, 2, 16), dt.date(2026, 2, 25)):  # a holiday; the due day itself
        on(regions, day)
        await lateness.alarm_late_cases(desk, alarms)
        assert await late_alarms(regions) == []

    # The node's own watch (the case courier) runs the same pass with the same clock, so which of the
    # two raises it is a race; that it is raised exactly once is not.
    on(regions, dt.date(2026, 2, 26))
    await lateness.alarm_late_cases(desk, alarms)
    assert (await lateness.alarm_late_cases(desk, alarms))[0] == 0  # once per case and deadline
    (alarm,) = await late_alarms(regions)
    assert alarm == {
        "case_id": filed.case.case_id,
        "deadline": "acceptance",
        "due_on": "2026-02-25",
        "kind": "repair",
        "state": "submitted",
        "working_days_late": 1,
        "cleared_by": None,
    }
    # The node's own watch keeps it at one too, and the operator's command shows it.
    assert regions.jiangsu.pool is not None
    await eventually(lambda: _watched(regions), timeout=60)
    assert len(await late_alarms(regions, open_only=False)) == 1
    env = {"CREDEX_DATABASE__URL": regions.federation.database_url("320000")}
    config = str(regions.federation.layout.config_path("320000"))
    shown = await asyncio.to_thread(CliRunner().invoke, app, ["alarm", "list", "--config", config], env=env)
    assert shown.exit_code == 0, shown.output
    assert "case.late" in shown.output and filed.case.case_id in shown.output

    # Taken in: the acceptance alarm is resolved by the node, and the decision clock starts afresh.
    accepted = await regions.operator().AcceptCase(
        case_pb2.AcceptCaseRequest(case_id=filed.case.case_id, accept=True, opinion="予以受理"), timeout=30
    )
    await lateness.alarm_late_cases(desk, alarms)
    assert await late_alarms(regions) == []
    assert [a["cleared_by"] for a in await late_alarms(regions, open_only=False)] == ["credex"]

    # Past the decision deadline: a second alarm, for that deadline.
    decision_due = dt.date.fromisoformat(accepted.due_on)
    on(regions, decision_due + dt.timedelta(days=1))
    await lateness.alarm_late_cases(desk, alarms)
    (alarm,) = await late_alarms(regions)
    assert (alarm["deadline"], alarm["due_on"]) == ("decision", accepted.due_on)

    # Extended with a reason to a later day: no longer late, resolved.
    await regions.operator().ExtendCase(
        case_pb2.ExtendCaseRequest(case_id=filed.case.case_id, reason="需补充材料核实", working_days=10), timeout=30
    )
    await lateness.alarm_late_cases(desk, alarms)
    assert await late_alarms(regions) == []
    assert [a["deadline"] for a in await late_alarms(regions, open_only=False)] == ["acceptance", "decision"]


async def test_a_provider_review_past_the_units_deadline_alarms_naming_the_unit_and_is_resolved_when_decided(
    regions: Regions,
) -> None:
    """The providing unit's deadline (部门审核) is a deadline like the platform's: late, it alarms, once."""
    on(regions, dt.date(2026, 3, 2))
    record = penalty(71)
    await publish(regions.jiangsu, [record], regions.shanghai)
    filed = await regions.filer().FileObjection(objection(record, "late-provider"), timeout=30)
    await arrived(regions, filed.case.case_id)
    passed = await regions.operator().AcceptCase(
        case_pb2.AcceptCaseRequest(case_id=filed.case.case_id, accept=True, to_provider=True, opinion="转提供单位"),
        timeout=30,
    )
    assert passed.state == "provider_review"
    desk, alarms = regions.jiangsu.cases, regions.jiangsu.alarms
    on(regions, dt.date.fromisoformat(passed.due_on))
    await lateness.alarm_late_cases(desk, alarms)
    assert await late_alarms(regions) == []

    on(regions, dt.date.fromisoformat(passed.due_on) + dt.timedelta(days=1))
    await lateness.alarm_late_cases(desk, alarms)
    assert (await lateness.alarm_late_cases(desk, alarms))[0] == 0
    (alarm,) = await late_alarms(regions)
    assert (alarm["case_id"], alarm["deadline"], alarm["due_on"], alarm["state"]) == (
        filed.case.case_id,
        "provider_review",
        passed.due_on,
        "provider_review",
    )
    assert alarm["provider_unit"] == SOURCE_UNIT
    assert regions.jiangsu.pool is not None
    async with regions.jiangsu.pool.acquire() as conn:
        message = await conn.fetchval("SELECT message FROM alarms WHERE kind = 'case.late' AND cleared_at IS NULL")
    assert SOURCE_UNIT in message and "providing unit" in message

    # The platform extends the unit's deadline with a reason: no longer late, resolved by the node.
    await regions.operator().ExtendCase(
        case_pb2.ExtendCaseRequest(case_id=filed.case.case_id, reason="提供单位申请延期核实", working_days=5),
        timeout=30,
    )
    await lateness.alarm_late_cases(desk, alarms)
    assert await late_alarms(regions) == []


async def _watched(regions: Regions) -> bool:
    """True once the courier's own watch has run since the alarm was raised (its note is in the file)."""
    case = await regions.operator().GetCase(
        case_pb2.GetCaseRequest(case_id=(await late_alarms(regions))[0]["case_id"]),  # type: ignore[arg-type]
        timeout=30,
    )
    return any(s.stage == "deadline" for s in case.steps)
