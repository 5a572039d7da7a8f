"""SearchSubjects and BatchGetProfiles: finding subjects by name or code, and many profiles in one call.

On a real node of the test federation, with records signed by its own ledger. A name
is found whatever form it is typed in; a subject is found only by callers who may see
one of its records; natural persons are never found by name by public or government
callers; a batch answers every code in the order asked, or refuses the whole call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from credex.domain import uscc as uscc_codes
from credex.node.ledger.appender import Change
from credex.node.runtime import Node
from credex.v1 import lookup_pb2, lookup_pb2_grpc, record_pb2

from .callers import PUBLIC, audit_rows, client_channel, government_channel, peer_channel
from .conftest import TestFederation

PUBLIC_LEVEL = record_pb2.SHARING_LEVEL_PUBLIC
GOVERNMENT_LEVEL = record_pb2.SHARING_LEVEL_GOVERNMENT
ENTITY = record_pb2.SUBJECT_TYPE_LEGAL_ENTITY
PERSON = record_pb2.SUBJECT_TYPE_NATURAL_PERSON


def code(org8: str) -> str:
    return uscc_codes.make("91", "310115", org8)


HUAXING = code("HX000001")  # published in traditional characters with full-width letters
HUAXING_BRANCH = code("HX000002")  # a longer name containing Huaxing's
SECRETIVE = code("GW000001")  # only government-shared records
PERSON_ID = "P-" + "ab" * 16  # a natural person's pseudonym
TRADERS = [code(f"TR{i:06d}") for i in range(25)]  # names alike, for paging


def penalty(number: str, subject: record_pb2.Subject, level: int = PUBLIC_LEVEL) -> record_pb2.Record:
    return record_pb2.Record(
        record_id=f"310000-CF-{number}",
        origin="310000",
        kind=record_pb2.KIND_PENALTY,
        subject=subject,
        sharing_level=level,  # type: ignore[arg-type]
        publicity=record_pb2.PublicityWindow(start="2025-01-01", end="2099-12-31"),
        penalty=record_pb2.PenaltyDetails(content="罚款 5000 元"),
    )


def company(uscc: str, name: str) -> record_pb2.Subject:
    return record_pb2.Subject(type=ENTITY, uscc=uscc, name=name)


RECORDS = [
    penalty("HX1", company(HUAXING, "上海浦東新區華興ＡＢＣ科技有限公司")),
    penalty("HX2", company(HUAXING, "上海浦東新區華興ＡＢＣ科技有限公司")),
    penalty("HXB", company(HUAXING_BRANCH, "上海浦东新区华兴ABC科技有限公司第一分公司")),
    penalty("GV1", company(SECRETIVE, "上海隐秘贸易有限公司"), GOVERNMENT_LEVEL),
    penalty("PS1", record_pb2.Subject(type=PERSON, person_pseudonym=PERSON_ID, name="张三丰")),
    *(penalty(f"TR{i}", company(uscc, f"上海同名商贸有限公司{i:02d}")) for i, uscc in enumerate(TRADERS)),
]


@pytest.fixture
async def node(federation: TestFederation) -> AsyncIterator[Node]:
    started = await federation.start_node("310000")
    assert started.pool is not None
    async with started.pool.acquire() as conn, conn.transaction():
        await started.ledger.append(conn, [Change.of(r) for r in RECORDS])
    yield started


async def search(channel: grpc.aio.Channel, query: str, **fields: object) -> lookup_pb2.SearchSubjectsResponse:
    request = lookup_pb2.SearchSubjectsRequest(query=query, purpose="供应商审查", **fields)  # type: ignore[arg-type]
    return await lookup_pb2_grpc.LookupServiceStub(channel).SearchSubjects(request, timeout=30)


async def found(channel: grpc.aio.Channel, query: str) -> list[str]:
    return [s.subject_id for s in (await search(channel, query, page_size=100)).subjects]


async def refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value


@pytest.mark.parametrize(
    "query",
    [
        "上海浦東新區華興ＡＢＣ科技有限公司",  # as published: traditional, full-width letters
        "上海浦东新区华兴ABC科技有限公司",  # simplified, half-width
        "上海浦东新区华兴abc科技有限公司",  # lower case
        "  上海 浦东新区　华兴 ＡＢＣ 科技有限公司 ",  # spaces, ideographic too
    ],
)
async def test_a_name_is_found_first_in_any_character_form(federation: TestFederation, node: Node, query: str) -> None:
    async with client_channel(federation, node, PUBLIC) as channel:
        answer = await search(channel, query)
    first = answer.subjects[0]
    assert (first.subject_id, first.name, first.type) == (HUAXING, "上海浦東新區華興ＡＢＣ科技有限公司", ENTITY)
    assert (list(first.origins), first.record_count) == (["310000"], 2)
    assert [s.subject_id for s in answer.subjects] == [HUAXING, HUAXING_BRANCH]  # the exact name, then the longer


async def test_part_of_a_name_or_of_a_code_finds_the_subject_and_the_exact_code_comes_first(
    federation: TestFederation, node: Node
) -> None:
    async with government_channel(federation, node) as channel:
        assert set(await found(channel, "華興 abc")) == {HUAXING, HUAXING_BRANCH}
        assert await found(channel, HUAXING[6:17]) == [HUAXING]
        assert await found(channel, HUAXING_BRANCH.lower()) == [HUAXING_BRANCH]
        assert (await found(channel, "91310115HX00000"))[:2] == sorted([HUAXING, HUAXING_BRANCH])
        assert await found(channel, "无此企业名称") == []


async def test_pages_are_stable_and_complete(federation: TestFederation, node: Node) -> None:
    async with client_channel(federation, node, PUBLIC) as channel:
        whole = await found(channel, "同名商贸")
        paged: list[str] = []
        token = ""
        while True:
            page = await search(channel, "同名商贸", page_size=7, page_token=token)
            assert len(page.subjects) <= 7
            paged += [s.subject_id for s in page.subjects]
            token = page.next_page_token
            if not token:
                break
        again = await search(channel, "同名商贸", page_size=7)
    assert sorted(whole) == sorted(TRADERS)
    assert paged == whole  # no subject repeated or skipped, in the same order
    assert [s.subject_id for s in again.subjects] == whole[:7]


async def test_a_subject_is_found_only_by_callers_who_may_see_one_of_its_records(
    federation: TestFederation, node: Node
) -> None:
    async with client_channel(federation, node, PUBLIC) as public, government_channel(federation, node) as office:
        assert await found(public, "隐秘贸易") == []
        assert await found(public, SECRETIVE) == []
        assert await found(office, "隐秘贸易") == [SECRETIVE]


async def test_natural_persons_are_found_by_name_only_by_peers_and_operators(
    federation: TestFederation, node: Node
) -> None:
    async with (
        client_channel(federation, node, PUBLIC) as public,
        government_channel(federation, node) as office,
        peer_channel(federation, node, "320000") as peer,
    ):
        assert await found(public, "张三丰") == []
        assert await found(public, "張三豐") == []
        assert await found(office, "张三丰") == []
        assert await found(public, PERSON_ID) == []
        assert await found(peer, "張三豐") == [PERSON_ID]


async def test_bad_searches_are_invalid_argument(federation: TestFederation, node: Node) -> None:
    async with client_channel(federation, node, PUBLIC) as channel:
        bad: list[tuple[str, dict[str, object], str]] = [
            ("", {}, "query is required"),
            ("　 ", {}, "no characters to search by"),
            ("上" * 101, {}, "at most 100"),
            ("同名商贸", {"page_size": 101}, "at most 100 subjects a page"),
            ("同名商贸", {"page_token": "forged"}, "page_token"),
        ]
        for query, fields, says in bad:
            error = await refused(search(channel, query, **fields))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, query
            assert says in (error.details() or ""), (query, error.details())
        page = await search(channel, "同名商贸", page_size=5)
        error = await refused(search(channel, "华兴", page_token=page.next_page_token))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # a token of another query


async def test_searches_are_audited_with_the_query_and_the_subjects_found(
    federation: TestFederation, node: Node
) -> None:
    async with client_channel(federation, node, PUBLIC) as channel:
        await search(channel, "华兴ABC")
        await refused(search(channel, "x" * 101))
    rows = await audit_rows(node, "SearchSubjects")
    assert [(r["caller"], r["status"], r["answered"], r["purpose"]) for r in rows] == [
        (PUBLIC, "OK", 2, "供应商审查"),
        (PUBLIC, "INVALID_ARGUMENT", 0, "供应商审查"),
    ]
    assert rows[0]["detail"] == f"query '华兴ABC': {HUAXING} {HUAXING_BRANCH}"


async def batch(channel: grpc.aio.Channel, usccs: list[str]) -> lookup_pb2.BatchGetProfilesResponse:
    request = lookup_pb2.BatchGetProfilesRequest(usccs=usccs, purpose="批量审查")
    return await lookup_pb2_grpc.LookupServiceStub(channel).BatchGetProfiles(request, timeout=60)


async def test_a_batch_of_a_thousand_answers_each_code_in_request_order(federation: TestFederation, node: Node) -> None:
    unknown = [code(f"UK{i:06d}") for i in range(996)]
    asked = [unknown[0], HUAXING, *unknown[1:500], SECRETIVE, " " + HUAXING_BRANCH.lower(), *unknown[500:], HUAXING]
    assert len(asked) == 1000
    async with client_channel(federation, node, PUBLIC) as public, government_channel(federation, node) as office:
        seen_by_public = await batch(public, asked)
        seen_by_office = await batch(office, asked)
    expected_ids = [uscc_codes.validate(c).code for c in asked]
    assert [p.subject_id for p in seen_by_public.profiles] == expected_ids
    counts = {p.subject_id: len(p.entries) for p in seen_by_public.profiles}
    assert (counts[HUAXING], counts[HUAXING_BRANCH], counts[SECRETIVE], counts[unknown[7]]) == (2, 1, 0, 0)
    assert len(seen_by_office.profiles[501].entries) == 1  # the government sees the government-shared record
    assert [e.record.record_id for e in seen_by_public.profiles[1].entries] == ["310000-CF-HX1", "310000-CF-HX2"]
    rows = await audit_rows(node, "BatchGetProfiles")
    public_rows = [r for r in rows if r["caller"] == PUBLIC]
    assert len(public_rows) == 999  # a row per distinct subject asked about, so each one's trail shows the call
    by_subject = {r["subject_id"]: r for r in public_rows}
    assert by_subject[HUAXING]["answered"] == 2
    assert by_subject[HUAXING]["detail"] == " ".join(f"310000#{e.seq}" for e in seen_by_public.profiles[1].entries)
    assert by_subject[unknown[3]]["answered"] == 0
    assert {r["purpose"] for r in public_rows} == {"批量审查"}


async def test_a_batch_over_the_limit_or_with_a_bad_code_is_refused_whole_and_audited(
    federation: TestFederation, node: Node
) -> None:
    async with government_channel(federation, node) as channel:
        too_many = await refused(batch(channel, [HUAXING] * 1001))
        bad = await refused(batch(channel, [HUAXING, SECRETIVE, HUAXING_BRANCH, "91310115HX0000O1XX", HUAXING]))
        empty = await refused(batch(channel, []))
    assert too_many.code() == bad.code() == empty.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "1,001 items; at most 1,000" in (too_many.details() or "")
    assert (bad.details() or "").startswith("usccs[3]: ")
    rows = await audit_rows(node, "BatchGetProfiles")
    assert [(r["status"], r["answered"]) for r in rows] == [("INVALID_ARGUMENT", 0)] * 3


async def test_subjects_held_before_search_existed_become_searchable_at_the_next_start(
    federation: TestFederation, node: Node
) -> None:
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        await conn.execute("DELETE FROM subjects")  # as a store migrated from before 0010 is
    await federation.stop_node("310000")
    restarted = await federation.start_node("310000")
    async with government_channel(federation, restarted) as channel:
        assert HUAXING in await found(channel, "上海浦东新区华兴ABC科技有限公司")
