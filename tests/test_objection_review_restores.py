"""复核 that overturns an outcome which withdrew a record brings the record back, with the standing it had.

Jiangsu (the origin) deletes a record on an objection filed at Shanghai; the review body then
overturns the deletion. The origin signs one RESOLVE carrying the record's prior standing, and
every region applies it by the normal path. A record whose window ended meanwhile comes back
expired, and one revoked meanwhile is not brought back at all.
"""

from __future__ import annotations

import datetime as dt

import grpc
import pytest

from credex.domain.publicity import publicity_today
from credex.node.ledger import standing
from credex.v1 import case_pb2, event_pb2, lookup_pb2, record_pb2

from .cases_support import (
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
)
from .conftest import eventually
from .test_objection_moot import event_count, only_the_mark_lifted
from .test_objections import last_event

ACTIVE = lookup_pb2.ENTRY_STATUS_ACTIVE
DELETED = lookup_pb2.ENTRY_STATUS_DELETED


async def deleted_then_reviewed(regions: Regions, n: int, window_end: str = "2099-12-31") -> tuple[str, str]:
    """A record of Jiangsu deleted on a Shanghai objection, and the review of that outcome asked for."""
    record = penalty(n)
    record.publicity.end = window_end
    await publish(regions.jiangsu, [record], regions.shanghai, regions.zhejiang)
    filed = await regions.filer().FileObjection(objection(record, f"restore-{n}"), timeout=30)
    await arrived(regions, filed.case.case_id)
    operator = regions.operator()
    await operator.DecideCase(
        case_pb2.DecideCaseRequest(case_id=filed.case.case_id, outcome="deleted", opinion="信息有误，删除"), timeout=30
    )
    await everywhere(regions, record.record_id, status=DELETED, disputed=False)
    reviewed = await operator.ReviewCase(
        case_pb2.ReviewCaseRequest(case_id=filed.case.case_id, reason="提供单位不服删除，申请复核"), timeout=30
    )
    assert reviewed.state == "review"
    await everywhere(regions, record.record_id, status=DELETED, disputed=True)
    return filed.case.case_id, record.record_id


async def test_a_review_that_overturns_a_deletion_brings_the_record_back_active_in_every_region(
    regions: Regions,
) -> None:
    case_id, record_id = await deleted_then_reviewed(regions, 80)
    final = await regions.operator().DecideCase(
        case_pb2.DecideCaseRequest(case_id=case_id, outcome="upheld", opinion="复核认定原信息无误"), timeout=30
    )
    assert (final.state, final.outcome, final.status_label) == ("done", "upheld", "已完成")
    await everywhere(regions, record_id, status=ACTIVE, disputed=False)
    restoring = await last_event(regions, record_id)  # Zhejiang's copy of Jiangsu's log
    assert restoring.type == event_pb2.EVENT_TYPE_RESOLVE and restoring.standing == event_pb2.STANDING_ACTIVE
    assert (restoring.case.case_id, restoring.case.outcome) == (case_id, "upheld")


async def test_a_record_whose_window_ended_meanwhile_comes_back_expired_not_active(regions: Regions) -> None:
    window_end = publicity_today() + dt.timedelta(days=60)
    case_id, record_id = await deleted_then_reviewed(regions, 81, window_end.isoformat())
    regions.jiangsu.cases.clock = lambda: window_end + dt.timedelta(days=30)
    await regions.operator().DecideCase(
        case_pb2.DecideCaseRequest(case_id=case_id, outcome="unconfirmable", opinion="无法核实，撤销删除"), timeout=30
    )
    await everywhere(regions, record_id, status=lookup_pb2.ENTRY_STATUS_EXPIRED, disputed=False)


async def test_a_review_upholding_the_deletion_keeps_the_record_deleted(regions: Regions) -> None:
    case_id, record_id = await deleted_then_reviewed(regions, 82)
    await regions.operator().DecideCase(
        case_pb2.DecideCaseRequest(case_id=case_id, outcome="deleted", opinion="复核维持删除"), timeout=30
    )
    await everywhere(regions, record_id, status=DELETED, disputed=False)


async def test_a_review_withdrawn_leaves_the_first_outcome_standing_and_lifts_the_mark(regions: Regions) -> None:
    """Only a review decided overturns: one withdrawn brings nothing back, it only ends the review's mark."""
    case_id, record_id = await deleted_then_reviewed(regions, 88)
    withdrawn = await regions.operator().WithdrawCase(
        case_pb2.WithdrawCaseRequest(case_id=case_id, reason="申请人撤回复核申请"), timeout=30
    )
    assert withdrawn.state == "withdrawn"
    await everywhere(regions, record_id, status=DELETED, disputed=False)
    assert (await last_event(regions, record_id)).case.outcome == "withdrawn"


async def test_a_record_revoked_during_the_review_is_not_brought_back_and_no_outcome_is_signed(
    regions: Regions,
) -> None:
    case_id, record_id = await deleted_then_reviewed(regions, 83)
    assert regions.jiangsu.pool is not None
    await standing.revoke(regions.jiangsu.pool, regions.jiangsu.ledger, record_id, "原处罚决定被撤销")
    await everywhere(regions, record_id, status=lookup_pb2.ENTRY_STATUS_REVOKED)
    before = await held(regions.jiangsu, record_id)
    signed = await event_count(regions.jiangsu, record_id)
    final = await regions.operator().DecideCase(
        case_pb2.DecideCaseRequest(case_id=case_id, outcome="upheld", opinion="复核认定原信息无误"), timeout=30
    )
    assert (final.state, final.outcome) == ("done", "moot") and "revoked" in final.steps[-1].opinion
    # No outcome: only the review's dispute mark is lifted, the revocation and the content kept.
    await only_the_mark_lifted(regions, case_id, record_id, signed, lookup_pb2.ENTRY_STATUS_REVOKED)
    assert (await held(regions.jiangsu, record_id))["record"] == before["record"]


async def test_a_review_of_an_outcome_whose_record_was_revoked_since_is_refused(regions: Regions) -> None:
    record = penalty(84)
    await publish(regions.jiangsu, [record], regions.shanghai)
    filed = await regions.filer().FileObjection(objection(record, "review-revoked"), timeout=30)
    await arrived(regions, filed.case.case_id)
    operator = regions.operator()
    await operator.DecideCase(
        case_pb2.DecideCaseRequest(case_id=filed.case.case_id, outcome="upheld", opinion="无误"), timeout=30
    )
    assert regions.jiangsu.pool is not None
    await standing.revoke(regions.jiangsu.pool, regions.jiangsu.ledger, record.record_id, "原处罚决定被撤销")
    before = await held(regions.jiangsu, record.record_id)
    late = await refused(
        operator.ReviewCase(case_pb2.ReviewCaseRequest(case_id=filed.case.case_id, reason="申请复核"), timeout=30)
    )
    assert late.code() == grpc.StatusCode.FAILED_PRECONDITION and "revoked" in (late.details() or "")
    assert await held(regions.jiangsu, record.record_id) == before


CHANGED = {
    "corrected": event_pb2.FieldChange(field="penalty.fine_yuan", old_value="20000", new_value="2000"),
    "supplemented": event_pb2.FieldChange(field="penalty.basis", old_value="", new_value="行政处罚法 第二十八条"),
}


@pytest.mark.parametrize("outcome", ["corrected", "supplemented"])
async def test_a_review_that_overturns_a_correction_restores_the_old_content_in_every_region(
    regions: Regions, outcome: str
) -> None:
    """The content before the case's outcome comes back from the origin's log, signed with the case reference
    and the field-level change (new → old), and every region applies it."""
    n = 85 if outcome == "corrected" else 86
    record = penalty(n)
    await publish(regions.jiangsu, [record], regions.shanghai, regions.zhejiang)
    filed = await regions.filer().FileObjection(objection(record, f"unchange-{n}"), timeout=30)
    await arrived(regions, filed.case.case_id)
    operator, change = regions.operator(), CHANGED[outcome]
    await operator.DecideCase(
        case_pb2.DecideCaseRequest(case_id=filed.case.case_id, outcome=outcome, opinion="更正", changes=[change]),
        timeout=30,
    )

    async def changed_at_zhejiang() -> bool:
        content = (await held(regions.zhejiang, record.record_id))["record"]
        return str(_field(content, change.field)) == change.new_value

    await eventually(changed_at_zhejiang, timeout=60)
    await operator.ReviewCase(
        case_pb2.ReviewCaseRequest(case_id=filed.case.case_id, reason="提供单位不服更正，申请复核"), timeout=30
    )
    final = await operator.DecideCase(
        case_pb2.DecideCaseRequest(case_id=filed.case.case_id, outcome="upheld", opinion="复核认定原信息无误"),
        timeout=30,
    )
    assert (final.state, final.outcome) == ("done", "upheld")
    await everywhere(regions, record.record_id, status=ACTIVE, disputed=False, record=record)
    restoring = await last_event(regions, record.record_id)
    assert restoring.type == event_pb2.EVENT_TYPE_RESOLVE
    assert (restoring.case.case_id, restoring.case.outcome) == (filed.case.case_id, "upheld")
    assert [(c.field, c.old_value, c.new_value) for c in restoring.case.changes] == [
        (change.field, change.new_value, change.old_value)
    ]


async def test_a_review_cannot_restore_a_field_changed_again_since_and_changes_nothing(regions: Regions) -> None:
    record = penalty(87)
    await publish(regions.jiangsu, [record], regions.shanghai)
    filed = await regions.filer().FileObjection(objection(record, "unchange-87"), timeout=30)
    await arrived(regions, filed.case.case_id)
    operator = regions.operator()
    await operator.DecideCase(
        case_pb2.DecideCaseRequest(
            case_id=filed.case.case_id, outcome="corrected", opinion="更正", changes=[CHANGED["corrected"]]
        ),
        timeout=30,
    )
    await operator.ReviewCase(case_pb2.ReviewCaseRequest(case_id=filed.case.case_id, reason="申请复核"), timeout=30)
    reissued = penalty(87)
    reissued.penalty.fine_yuan = "5000"  # the source corrects the same field again meanwhile
    await publish(regions.jiangsu, [reissued])
    before = await held(regions.jiangsu, record.record_id)
    late = await refused(
        operator.DecideCase(
            case_pb2.DecideCaseRequest(case_id=filed.case.case_id, outcome="upheld", opinion="复核认定原信息无误"),
            timeout=30,
        )
    )
    assert late.code() == grpc.StatusCode.FAILED_PRECONDITION and "penalty.fine_yuan" in (late.details() or "")
    assert await held(regions.jiangsu, record.record_id) == before
    assert (await case_at(regions.jiangsu, filed.case.case_id) or {})["state"] == "review"


def _field(record: record_pb2.Record, dotted: str) -> object:
    holder: object = record
    for part in dotted.split("."):
        holder = getattr(holder, part)
    return holder
