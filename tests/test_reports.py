"""Credit reports: what the full and the special report hold (credit-use.md, Report rules 1–6).

Shanghai's node issues reports on a Jiangsu enterprise from the copy of Jiangsu's log
it took in over the federation's bus (tests/report_setup.py lists the records).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pypdfium2  # type: ignore[import-untyped]
import pytest
from PIL import ImageOps
from stdnum.cn import ric

from credex.crypto.keys import SigningKey
from credex.domain import uscc as uscc_codes
from credex.domain.publicity import publicity_today
from credex.node.authorizations import recording
from credex.node.ledger.appender import Change
from credex.node.reports import FieldsList, FieldsListError, check_report, issuing
from credex.node.reports.document import HAS_RECORD, NO_RECORD, NOT_COVERED, sign_document
from credex.node.reports.rendering import render_html, render_pdf
from credex.v1 import authorization_pb2, record_pb2, report_pb2, report_pb2_grpc

from .callers import client_channel
from .conftest import TestFederation, eventually
from .report_setup import (
    AUTHORIZATION_DIGEST,
    AUTHORIZATION_ID,
    AUTHORIZED,
    CLEAN,
    COMPANY,
    COMPANY_NAME,
    DISPUTED,
    GOVERNMENT_ONLY,
    LICENCE,
    LISTED,
    PERSON,
    PERSON_AUTHORIZATION,
    PORTAL,
    REPAIRED,
    SERIOUS,
    WARNING,
    Pair,
    issue,
    issue_request,
    record,
    start_pair,
    taken_in,
)

STREAMS_GRANTEE = uscc_codes.make("91", "310000", "JG000001")  # a supervision platform the person let take streams


@pytest.fixture
async def pair(federation: TestFederation) -> AsyncIterator[Pair]:
    yield await start_pair(federation)


async def refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value


def structure(document: dict[str, Any]) -> dict[str, Any]:
    """What a golden test compares: the headings, their coverage and verdicts, and which records are where."""
    return {
        "keys": sorted(document),
        "sections": [
            {
                "code": s["code"],
                "covered": s["covered"],
                "verdict": s.get("verdict", ""),
                "records": s["records"],
                "findings": [(f["field"], f["verdict"], f["records"]) for f in s.get("findings", [])],
            }
            for s in document["sections"]
        ],
        "items": [(i["record_id"], i["shown_as"], i["disputed"]) for i in document["items"]],
    }


DOCUMENT_KEYS = sorted(
    [
        "format",
        "report_number",
        "verification_code",
        "verify_url",
        "kind",
        "title",
        "issued_at",
        "data_cutoff",
        "issuer",
        "subject",
        "period",
        "fields",
        "regions",
        "sections",
        "items",
        "evidence",
        "notes",
    ]
)


async def test_special_report_states_per_category_and_field_whether_there_is_a_record(
    federation: TestFederation, pair: Pair
) -> None:
    fields = ["market", "tax", "environment", "construction", "development"]  # the list's order
    async with client_channel(federation, pair.shanghai, PORTAL) as channel:
        issued = await issue(channel, issue_request(fields=fields, purpose="投标"))
    document = check_report(issued.signed_report, federation.bundle_now()).document
    assert structure(document) == {
        "keys": DOCUMENT_KEYS,
        "sections": [
            {
                "code": "penalty",
                "covered": True,
                "verdict": "",
                "records": [SERIOUS.record_id, WARNING.record_id, DISPUTED.record_id],
                "findings": [
                    ("market", HAS_RECORD, [SERIOUS.record_id]),
                    ("tax", HAS_RECORD, [WARNING.record_id]),  # 简易程序 included: the national minimum
                    ("environment", HAS_RECORD, [DISPUTED.record_id]),
                    ("construction", NO_RECORD, []),
                    ("development", NO_RECORD, []),
                ],
            },
            {"code": "coercion", "covered": False, "verdict": NOT_COVERED, "records": [], "findings": []},
            {
                "code": "serious_dishonesty",
                "covered": True,
                "verdict": "",
                "records": [LISTED.record_id],
                "findings": [
                    ("market", NO_RECORD, []),
                    ("tax", NO_RECORD, []),
                    ("environment", NO_RECORD, []),
                    ("construction", NO_RECORD, []),
                    ("development", HAS_RECORD, [LISTED.record_id]),
                ],
            },
            {"code": "criminal_judgment", "covered": False, "verdict": NOT_COVERED, "records": [], "findings": []},
        ],
        "items": [
            (SERIOUS.record_id, "在公示期", False),
            (WARNING.record_id, "在公示期", False),
            (LISTED.record_id, "在公示期", False),
            (DISPUTED.record_id, "在公示期", True),
        ],
    }
    assert document["kind"] == "special" and document["title"] == "专项信用报告"
    assert document["subject"] == {"id": COMPANY, "name": COMPANY_NAME}
    assert document["issuer"]["origin"] == "310000"
    members = federation.bundle_now().origins
    # Covered: the regions whose logs this node holds, never a member it has nothing of (a relying party in that
    # region would take the report's 无 for its own); the data cut-off still says how far each member's log is held.
    assert [r["origin"] for r in document["regions"]] == ["320000"]
    assert [o for o in members if any(f"（{o}）" in n and "不覆盖" in n for n in document["notes"])] == [
        o for o in members if o != "320000"
    ]
    assert {log["origin"]: log["seq"] > 0 for log in document["data_cutoff"]["logs"]} == {
        o: o == "320000" for o in members
    }
    today = publicity_today()
    assert document["period"]["end"] == today.isoformat()
    five_years_back = today.replace(year=today.year - 5, day=28 if (today.month, today.day) == (2, 29) else today.day)
    assert document["period"]["start"] == five_years_back.isoformat()  # a 29 February counts back to the 28th
    assert [f["code"] for f in document["fields"]] == fields
    assert document["report_number"] == issued.report_number and issued.report_number.startswith("310000-")
    assert document["verification_code"] == issued.verification_code
    assert issued.verification_code in issued.verify_url and issued.report_number in issued.verify_url
    assert any("异议" in note for note in document["notes"])


async def test_full_report_has_every_section_and_never_grades_or_withdrawn_records(
    federation: TestFederation, pair: Pair
) -> None:
    async with client_channel(federation, pair.shanghai, PORTAL) as channel:
        issued = await issue(channel, issue_request(kind=report_pb2.REPORT_KIND_FULL))
    document = check_report(issued.signed_report, federation.bundle_now()).document
    sections = {s["code"]: s for s in structure(document)["sections"]}
    assert list(sections) == [
        "licence",
        "penalty",
        "serious_dishonesty",
        "commitment",
        "judicial",
        "honours",
        "abnormal_operation",
        "contract",
        "household_worker",
    ]
    assert sections["licence"]["records"] == [LICENCE.record_id]
    assert sections["penalty"]["records"] == [SERIOUS.record_id, WARNING.record_id, DISPUTED.record_id]
    assert sections["serious_dishonesty"]["records"] == [LISTED.record_id]
    # No member publishes these kinds: "not covered", never an empty section that reads as 无.
    for code in ("commitment", "judicial", "honours", "abnormal_operation", "contract", "household_worker"):
        assert sections[code]["covered"] is False and sections[code]["verdict"] == NOT_COVERED
    shown = {i["record_id"] for i in document["items"]}
    # The grade, the repaired, the revoked, the one before the period and the government-only one are left out.
    assert shown == {LICENCE.record_id, SERIOUS.record_id, WARNING.record_id, DISPUTED.record_id, LISTED.record_id}
    text = json.dumps(document, ensure_ascii=False)
    assert "较差" not in text and "evaluation" not in text
    assert GOVERNMENT_ONLY.record_id not in text
    assert {i["sharing"] for i in document["items"]} == {"public"} and "未向社会公开" not in text


async def test_never_says_none_where_a_category_has_no_source(federation: TestFederation, pair: Pair) -> None:
    async with client_channel(federation, pair.shanghai, PORTAL) as channel:
        issued = await issue(channel, issue_request(subject=CLEAN))
    document = check_report(issued.signed_report, federation.bundle_now()).document
    verdicts = {s["code"]: s.get("verdict") for s in document["sections"]}
    assert verdicts["coercion"] == NOT_COVERED and verdicts["criminal_judgment"] == NOT_COVERED
    for section in document["sections"]:
        if section["covered"]:
            assert {f["verdict"] for f in section["findings"]} == {NO_RECORD}
        else:
            assert "findings" not in section and "无" not in section["verdict"]
    assert document["items"] == [] and document["evidence"] == []


async def test_repaired_records_are_labelled_repaired_where_their_region_says_so(federation: TestFederation) -> None:
    pair = await start_pair(federation, reports={"show_repaired": ["320000"], "simple_procedure_excluded": ["320000"]})
    async with client_channel(federation, pair.shanghai, PORTAL) as channel:
        issued = await issue(channel, issue_request(fields=["tax", "transport"]))
    document = check_report(issued.signed_report, federation.bundle_now()).document
    items = {i["record_id"]: i for i in document["items"]}
    assert items[REPAIRED.record_id]["shown_as"] == "已修复"
    penalty_section = next(s for s in document["sections"] if s["code"] == "penalty")
    # A repaired record never makes a 有; Jiangsu excluded as Zhejiang does: the warning is left out.
    assert [(f["field"], f["verdict"]) for f in penalty_section["findings"]] == [
        ("tax", NO_RECORD),
        ("transport", NO_RECORD),
    ]
    assert WARNING.record_id not in items
    assert any("已修复" in note for note in document["notes"])
    assert any("简易程序" in note for note in document["notes"])


async def test_pdf_renders_chinese_with_the_bundled_font(
    federation: TestFederation, pair: Pair, tmp_path: Path
) -> None:
    async with client_channel(federation, pair.shanghai, PORTAL) as channel:
        issued = await issue(channel, issue_request())
    checked = check_report(issued.signed_report, federation.bundle_now())
    data = render_pdf(checked)
    pdf = pypdfium2.PdfDocument(data)
    text = "".join(pdf[i].get_textpage().get_text_range() for i in range(len(pdf)))
    assert COMPANY_NAME in text and issued.report_number in text and "专项信用报告" in text
    image = pdf[0].render(scale=1).to_pil().convert("L")
    inked = ImageOps.invert(image).getbbox()
    assert inked is not None, "the first page is blank"
    dark = sum(image.histogram()[:128])
    assert dark > 2000, f"only {dark} dark pixels: the text did not render"
    fonts = data.count(b"/FontFile")
    assert fonts >= 1, "the font is not embedded"
    html = render_html(checked).decode()
    assert COMPANY_NAME in html and issued.report_number in html and "<svg" in html
    # A name as an origin published it is text on the page, never markup.
    hostile = dataclasses.replace(
        checked, document={**checked.document, "subject": {"id": COMPANY, "name": "<script>x()</script>"}}
    )
    page = render_html(hostile).decode()
    assert "<script>x()" not in page and "&lt;script&gt;x()" in page


async def test_a_persons_report_needs_the_person_or_an_authorization_the_node_holds(
    federation: TestFederation, pair: Pair
) -> None:
    request = issue_request(subject=PERSON, kind=report_pb2.REPORT_KIND_FULL)
    async with client_channel(federation, pair.shanghai, PORTAL) as channel:
        error = await refused(issue(channel, request))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    authorization = authorization_pb2.Authorization(
        authorization_id=AUTHORIZATION_ID,
        document_sha256=AUTHORIZATION_DIGEST,
        subject=PERSON,
        grantee=AUTHORIZED,
        scope="report",
        valid_from=publicity_today().isoformat(),
        valid_until="2099-12-31",
    )
    forged_for_portal = authorization_pb2.Authorization()
    forged_for_portal.CopyFrom(authorization)
    forged_for_portal.grantee = PORTAL
    async with client_channel(federation, pair.shanghai, PORTAL) as channel:
        request.authorization.CopyFrom(forged_for_portal)  # a grantee is a unit by USCC, never a certificate name
        error = await refused(issue(channel, request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "grantee" in (error.details() or "")
    async with client_channel(federation, pair.shanghai, AUTHORIZED) as channel:
        for field, value in (("document_sha256", bytes(32)), ("authorization_id", "SQ-FORGED")):
            forged = issue_request(subject=PERSON, kind=report_pb2.REPORT_KIND_FULL)
            forged.authorization.CopyFrom(authorization)
            setattr(forged.authorization, field, value)  # right grantee, scope and dates, but not the held document
            error = await refused(issue(channel, forged))
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "credex authorization grant" in (error.details() or "")
    request.authorization.CopyFrom(authorization)
    async with client_channel(federation, pair.shanghai, AUTHORIZED) as channel:
        issued = await issue(channel, request)
        wrong_scope = issue_request(subject=PERSON)
        wrong_scope.authorization.CopyFrom(authorization)
        wrong_scope.authorization.scope = "stream"
        error = await refused(issue(channel, wrong_scope))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    document = check_report(issued.signed_report, federation.bundle_now()).document
    assert [(i["kind"], i["sharing"]) for i in document["items"]] == [
        ("penalty", "government")
    ]  # never the authorization
    assert any("未向社会公开" in note for note in document["notes"])
    async with client_channel(federation, pair.shanghai, PERSON) as channel:  # the person, as themselves
        assert (await issue(channel, issue_request(subject=PERSON))).report_number
    async with client_channel(federation, pair.shanghai, PORTAL) as channel:  # persons' reports are not viewed by code
        error = await refused(pair_view(channel, issued.report_number, issued.verification_code))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_persons_report_may_be_asked_with_an_authorization_naming_them_by_id_number(
    federation: TestFederation, pair: Pair
) -> None:
    """The same authorization file serves a check and a report: the node turns the number into the pseudonym."""
    first17 = "31010519900307123"
    number = first17 + ric.calc_check_digit(first17 + "0")
    granted = authorization_pb2.Authorization(
        authorization_id="SQ-BY-NUMBER",
        document_sha256=bytes(range(32)),
        subject=number,
        grantee=AUTHORIZED,
        scope="report",
        valid_from=publicity_today().isoformat(),
        valid_until="2099-12-31",
    )
    shanghai = pair.shanghai
    assert shanghai.pool is not None and shanghai.pseudonymizer is not None
    async with shanghai.pool.acquire() as conn, conn.transaction():
        await recording.grant(conn, shanghai.ledger, granted, "operator-desk", shanghai.pseudonymizer)
    person = shanghai.pseudonymizer.pseudonym(number)
    request = issue_request(subject=person, kind=report_pb2.REPORT_KIND_FULL)
    request.authorization.CopyFrom(granted)
    async with client_channel(federation, shanghai, AUTHORIZED) as channel:
        issued = await issue(channel, request)
    document = check_report(issued.signed_report, federation.bundle_now()).document
    assert document["subject"]["id"] == person
    assert number not in issued.signed_report.decode("utf-8", "replace")


async def pair_view(channel: grpc.aio.Channel, number: str, code: str) -> report_pb2.IssuedReport:
    from credex.v1 import report_pb2_grpc

    return await report_pb2_grpc.ReportServiceStub(channel).ViewReport(
        report_pb2.ViewReportRequest(report_number=number, verification_code=code), timeout=30
    )


async def test_bad_requests_are_refused_before_anything_is_issued(federation: TestFederation, pair: Pair) -> None:
    too_long = (publicity_today() - dt.timedelta(days=6 * 366)).isoformat()  # over 5 years, whatever the day
    bad = [
        issue_request(kind=report_pb2.REPORT_KIND_UNSPECIFIED),
        issue_request(subject="110101199003077777"),  # an ID number: never accepted
        issue_request(subject="not a code"),
        issue_request(period_start=too_long),
        issue_request(period_end="2999-01-01"),
        issue_request(period_start="2024-13-01"),
        issue_request(period_start=publicity_today().isoformat(), period_end="2020-01-01"),
        issue_request(fields=["no-such-field"]),
    ]
    async with client_channel(federation, pair.shanghai, PORTAL) as channel:
        for request in bad:
            error = await refused(issue(channel, request))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (request, error.details())
    assert pair.shanghai.pool is not None
    async with pair.shanghai.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM reports") == 0


async def test_every_issue_and_view_is_logged_with_number_user_and_time(federation: TestFederation, pair: Pair) -> None:
    async with client_channel(federation, pair.shanghai, PORTAL) as channel:
        issued = await issue(channel, issue_request())
    async with client_channel(federation, pair.shanghai, "bidding-office") as channel:
        viewed = await pair_view(channel, issued.report_number, issued.verification_code)
        wrong = await refused(pair_view(channel, issued.report_number, "AAAA-AAAA-AAAA"))
    assert viewed.signed_report == issued.signed_report
    assert wrong.code() == grpc.StatusCode.NOT_FOUND
    assert pair.shanghai.pool is not None
    async with pair.shanghai.pool.acquire() as conn:
        accesses = await conn.fetch("SELECT report_number, caller, action, at FROM report_accesses ORDER BY id")
        audited = await conn.fetch(
            "SELECT method, caller, subject_id, detail FROM audit_log WHERE method IN ('IssueReport', 'ViewReport')"
            " AND status = 'OK' ORDER BY id"
        )
    assert [(a["report_number"], a["caller"], a["action"]) for a in accesses] == [
        (issued.report_number, PORTAL, "issue"),
        (issued.report_number, "bidding-office", "view"),
    ]
    assert all(a["at"] is not None for a in accesses)
    assert [(a["method"], a["caller"], a["subject_id"]) for a in audited] == [
        ("IssueReport", PORTAL, COMPANY),
        ("ViewReport", "bidding-office", COMPANY),
    ]
    assert all(issued.report_number in a["detail"] for a in audited)


def test_fields_list_is_data_an_operator_edits_and_is_checked_on_load(tmp_path: Path) -> None:
    shipped = FieldsList.shipped()
    assert [c.name for c in shipped.categories] == ["行政处罚", "行政强制", "严重失信主体名单", "刑事裁判"]
    assert shipped.fields[-1].code == "other"
    assert shipped.field_of(["上海市浦东新区市场监督管理局"]).code == "market"
    assert shipped.field_of(["某某委员会"]).code == "other"
    edited = tmp_path / "fields.toml"
    text = (Path(__file__).parent.parent / "node" / "reports" / "fields.toml").read_text(encoding="utf-8")
    edited.write_text(text.replace('kinds = ["penalty"]', 'kinds = ["evaluation"]', 1), encoding="utf-8")
    with pytest.raises(FieldsListError, match="never appear"):
        FieldsList.load(edited)
    edited.write_text(text.replace('kinds = ["penalty"]', 'kinds = ["no_such_kind"]', 1), encoding="utf-8")
    with pytest.raises(FieldsListError, match="unknown record kind"):
        FieldsList.load(edited)


async def test_a_caller_asking_in_a_loop_or_for_too_many_records_is_refused(federation: TestFederation) -> None:
    pair = await start_pair(federation, reports={"max_per_caller_per_day": 2, "max_records": 3})
    async with client_channel(federation, pair.shanghai, PORTAL) as channel:
        too_many = await refused(issue(channel, issue_request(kind=report_pb2.REPORT_KIND_FULL)))  # 5 records
        assert too_many.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "shorter period" in (too_many.details() or "")
        for _ in range(2):
            await issue(channel, issue_request(fields=["market"]))
        third = await refused(issue(channel, issue_request(fields=["market"])))
    assert third.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "24 hours" in (third.details() or "")
    async with client_channel(federation, pair.shanghai, "another-portal") as channel:  # others are not held up
        assert (await issue(channel, issue_request(fields=["market"]))).report_number
    assert pair.shanghai.pool is not None
    async with pair.shanghai.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM reports") == 3


async def test_no_report_is_issued_before_its_records_are_under_a_checkpoint(federation: TestFederation) -> None:
    jiangsu = await federation.start_node("320000", checkpoint={"every_seconds": 3600, "every_events": 1_000_000})
    shanghai = await federation.start_node("310000")
    assert jiangsu.pool is not None and shanghai.pool is not None
    # Jiangsu's first checkpoint comes at once; the next only after an hour or a million events.
    async with jiangsu.pool.acquire() as conn, conn.transaction():
        await jiangsu.ledger.append(conn, [Change.of(WARNING)])
    await taken_in(shanghai, jiangsu)
    async with jiangsu.pool.acquire() as conn, conn.transaction():
        await jiangsu.ledger.append(conn, [Change.of(SERIOUS)])

    async def held() -> bool:
        assert shanghai.pool is not None
        async with shanghai.pool.acquire() as conn:
            return bool(await conn.fetchval("SELECT count(*) FROM records WHERE record_id = $1", SERIOUS.record_id))

    await eventually(held)
    async with client_channel(federation, shanghai, PORTAL) as channel:
        error = await refused(issue(channel, issue_request()))
    assert error.code() == grpc.StatusCode.UNAVAILABLE and "checkpoint" in (error.details() or "")
    async with shanghai.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM reports") == 0


async def test_a_code_shows_a_report_only_to_a_viewer_who_may_see_every_record_in_it(
    federation: TestFederation, pair: Pair
) -> None:
    """A government office's report holds records shared with government only; its code must not open them to all."""
    async with client_channel(federation, pair.shanghai, "government-office") as channel:
        issued = await issue(channel, issue_request(fields=["market"], purpose="政府采购 供应商审查"))
    shown = [i["record_id"] for i in check_report(issued.signed_report, federation.bundle_now()).document["items"]]
    assert GOVERNMENT_ONLY.record_id in shown
    async with client_channel(federation, pair.shanghai, "bidding-office") as channel:
        denied = await refused(pair_view(channel, issued.report_number, issued.verification_code))
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED and "government" in (denied.details() or "")
    async with client_channel(federation, pair.shanghai, "government-office") as channel:
        viewed = await report_pb2_grpc.ReportServiceStub(channel).ViewReport(
            report_pb2.ViewReportRequest(
                report_number=issued.report_number, verification_code=issued.verification_code, purpose="资格审查"
            ),
            timeout=30,
        )
    assert viewed.signed_report == issued.signed_report
    assert pair.shanghai.pool is not None
    async with pair.shanghai.pool.acquire() as conn:
        accesses = await conn.fetch("SELECT caller, action FROM report_accesses ORDER BY id")
        audited = await conn.fetchval(
            "SELECT count(*) FROM audit_log WHERE method = 'ViewReport' AND caller = 'bidding-office'"
            " AND status = 'PERMISSION_DENIED'"
        )
    assert [(a["caller"], a["action"]) for a in accesses] == [
        ("government-office", "issue"),
        ("government-office", "view"),
    ]
    assert audited == 1


async def test_the_daily_limit_holds_against_a_caller_asking_many_times_at_once(federation: TestFederation) -> None:
    pair = await start_pair(federation, reports={"max_per_caller_per_day": 2})
    async with client_channel(federation, pair.shanghai, PORTAL) as channel:
        answers = await asyncio.gather(
            *(issue(channel, issue_request(fields=["market"])) for _ in range(8)), return_exceptions=True
        )
    issued = [a for a in answers if isinstance(a, report_pb2.IssuedReport)]
    refusals = [a for a in answers if isinstance(a, grpc.aio.AioRpcError)]
    assert len(issued) == 2 and len(refusals) == 6
    assert all(r.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for r in refusals)
    assert pair.shanghai.pool is not None
    async with pair.shanghai.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM reports WHERE issued_to = $1", PORTAL) == 2


async def test_the_node_judges_by_the_authorization_it_holds_not_the_one_presented(
    federation: TestFederation, pair: Pair
) -> None:
    """Held for streams only, or revoked at its origin since: whatever the caller presents, no report."""
    streams_only = record(
        "13",
        record_pb2.KIND_AUTHORIZATION,
        subject=PERSON_AUTHORIZATION.subject,
        sharing_level=record_pb2.SHARING_LEVEL_RESTRICTED,
        authorization=record_pb2.AuthorizationDetails(
            grantee=record_pb2.Authority(name="某监管平台", uscc=STREAMS_GRANTEE),
            scope="stream",
            valid_from=publicity_today().isoformat(),
            valid_to="2099-12-31",
        ),
    )
    jiangsu = pair.jiangsu
    assert jiangsu.pool is not None
    async with jiangsu.pool.acquire() as conn, conn.transaction():
        await jiangsu.ledger.append(conn, [Change.of(streams_only)])
    await taken_in(pair.shanghai, jiangsu)

    def asked(grantee: str) -> report_pb2.IssueReportRequest:
        request = issue_request(subject=PERSON, kind=report_pb2.REPORT_KIND_FULL)
        request.authorization.CopyFrom(
            authorization_pb2.Authorization(
                authorization_id=AUTHORIZATION_ID,
                document_sha256=AUTHORIZATION_DIGEST,
                subject=PERSON,
                grantee=grantee,
                scope="report",
                valid_from=publicity_today().isoformat(),
                valid_until="2099-12-31",
            )
        )
        return request

    async with client_channel(federation, pair.shanghai, STREAMS_GRANTEE) as channel:
        error = await refused(issue(channel, asked(STREAMS_GRANTEE)))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    async with client_channel(federation, pair.shanghai, AUTHORIZED) as channel:
        assert (await issue(channel, asked(AUTHORIZED))).report_number
    async with jiangsu.pool.acquire() as conn, conn.transaction():
        await jiangsu.ledger.revoke(conn, PERSON_AUTHORIZATION.record_id, "信息主体撤回授权")
    await taken_in(pair.shanghai, jiangsu)
    async with client_channel(federation, pair.shanghai, AUTHORIZED) as channel:
        error = await refused(issue(channel, asked(AUTHORIZED)))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert pair.shanghai.pool is not None
    async with pair.shanghai.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM reports WHERE subject_id = $1", PERSON) == 1


async def test_an_id_number_in_a_reports_purpose_or_callers_name_reaches_no_access_row(
    federation: TestFederation, pair: Pair
) -> None:
    """Who issued, viewed or verified a report is kept with the purpose they typed: withheld like the audit trail."""
    number = "11010519491231002" + ric.calc_check_digit("11010519491231002" + "0")
    async with client_channel(federation, pair.shanghai, PORTAL) as channel:
        issued = await issue(channel, issue_request(purpose=f"为申请人 {number} 办理"))
        await report_pb2_grpc.ReportServiceStub(channel).ViewReport(
            report_pb2.ViewReportRequest(
                report_number=issued.report_number,
                verification_code=issued.verification_code,
                purpose=f"核对 {number}",
            ),
            timeout=30,
        )
    assert pair.shanghai.pool is not None
    async with pair.shanghai.pool.acquire() as conn:
        kept = await conn.fetch("SELECT action, purpose FROM report_accesses ORDER BY id")
    assert [(row["action"], row["purpose"]) for row in kept] == [
        ("issue", "为申请人 [证件号码已隐去 ID number withheld] 办理"),
        ("view", "核对 [证件号码已隐去 ID number withheld]"),
    ]


async def test_a_report_is_signed_holding_no_transaction_and_no_lock_on_its_caller(
    federation: TestFederation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Signing a report of many records takes a while: the caller's daily-limit lock and a pool connection are
    taken only afterwards, for the short transaction that registers it, so nothing else waits on the signing."""
    pair = await start_pair(federation)
    signing, release = threading.Event(), threading.Event()

    def slow_sign(document: dict[str, Any], key: SigningKey) -> bytes:
        signing.set()
        release.wait(120)
        return sign_document(document, key)

    monkeypatch.setattr(issuing, "sign_document", slow_sign)
    assert pair.shanghai.pool is not None
    async with client_channel(federation, pair.shanghai, PORTAL) as channel:
        pending = asyncio.ensure_future(issue(channel, issue_request(fields=["market"])))
        try:
            assert await asyncio.to_thread(signing.wait, 60)
            async with pair.shanghai.pool.acquire() as conn:
                locked = await conn.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = $1::bigint::oid",
                    issuing._LIMIT_LOCK,
                )
                reports = await conn.fetchval("SELECT count(*) FROM reports")
            assert locked == 0 and reports == 0  # signing, yet the caller's lock is free and nothing is written
        finally:
            release.set()
        issued = await pending
    assert check_report(issued.signed_report, federation.bundle_now()).document["report_number"] == (
        issued.report_number
    )
    async with pair.shanghai.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM reports") == 1
