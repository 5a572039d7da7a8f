"""Objections (异议) across regions (credit-use.md, Objection 1-6).

A Shanghai government office files objections against Jiangsu's records on the Shanghai
node; the cases travel signed to Jiangsu, which marks each record disputed in its own log
at once, so the mark reaches every region by the normal event path; Jiangsu's operators
review (platform, then source unit) and decide, and each outcome goes out as a signed
RESOLVE that every region applies.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import grpc
from prometheus_client import REGISTRY

from credex.domain import uscc as uscc_codes
from credex.node.store.events import RecordState
from credex.v1 import case_pb2, check_pb2, check_pb2_grpc, event_pb2, lookup_pb2, record_pb2

from .callers import audit_rows, government_channel
from .cases_support import (
    CALLERS,
    Regions,
    arrived,
    black_list,
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

ACTIVE = lookup_pb2.ENTRY_STATUS_ACTIVE


async def test_each_outcome_is_signed_by_the_origin_and_applied_in_every_region(regions: Regions) -> None:
    records = {
        "deleted": penalty(20),
        "corrected": penalty(21),
        "supplemented": penalty(22),
        "publication_ended": penalty(23),
        "delisted": black_list(24),
        "upheld": penalty(25),
        "unconfirmable": penalty(26),
    }
    await publish(regions.jiangsu, list(records.values()), regions.shanghai, regions.zhejiang)
    filer, operator = regions.filer(), regions.operator()
    cases: dict[str, str] = {}
    for outcome, record in records.items():
        filed = await filer.FileObjection(objection(record, f"obj-{outcome}"), timeout=30)
        assert filed.created and filed.case.state == "submitted" and filed.case.record_origin == "320000"
        assert filed.case.delivery == "pending"
        cases[outcome] = filed.case.case_id
    for outcome, record in records.items():
        row = await arrived(regions, cases[outcome])
        assert row["at_origin"] and row["due_on"] is not None
        await everywhere(regions, record.record_id, disputed=True, status=ACTIVE)

    # The platform takes some cases into its own review (中心审核, 待审核); provider review (部门审核) is
    # test_objection_provider_review.py.
    for outcome in ("corrected", "supplemented", "upheld"):
        taken = await operator.AcceptCase(
            case_pb2.AcceptCaseRequest(case_id=cases[outcome], accept=True, opinion="平台审核"), timeout=30
        )
        assert (taken.state, taken.status_code, taken.status_label) == ("platform_review", 0, "待审核")

    changes = {
        "corrected": [event_pb2.FieldChange(field="penalty.fine_yuan", old_value="20000", new_value="2000")],
        "supplemented": [event_pb2.FieldChange(field="penalty.basis", old_value="", new_value="行政处罚法 第二十八条")],
    }
    for outcome in records:
        decided = await operator.DecideCase(
            case_pb2.DecideCaseRequest(
                case_id=cases[outcome],
                outcome=outcome,
                opinion=f"核实结果 {outcome}",
                changes=changes.get(outcome, []),
                decided_by="苏州市市场监督管理局",
            ),
            timeout=30,
        )
        assert decided.state == "decided" and decided.outcome == outcome and decided.closed_at
        assert decided.status_code == (3 if outcome in {"upheld", "unconfirmable"} else 2)
        assert [s.stage for s in decided.steps][:2] == ["filing", "delivery"] and decided.steps[-1].stage == "decision"

    await everywhere(regions, records["deleted"].record_id, status=lookup_pb2.ENTRY_STATUS_DELETED, disputed=False)
    await everywhere(regions, records["delisted"].record_id, status=lookup_pb2.ENTRY_STATUS_DELETED, disputed=False)
    await everywhere(
        regions, records["publication_ended"].record_id, status=lookup_pb2.ENTRY_STATUS_EXPIRED, disputed=False
    )
    for outcome in ("corrected", "supplemented", "upheld", "unconfirmable"):
        await everywhere(regions, records[outcome].record_id, status=ACTIVE, disputed=False)
    for node in regions.nodes():
        assert (await held(node, records["corrected"].record_id))["record"].penalty.fine_yuan == "2000"
        assert (await held(node, records["supplemented"].record_id))["record"].penalty.basis == "行政处罚法 第二十八条"
        assert (await held(node, records["upheld"].record_id))["record"] == records["upheld"]

    # The RESOLVE in Zhejiang's copy of Jiangsu's log keeps the field-level old -> new and the outcome.
    resolve = await last_event(regions, records["corrected"].record_id)
    assert resolve.type == event_pb2.EVENT_TYPE_RESOLVE
    assert resolve.case.case_id == cases["corrected"] and resolve.case.outcome == "corrected"
    assert [(c.field, c.old_value, c.new_value) for c in resolve.case.changes] == [
        ("penalty.fine_yuan", "20000", "2000")
    ]
    assert (await last_event(regions, records["unconfirmable"].record_id)).case.outcome == "unconfirmable"


async def last_event(regions: Regions, record_id: str) -> event_pb2.Event:
    assert regions.zhejiang.pool is not None
    async with regions.zhejiang.pool.acquire() as conn:
        raw = await conn.fetchval(
            "SELECT envelope FROM events WHERE record_id = $1 ORDER BY seq DESC LIMIT 1", record_id
        )
    return event_pb2.Event.FromString(event_pb2.Envelope.FromString(bytes(raw)).payload)


async def test_filing_twice_makes_one_case_and_a_reused_request_id_is_refused(regions: Regions) -> None:
    record = penalty(30)
    await publish(regions.jiangsu, [record], regions.shanghai)
    filer = regions.filer()
    first = await filer.FileObjection(objection(record, "twice"), timeout=30)
    again = await filer.FileObjection(objection(record, "twice"), timeout=30)
    assert first.created and not again.created and again.case.case_id == first.case.case_id
    other = await refused(filer.FileObjection(objection(record, "twice", grounds="omission"), timeout=30))
    assert other.code() == grpc.StatusCode.ALREADY_EXISTS and "different filing" in (other.details() or "")
    await arrived(regions, first.case.case_id)
    assert regions.jiangsu.pool is not None
    async with regions.jiangsu.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM cases WHERE record_id = $1", record.record_id) == 1
        disputes = await conn.fetchval(
            "SELECT count(*) FROM events WHERE record_id = $1 AND event_type = $2",
            record.record_id,
            event_pb2.EVENT_TYPE_DISPUTE,
        )
    assert disputes == 1


async def test_an_outcome_for_a_closed_case_is_refused_and_changes_nothing(regions: Regions) -> None:
    record = penalty(31)
    await publish(regions.jiangsu, [record], regions.shanghai)
    filed = await regions.filer().FileObjection(objection(record, "closed"), timeout=30)
    await arrived(regions, filed.case.case_id)
    operator = regions.operator()
    decide = case_pb2.DecideCaseRequest(case_id=filed.case.case_id, outcome="upheld", opinion="信息无误")
    await operator.DecideCase(decide, timeout=30)
    before = await held(regions.jiangsu, record.record_id)
    again = await refused(
        operator.DecideCase(
            case_pb2.DecideCaseRequest(case_id=filed.case.case_id, outcome="deleted", opinion="改判"), timeout=30
        )
    )
    assert again.code() == grpc.StatusCode.FAILED_PRECONDITION and "closed" in (again.details() or "")
    for late in (
        operator.ExtendCase(case_pb2.ExtendCaseRequest(case_id=filed.case.case_id, reason="复杂", working_days=3)),
        operator.WithdrawCase(case_pb2.WithdrawCaseRequest(case_id=filed.case.case_id, reason="撤回")),
    ):
        assert (await refused(late)).code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await held(regions.jiangsu, record.record_id) == before
    row = await case_at(regions.jiangsu, filed.case.case_id)
    assert row is not None and row["outcome"] == "upheld"


async def test_only_the_origin_decides_and_only_operators(regions: Regions) -> None:
    record = penalty(32)
    await publish(regions.jiangsu, [record], regions.shanghai)
    filed = await regions.filer().FileObjection(objection(record, "who-decides"), timeout=30)
    at_shanghai = await refused(
        regions.operator(regions.shanghai).DecideCase(
            case_pb2.DecideCaseRequest(case_id=filed.case.case_id, outcome="deleted"), timeout=30
        )
    )
    assert at_shanghai.code() == grpc.StatusCode.FAILED_PRECONDITION and "320000" in (at_shanghai.details() or "")
    await arrived(regions, filed.case.case_id)
    by_government = await refused(
        regions.filer(regions.jiangsu).DecideCase(
            case_pb2.DecideCaseRequest(case_id=filed.case.case_id, outcome="deleted"), timeout=30
        )
    )
    assert by_government.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (await held(regions.jiangsu, record.record_id))["status"] == ACTIVE


async def test_objection_deadlines_follow_the_origins_calendar_across_an_adjusted_working_weekend(
    regions: Regions,
) -> None:
    """Jiangsu (default rules: taken in within 2 working days) receives on Friday 13 February 2026: the
    Saturday after is an adjusted working day and the Spring Festival follows, so the case is due on the 24th."""
    regions.jiangsu.cases.clock = lambda: dt.date(2026, 2, 13)
    record = penalty(33)
    await publish(regions.jiangsu, [record], regions.shanghai)
    filed = await regions.filer().FileObjection(objection(record, "calendar"), timeout=30)
    row = await arrived(regions, filed.case.case_id)
    assert row["received_on"] == dt.date(2026, 2, 13) and row["due_on"] == dt.date(2026, 2, 24)
    operator = regions.operator()
    # Provider review in Jiangsu: 10 working days from the day it is passed on; Sat 28 Feb is a working day.
    regions.jiangsu.cases.clock = lambda: dt.date(2026, 2, 14)
    passed = await operator.AcceptCase(
        case_pb2.AcceptCaseRequest(case_id=filed.case.case_id, accept=True, to_provider=True), timeout=30
    )
    assert passed.due_on == "2026-03-06"
    extended = await operator.ExtendCase(
        case_pb2.ExtendCaseRequest(case_id=filed.case.case_id, reason="需现场核查", working_days=5), timeout=30
    )
    assert extended.due_on == "2026-03-13" and "需现场核查" in extended.steps[-1].opinion
    # Never beyond 20 working days from acceptance (13 Feb + 20 = 19 March): 7 more days would pass it.
    too_long = await refused(
        operator.ExtendCase(
            case_pb2.ExtendCaseRequest(case_id=filed.case.case_id, reason="再延期", working_days=7), timeout=30
        )
    )
    assert too_long.code() == grpc.StatusCode.FAILED_PRECONDITION and "2026-03-19" in (too_long.details() or "")
    regions.jiangsu.cases.clock = lambda: dt.date(2026, 3, 16)
    overdue = await operator.ListCases(case_pb2.ListCasesRequest(overdue=True), timeout=30)
    assert [c.case_id for c in overdue.cases] == [filed.case.case_id] and overdue.cases[0].overdue

    # The file says it is late, once, and the filing node's copy says so too.
    async def told() -> list[str]:
        case = await regions.filer().GetCase(
            case_pb2.GetCaseRequest(case_id=filed.case.case_id, purpose="查询异议进度"), timeout=30
        )
        return [s.opinion for s in case.steps if s.stage == "deadline"]

    notes = await eventually(told, timeout=60)
    assert len(notes) == 1 and notes[0].startswith("2026-03-13 passed without a decision")
    assert REGISTRY.get_sample_value("credex_cases_overdue", {"origin": "320000", "kind": "objection"}) == 1


async def test_a_correction_of_a_stale_value_or_an_identity_field_is_refused_and_signs_nothing(
    regions: Regions,
) -> None:
    """A correction whose old value is not what the origin holds is refused: nothing is signed."""
    record = penalty(34)
    await publish(regions.jiangsu, [record], regions.shanghai)
    filed = await regions.filer().FileObjection(objection(record, "stale"), timeout=30)
    await arrived(regions, filed.case.case_id)
    before = await held(regions.jiangsu, record.record_id)
    stale = await refused(
        regions.operator().DecideCase(
            case_pb2.DecideCaseRequest(
                case_id=filed.case.case_id,
                outcome="corrected",
                changes=[event_pb2.FieldChange(field="penalty.fine_yuan", old_value="99", new_value="1")],
            ),
            timeout=30,
        )
    )
    assert stale.code() == grpc.StatusCode.FAILED_PRECONDITION and "old value" in (stale.details() or "")
    identity = await refused(
        regions.operator().DecideCase(
            case_pb2.DecideCaseRequest(
                case_id=filed.case.case_id,
                outcome="corrected",
                changes=[event_pb2.FieldChange(field="origin", old_value="320000", new_value="310000")],
            ),
            timeout=30,
        )
    )
    assert identity.code() == grpc.StatusCode.INVALID_ARGUMENT
    after = await held(regions.jiangsu, record.record_id)
    assert after == before and after["disputed"]
    assert RecordState.of(after["record"]).digest == RecordState.of(record).digest


async def test_a_check_shows_the_mark_while_the_objection_is_open_and_the_record_still_counts(
    regions: Regions,
) -> None:
    record = penalty(35)
    await publish(regions.jiangsu, [record], regions.shanghai)
    checker = check_pb2_grpc.CheckServiceStub(government_channel(regions.federation, regions.shanghai))
    request = check_pb2.CheckRequest(
        usccs=[record.subject.uscc],
        scenario="政府采购",
        requesting_unit_uscc=uscc_codes.make("11", "310000", "HCG00001"),
        purpose="供应商资格审查",
    )

    async def marks() -> list[bool]:
        answer = await checker.Check(request, timeout=30)
        return [hit.disputed for hit in answer.subjects[0].hits]

    assert await marks() == [False]
    filed = await regions.filer().FileObjection(objection(record, "check-mark"), timeout=30)
    await arrived(regions, filed.case.case_id)
    await everywhere(regions, record.record_id, disputed=True)
    assert await marks() == [True]  # not suspended: still a hit, with the mark
    await regions.operator().DecideCase(
        case_pb2.DecideCaseRequest(case_id=filed.case.case_id, outcome="upheld", opinion="信息无误"), timeout=30
    )
    await everywhere(regions, record.record_id, disputed=False)
    assert await marks() == [False]


async def test_review_of_an_outcome_marks_the_record_again_runs_its_own_clock_and_is_final(regions: Regions) -> None:
    record = penalty(36)
    await publish(regions.jiangsu, [record], regions.shanghai, regions.zhejiang)
    filed = await regions.filer().FileObjection(objection(record, "review"), timeout=30)
    await arrived(regions, filed.case.case_id)
    operator = regions.operator()
    case_id = filed.case.case_id
    await operator.DecideCase(case_pb2.DecideCaseRequest(case_id=case_id, outcome="upheld", opinion="无误"), timeout=30)
    await everywhere(regions, record.record_id, disputed=False)

    regions.jiangsu.cases.clock = lambda: dt.date(2026, 2, 13)
    bare = await refused(operator.ReviewCase(case_pb2.ReviewCaseRequest(case_id=case_id), timeout=30))
    assert bare.code() == grpc.StatusCode.INVALID_ARGUMENT
    reviewed = await operator.ReviewCase(
        case_pb2.ReviewCaseRequest(case_id=case_id, reason="申请人不服，申请复核", actor="省发展改革委"), timeout=30
    )
    # Jiangsu's review takes 5 working days: Sat 14 Feb works, then the Spring Festival to the 23rd.
    assert (reviewed.state, reviewed.status_label, reviewed.due_on) == ("review", "待核实", "2026-02-27")
    assert not reviewed.closed_at
    await everywhere(regions, record.record_id, disputed=True, status=ACTIVE)

    final = await operator.DecideCase(
        case_pb2.DecideCaseRequest(case_id=case_id, outcome="deleted", opinion="复核认定事实错误"), timeout=30
    )
    assert (final.state, final.status_label, final.outcome) == ("done", "已完成", "deleted")
    assert [s.stage for s in final.steps][-2:] == ["review", "review"]
    await everywhere(regions, record.record_id, disputed=False, status=lookup_pb2.ENTRY_STATUS_DELETED)
    again = await refused(operator.ReviewCase(case_pb2.ReviewCaseRequest(case_id=case_id, reason="再次"), timeout=30))
    assert again.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_one_open_objection_per_filer_and_record_and_hidden_records_cannot_be_probed(regions: Regions) -> None:
    record = penalty(37)
    restricted = penalty(38)
    restricted.sharing_level = record_pb2.SHARING_LEVEL_RESTRICTED
    await publish(regions.jiangsu, [record, restricted], regions.shanghai)
    filer = regions.filer()
    first = await filer.FileObjection(objection(record, "open-1"), timeout=30)
    second = await refused(filer.FileObjection(objection(record, "open-2", grounds="omission"), timeout=30))
    assert second.code() == grpc.StatusCode.ALREADY_EXISTS and first.case.case_id in (second.details() or "")
    hidden = await refused(filer.FileObjection(objection(restricted, "probe"), timeout=30))
    missing = await refused(filer.FileObjection(objection(penalty(999), "probe-2"), timeout=30))
    assert hidden.code() == missing.code() == grpc.StatusCode.NOT_FOUND
    assert (hidden.details() or "").replace(restricted.record_id, "X") == (missing.details() or "").replace(
        penalty(999).record_id, "X"
    )
    # Withdrawn at the objector's request: the mark comes off everywhere, and a new objection may follow.
    await arrived(regions, first.case.case_id)
    await everywhere(regions, record.record_id, disputed=True)
    withdrawn = await regions.operator().WithdrawCase(
        case_pb2.WithdrawCaseRequest(case_id=first.case.case_id, reason="申请人撤回"), timeout=30
    )
    assert (withdrawn.state, withdrawn.status_label) == ("withdrawn", "已完成")
    await everywhere(regions, record.record_id, disputed=False)

    async def closed_at_shanghai() -> bool:
        case = await filer.GetCase(case_pb2.GetCaseRequest(case_id=first.case.case_id, purpose="查询"), timeout=30)
        return case.state == "withdrawn"

    await eventually(closed_at_shanghai, timeout=60)
    again = await filer.FileObjection(objection(record, "open-3"), timeout=30)
    assert again.created
    audited = await audit_rows(regions.shanghai, "FileObjection")
    assert [r["status"] for r in audited] == ["OK", "ALREADY_EXISTS", "NOT_FOUND", "NOT_FOUND", "OK"]
    assert audited[0]["subject_id"] == record.subject.uscc and first.case.case_id in audited[0]["detail"]


async def test_an_operators_rules_file_sets_the_regions_deadlines(regions: Regions, tmp_path: Path) -> None:
    shipped = (Path(__file__).parents[1] / "domain" / "case_rules.toml").read_text(encoding="utf-8")
    rules = tmp_path / "rules.toml"
    rules.write_text(shipped + "\n[regions.320000]\nobjection_accept_days = 7\n", encoding="utf-8")
    await regions.federation.stop_node("320000")
    regions.jiangsu = await regions.federation.start_node("320000", cases={"rules": str(rules)}, **CALLERS)
    regions.jiangsu.cases.clock = lambda: dt.date(2026, 11, 20)
    record = penalty(39)
    await publish(regions.jiangsu, [record], regions.shanghai)
    filed = await regions.filer().FileObjection(objection(record, "rules"), timeout=30)
    row = await arrived(regions, filed.case.case_id)
    assert row["due_on"] == dt.date(2026, 12, 1)  # 7 working days after Friday 20 November


async def test_at_the_origin_a_caller_sees_only_the_cases_it_filed_there_not_those_filed_elsewhere_under_its_name(
    regions: Regions,
) -> None:
    """Certificate names are each node's own: the same name on another node is another caller."""
    elsewhere, here = penalty(70), penalty(71)
    await publish(regions.jiangsu, [elsewhere, here], regions.shanghai)
    from_shanghai = await regions.filer().FileObjection(objection(elsewhere, "scoped"), timeout=30)
    await arrived(regions, from_shanghai.case.case_id)
    namesake = regions.filer(regions.jiangsu)  # the same certificate name, calling Jiangsu
    from_jiangsu = await namesake.FileObjection(objection(here, "scoped"), timeout=30)
    assert from_jiangsu.case.case_id != from_shanghai.case.case_id

    unseen = await refused(
        namesake.GetCase(case_pb2.GetCaseRequest(case_id=from_shanghai.case.case_id, purpose="异议查询"), timeout=30)
    )
    assert unseen.code() == grpc.StatusCode.NOT_FOUND
    no_decision = await refused(
        namesake.GetRepairDecision(
            case_pb2.GetCaseRequest(case_id=from_shanghai.case.case_id, purpose="异议查询"), timeout=30
        )
    )
    assert no_decision.code() == grpc.StatusCode.NOT_FOUND
    listed = await namesake.ListCases(case_pb2.ListCasesRequest(purpose="异议查询"), timeout=30)
    assert [c.case_id for c in listed.cases] == [from_jiangsu.case.case_id]

    # The filer still follows its case on the node it filed on, and the origin's operators see both.
    assert (
        await regions.filer().GetCase(
            case_pb2.GetCaseRequest(case_id=from_shanghai.case.case_id, purpose="异议查询"), timeout=30
        )
    ).case_id
    mine = await regions.filer().ListCases(case_pb2.ListCasesRequest(purpose="异议查询"), timeout=30)
    assert [c.case_id for c in mine.cases] == [from_shanghai.case.case_id]
    everything = await regions.operator().ListCases(case_pb2.ListCasesRequest(purpose="异议查询"), timeout=30)
    assert {c.case_id for c in everything.cases} == {from_shanghai.case.case_id, from_jiangsu.case.case_id}
