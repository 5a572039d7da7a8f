"""CheckService: 逢办必查 / 联合奖惩 on the real federation (credit-use.md, Check rules 1–9).

Jiangsu's node (320000) publishes its records; the Shanghai node (310000) takes them in
over the federation's bus and answers the checks, applying Jiangsu's windows as Jiangsu
signed them into each record. A Shanghai procurement office checks, learns the measures
the catalogue holds with their basis, and files feedback that must stay within what it
was told.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest

from credex.domain import uscc as uscc_codes
from credex.domain.publicity import publicity_today
from credex.node.ledger.appender import Change
from credex.node.runtime import Node
from credex.v1 import check_pb2, check_pb2_grpc, record_pb2

from .callers import GOVERNMENT, PUBLIC, audit_rows, client_channel, government_channel
from .conftest import TestFederation, eventually

OPERATOR = "operator-desk"
ENTITY = record_pb2.SUBJECT_TYPE_LEGAL_ENTITY
LAST_YEAR = (publicity_today() - dt.timedelta(days=200)).isoformat()


def code(division: str, org8: str) -> str:
    return uscc_codes.make("91", division, org8)


LISTED = code("320500", "JT000001")  # on Jiangsu's serious-dishonesty list
LAPSED = code("320500", "JT000002")  # a serious penalty whose window has ended
REVOKED = code("320500", "JT000003")  # a serious penalty Jiangsu revoked
CLEAN = code("320500", "JT000004")  # nothing against it
UNIT = uscc_codes.make("11", "310000", "HCG00001")  # the Shanghai procurement office


def black_list(number: str, subject: str) -> record_pb2.Record:
    return record_pb2.Record(
        record_id=f"320000-HMD-{number}",
        origin="320000",
        kind=record_pb2.KIND_BLACK_LIST,
        subject=record_pb2.Subject(type=ENTITY, uscc=subject, name="苏州失信贸易有限公司"),
        decision_date=LAST_YEAR,
        sharing_level=record_pb2.SHARING_LEVEL_PUBLIC,
        publicity=record_pb2.PublicityWindow(start=LAST_YEAR, end="2099-12-31"),
        black_list=record_pb2.BlackListDetails(
            list_name="严重失信主体名单",
            identifying_unit=record_pb2.Authority(name="江苏省发展和改革委员会"),
        ),
    )


def serious_penalty(number: str, subject: str, end: str) -> record_pb2.Record:
    return record_pb2.Record(
        record_id=f"320000-CF-{number}",
        origin="320000",
        kind=record_pb2.KIND_PENALTY,
        subject=record_pb2.Subject(type=ENTITY, uscc=subject, name="苏州某公司"),
        decision_date="2021-01-05",
        sharing_level=record_pb2.SHARING_LEVEL_PUBLIC,
        publicity=record_pb2.PublicityWindow(start="2021-01-05", end=end),
        penalty=record_pb2.PenaltyDetails(content="罚款 50000 元", severity=record_pb2.SEVERITY_SERIOUS),
    )


@dataclass
class Pair:
    jiangsu: Node
    shanghai: Node


@pytest.fixture
async def pair(federation: TestFederation) -> AsyncIterator[Pair]:
    jiangsu = await federation.start_node("320000")
    shanghai = await federation.start_node(
        "310000", access={"callers": {GOVERNMENT: "government", OPERATOR: "operator"}}
    )
    records = [
        black_list("1", LISTED),
        serious_penalty("2", LAPSED, (publicity_today() - dt.timedelta(days=1)).isoformat()),
        serious_penalty("3", REVOKED, "2099-12-31"),
    ]
    assert jiangsu.pool is not None and shanghai.pool is not None
    async with jiangsu.pool.acquire() as conn, conn.transaction():
        await jiangsu.ledger.append(conn, [Change.of(r) for r in records])
    async with jiangsu.pool.acquire() as conn, conn.transaction():
        await jiangsu.ledger.revoke(conn, "320000-CF-3", "撤销行政处罚决定")

    async def taken_in() -> bool:
        assert shanghai.pool is not None
        async with shanghai.pool.acquire() as conn:
            return bool(
                await conn.fetchval("SELECT count(*) = 3 AND bool_or(status <> 1) FROM records WHERE origin = '320000'")
            )

    await eventually(taken_in)
    yield Pair(jiangsu, shanghai)


def check_request(*usccs: str, scenario: str = "政府采购", unit: str = UNIT) -> check_pb2.CheckRequest:
    return check_pb2.CheckRequest(
        usccs=list(usccs),
        scenario=scenario,
        requesting_unit_uscc=unit,
        purpose="供应商资格审查",
        legal_basis="政府采购法 第二十二条",
    )


async def check(channel: grpc.aio.Channel, request: check_pb2.CheckRequest) -> check_pb2.CheckResponse:
    return await check_pb2_grpc.CheckServiceStub(channel).Check(request, timeout=30)


async def feedback(channel: grpc.aio.Channel, request: check_pb2.FeedbackRequest) -> check_pb2.FeedbackReceipt:
    return await check_pb2_grpc.CheckServiceStub(channel).SubmitFeedback(request, timeout=30)


async def refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value


def punished(check_id: str, subject: str, *measures: str) -> check_pb2.FeedbackRequest:
    return check_pb2.FeedbackRequest(
        check_id=check_id,
        subject_id=subject,
        measures_applied=list(measures),
        outcome=check_pb2.FEEDBACK_OUTCOME_PUNISHED,
        amount_yuan="0.00",
        basis="政府采购法 第二十二条",
        district_code="310101",
        department="上海市黄浦区财政局",
        applied_on=publicity_today().isoformat(),
    )


async def test_a_jiangsu_serious_dishonesty_entry_restricts_a_shanghai_procurement_with_its_basis(
    federation: TestFederation, pair: Pair
) -> None:
    async with government_channel(federation, pair.shanghai) as channel:
        answer = await check(channel, check_request(LISTED))
    (subject,) = answer.subjects
    assert answer.scenario == "政府采购" and answer.check_id
    (hit,) = subject.hits
    assert (hit.origin, hit.record_id, hit.kind) == ("320000", "320000-HMD-1", "black_list")
    assert (hit.list_or_severity, hit.identifying_unit, hit.disputed) == (
        "严重失信主体名单",
        "江苏省发展和改革委员会",
        False,
    )
    assert hit.decision_date == LAST_YEAR and hit.window_end == "2099-12-31"
    assert hit.measures, "a serious-dishonesty entry triggers the catalogue's procurement restrictions"
    assert all(m.basis and m.category == "惩戒" for m in hit.measures)
    assert "SH-31-限制市场准入" in [m.id for m in hit.measures]
    assert subject.status == check_pb2.ANSWER_STATUS_HITS


async def test_an_expired_or_revoked_record_is_no_hit(federation: TestFederation, pair: Pair) -> None:
    async with government_channel(federation, pair.shanghai) as channel:
        answer = await check(channel, check_request(LAPSED, REVOKED))
    assert [(s.subject_id, list(s.hits), s.status) for s in answer.subjects] == [
        (LAPSED, [], check_pb2.ANSWER_STATUS_CLEAR),
        (REVOKED, [], check_pb2.ANSWER_STATUS_CLEAR),
    ]
    assert all(s.notify_commit_available for s in answer.subjects)


async def test_incentives_only_without_negative_records_and_no_notify_commit_for_a_serious_list(
    federation: TestFederation, pair: Pair
) -> None:
    async with government_channel(federation, pair.shanghai) as channel:
        answer = await check(channel, check_request(CLEAN, LISTED, scenario="行政许可"))
    clean, listed = answer.subjects
    assert clean.incentives and all(m.category == "激励" and m.basis for m in clean.incentives)
    assert clean.notify_commit_available and not clean.excluded_by
    assert list(listed.incentives) == []
    assert (listed.notify_commit_available, list(listed.excluded_by)) == (False, ["320000-HMD-1"])


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        (check_request(CLEAN, scenario="星际采购"), "unknown scenario"),
        (check_request(CLEAN, scenario=""), "scenario is required"),
        (check_request(CLEAN, unit=""), "requesting_unit_uscc is required"),
        (check_request(CLEAN, unit="not-a-code"), "requesting_unit_uscc"),
        (check_request(*[CLEAN] * 1001), "at most 1,000"),
        (check_request(), "usccs or person_ids is required"),
    ],
)
async def test_bad_checks_are_refused_and_audited_and_nothing_is_stored(
    federation: TestFederation, pair: Pair, request_: check_pb2.CheckRequest, words: str
) -> None:
    async with government_channel(federation, pair.shanghai) as channel:
        error = await refused(check(channel, request_))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and words in (error.details() or "")
    rows = await audit_rows(pair.shanghai, "Check")
    assert [r["status"] for r in rows] == ["INVALID_ARGUMENT"]
    assert await stored(pair.shanghai, "SELECT count(*) FROM checks") == 0


async def test_a_public_caller_may_not_check_and_the_refusal_is_audited(federation: TestFederation, pair: Pair) -> None:
    async with client_channel(federation, pair.shanghai, PUBLIC) as channel:
        error = await refused(check(channel, check_request(LISTED)))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    rows = await audit_rows(pair.shanghai, "Check")
    assert [(r["role"], r["status"]) for r in rows] == [("public", "PERMISSION_DENIED")]


async def test_each_checked_subject_gets_an_audit_row_naming_the_check(federation: TestFederation, pair: Pair) -> None:
    async with government_channel(federation, pair.shanghai) as channel:
        answer = await check(channel, check_request(LISTED, CLEAN))
    rows = await audit_rows(pair.shanghai, "Check")
    assert [(r["subject_id"], r["answered"], r["status"]) for r in rows] == [(LISTED, 1, "OK"), (CLEAN, 0, "OK")]
    assert all(answer.check_id in r["detail"] and r["purpose"] == "供应商资格审查" for r in rows)


async def test_feedback_is_held_to_what_the_check_returned_and_filed_once(
    federation: TestFederation, pair: Pair
) -> None:
    async with government_channel(federation, pair.shanghai) as channel:
        answer = await check(channel, check_request(LISTED))
        measures = [m.id for m in answer.subjects[0].hits[0].measures]
        not_returned = await refused(feedback(channel, punished(answer.check_id, LISTED, measures[0], "CN-虚构措施")))
        # The subject as a platform may send it: lower case, padded; it is the subject the check stored.
        receipt = await feedback(channel, punished(answer.check_id, f" {LISTED.lower()} ", measures[0]))
        again = await refused(feedback(channel, punished(answer.check_id, LISTED, measures[0])))
        unknown = await refused(feedback(channel, punished("00000000-0000-0000-0000-000000000000", LISTED)))
    async with client_channel(federation, pair.shanghai, OPERATOR) as channel:
        others = await refused(feedback(channel, punished(answer.check_id, LISTED, measures[0])))
    assert not_returned.code() == grpc.StatusCode.INVALID_ARGUMENT and "CN-虚构措施" in (not_returned.details() or "")
    assert (receipt.check_id, receipt.subject_id) == (answer.check_id, LISTED)
    assert again.code() == grpc.StatusCode.ALREADY_EXISTS
    assert unknown.code() == grpc.StatusCode.NOT_FOUND
    assert others.code() == grpc.StatusCode.PERMISSION_DENIED
    row = await fetch_one(pair.shanghai, "SELECT * FROM check_feedback")
    assert (str(row["check_id"]), row["subject_id"], row["measures_applied"], row["outcome"]) == (
        answer.check_id,
        LISTED,
        [measures[0]],
        "punished",
    )
    assert str(row["amount_yuan"]) == "0.00" and row["district_code"] == "310101"
    check_row = await fetch_one(pair.shanghai, "SELECT * FROM checks")
    assert (check_row["caller"], check_row["requesting_unit"], check_row["scenario"], check_row["subjects"]) == (
        GOVERNMENT,
        UNIT,
        "政府采购",
        1,
    )
    answers = await fetch_one(pair.shanghai, "SELECT measure_ids FROM check_answers")
    assert answers["measure_ids"] == measures


async def stored(node: Node, query: str) -> object:
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        return await conn.fetchval(query)


async def fetch_one(node: Node, query: str) -> dict[str, object]:
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        rows = await conn.fetch(query)
    assert len(rows) == 1, rows
    return dict(rows[0])


async def test_feedback_keeps_its_result_text_and_department_code_and_refuses_a_code_that_is_a_name(
    federation: TestFederation, pair: Pair
) -> None:
    async with government_channel(federation, pair.shanghai) as channel:
        answer = await check(channel, check_request(LISTED))
        measure = answer.subjects[0].hits[0].measures[0].id
        named = punished(answer.check_id, LISTED, measure)
        named.department_code = "上海市黄浦区财政局"
        not_a_code = await refused(feedback(channel, named))
        too_long = punished(answer.check_id, LISTED, measure)
        too_long.result = "罚" * 501
        over = await refused(feedback(channel, too_long))
        assert await stored(pair.shanghai, "SELECT count(*) FROM check_feedback") == 0
        filed = punished(answer.check_id, LISTED, measure)
        filed.result, filed.department_code = "取消其政府采购投标资格三年", "11310101MB2F07652X"
        receipt = await feedback(channel, filed)
    assert not_a_code.code() == grpc.StatusCode.INVALID_ARGUMENT and "department_code" in (not_a_code.details() or "")
    assert over.code() == grpc.StatusCode.INVALID_ARGUMENT and "result" in (over.details() or "")
    assert (receipt.result, receipt.department_code) == ("取消其政府采购投标资格三年", "11310101MB2F07652X")
    row = await fetch_one(pair.shanghai, "SELECT result, department_code, department FROM check_feedback")
    assert (row["result"], row["department_code"], row["department"]) == (
        "取消其政府采购投标资格三年",
        "11310101MB2F07652X",
        "上海市黄浦区财政局",
    )


async def test_provincial_measures_follow_the_requesting_units_region_not_the_answering_nodes(
    federation: TestFederation, pair: Pair
) -> None:
    zhejiang_unit = uscc_codes.make("11", "330100", "HCG00003")  # a Hangzhou office asking Shanghai's node
    async with government_channel(federation, pair.shanghai) as channel:
        from_shanghai = await check(channel, check_request(LISTED))
        from_zhejiang = await check(channel, check_request(LISTED, unit=zhejiang_unit))
    shanghai_ids = [m.id for m in from_shanghai.subjects[0].hits[0].measures]
    zhejiang_ids = [m.id for m in from_zhejiang.subjects[0].hits[0].measures]
    assert any(i.startswith("SH-") for i in shanghai_ids) and not any(i.startswith("ZJ-") for i in shanghai_ids)
    assert any(i.startswith("ZJ-") for i in zhejiang_ids) and not any(i.startswith("SH-") for i in zhejiang_ids)
    # National and Delta measures are the same for both units.
    assert {i for i in shanghai_ids if not i.startswith("SH-")} == {i for i in zhejiang_ids if not i.startswith("ZJ-")}


async def test_a_check_of_many_subjects_answers_each_as_a_check_of_it_alone(
    federation: TestFederation, pair: Pair
) -> None:
    named = [LISTED, CLEAN, LAPSED, REVOKED, LISTED]
    async with government_channel(federation, pair.shanghai) as channel:
        together = await check(channel, check_request(*named, scenario="行政许可"))
        alone = [await check(channel, check_request(subject, scenario="行政许可")) for subject in named[:4]]
    assert [s.subject_id for s in together.subjects] == named[:4], "each distinct subject once, in the order named"
    assert list(together.subjects) == [answer.subjects[0] for answer in alone]


async def test_a_record_revoked_at_its_origin_is_no_hit_from_the_next_check_on(
    federation: TestFederation, pair: Pair
) -> None:
    async with government_channel(federation, pair.shanghai) as channel:
        before = await check(channel, check_request(LISTED))
        assert [h.record_id for h in before.subjects[0].hits] == ["320000-HMD-1"]
        assert pair.jiangsu.pool is not None
        async with pair.jiangsu.pool.acquire() as conn, conn.transaction():
            await pair.jiangsu.ledger.revoke(conn, "320000-HMD-1", "移出严重失信主体名单")

        async def cleared() -> check_pb2.SubjectAnswer | None:
            (subject,) = (await check(channel, check_request(LISTED))).subjects
            return subject if not subject.hits else None

        subject = await eventually(cleared)
    assert subject.notify_commit_available and subject.status == check_pb2.ANSWER_STATUS_CLEAR
