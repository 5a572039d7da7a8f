"""Credit repair (信用修复) across regions (credit-use.md, Repair 1-6).

Filed in Shanghai for a Jiangsu penalty, decided by Jiangsu (谁认定谁修复): eligibility is
judged at filing and explained; approval signs a REPAIR that every region applies, each
peer confirms once its verified checkpoint of Jiangsu's log covers it, and the case is
done only then; a region that never confirms raises an alarm at the origin. The repair
decision (修复决定书) verifies with the trust bundle alone.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import grpc
import pytest

from credex.domain.publicity import publicity_today
from credex.node.cases import MessageRejected, verify_decision
from credex.v1 import case_pb2, event_pb2, lookup_pb2, record_pb2

from .cases_support import (
    CALLERS,
    Regions,
    arrived,
    case_at,
    everywhere,
    held,
    objection,
    penalty,
    publish,
    refused,
    regions_fixture,  # noqa: F401 (the regions fixture)
    repair,
    subject,
)
from .conftest import eventually

REPAIRED = lookup_pb2.ENTRY_STATUS_REPAIRED


async def approve(regions: Regions, case_id: str) -> case_pb2.Case:
    operator = regions.operator()
    accepted = await operator.AcceptCase(
        case_pb2.AcceptCaseRequest(case_id=case_id, accept=True, opinion="材料齐全，予以受理"), timeout=30
    )
    assert (accepted.state, accepted.status_label) == ("under_review", "待核实")
    assert [s.state for s in accepted.steps][-2:] == ["accepted", "under_review"]
    return await operator.DecideCase(
        case_pb2.DecideCaseRequest(
            case_id=case_id, outcome="approved", opinion="已履行义务", decided_by="苏州市市场监督管理局"
        ),
        timeout=30,
    )


async def test_an_approved_repair_reaches_every_region_which_confirms_and_the_decision_verifies_offline(
    regions: Regions,
) -> None:
    record = penalty(40)
    await publish(regions.jiangsu, [record], regions.shanghai, regions.zhejiang)
    filed = await regions.filer().FileRepair(repair(record, "rep-1"), timeout=30)
    assert filed.created and filed.case.eligibility.startswith("eligible: 一般")
    row = await arrived(regions, filed.case.case_id)
    assert row["state"] == "submitted" and row["eligibility"] == filed.case.eligibility

    approved = await approve(regions, filed.case.case_id)
    assert approved.state == "propagating" and approved.decision_number.startswith("320000-XF-")
    await everywhere(regions, record.record_id, status=REPAIRED)
    repaired = await held(regions.zhejiang, record.record_id)
    assert repaired["record"] == record  # kept in the archive, as repaired

    async def done() -> bool:
        case = await case_at(regions.jiangsu, filed.case.case_id)
        return case is not None and case["state"] == "done"

    await eventually(done, timeout=60)
    case = await regions.operator().GetCase(case_pb2.GetCaseRequest(case_id=filed.case.case_id), timeout=30)
    confirmations = [s.actor for s in case.steps if s.stage == "propagation" and s.opinion.startswith("applied")]
    assert sorted(confirmations) == ["310000", "330000"] and case.status_label == "已完成"

    # The subject's agent downloads it where it filed, from the copy the origin keeps up to date.
    async def decision_held() -> bool:
        copy = await case_at(regions.shanghai, filed.case.case_id)
        return copy is not None and copy["decision"] is not None

    await eventually(decision_held, timeout=60)
    document = await regions.filer().GetRepairDecision(
        case_pb2.GetCaseRequest(case_id=filed.case.case_id, purpose="下载信用修复决定书"), timeout=30
    )
    raw = document.envelope.SerializeToString()
    decision = verify_decision(raw, regions.federation.bundle_now())
    assert (decision.case_id, decision.record_id, decision.decision) == (
        filed.case.case_id,
        record.record_id,
        "approved",
    )
    assert decision.unit == "苏州市市场监督管理局" and decision.decided_on == publicity_today().isoformat()
    assert decision.decision_number == approved.decision_number
    forged = event_pb2.Envelope()
    forged.CopyFrom(document.envelope)
    forged.payload = forged.payload.replace(b"approved", b"Approved")
    with pytest.raises(MessageRejected, match="signature"):
        verify_decision(forged.SerializeToString(), regions.federation.bundle_now())

    # A repaired record has nothing more to repair, even for a caller who still sees it.
    twice = await refused(regions.operator().FileRepair(repair(record, "rep-again"), timeout=30))
    assert twice.code() == grpc.StatusCode.FAILED_PRECONDITION and "is repaired" in (twice.details() or "")


async def test_a_repair_approved_as_the_broker_loses_its_log_still_reaches_every_region_and_is_confirmed(
    regions: Regions,
) -> None:
    record = penalty(47)
    await publish(regions.jiangsu, [record], regions.shanghai, regions.zhejiang)
    filed = await regions.filer().FileRepair(repair(record, "rep-wiped"), timeout=30)
    await arrived(regions, filed.case.case_id)
    approved = await approve(regions, filed.case.case_id)
    assert approved.state == "propagating"
    # The broker loses everything while the REPAIR and its checkpoint are on their way.
    await asyncio.to_thread(regions.federation.broker.restart)
    await everywhere(regions, record.record_id, status=REPAIRED)

    async def done() -> bool:
        case = await case_at(regions.jiangsu, filed.case.case_id)
        return case is not None and case["state"] == "done"

    await eventually(done, timeout=120)


async def test_an_objection_to_a_repair_result_marks_the_repaired_record_disputed_until_it_is_decided(
    regions: Regions,
) -> None:
    record = penalty(48)
    await publish(regions.jiangsu, [record], regions.shanghai, regions.zhejiang)
    filed = await regions.filer().FileRepair(repair(record, "rep-then-objection"), timeout=30)
    await arrived(regions, filed.case.case_id)
    await approve(regions, filed.case.case_id)
    await everywhere(regions, record.record_id, status=REPAIRED)

    objected = await regions.filer().FileObjection(
        objection(record, "objection-to-repair", grounds="repair_result"), timeout=30
    )
    assert objected.created
    await arrived(regions, objected.case.case_id)
    # Repaired stays repaired: the mark travels to every region with it.
    await everywhere(regions, record.record_id, status=REPAIRED, disputed=True)
    await regions.operator().DecideCase(
        case_pb2.DecideCaseRequest(case_id=objected.case.case_id, outcome="upheld", opinion="修复结果无误"),
        timeout=30,
    )
    await everywhere(regions, record.record_id, status=REPAIRED, disputed=False)


async def test_a_denial_needs_a_reason_and_leaves_the_record_as_it_was(regions: Regions) -> None:
    record = penalty(41)
    await publish(regions.jiangsu, [record], regions.shanghai)
    filed = await regions.filer().FileRepair(repair(record, "rep-deny"), timeout=30)
    await arrived(regions, filed.case.case_id)
    operator = regions.operator()
    await operator.AcceptCase(case_pb2.AcceptCaseRequest(case_id=filed.case.case_id, accept=True), timeout=30)
    bare = await refused(
        operator.DecideCase(case_pb2.DecideCaseRequest(case_id=filed.case.case_id, outcome="denied"), timeout=30)
    )
    assert bare.code() == grpc.StatusCode.INVALID_ARGUMENT and "reason" in (bare.details() or "")
    extended = await operator.ExtendCase(
        case_pb2.ExtendCaseRequest(case_id=filed.case.case_id, reason="需核实缴款", working_days=5), timeout=30
    )
    assert extended.state == "extended"
    denied = await operator.DecideCase(
        case_pb2.DecideCaseRequest(case_id=filed.case.case_id, outcome="denied", opinion="罚款未缴清"), timeout=30
    )
    assert (denied.state, denied.status_label, denied.decision_number) == ("denied", "未通过", "")
    assert (await held(regions.jiangsu, record.record_id))["status"] == lookup_pb2.ENTRY_STATUS_ACTIVE
    no_document = await refused(
        operator.GetRepairDecision(case_pb2.GetCaseRequest(case_id=filed.case.case_id), timeout=30)
    )
    assert no_document.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_ineligible_repairs_are_refused_at_filing_with_the_reason_and_nothing_is_filed(regions: Regions) -> None:
    serious = penalty(42, severity=record_pb2.SEVERITY_SERIOUS)  # decided 200 days ago: a year is needed
    unstated = penalty(43, severity=record_pb2.SEVERITY_UNSPECIFIED)
    special = record_pb2.Record(
        record_id="320000-HMD-44",
        origin="320000",
        kind=record_pb2.KIND_BLACK_LIST,
        subject=record_pb2.Subject(type=record_pb2.SUBJECT_TYPE_LEGAL_ENTITY, uscc=subject(44), name="食品公司"),
        decision_date="2025-06-01",
        sharing_level=record_pb2.SHARING_LEVEL_PUBLIC,
        publicity=record_pb2.PublicityWindow(start="2025-06-01", end="2099-12-31"),
        black_list=record_pb2.BlackListDetails(list_name="食品安全严重失信主体名单", listed_on="2025-06-01"),
    )
    minor = penalty(45, severity=record_pb2.SEVERITY_MINOR)
    await publish(regions.jiangsu, [serious, unstated, special, minor], regions.shanghai)
    filer = regions.filer()
    earliest = f"{int(serious.decision_date[:4]) + 1}{serious.decision_date[4:]}"  # decision date + 1 year
    too_early = await refused(filer.FileRepair(repair(serious, "early"), timeout=30))
    assert too_early.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "too early" in (too_early.details() or "") and "严重" in (too_early.details() or "")
    assert f"from {earliest}" in (too_early.details() or "")
    for record, request, reason in (
        (unstated, repair(unstated, "no-severity"), "gives no severity"),
        (special, repair(special, "special"), "特定严重失信"),
        (minor, repair(minor, "incomplete", commitment=""), "incomplete: commitment missing"),
    ):
        answer = await refused(filer.FileRepair(request, timeout=30))
        assert answer.code() == grpc.StatusCode.FAILED_PRECONDITION and reason in (answer.details() or ""), record
    other = await refused(
        filer.FileRepair(
            case_pb2.FileRepairRequest(
                request_id="not-mine",
                record_id=minor.record_id,
                on_behalf_of=subject(99),
                proof_of_duty="x",
                commitment="y",
                purpose="信用修复",
            ),
            timeout=30,
        )
    )
    assert other.code() == grpc.StatusCode.PERMISSION_DENIED
    for node in (regions.shanghai, regions.jiangsu):
        assert node.pool is not None
        async with node.pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM cases") == 0
            assert await conn.fetchval("SELECT count(*) FROM case_outbox") == 0
    ok = await filer.FileRepair(repair(minor, "minor-at-once"), timeout=30)
    assert ok.created and "轻微" in ok.case.eligibility


async def test_a_region_that_does_not_apply_a_repair_in_time_raises_an_alarm_that_closes_once_it_confirms(
    regions: Regions,
) -> None:
    record = penalty(46)
    await publish(regions.jiangsu, [record], regions.shanghai, regions.zhejiang)
    await regions.federation.stop_node("330000")
    filed = await regions.filer().FileRepair(repair(record, "rep-alarm"), timeout=30)
    await arrived(regions, filed.case.case_id)
    approved = await approve(regions, filed.case.case_id)
    due = dt.date.fromisoformat(approved.due_on)

    async def shanghai_confirmed() -> bool:
        case = await regions.operator().GetCase(case_pb2.GetCaseRequest(case_id=filed.case.case_id), timeout=30)
        return list(case.unconfirmed_peers) == ["330000"]

    await eventually(shanghai_confirmed, timeout=60)
    assert regions.jiangsu.pool is not None

    async def alarms() -> list[str]:
        assert regions.jiangsu.pool is not None
        async with regions.jiangsu.pool.acquire() as conn:
            return [
                r["origin"]
                for r in await conn.fetch(
                    "SELECT origin FROM alarms WHERE kind = 'repair.unconfirmed' AND cleared_at IS NULL"
                )
            ]

    assert await alarms() == []  # not late yet
    regions.jiangsu.cases.clock = lambda: due + dt.timedelta(days=1)
    assert await eventually(alarms, timeout=30) == ["330000"]

    # Zhejiang comes back, catches up, confirms: the case is done.
    regions.zhejiang = await regions.federation.start_node("330000", **CALLERS)

    async def done() -> bool:
        case = await case_at(regions.jiangsu, filed.case.case_id)
        return case is not None and case["state"] == "done"

    await eventually(done, timeout=90)
    assert (await held(regions.zhejiang, record.record_id))["status"] == REPAIRED

    async def resolved() -> bool:
        return await alarms() == []

    await eventually(resolved, timeout=60)  # the peer confirmed: the alarm closes by itself
    async with regions.jiangsu.pool.acquire() as conn:
        rows = await conn.fetch("SELECT cleared_by, clear_note FROM alarms WHERE kind = 'repair.unconfirmed'")
    assert [(r["cleared_by"], "confirmed" in r["clear_note"]) for r in rows] == [("credex", True)]  # raised once


async def test_two_late_repairs_unconfirmed_by_one_region_raise_one_alarm_each(regions: Regions) -> None:
    """An open alarm for one repair does not hold back the alarm for another repair the same region has not applied."""
    records = [penalty(48), penalty(49)]
    await publish(regions.jiangsu, records, regions.shanghai, regions.zhejiang)
    await regions.federation.stop_node("330000")
    cases, dues = [], []
    for record in records:
        filed = await regions.filer().FileRepair(repair(record, f"rep-two-{record.record_id}"), timeout=30)
        await arrived(regions, filed.case.case_id)
        dues.append(dt.date.fromisoformat((await approve(regions, filed.case.case_id)).due_on))
        cases.append(filed.case.case_id)

    async def only_zhejiang_unconfirmed() -> bool:
        for case_id in cases:
            case = await regions.operator().GetCase(case_pb2.GetCaseRequest(case_id=case_id), timeout=30)
            if list(case.unconfirmed_peers) != ["330000"]:
                return False
        return True

    await eventually(only_zhejiang_unconfirmed, timeout=60)

    async def alarmed_cases() -> list[str]:
        assert regions.jiangsu.pool is not None
        async with regions.jiangsu.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT evidence->>'case_id' AS case_id FROM alarms WHERE kind = 'repair.unconfirmed'"
                " AND origin = '330000' AND cleared_at IS NULL ORDER BY id"
            )
        return [r["case_id"] for r in rows]

    regions.jiangsu.cases.clock = lambda: max(dues) + dt.timedelta(days=1)

    async def both_alarmed() -> bool:
        return sorted(await alarmed_cases()) == sorted(cases)

    await eventually(both_alarmed, timeout=60)


async def test_a_record_revoked_while_its_repair_is_under_review_cannot_be_repaired(regions: Regions) -> None:
    record = penalty(47)
    await publish(regions.jiangsu, [record], regions.shanghai)
    filed = await regions.filer().FileRepair(repair(record, "rep-revoked"), timeout=30)
    await arrived(regions, filed.case.case_id)
    operator = regions.operator()
    await operator.AcceptCase(case_pb2.AcceptCaseRequest(case_id=filed.case.case_id, accept=True), timeout=30)
    assert regions.jiangsu.pool is not None
    async with regions.jiangsu.pool.acquire() as conn, conn.transaction():
        await regions.jiangsu.ledger.revoke(conn, record.record_id, "处罚决定被复议撤销")
    before = await held(regions.jiangsu, record.record_id)
    approve_now = await refused(
        operator.DecideCase(case_pb2.DecideCaseRequest(case_id=filed.case.case_id, outcome="approved"), timeout=30)
    )
    assert approve_now.code() == grpc.StatusCode.FAILED_PRECONDITION and "revoked" in (approve_now.details() or "")
    assert await held(regions.jiangsu, record.record_id) == before
    denied = await operator.DecideCase(
        case_pb2.DecideCaseRequest(case_id=filed.case.case_id, outcome="denied", opinion="原处罚已撤销，无需修复"),
        timeout=30,
    )
    assert denied.state == "denied"
