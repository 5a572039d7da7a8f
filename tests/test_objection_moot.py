"""An objection whose record left publication by another act while the case was open is moot.

The rule: when Jiangsu decides (or closes) an objection to a record that was revoked at the
source or repaired since the objection was filed, the case is closed ``moot`` and no outcome is
signed over the withdrawn record, so the other act stands in every region and the filer reads
why on the node it filed on. The one event signed is the RESOLVE that lifts the case's dispute
mark and keeps the withdrawn standing: a mark is held by an open case only. A record only
hidden for now is not withdrawn for good: its objection is decided as usual.
"""

from __future__ import annotations

from credex.node.ledger import standing
from credex.node.runtime import Node
from credex.v1 import case_pb2, event_pb2, lookup_pb2

from .cases_support import (
    Regions,
    arrived,
    everywhere,
    held,
    objection,
    penalty,
    publish,
    regions_fixture,  # noqa: F401 (the regions fixture)
    repair,
)
from .conftest import eventually
from .test_objections import last_event
from .test_repair import approve


async def event_count(node: Node, record_id: str) -> int:
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM events WHERE record_id = $1", record_id))


async def only_the_mark_lifted(regions: Regions, case_id: str, record_id: str, signed: int, status: int) -> None:
    """One event more than ``signed``: a RESOLVE of ``case_id`` closing it moot; in every region the record keeps
    ``status`` and loses its dispute mark."""
    assert await event_count(regions.jiangsu, record_id) == signed + 1
    await everywhere(regions, record_id, status=status, disputed=False)
    lifted = await last_event(regions, record_id)
    assert (lifted.type, lifted.case.case_id, lifted.case.outcome) == (event_pb2.EVENT_TYPE_RESOLVE, case_id, "moot")


async def open_objection(regions: Regions, n: int) -> tuple[str, str]:
    record = penalty(n)
    await publish(regions.jiangsu, [record], regions.shanghai, regions.zhejiang)
    filed = await regions.filer().FileObjection(objection(record, f"moot-{n}"), timeout=30)
    await arrived(regions, filed.case.case_id)
    await everywhere(regions, record.record_id, disputed=True)
    return filed.case.case_id, record.record_id


async def test_an_objection_decided_on_a_record_revoked_meanwhile_is_closed_moot_and_signs_no_outcome(
    regions: Regions,
) -> None:
    case_id, record_id = await open_objection(regions, 90)
    assert regions.jiangsu.pool is not None
    await standing.revoke(regions.jiangsu.pool, regions.jiangsu.ledger, record_id, "行政处罚决定已撤销")
    await everywhere(regions, record_id, status=lookup_pb2.ENTRY_STATUS_REVOKED)
    signed = await event_count(regions.jiangsu, record_id)
    decided = await regions.operator().DecideCase(
        case_pb2.DecideCaseRequest(case_id=case_id, outcome="deleted", opinion="信息有误"), timeout=30
    )
    assert (decided.state, decided.outcome, decided.status_label) == ("done", "moot", "已完成")
    assert decided.closed_at and "no outcome is signed" in decided.steps[-1].opinion
    await only_the_mark_lifted(regions, case_id, record_id, signed, lookup_pb2.ENTRY_STATUS_REVOKED)

    async def told_at_shanghai() -> bool:
        case = await regions.filer().GetCase(case_pb2.GetCaseRequest(case_id=case_id, purpose="查询"), timeout=30)
        return (case.state, case.outcome) == ("done", "moot")

    await eventually(told_at_shanghai, timeout=60)


async def test_an_objection_to_a_record_hidden_meanwhile_is_decided_and_the_record_stays_hidden_until_unhidden(
    regions: Regions,
) -> None:
    """Hiding is for now, not for good: the objection goes on, and the record comes back as decided, unmarked."""
    case_id, record_id = await open_objection(regions, 91)
    assert regions.jiangsu.pool is not None
    await standing.hide(regions.jiangsu.pool, regions.jiangsu.ledger, record_id, "破产重整期间暂停公示")
    await everywhere(regions, record_id, status=lookup_pb2.ENTRY_STATUS_HIDDEN)
    decided = await regions.operator().DecideCase(
        case_pb2.DecideCaseRequest(
            case_id=case_id,
            outcome="corrected",
            changes=[event_pb2.FieldChange(field="penalty.fine_yuan", old_value="20000", new_value="2000")],
        ),
        timeout=30,
    )
    assert (decided.state, decided.outcome) == ("decided", "corrected")
    await everywhere(regions, record_id, status=lookup_pb2.ENTRY_STATUS_HIDDEN, disputed=False)
    await standing.unhide(regions.jiangsu.pool, regions.jiangsu.ledger, record_id, "重整计划执行完毕")
    await everywhere(regions, record_id, status=lookup_pb2.ENTRY_STATUS_ACTIVE, disputed=False)
    assert (await held(regions.zhejiang, record_id))["record"].penalty.fine_yuan == "2000"


async def test_withdrawing_an_objection_to_a_record_revoked_meanwhile_only_lifts_its_mark(regions: Regions) -> None:
    case_id, record_id = await open_objection(regions, 92)
    assert regions.jiangsu.pool is not None
    await standing.revoke(regions.jiangsu.pool, regions.jiangsu.ledger, record_id, "行政处罚决定已撤销")
    signed = await event_count(regions.jiangsu, record_id)
    withdrawn = await regions.operator().WithdrawCase(
        case_pb2.WithdrawCaseRequest(case_id=case_id, reason="申请人撤回"), timeout=30
    )
    assert withdrawn.state == "withdrawn"
    await only_the_mark_lifted(regions, case_id, record_id, signed, lookup_pb2.ENTRY_STATUS_REVOKED)


async def test_an_objection_decided_after_the_record_was_repaired_is_moot_and_the_repair_stands(
    regions: Regions,
) -> None:
    case_id, record_id = await open_objection(regions, 93)
    record = penalty(93)
    repaired = await regions.filer().FileRepair(repair(record, "moot-repair"), timeout=30)
    await arrived(regions, repaired.case.case_id)
    await approve(regions, repaired.case.case_id)
    await everywhere(regions, record_id, status=lookup_pb2.ENTRY_STATUS_REPAIRED)
    signed = await event_count(regions.jiangsu, record_id)
    decided = await regions.operator().DecideCase(
        case_pb2.DecideCaseRequest(case_id=case_id, outcome="publication_ended", opinion="公示期已满"), timeout=30
    )
    assert decided.outcome == "moot" and "repaired" in decided.steps[-1].opinion
    await only_the_mark_lifted(regions, case_id, record_id, signed, lookup_pb2.ENTRY_STATUS_REPAIRED)


async def test_a_record_revoked_under_objection_and_brought_back_by_a_correction_is_not_left_disputed(
    regions: Regions,
) -> None:
    """The mark is held by an open case only: the moot close lifts it in every region, keeping the revocation,
    so the correction that later brings the record back shows it undisputed."""
    case_id, record_id = await open_objection(regions, 94)
    assert regions.jiangsu.pool is not None
    await standing.revoke(regions.jiangsu.pool, regions.jiangsu.ledger, record_id, "行政处罚决定已撤销")
    await everywhere(regions, record_id, status=lookup_pb2.ENTRY_STATUS_REVOKED, disputed=True)
    signed = await event_count(regions.jiangsu, record_id)
    decided = await regions.operator().DecideCase(
        case_pb2.DecideCaseRequest(case_id=case_id, outcome="deleted", opinion="信息有误"), timeout=30
    )
    assert decided.outcome == "moot"
    await only_the_mark_lifted(regions, case_id, record_id, signed, lookup_pb2.ENTRY_STATUS_REVOKED)

    corrected = penalty(94)
    corrected.penalty.fine_yuan = "15000"  # the act re-issued with new content: a correction
    await publish(regions.jiangsu, [corrected])
    await everywhere(regions, record_id, status=lookup_pb2.ENTRY_STATUS_ACTIVE, disputed=False)
    assert (await held(regions.zhejiang, record_id))["record"].penalty.fine_yuan == "15000"
