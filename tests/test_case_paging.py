"""ListCases pages through every case a caller may see, in filing order, by a cursor: no case is skipped or
repeated, however many are filed while the caller pages, and a cursor that is not the caller's is refused."""

from __future__ import annotations

import grpc

from credex.node.cases import CaseDesk
from credex.v1 import case_pb2

from .callers import GOVERNMENT
from .cases_support import (
    Regions,
    objection,
    penalty,
    publish,
    refused,
    regions_fixture,  # noqa: F401 (the regions fixture)
)
from .test_cases_cli import credex, tls_options


async def all_pages(stub: object, page_size: int) -> list[list[str]]:
    pages: list[list[str]] = []
    after = ""
    while True:
        answer = await stub.ListCases(  # type: ignore[attr-defined]
            case_pb2.ListCasesRequest(limit=page_size, after=after, purpose="异议查询"), timeout=30
        )
        pages.append([c.case_id for c in answer.cases])
        if not answer.next_after:
            return pages
        assert answer.next_after == answer.cases[-1].case_id
        after = answer.next_after


async def test_pages_follow_filing_order_and_a_case_filed_while_paging_comes_last(regions: Regions) -> None:
    records = [penalty(100 + n) for n in range(6)]
    await publish(regions.jiangsu, records, regions.shanghai)
    filer = regions.filer()
    filed = [(await filer.FileObjection(objection(r, f"page-{r.record_id}"), timeout=30)).case.case_id for r in records]
    first = await filer.ListCases(case_pb2.ListCasesRequest(limit=2, purpose="异议查询"), timeout=30)
    assert [c.case_id for c in first.cases] == filed[:2] and first.next_after == filed[1]

    late = penalty(199)
    await publish(regions.jiangsu, [late], regions.shanghai)
    filed.append((await filer.FileObjection(objection(late, "page-late"), timeout=30)).case.case_id)
    pages = await all_pages(filer, 2)
    assert pages == [filed[0:2], filed[2:4], filed[4:6], filed[6:7]]
    assert await all_pages(filer, 1000) == [filed]


async def test_a_cursor_that_is_not_one_of_the_callers_cases_is_refused_alike(regions: Regions) -> None:
    record = penalty(110)
    await publish(regions.jiangsu, [record], regions.shanghai)
    theirs = await regions.filer(regions.jiangsu).FileObjection(objection(record, "cursor-probe"), timeout=30)
    mine = regions.filer()  # the same certificate name on Shanghai: another caller
    other = await refused(
        mine.ListCases(case_pb2.ListCasesRequest(after=theirs.case.case_id, purpose="异议查询"), timeout=30)
    )
    nowhere = await refused(
        mine.ListCases(case_pb2.ListCasesRequest(after="case-none", purpose="异议查询"), timeout=30)
    )
    assert other.code() == nowhere.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (other.details() or "").replace(theirs.case.case_id, "X") == (nowhere.details() or "").replace(
        "case-none", "X"
    )
    too_big = await refused(mine.ListCases(case_pb2.ListCasesRequest(limit=1001, purpose="异议查询"), timeout=30))
    assert too_big.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_more_than_a_thousand_cases_are_all_reached_page_by_page(regions: Regions) -> None:
    """The old answer stopped at 1000 cases; pages go on past it."""
    record = penalty(120)
    await publish(regions.jiangsu, [record], regions.shanghai)
    desk: CaseDesk = regions.shanghai.cases
    assert regions.shanghai.pool is not None
    async with regions.shanghai.pool.acquire() as conn:
        # 1,100 closed cases of one filer, written straight to the store: filing each over gRPC adds nothing here.
        await conn.execute(
            "INSERT INTO cases (case_id, kind, record_id, record_origin, subject_id, filed_on, filer, on_behalf_of,"
            " request_id, content_digest, filing, at_origin, state, eligibility, filed_at, delivery, closed_at)"
            " SELECT 'case-bulk-' || lpad(n::text, 5, '0'), 'objection', $1, '320000', $2, '310000', $3, $2,"
            " 'bulk-' || n, '\\x00'::bytea, '\\x00'::bytea, false, 'withdrawn', '',"
            " now() - make_interval(secs => 5000 - n), '', now() FROM generate_series(1, 1100) AS n",
            record.record_id,
            record.subject.uscc,
            GOVERNMENT,
        )
    assert desk.origin == "310000"
    pages = await all_pages(regions.filer(), 1000)
    assert [len(p) for p in pages] == [1000, 100]
    assert [c for p in pages for c in p] == [f"case-bulk-{n:05d}" for n in range(1, 1101)]


async def test_the_cli_prints_the_cursor_of_the_next_page(regions: Regions) -> None:
    records = [penalty(130 + n) for n in range(3)]
    await publish(regions.jiangsu, records, regions.shanghai)
    filer = regions.filer()
    filed = [
        (await filer.FileObjection(objection(r, f"cli-page-{n}"), timeout=30)).case.case_id
        for n, r in enumerate(records)
    ]
    government = tls_options(regions, regions.shanghai, GOVERNMENT)
    first = await credex("cases", "list", *government, "--page-size", "2", "--purpose", "异议查询")
    assert first.exit_code == 0, first.output
    assert filed[0] in first.output and filed[2] not in first.output and f"--after {filed[1]}" in first.output
    second = await credex(
        "cases", "list", *government, "--page-size", "2", "--after", filed[1], "--purpose", "异议查询"
    )
    assert second.exit_code == 0 and filed[2] in second.output and "--after" not in second.output, second.output
