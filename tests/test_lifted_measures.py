"""Measures lifted (credit-use.md, Repair 4, 8 and 9): a unit that applied measures because of a record
learns, on every node that holds its feedback, that the record was repaired, revoked or hidden.

Jiangsu (320000) publishes; offices check its subjects on the Shanghai (310000) and Jiangsu nodes
and report the measures they applied. Jiangsu's decisions reach every region by the normal path,
and each node marks the applied measures lifted in the transaction that applies the decision.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from credex.domain import uscc as uscc_codes
from credex.domain.publicity import publicity_today
from credex.node.checks import refresh_lifted_metric
from credex.node.cli import app
from credex.node.embedded import EmbeddedPostgres
from credex.node.ledger import standing
from credex.node.runtime import Node
from credex.node.store import database
from credex.v1 import case_pb2, check_pb2, check_pb2_grpc, event_pb2, lookup_pb2, record_pb2

from .callers import GOVERNMENT, PUBLIC, audit_rows, client_channel, government_channel
from .cases_support import (
    DECIDED,
    OPERATOR,
    Regions,
    arrived,
    black_list,
    everywhere,
    held,
    objection,
    penalty,
    publish,
    refused,
    repair,
    subject,
)
from .conftest import TestFederation, eventually

OTHER = "other-office"  # another government office on the same nodes
CALLERS = {"access": {"callers": {GOVERNMENT: "government", OPERATOR: "operator", OTHER: "government"}}}
UNIT = uscc_codes.make("11", "310000", "HCG00001")  # a Shanghai procurement office
PURPOSE = "停止执行已解除的惩戒措施"
SH30, SH31 = "SH-30-公共资源交易扣分", "SH-31-限制市场准入"


@pytest.fixture(name="regions")
async def regions_fixture(federation: TestFederation) -> AsyncIterator[Regions]:
    jiangsu = await federation.start_node("320000", **CALLERS)
    shanghai = await federation.start_node("310000", **CALLERS)
    zhejiang = await federation.start_node("330000", **CALLERS)
    yield Regions(federation, jiangsu, shanghai, zhejiang)


def stub(regions: Regions, node: Node, caller: str = GOVERNMENT) -> check_pb2_grpc.CheckServiceAsyncStub:
    return check_pb2_grpc.CheckServiceStub(client_channel(regions.federation, node, caller))


async def check_and_report(
    regions: Regions,
    node: Node,
    uscc: str,
    outcome: check_pb2.FeedbackOutcome.ValueType = check_pb2.FEEDBACK_OUTCOME_PUNISHED,
    named_twice: bool = False,
) -> tuple[str, list[str]]:
    """Check ``uscc`` on ``node`` for a Shanghai procurement and report every hit measure applied."""
    checks = stub(regions, node)
    answer = await checks.Check(
        check_pb2.CheckRequest(
            usccs=[uscc],
            scenario="政府采购",
            requesting_unit_uscc=UNIT,
            purpose="供应商资格审查",
            legal_basis="政府采购法",
        ),
        timeout=30,
    )
    measures = sorted({m.id for hit in answer.subjects[0].hits for m in hit.measures})
    assert measures, "the check returned no measure to apply"
    await checks.SubmitFeedback(
        check_pb2.FeedbackRequest(
            check_id=answer.check_id,
            subject_id=uscc,
            measures_applied=measures * 2 if named_twice else measures,
            outcome=outcome,
            reason="" if outcome != check_pb2.FEEDBACK_OUTCOME_NOT_ADOPTED else "已另行处理",
            amount_yuan="0",
            basis="政府采购法 第二十二条",
            district_code="310101",
            department="上海市黄浦区财政局",
            applied_on=publicity_today().isoformat(),
        ),
        timeout=30,
    )
    return answer.check_id, measures


async def lifted(
    regions: Regions, node: Node, caller: str = GOVERNMENT, **request: object
) -> list[check_pb2.LiftedMeasure]:
    page = await stub(regions, node, caller).ListLiftedMeasures(
        check_pb2.ListLiftedMeasuresRequest(purpose=PURPOSE, **request),  # type: ignore[arg-type]
        timeout=30,
    )
    return list(page.measures)


def shown(rows: list[check_pb2.LiftedMeasure]) -> list[tuple[str, str, str, bool, int, list[str]]]:
    return sorted(
        (m.measure_id, m.record_id, m.reason, m.temporary, m.reinstated_seq, list(m.still_rests_on)) for m in rows
    )


async def event_seq(node: Node, record_id: str, event_type: int) -> int:
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        seq = await conn.fetchval(
            "SELECT max(seq) FROM events WHERE record_id = $1 AND event_type = $2", record_id, event_type
        )
    assert seq is not None
    return int(seq)


def evaluation(n: int) -> record_pb2.Record:
    """Jiangsu's 公共信用综合评价 of subject ``n``: a grade the origin signs, never derived by credex."""
    return record_pb2.Record(
        record_id=f"320000-PJ-{n}",
        origin="320000",
        kind=record_pb2.KIND_EVALUATION,
        subject=record_pb2.Subject(
            type=record_pb2.SUBJECT_TYPE_LEGAL_ENTITY, uscc=subject(n), name=f"苏州案例{n}有限公司"
        ),
        decision_date=DECIDED,
        sharing_level=record_pb2.SHARING_LEVEL_PUBLIC,
        publicity=record_pb2.PublicityWindow(start=DECIDED, end="2099-12-31"),
        evaluation=record_pb2.EvaluationDetails(
            grade=record_pb2.GRADE_C,
            grade_as_published="中",
            period="2025",
            evaluator=record_pb2.Authority(name="江苏省信用中心"),
        ),
    )


async def approve(regions: Regions, case_id: str) -> None:
    operator = regions.operator()
    await operator.AcceptCase(case_pb2.AcceptCaseRequest(case_id=case_id, accept=True, opinion="予以受理"), timeout=30)
    await operator.DecideCase(
        case_pb2.DecideCaseRequest(
            case_id=case_id, outcome="approved", opinion="已履行义务", decided_by="苏州市市场监督管理局"
        ),
        timeout=30,
    )


async def test_a_repair_lifts_the_measures_each_region_applied_because_of_it_and_leaves_the_origins_grade_alone(
    regions: Regions,
) -> None:
    record, grade = penalty(61), evaluation(61)
    await publish(regions.jiangsu, [record, grade], regions.shanghai, regions.zhejiang)
    _, measures = await check_and_report(regions, regions.shanghai, subject(61))
    assert measures == [SH30]
    await check_and_report(regions, regions.jiangsu, subject(61))  # the origin's own offices too
    await check_and_report(regions, regions.zhejiang, subject(61), check_pb2.FEEDBACK_OUTCOME_NOT_ADOPTED)
    grade_before = {node.origin: await held(node, grade.record_id) for node in regions.nodes()}
    assert await lifted(regions, regions.shanghai) == []

    filed = await regions.filer().FileRepair(repair(record, "lift-1"), timeout=30)
    await arrived(regions, filed.case.case_id)
    await approve(regions, filed.case.case_id)
    await everywhere(regions, record.record_id, status=lookup_pb2.ENTRY_STATUS_REPAIRED)
    repair_seq = await event_seq(regions.jiangsu, record.record_id, event_pb2.EVENT_TYPE_REPAIR)

    # Applied in the same transaction as the REPAIR: once a node holds it repaired, the lift is there.
    for node in (regions.shanghai, regions.jiangsu):
        rows = await lifted(regions, node)
        assert shown(rows) == [(SH30, record.record_id, "repaired", False, 0, [])], node.origin
        (row,) = rows
        assert (row.record_origin, row.event_seq, row.lifted_on) == (
            "320000",
            repair_seq,
            publicity_today().isoformat(),
        )
        assert (row.subject_id, row.requesting_unit, row.caller, row.acknowledged_at) == (
            subject(61),
            UNIT,
            GOVERNMENT,
            "",
        )
    assert await lifted(regions, regions.zhejiang) == []  # its office reported it applied nothing

    # Checks no longer return the repaired record or its measure.
    again = await stub(regions, regions.shanghai).Check(
        check_pb2.CheckRequest(
            usccs=[subject(61)], scenario="政府采购", requesting_unit_uscc=UNIT, purpose="供应商资格审查"
        ),
        timeout=30,
    )
    assert [h.record_id for h in again.subjects[0].hits] == []

    # credex derives no grade: the origin's evaluation stays as it signed it, in every region.
    for node in regions.nodes():
        assert await held(node, grade.record_id) == grade_before[node.origin], node.origin
    assert regions.jiangsu.pool is not None
    async with regions.jiangsu.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM events WHERE record_id = $1", grade.record_id) == 1

    # The unacknowledged gauge counts it until the unit acknowledges; acknowledging twice changes nothing.
    assert regions.shanghai.pool is not None
    assert await refresh_lifted_metric(regions.shanghai.pool, "310000") == 1
    gauge = {"origin": "310000"}
    assert REGISTRY.get_sample_value("credex_lifted_measures_unacknowledged", gauge) == 1
    (row,) = await lifted(regions, regions.shanghai)
    acked = await stub(regions, regions.shanghai).AcknowledgeLiftedMeasure(
        check_pb2.AcknowledgeLiftedMeasureRequest(id=row.id, purpose="已停止执行"), timeout=30
    )
    assert acked.acknowledged_at and acked.acknowledged_by == GOVERNMENT
    twice = await stub(regions, regions.shanghai).AcknowledgeLiftedMeasure(
        check_pb2.AcknowledgeLiftedMeasureRequest(id=row.id, purpose=PURPOSE), timeout=30
    )
    assert twice.acknowledged_at == acked.acknowledged_at
    assert await lifted(regions, regions.shanghai, unacknowledged_only=True) == []
    assert await refresh_lifted_metric(regions.shanghai.pool, "310000") == 0
    assert REGISTRY.get_sample_value("credex_lifted_measures_unacknowledged", gauge) == 0


async def test_hiding_lifts_for_the_while_unhiding_reinstates_and_a_revocation_while_hidden_lifts_for_good(
    regions: Regions,
) -> None:
    listed = black_list(62)
    fined = penalty(62)  # the same subject: both trigger SH-30, only the listing SH-31
    await publish(regions.jiangsu, [listed, fined], regions.shanghai)
    # Each measure named twice: lifted once, and the intake of the decisions does not trip over it.
    _, measures = await check_and_report(regions, regions.shanghai, subject(62), named_twice=True)
    assert measures == [SH30, SH31]
    assert regions.jiangsu.pool is not None

    await standing.hide(regions.jiangsu.pool, regions.jiangsu.ledger, listed.record_id, "重整计划执行期间")

    async def hidden_lift() -> list[check_pb2.LiftedMeasure] | None:
        rows = await lifted(regions, regions.shanghai)
        return rows if len(rows) == 2 else None

    rows = await eventually(hidden_lift, timeout=60)
    assert shown(rows) == [
        (SH30, listed.record_id, "hidden", True, 0, [fined.record_id]),  # still rests on the penalty
        (SH31, listed.record_id, "hidden", True, 0, []),
    ]
    await stub(regions, regions.shanghai).AcknowledgeLiftedMeasure(
        check_pb2.AcknowledgeLiftedMeasureRequest(id=rows[0].id, purpose=PURPOSE), timeout=30
    )

    await standing.unhide(regions.jiangsu.pool, regions.jiangsu.ledger, listed.record_id, "重整计划执行完毕")
    unhide_seq = await event_seq(regions.jiangsu, listed.record_id, event_pb2.EVENT_TYPE_UNHIDE)

    async def reinstated() -> list[check_pb2.LiftedMeasure] | None:
        rows = await lifted(regions, regions.shanghai)
        return rows if all(m.reinstated_seq for m in rows) else None

    rows = await eventually(reinstated, timeout=60)
    assert {(m.reinstated_seq, m.reinstated_on, m.acknowledged_at) for m in rows} == {
        (unhide_seq, publicity_today().isoformat(), "")  # the unit is told again: the measures apply once more
    }

    # Hidden again, then revoked while hidden: the same rows now say the lift is for good, told anew.
    await standing.hide(regions.jiangsu.pool, regions.jiangsu.ledger, listed.record_id, "重整计划变更")
    second = await eventually(lambda: _open(regions, "hidden"), timeout=60)
    await stub(regions, regions.shanghai).AcknowledgeLiftedMeasure(
        check_pb2.AcknowledgeLiftedMeasureRequest(id=second[0].id, purpose=PURPOSE), timeout=30
    )
    await standing.revoke(regions.jiangsu.pool, regions.jiangsu.ledger, listed.record_id, "认定决定被撤销")
    revoked = await eventually(lambda: _open(regions, "revoked"), timeout=60)
    assert sorted(m.id for m in revoked) == sorted(m.id for m in second)
    assert {(m.temporary, m.acknowledged_at) for m in revoked} == {(False, "")}
    revoke_seq = await event_seq(regions.jiangsu, listed.record_id, event_pb2.EVENT_TYPE_REVOKE)
    assert {m.event_seq for m in revoked} == {revoke_seq}
    assert len(await lifted(regions, regions.shanghai)) == 4  # the reinstated pair stays as history


async def _open(regions: Regions, reason: str) -> list[check_pb2.LiftedMeasure] | None:
    rows = [m for m in await lifted(regions, regions.shanghai) if not m.reinstated_seq]
    return rows if len(rows) == 2 and all(m.reason == reason for m in rows) else None


async def test_feedback_filed_after_the_record_left_force_is_lifted_as_it_is_filed_unless_nothing_was_applied(
    regions: Regions,
) -> None:
    listed = black_list(63)
    await publish(regions.jiangsu, [listed], regions.shanghai)
    checks = stub(regions, regions.shanghai)
    request = check_pb2.CheckRequest(
        usccs=[subject(63)], scenario="政府采购", requesting_unit_uscc=UNIT, purpose="供应商资格审查"
    )
    first = await checks.Check(request, timeout=30)
    second = await checks.Check(request, timeout=30)
    assert regions.jiangsu.pool is not None
    await standing.revoke(regions.jiangsu.pool, regions.jiangsu.ledger, listed.record_id, "行政复议撤销")
    await everywhere_two(regions, listed.record_id)
    assert await lifted(regions, regions.shanghai) == []  # no feedback yet: nothing was applied

    def report(
        check_id: str, outcome: check_pb2.FeedbackOutcome.ValueType, reason: str = ""
    ) -> check_pb2.FeedbackRequest:
        return check_pb2.FeedbackRequest(
            check_id=check_id,
            subject_id=subject(63),
            measures_applied=[SH31],
            outcome=outcome,
            reason=reason,
            basis="政府采购法",
            district_code="310101",
            department="上海市黄浦区财政局",
            applied_on=publicity_today().isoformat(),
        )

    await checks.SubmitFeedback(report(first.check_id, check_pb2.FEEDBACK_OUTCOME_PUNISHED), timeout=30)
    rows = await lifted(regions, regions.shanghai)
    assert shown(rows) == [(SH31, listed.record_id, "revoked", False, 0, [])]
    assert rows[0].check_id == first.check_id
    await checks.SubmitFeedback(
        report(second.check_id, check_pb2.FEEDBACK_OUTCOME_NOT_ADOPTED, "供应商已自行退出"), timeout=30
    )
    assert len(await lifted(regions, regions.shanghai)) == 1


async def everywhere_two(regions: Regions, record_id: str) -> None:
    for node in (regions.jiangsu, regions.shanghai):

        async def revoked(node: Node = node) -> bool:
            return bool((await held(node, record_id))["status"] == lookup_pb2.ENTRY_STATUS_REVOKED)

        await eventually(revoked, timeout=60)


@pytest.mark.parametrize(
    ("request_fields", "says"),
    [
        ({"since": "2026-13-01"}, "since must be a date YYYY-MM-DD"),
        ({"page_token": "abc"}, "page_token is not one this list gave"),
        ({"page_size": 501}, "page_size is at most 500"),
        ({"requesting_unit_uscc": "not-a-uscc"}, "requesting_unit_uscc"),
        ({"since": "2026-01\x00"}, "control character"),
    ],
)
async def test_bad_lists_are_refused_with_the_reason_and_audited(
    federation: TestFederation, request_fields: dict[str, object], says: str
) -> None:
    node = await federation.start_node("310000", **CALLERS)
    stub_ = check_pb2_grpc.CheckServiceStub(government_channel(federation, node))
    request = check_pb2.ListLiftedMeasuresRequest(purpose=PURPOSE, **request_fields)  # type: ignore[arg-type]
    bad = await refused(stub_.ListLiftedMeasures(request, timeout=30))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT and says in (bad.details() or "")
    rows = await audit_rows(node, "ListLiftedMeasures")
    assert [r["status"] for r in rows] == ["INVALID_ARGUMENT"]


async def test_a_unit_sees_and_acknowledges_only_its_own_lifted_measures_operators_see_all_public_none(
    regions: Regions,
) -> None:
    records = [black_list(64), black_list(65)]
    await publish(regions.jiangsu, records, regions.shanghai)
    await check_and_report(regions, regions.shanghai, subject(64))
    await check_and_report(regions, regions.shanghai, subject(65))
    assert regions.jiangsu.pool is not None
    for record in records:
        await standing.revoke(regions.jiangsu.pool, regions.jiangsu.ledger, record.record_id, "撤销")

    async def four() -> list[check_pb2.LiftedMeasure] | None:
        rows = await lifted(regions, regions.shanghai)
        return rows if len(rows) == 4 else None

    mine = await eventually(four, timeout=60)
    # Pages follow one another by id: none repeated, none skipped.
    first = await stub(regions, regions.shanghai).ListLiftedMeasures(
        check_pb2.ListLiftedMeasuresRequest(page_size=3, purpose=PURPOSE), timeout=30
    )
    rest = await stub(regions, regions.shanghai).ListLiftedMeasures(
        check_pb2.ListLiftedMeasuresRequest(page_size=3, page_token=first.next_page_token, purpose=PURPOSE), timeout=30
    )
    assert [m.id for m in [*first.measures, *rest.measures]] == [m.id for m in mine] and not rest.next_page_token
    assert await lifted(regions, regions.shanghai, since=(publicity_today() + dt.timedelta(days=1)).isoformat()) == []
    assert (
        await lifted(regions, regions.shanghai, requesting_unit_uscc=uscc_codes.make("11", "310000", "HCG00002")) == []
    )
    assert (
        len(await lifted(regions, regions.shanghai, requesting_unit_uscc=UNIT, since=publicity_today().isoformat()))
        == 4
    )

    # Another office sees none of them and cannot acknowledge one; the row is unchanged.
    assert await lifted(regions, regions.shanghai, OTHER) == []
    theirs = await refused(
        stub(regions, regions.shanghai, OTHER).AcknowledgeLiftedMeasure(
            check_pb2.AcknowledgeLiftedMeasureRequest(id=mine[0].id, purpose=PURPOSE), timeout=30
        )
    )
    assert theirs.code() == grpc.StatusCode.NOT_FOUND
    nothing = await refused(
        stub(regions, regions.shanghai).AcknowledgeLiftedMeasure(
            check_pb2.AcknowledgeLiftedMeasureRequest(purpose=PURPOSE), timeout=30
        )
    )
    assert nothing.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [m.acknowledged_at for m in await lifted(regions, regions.shanghai)] == [""] * 4
    assert len(await lifted(regions, regions.shanghai, OPERATOR)) == 4
    public = await refused(
        stub(regions, regions.shanghai, PUBLIC).ListLiftedMeasures(check_pb2.ListLiftedMeasuresRequest(), timeout=30)
    )
    assert public.code() == grpc.StatusCode.PERMISSION_DENIED
    statuses = [r["status"] for r in await audit_rows(regions.shanghai, "ListLiftedMeasures")]
    assert "OK" in statuses and "PERMISSION_DENIED" in statuses

    # The unit's command line lists them and acknowledges one.
    ca, cert, key = regions.federation.layout.client_tls(GOVERNMENT)
    options = ["--node", f"127.0.0.1:{regions.shanghai.port}", "--ca", str(ca), "--cert", str(cert), "--key", str(key)]
    options += ["--config", str(regions.federation.layout.config_path("310000"))]
    listing = await asyncio.to_thread(CliRunner().invoke, app, ["checks", "lifted", "--unit", UNIT, *options])
    assert listing.exit_code == 0, listing.output
    assert records[0].record_id in listing.output and "revoked" in listing.output
    acked = await asyncio.to_thread(CliRunner().invoke, app, ["checks", "lifted", "ack", str(mine[0].id), *options])
    assert acked.exit_code == 0, acked.output
    assert f"lifted measure {mine[0].id} acknowledged" in acked.output
    assert len(await lifted(regions, regions.shanghai, unacknowledged_only=True)) == 3
    wrong = await asyncio.to_thread(CliRunner().invoke, app, ["checks", "lifted", "ackk", "1", *options])
    assert wrong.exit_code == 1 and "unknown action" in wrong.output


async def test_an_objection_deleting_or_ending_a_record_lifts_its_measures_an_upheld_one_or_its_window_ending_not(
    regions: Regions,
) -> None:
    records = {"deleted": penalty(80), "publication_ended": penalty(81), "upheld": penalty(82)}
    by_window = penalty(83)
    await publish(regions.jiangsu, [*records.values(), by_window], regions.shanghai, regions.zhejiang)
    for n in (80, 81, 82, 83):
        await check_and_report(regions, regions.shanghai, subject(n))
    for outcome, record in records.items():
        filed = await regions.filer().FileObjection(objection(record, f"lift-{outcome}"), timeout=30)
        await arrived(regions, filed.case.case_id)
        await regions.operator().DecideCase(
            case_pb2.DecideCaseRequest(
                case_id=filed.case.case_id, outcome=outcome, opinion="核实", decided_by="苏州市市场监督管理局"
            ),
            timeout=30,
        )
    await everywhere(regions, records["deleted"].record_id, status=lookup_pb2.ENTRY_STATUS_DELETED)
    await everywhere(regions, records["publication_ended"].record_id, status=lookup_pb2.ENTRY_STATUS_EXPIRED)
    await everywhere(regions, records["upheld"].record_id, status=lookup_pb2.ENTRY_STATUS_ACTIVE, disputed=False)
    # The windows end by themselves (the origin's daily EXPIRE): foreseen when the measure was applied.
    assert regions.jiangsu.pool is not None
    async with regions.jiangsu.pool.acquire() as conn, conn.transaction():
        expired = await regions.jiangsu.ledger.expire(conn, dt.date(2100, 1, 1), 100)
    assert sorted(e.record_id for e in expired) == [records["upheld"].record_id, by_window.record_id]
    await everywhere(regions, by_window.record_id, status=lookup_pb2.ENTRY_STATUS_EXPIRED)
    assert shown(await lifted(regions, regions.shanghai)) == [
        (SH30, records["deleted"].record_id, "deleted", False, 0, []),
        (SH30, records["publication_ended"].record_id, "publication_ended", False, 0, []),
    ]


async def test_a_hiding_that_ends_after_the_records_window_leaves_the_measures_lifted_for_good(
    regions: Regions,
) -> None:
    listed = black_list(66)
    await publish(regions.jiangsu, [listed], regions.shanghai)
    await check_and_report(regions, regions.shanghai, subject(66))
    assert regions.jiangsu.pool is not None
    await standing.hide(regions.jiangsu.pool, regions.jiangsu.ledger, listed.record_id, "重整计划执行期间")
    hidden = await eventually(lambda: _open(regions, "hidden"), timeout=60)
    await stub(regions, regions.shanghai).AcknowledgeLiftedMeasure(
        check_pb2.AcknowledgeLiftedMeasureRequest(id=hidden[0].id, purpose=PURPOSE), timeout=30
    )
    # The UNHIDE as the origin signs it when the window ended while the record was hidden: back, expired.
    async with regions.jiangsu.pool.acquire() as conn, conn.transaction():
        await regions.jiangsu.ledger.amend(
            conn,
            listed.record_id,
            event_pb2.EVENT_TYPE_UNHIDE,
            "重整计划执行完毕",
            standing=lookup_pb2.ENTRY_STATUS_EXPIRED,
            from_standings={lookup_pb2.ENTRY_STATUS_HIDDEN},
        )
    ended = await eventually(lambda: _open(regions, "window_ended"), timeout=60)
    unhide_seq = await event_seq(regions.jiangsu, listed.record_id, event_pb2.EVENT_TYPE_UNHIDE)
    assert sorted(m.id for m in ended) == sorted(m.id for m in hidden)
    assert {(m.temporary, m.reinstated_seq, m.event_seq, m.acknowledged_at) for m in ended} == {
        (False, 0, unhide_seq, "")
    }


async def test_feedback_filed_before_migration_0024_is_found_by_the_records_its_answer_hit(
    postgres: EmbeddedPostgres,
) -> None:
    """Lifting searches the records an answer hit on its feedback (copied there when filed, indexed there),
    not on every answer: feedback a node held before that change gets its answer's records by the migration."""
    url = postgres.uri("m" + uuid.uuid4().hex[:12])
    await database.ensure_database(url)
    conn = await asyncpg.connect(url)
    try:
        await database.migrate(conn, before=24)  # the store as an older credex left it
        at = dt.datetime.now(dt.UTC)
        with_feedback, without = uuid.uuid4(), uuid.uuid4()
        for check_id in (with_feedback, without):
            await conn.execute(
                "INSERT INTO checks (check_id, at, caller, role, requesting_unit, scenario, purpose, legal_basis,"
                " subjects) VALUES ($1, $2, 'office', 'government', 'unit', 'GP', '', '', 1)",
                check_id,
                at,
            )
            await conn.execute(
                "INSERT INTO check_answers (check_id, checked_at, subject_id, measure_ids, measure_records,"
                " hit_records) VALUES ($1, $2, 'S', '{m1}', '{\"m1\": [\"R-1\"]}', '{R-1,R-2}')",
                check_id,
                at,
            )
        await conn.execute(
            "INSERT INTO check_feedback (check_id, subject_id, checked_at, caller, measures_applied, outcome, reason,"
            " basis, district_code, department, applied_on) VALUES ($1, 'S', $2, 'office', '{m1}', 'punished', '',"
            " '', '310000', '', $3)",
            with_feedback,
            at,
            at.date(),
        )

        assert "0024_check_writes.sql" in await database.migrate(conn)

        assert await conn.fetchval("SELECT hit_records FROM check_feedback") == ["R-1", "R-2"]
        found = await conn.fetch("SELECT check_id FROM check_feedback WHERE hit_records && $1::text[]", ["R-2"])
        assert [row["check_id"] for row in found] == [with_feedback]
        indexes = {row["indexname"] for row in await conn.fetch("SELECT indexname FROM pg_indexes")}
        assert "check_feedback_hit_records" in indexes and "check_answers_hit_records" not in indexes
    finally:
        await conn.close()
