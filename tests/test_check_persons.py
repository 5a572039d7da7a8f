"""Natural persons in a check, dispute marks, responsible persons (credit-use.md, Check rules 2 and 5).

Records about persons stay at their origin (they never cross the bus), so Jiangsu's own
node answers: a Jiangsu office checks persons by resident ID number. The number is turned
into the federation's pseudonym before any other work and is kept nowhere; a person is
answered only with their authorization for the checking unit in the scenario, valid
today, or a legal basis the catalogue allows for persons in that scenario.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format
from pydantic import ValidationError
from stdnum.cn import ric
from typer.testing import CliRunner, Result

from credex.crypto.pseudonym import Pseudonymizer
from credex.crypto.tls import CertificateAuthority, spki_sha256
from credex.domain import uscc as uscc_codes
from credex.domain.persons import withhold
from credex.domain.publicity import publicity_today
from credex.node.authorizations import recording
from credex.node.cli import app
from credex.node.config import AccessConfig, NodeConfig
from credex.node.ledger.appender import Change
from credex.node.runtime import Node
from credex.v1 import (
    authorization_pb2,
    check_pb2,
    check_pb2_grpc,
    event_pb2,
    lookup_pb2,
    lookup_pb2_grpc,
    record_pb2,
)

from .callers import GOVERNMENT, audit_rows, client_channel, government_channel
from .conftest import TestFederation, eventually

LAST_YEAR = (publicity_today() - dt.timedelta(days=200)).isoformat()
PERSON = record_pb2.SUBJECT_TYPE_NATURAL_PERSON
ENTITY = record_pb2.SUBJECT_TYPE_LEGAL_ENTITY
UNIT = uscc_codes.make("11", "320500", "HCG00001")  # a Suzhou office
OTHER_UNIT = uscc_codes.make("11", "320500", "HCG00002")
COMPANY = uscc_codes.make("91", "320500", "JT000009")  # its legal representative is PENALIZED
DISPUTED = uscc_codes.make("91", "320500", "JT000010")  # on the list, with an objection open
HIRING_BASIS = "中华人民共和国公务员法 第二十六条"


def id_number(first17: str) -> str:
    check: str = ric.calc_check_digit(first17 + "0")
    return first17 + check


PENALIZED = id_number("32050219800101123")  # a serious penalty in force
SPOTLESS = id_number("32050219850202456")  # nothing against them
UNKNOWN_TO_US = id_number("11010119700303789")
NUMBERS = (PENALIZED, SPOTLESS, UNKNOWN_TO_US)


def person_penalty(node: Node, number: str) -> record_pb2.Record:
    assert node.pseudonymizer is not None
    return record_pb2.Record(
        record_id="320000-CF-P1",
        origin="320000",
        kind=record_pb2.KIND_PENALTY,
        subject=record_pb2.Subject(type=PERSON, person_pseudonym=node.pseudonymizer.pseudonym(number), name="张某"),
        decision_date=LAST_YEAR,
        sharing_level=record_pb2.SHARING_LEVEL_GOVERNMENT,
        publicity=record_pb2.PublicityWindow(start=LAST_YEAR, end="2099-12-31"),
        penalty=record_pb2.PenaltyDetails(content="罚款 5000 元", severity=record_pb2.SEVERITY_SERIOUS),
    )


def listed(subject: str) -> record_pb2.Record:
    return record_pb2.Record(
        record_id="320000-HMD-9",
        origin="320000",
        kind=record_pb2.KIND_BLACK_LIST,
        subject=record_pb2.Subject(type=ENTITY, uscc=subject, name="苏州异议贸易有限公司"),
        decision_date=LAST_YEAR,
        sharing_level=record_pb2.SHARING_LEVEL_PUBLIC,
        publicity=record_pb2.PublicityWindow(start=LAST_YEAR, end="2099-12-31"),
        black_list=record_pb2.BlackListDetails(list_name="严重失信主体名单"),
    )


@pytest.fixture
async def jiangsu(federation: TestFederation) -> AsyncIterator[Node]:
    yield await seeded(await federation.start_node("320000"))


async def seeded(node: Node) -> Node:
    """Jiangsu's node holding PENALIZED's serious penalty and DISPUTED's listing under an open objection."""
    assert node.pool is not None
    async with node.pool.acquire() as conn, conn.transaction():
        await node.ledger.append(conn, [Change.of(person_penalty(node, PENALIZED)), Change.of(listed(DISPUTED))])
    async with node.pool.acquire() as conn, conn.transaction():
        await node.ledger.amend(conn, "320000-HMD-9", event_pb2.EVENT_TYPE_DISPUTE, "异议申请已受理", disputed=True)
    async with node.pool.acquire() as conn, conn.transaction():  # PENALIZED's authorization, recorded as a record
        await recording.grant(conn, node.ledger, authorization(PENALIZED), "operator-desk", node.pseudonymizer)
    return node


def authorization(
    number: str,
    grantee: str = UNIT,
    scope: str = "政府采购",
    from_day: int = -1,
    until_day: int = 30,
) -> authorization_pb2.Authorization:
    """An authorization valid from ``from_day`` to ``until_day`` days after the node's today."""
    today = publicity_today()
    return authorization_pb2.Authorization(
        authorization_id="AUTH-1",
        subject=number,
        grantee=grantee,
        scope=scope,
        valid_from=(today + dt.timedelta(days=from_day)).isoformat(),
        valid_until=(today + dt.timedelta(days=until_day)).isoformat(),
        document_sha256=bytes(range(32)),
    )


def person_check(
    *numbers: str,
    authorizations: tuple[authorization_pb2.Authorization, ...] = (),
    scenario: str = "政府采购",
    legal_basis: str = "依申请核查",
    usccs: tuple[str, ...] = (),
    responsible: tuple[check_pb2.ResponsiblePerson, ...] = (),
) -> check_pb2.CheckRequest:
    return check_pb2.CheckRequest(
        usccs=list(usccs),
        person_ids=list(numbers),
        authorizations=list(authorizations),
        responsible_persons=list(responsible),
        scenario=scenario,
        requesting_unit_uscc=UNIT,
        purpose="供应商资格审查",
        legal_basis=legal_basis,
    )


async def check(federation: TestFederation, node: Node, request: check_pb2.CheckRequest) -> check_pb2.CheckResponse:
    async with government_channel(federation, node) as channel:
        return await check_pb2_grpc.CheckServiceStub(channel).Check(request, timeout=30)


async def refused(federation: TestFederation, node: Node, request: check_pb2.CheckRequest) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await check(federation, node, request)
    return raised.value


async def count(node: Node, query: str) -> int:
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        return int(await conn.fetchval(query))


# ---------------------------------------------------------------- leave to answer about a person


async def test_a_person_with_their_authorization_is_answered_under_their_pseudonym(
    federation: TestFederation, jiangsu: Node
) -> None:
    assert jiangsu.pseudonymizer is not None
    pseudonym = jiangsu.pseudonymizer.pseudonym(PENALIZED)
    # The number as platforms send it: spaced, in full-width digits.
    sent = " ".join([PENALIZED[:6], PENALIZED[6:]]).translate({ord(d): ord(d) + 0xFEE0 for d in "0123456789"})
    answer = await check(federation, jiangsu, person_check(sent, authorizations=(authorization(PENALIZED),)))
    (subject,) = answer.subjects
    assert subject.subject_id == pseudonym
    assert [(h.record_id, h.kind, h.list_or_severity) for h in subject.hits] == [("320000-CF-P1", "penalty", "严重")]
    (row,) = await audit_rows(jiangsu, "Check")
    assert (row["subject_id"], row["status"], row["answered"]) == (pseudonym, "OK", 1)
    assert f"authorization held, document sha256:{bytes(range(32)).hex()[:16]}" in row["detail"]


async def test_a_legal_basis_the_catalogue_allows_for_the_scenario_answers_without_authorization(
    federation: TestFederation, jiangsu: Node
) -> None:
    answer = await check(
        federation, jiangsu, person_check(PENALIZED, SPOTLESS, scenario="公职录用", legal_basis=HIRING_BASIS)
    )
    penalized, spotless = answer.subjects
    assert [h.record_id for h in penalized.hits] == ["320000-CF-P1"]
    assert (list(spotless.hits), spotless.status) == ([], check_pb2.ANSWER_STATUS_CLEAR)
    rows = await audit_rows(jiangsu, "Check")
    assert [r["status"] for r in rows] == ["OK", "OK"]
    assert all("legal basis allowed for persons in the scenario" in r["detail"] for r in rows)


@pytest.mark.parametrize(
    "leave",  # made when the test runs: the dates are the node's today then, whenever the suite was collected
    [
        pytest.param(dict, id="neither-authorization-nor-allowed-basis"),
        pytest.param(lambda: {"authorizations": (authorization(PENALIZED, grantee=OTHER_UNIT),)}, id="another-grantee"),
        pytest.param(lambda: {"authorizations": (authorization(PENALIZED, scope="行政许可"),)}, id="another-scenario"),
        pytest.param(lambda: {"authorizations": (authorization(PENALIZED, until_day=-1),)}, id="expired"),
        pytest.param(lambda: {"authorizations": (authorization(PENALIZED, from_day=1),)}, id="not-yet-valid"),
        pytest.param(lambda: {"legal_basis": HIRING_BASIS}, id="a-basis-allowed-only-in-another-scenario"),
    ],
)
async def test_without_leave_a_person_check_is_permission_denied_audited_and_nothing_is_stored(
    federation: TestFederation, jiangsu: Node, leave: Callable[[], dict[str, object]]
) -> None:
    error = await refused(federation, jiangsu, person_check(PENALIZED, **leave()))  # type: ignore[arg-type]
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "person_ids[0]" in (error.details() or "") and PENALIZED not in (error.details() or "")
    rows = await audit_rows(jiangsu, "Check")
    assert [(r["status"], r["subject_id"]) for r in rows] == [("PERMISSION_DENIED", "")]
    assert await count(jiangsu, "SELECT count(*) FROM checks") == 0


async def test_a_person_without_leave_refuses_a_check_of_usccs_with_them_and_nothing_is_answered(
    federation: TestFederation, jiangsu: Node
) -> None:
    error = await refused(federation, jiangsu, person_check(SPOTLESS, usccs=(DISPUTED, COMPANY)))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and "person_ids[0]" in (error.details() or "")
    rows = await audit_rows(jiangsu, "Check")
    assert [(r["status"], r["subject_id"], r["answered"]) for r in rows] == [("PERMISSION_DENIED", "", 0)]
    assert await count(jiangsu, "SELECT count(*) FROM checks") == 0


def forged(given: authorization_pb2.Authorization, **changes: object) -> authorization_pb2.Authorization:
    copy = authorization_pb2.Authorization()
    copy.CopyFrom(given)
    for name, value in changes.items():
        setattr(copy, name, value)
    return copy


@pytest.mark.parametrize(
    "presented",
    [
        pytest.param(forged(authorization(PENALIZED), document_sha256=bytes(32)), id="forged-document"),
        pytest.param(forged(authorization(PENALIZED), authorization_id="AUTH-FORGED"), id="unrecorded-id"),
        pytest.param(authorization(SPOTLESS), id="recorded-for-another-person"),
    ],
)
async def test_a_presented_authorization_the_node_does_not_hold_is_refused_and_says_to_have_it_recorded(
    federation: TestFederation, jiangsu: Node, presented: authorization_pb2.Authorization
) -> None:
    """Fields that check out prove nothing: only an authorization record held in force grants leave."""
    error = await refused(
        federation, jiangsu, person_check(PENALIZED, SPOTLESS, authorizations=(authorization(PENALIZED), presented))
    )
    details = error.details() or ""
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED, details
    assert "authorizations[1]" in details and "credex authorization grant" in details
    assert not any(number[:12] in details for number in NUMBERS)
    rows = await audit_rows(jiangsu, "Check")
    assert [(r["status"], r["subject_id"]) for r in rows] == [("PERMISSION_DENIED", "")]
    assert await count(jiangsu, "SELECT count(*) FROM checks") == 0


async def test_an_authorization_ended_at_its_origin_no_longer_answers_for_the_person(
    federation: TestFederation, jiangsu: Node
) -> None:
    request = person_check(PENALIZED, authorizations=(authorization(PENALIZED),))
    assert [h.record_id for h in (await check(federation, jiangsu, request)).subjects[0].hits] == ["320000-CF-P1"]
    assert jiangsu.pool is not None
    async with jiangsu.pool.acquire() as conn, conn.transaction():
        ended = await recording.end(conn, jiangsu.ledger, UNIT, "AUTH-1", "授权撤回")
    assert ended is not None and not ended.active
    error = await refused(federation, jiangsu, request)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "credex authorization grant" in (error.details() or "")


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        (person_check(PENALIZED[:-1] + ("0" if PENALIZED[-1] != "0" else "1")), "check character does not match"),
        (person_check("12345"), "must have 18 characters"),
        (person_check(PENALIZED, authorizations=(authorization(PENALIZED, scope="买菜"),)), "scope"),
        (
            person_check(PENALIZED, authorizations=(authorization_pb2.Authorization(authorization_id="A"),)),
            "document_sha256",
        ),
        (
            check_pb2.CheckRequest(usccs=[PENALIZED], scenario="政府采购", requesting_unit_uscc=UNIT, purpose="p"),
            "usccs[0] is a resident ID number; send persons in person_ids",
        ),
        (
            person_check(
                usccs=(DISPUTED,),
                responsible=(
                    check_pb2.ResponsiblePerson(
                        subject=COMPANY, id_number=PENALIZED, role=check_pb2.RESPONSIBLE_ROLE_PRINCIPAL
                    ),
                ),
                legal_basis=HIRING_BASIS,
                scenario="公职录用",
            ),
            "must be one of the usccs checked",
        ),
        (
            person_check(
                usccs=(COMPANY,),
                responsible=(check_pb2.ResponsiblePerson(subject=COMPANY, id_number=PENALIZED),),
                legal_basis=HIRING_BASIS,
                scenario="公职录用",
            ),
            "role must be",
        ),
    ],
)
async def test_bad_person_input_is_refused_without_repeating_the_number(
    federation: TestFederation, jiangsu: Node, request_: check_pb2.CheckRequest, words: str
) -> None:
    error = await refused(federation, jiangsu, request_)
    details = error.details() or ""
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and words in details, details
    assert not any(number[:12] in details for number in NUMBERS)
    assert await count(jiangsu, "SELECT count(*) FROM checks") == 0


async def test_the_raw_id_number_is_in_no_table_no_log_record_and_no_audit_row(
    federation: TestFederation, jiangsu: Node, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    responsible = check_pb2.ResponsiblePerson(
        subject=COMPANY, id_number=UNKNOWN_TO_US, role=check_pb2.RESPONSIBLE_ROLE_LEGAL_REPRESENTATIVE
    )
    await check(federation, jiangsu, person_check(PENALIZED, authorizations=(authorization(PENALIZED),)))
    await check(
        federation,
        jiangsu,
        person_check(
            SPOTLESS, usccs=(COMPANY,), responsible=(responsible,), scenario="公职录用", legal_basis=HIRING_BASIS
        ),
    )
    await refused(federation, jiangsu, person_check(SPOTLESS))  # refused: audited, logged
    await refused(federation, jiangsu, person_check(PENALIZED[:-1] + "Y"))  # invalid
    misplaced = await refused(
        federation,
        jiangsu,
        check_pb2.CheckRequest(usccs=[SPOTLESS], scenario="政府采购", requesting_unit_uscc=UNIT, purpose="审查"),
    )
    assert "usccs[0] is a resident ID number" in (misplaced.details() or "")
    assert await count(jiangsu, "SELECT count(*) FROM checks") == 2
    # The same persons looked up by profile, and one without leave.
    async with government_channel(federation, jiangsu) as channel:
        lookup = lookup_pb2_grpc.LookupServiceStub(channel)
        hiring = lookup_pb2.PersonLeave(scenario="公职录用", requesting_unit_uscc=UNIT, legal_basis=HIRING_BASIS)
        await lookup.GetProfile(lookup_pb2.GetProfileRequest(person_id=PENALIZED, leave=hiring, purpose="录用"))
        await lookup.BatchGetProfiles(
            lookup_pb2.BatchGetProfilesRequest(usccs=[COMPANY], person_ids=[SPOTLESS], leave=hiring, purpose="录用")
        )
        with pytest.raises(grpc.aio.AioRpcError):
            await lookup.GetProfile(
                lookup_pb2.GetProfileRequest(person_id=UNKNOWN_TO_US, leave=lookup_pb2.PersonLeave(), purpose="录用")
            )
    text, logged = await everything_kept(jiangsu, caplog)
    assert "audit_log" in text and "check_answers" in text
    for number in NUMBERS:
        for form in (number, number.encode().hex()):
            assert form not in text
            assert form not in logged
    assert jiangsu.pseudonymizer is not None
    assert jiangsu.pseudonymizer.pseudonym(SPOTLESS) in text  # what is kept instead


async def everything_kept(node: Node, caplog: pytest.LogCaptureFixture) -> tuple[str, str]:
    """Every row of every table of the node's database (with the table's name), and every log record, as text."""
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        tables = await conn.fetch(
            "SELECT schemaname, tablename FROM pg_tables"
            " WHERE schemaname <> 'information_schema' AND schemaname NOT LIKE 'pg\\_%'"
        )
        dump = [t["tablename"] for t in tables]
        for table in tables:
            name = f'"{table["schemaname"]}"."{table["tablename"]}"'
            dump += [row[0] for row in await conn.fetch(f"SELECT t::text FROM {name} t")]
    return "\n".join(dump), "\n".join(r.getMessage() for r in caplog.records)


async def test_an_id_number_sent_where_a_uscc_belongs_is_refused_and_audited_without_it(
    federation: TestFederation, jiangsu: Node
) -> None:
    """Who-checked-me and feedback name their subject by USCC; the edge audits the subject as sent before
    the service refuses it, so an ID number there (valid, or one typo away) must be withheld from the row."""
    typo = SPOTLESS[:-1] + ("0" if SPOTLESS[-1] != "0" else "1")
    async with government_channel(federation, jiangsu) as channel:
        stub = check_pb2_grpc.CheckServiceStub(channel)
        asked: list[Awaitable[object]] = [
            stub.ListChecksOfSubject(check_pb2.ListChecksOfSubjectRequest(uscc=PENALIZED, purpose="核查"), timeout=30),
            stub.ListChecksOfSubject(check_pb2.ListChecksOfSubjectRequest(uscc=typo, purpose="核查"), timeout=30),
            stub.SubmitFeedback(
                check_pb2.FeedbackRequest(
                    check_id="00000000-0000-0000-0000-000000000000",
                    subject_id=f" {SPOTLESS[:6]} {SPOTLESS[6:]} ",
                    outcome=check_pb2.FEEDBACK_OUTCOME_PUNISHED,
                    applied_on=publicity_today().isoformat(),
                ),
                timeout=30,
            ),
        ]
        for call in asked:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    async def rows() -> list[str] | None:
        found = [r for r in await audit_rows(jiangsu) if r["method"] in ("ListChecksOfSubject", "SubmitFeedback")]
        return [str(dict(r)) for r in found] if len(found) == 3 else None

    audited = "\n".join(await eventually(rows))
    for number in (PENALIZED, typo, SPOTLESS, SPOTLESS[:6], SPOTLESS[6:]):
        assert number not in audited


# ---------------------------------------------------------------- what a hit says


async def test_a_responsible_persons_records_are_hits_of_the_subject_marked_with_the_person_and_role(
    federation: TestFederation, jiangsu: Node
) -> None:
    assert jiangsu.pseudonymizer is not None
    legal_rep = check_pb2.ResponsiblePerson(
        subject=COMPANY, id_number=PENALIZED, role=check_pb2.RESPONSIBLE_ROLE_LEGAL_REPRESENTATIVE
    )
    answer = await check(
        federation,
        jiangsu,
        person_check(usccs=(COMPANY,), responsible=(legal_rep,), authorizations=(authorization(PENALIZED),)),
    )
    (company,) = answer.subjects
    assert company.subject_id == COMPANY
    (hit,) = company.hits
    assert (hit.record_id, hit.responsible_role, hit.responsible_person) == (
        "320000-CF-P1",
        check_pb2.RESPONSIBLE_ROLE_LEGAL_REPRESENTATIVE,
        jiangsu.pseudonymizer.pseudonym(PENALIZED),
    )
    (row,) = await audit_rows(jiangsu, "Check")
    assert f"320000-CF-P1 via {hit.responsible_person}" in row["detail"]
    # Without leave for the responsible person, nothing is answered about the company either.
    error = await refused(federation, jiangsu, person_check(usccs=(COMPANY,), responsible=(legal_rep,)))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and "responsible_persons[0].id_number" in (
        error.details() or ""
    )


async def test_a_hit_under_an_open_objection_carries_the_dispute_flag(
    federation: TestFederation, jiangsu: Node
) -> None:
    answer = await check(federation, jiangsu, person_check(usccs=(DISPUTED, COMPANY)))
    disputed, company = answer.subjects
    assert [(h.record_id, h.disputed, h.responsible_role) for h in disputed.hits] == [("320000-HMD-9", True, 0)]
    assert list(company.hits) == []


async def test_a_subject_named_twice_is_answered_and_audited_once(federation: TestFederation, jiangsu: Node) -> None:
    answer = await check(federation, jiangsu, person_check(usccs=(DISPUTED, COMPANY, DISPUTED.lower())))
    assert [s.subject_id for s in answer.subjects] == [DISPUTED, COMPANY]
    rows = await audit_rows(jiangsu, "Check")
    assert [r["subject_id"] for r in rows] == [DISPUTED, COMPANY]
    assert await count(jiangsu, "SELECT count(*) FROM check_answers") == 2


# ---------------------------------------------------------------- ID numbers written into free text


def spaced_wide(number: str) -> str:
    """A number as a person types it into a form: spaced out, in full-width digits."""
    return f"{number[:6]} {number[6:14]} {number[14:]}".translate({ord(d): ord(d) + 0xFEE0 for d in "0123456789"})


async def test_an_id_number_in_any_free_text_field_reaches_no_table_no_audit_row_and_no_log(
    federation: TestFederation, jiangsu: Node, caplog: pytest.LogCaptureFixture
) -> None:
    """Purpose, legal basis, feedback texts, a search query, a record id: a caller can type a number anywhere."""
    caplog.set_level(logging.DEBUG)
    typo = SPOTLESS[:-1] + ("0" if SPOTLESS[-1] != "0" else "1")
    request = person_check(usccs=(DISPUTED,))
    request.purpose = f"核查 {PENALIZED} 的供应商资格"
    request.legal_basis = f"依申请核查（申请人 {spaced_wide(SPOTLESS)}）"
    async with government_channel(federation, jiangsu) as channel:
        checks_stub = check_pb2_grpc.CheckServiceStub(channel)
        answer = await checks_stub.Check(request, timeout=30)
        await checks_stub.SubmitFeedback(
            check_pb2.FeedbackRequest(
                check_id=answer.check_id,
                subject_id=DISPUTED,
                outcome=check_pb2.FEEDBACK_OUTCOME_NOT_ADOPTED,
                reason=f"法定代表人 {UNKNOWN_TO_US} 已更换",
                basis=f"依据 {typo}",
                result=f"告知 {PENALIZED.lower()}",
                department=f"科室{SPOTLESS}",
                department_code=UNKNOWN_TO_US,
                applied_on=publicity_today().isoformat(),
            ),
            timeout=30,
        )
        lookup = lookup_pb2_grpc.LookupServiceStub(channel)
        await lookup.SearchSubjects(lookup_pb2.SearchSubjectsRequest(query=PENALIZED, purpose=f"找 {SPOTLESS}"))
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await lookup.GetRecord(lookup_pb2.GetRecordRequest(record_id=f"320000-{UNKNOWN_TO_US}", purpose="核查"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND and UNKNOWN_TO_US not in (missing.value.details() or "")
    assert jiangsu.pool is not None
    async with jiangsu.pool.acquire() as conn:
        kept = await conn.fetchrow("SELECT purpose, legal_basis FROM checks")
    assert kept is not None and tuple(kept) == (
        "核查 [证件号码已隐去 ID number withheld] 的供应商资格",
        "依申请核查（申请人 [证件号码已隐去 ID number withheld]）",
    )
    text, logged = await everything_kept(jiangsu, caplog)
    assert "供应商资格" in text and "已更换" in text  # the rest of what they wrote is kept
    for number in (*NUMBERS, typo):
        for form in (number, number.lower(), spaced_wide(number), number.encode().hex()):
            assert form not in text
            assert form not in logged


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        pytest.param("供应商资格审查 2024年", "供应商资格审查 2024年", id="no-number"),
        pytest.param(f"企业 {COMPANY}", f"企业 {COMPANY}", id="a-uscc-is-no-secret"),
        pytest.param(
            "sha256:0001020304050607 320000#1", "sha256:0001020304050607 320000#1", id="numbers-a-space-apart"
        ),
        pytest.param(f"申请人{PENALIZED}。", "申请人[证件号码已隐去 ID number withheld]。", id="a-number"),
        pytest.param(f"{PENALIZED[:-1]}9 号", "[证件号码已隐去 ID number withheld] 号", id="mistyped-check-character"),
    ],
)
def test_free_text_keeps_everything_but_id_numbers(text: str, kept: str) -> None:
    assert withhold(text) == kept


# ---------------------------------------------------------------- who checked me, for persons

PERSON_DESK = "person-desk"  # a person's own caller, bound to the person's pseudonym
OPERATOR = "operator-desk"


@pytest.fixture
async def jiangsu_with_desks(federation: TestFederation) -> AsyncIterator[Node]:
    """Jiangsu's node where PENALIZED's own caller speaks for PENALIZED's pseudonym, with two checks made."""
    ca_dir = federation.layout.ca_dir
    CertificateAuthority.load(ca_dir).issue(PERSON_DESK, []).write(ca_dir, PERSON_DESK)
    own = Pseudonymizer.load(federation.layout.pseudonym_key).pseudonym(PENALIZED)
    node = await federation.start_node(
        "320000",
        access={
            "callers": {GOVERNMENT: "government", OPERATOR: "operator", PERSON_DESK: "public"},
            "caller_keys": {PERSON_DESK: spki_sha256((ca_dir / f"{PERSON_DESK}.crt").read_bytes())},
            "speaks_for": {PERSON_DESK: [own]},
        },
    )
    await seeded(node)
    await check(federation, node, person_check(PENALIZED, authorizations=(authorization(PENALIZED),)))
    await check(federation, node, person_check(SPOTLESS, scenario="公职录用", legal_basis=HIRING_BASIS))
    yield node


async def checks_of_person(
    federation: TestFederation, node: Node, caller: str, number: str
) -> check_pb2.ChecksOfSubject:
    async with client_channel(federation, node, caller) as channel:
        return await check_pb2_grpc.CheckServiceStub(channel).ListChecksOfSubject(
            check_pb2.ListChecksOfSubjectRequest(person_id=number, purpose="信用核查记录查询"), timeout=30
        )


async def test_a_person_lists_who_checked_them_by_id_number_through_a_caller_bound_to_their_pseudonym(
    federation: TestFederation, jiangsu_with_desks: Node
) -> None:
    node = jiangsu_with_desks
    listed = await checks_of_person(federation, node, PERSON_DESK, f" {PENALIZED[:6]} {PENALIZED[6:]} ")
    assert (listed.uscc, listed.subject_id) == ("", pseudonym_of(node, PENALIZED))
    assert [(c.caller, c.requesting_unit, c.scenario, c.purpose) for c in listed.checks] == [
        (GOVERNMENT, UNIT, "政府采购", "供应商资格审查")
    ]
    (row,) = await audit_rows(node, "ListChecksOfSubject")
    assert (row["caller"], row["subject_id"], row["status"], row["answered"]) == (
        PERSON_DESK,
        pseudonym_of(node, PENALIZED),
        "OK",
        1,
    )


async def test_an_operator_lists_who_checked_a_person_on_their_behalf(
    federation: TestFederation, jiangsu_with_desks: Node
) -> None:
    listed = await checks_of_person(federation, jiangsu_with_desks, OPERATOR, SPOTLESS)
    assert [(c.scenario, c.legal_basis) for c in listed.checks] == [("人员招录任用", HIRING_BASIS)]


async def test_a_caller_bound_to_one_person_is_refused_another_and_the_office_that_checked_is_refused_both(
    federation: TestFederation, jiangsu_with_desks: Node
) -> None:
    node = jiangsu_with_desks
    for caller, number in ((PERSON_DESK, SPOTLESS), (PERSON_DESK, UNKNOWN_TO_US), (GOVERNMENT, PENALIZED)):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await checks_of_person(federation, node, caller, number)
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert number[:14] not in (raised.value.details() or "")
    rows = await audit_rows(node, "ListChecksOfSubject")
    assert [(r["caller"], r["subject_id"], r["status"]) for r in rows] == [
        (PERSON_DESK, pseudonym_of(node, SPOTLESS), "PERMISSION_DENIED"),
        (PERSON_DESK, pseudonym_of(node, UNKNOWN_TO_US), "PERMISSION_DENIED"),
        (GOVERNMENT, pseudonym_of(node, PENALIZED), "PERMISSION_DENIED"),
    ]


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        pytest.param(
            check_pb2.ListChecksOfSubjectRequest(person_id=PENALIZED[:-1] + ("1" if PENALIZED[-1] != "1" else "2")),
            "check character does not match",
            id="bad-check-character",
        ),
        pytest.param(
            check_pb2.ListChecksOfSubjectRequest(person_id=PENALIZED, uscc=COMPANY),
            "uscc or person_id, not both",
            id="both",
        ),
        pytest.param(check_pb2.ListChecksOfSubjectRequest(), "uscc", id="neither"),
    ],
)
async def test_bad_who_checked_me_requests_for_persons_are_invalid_and_audited_without_the_number(
    federation: TestFederation, jiangsu_with_desks: Node, request_: check_pb2.ListChecksOfSubjectRequest, words: str
) -> None:
    request_.purpose = "核查"
    async with client_channel(federation, jiangsu_with_desks, PERSON_DESK) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await check_pb2_grpc.CheckServiceStub(channel).ListChecksOfSubject(request_, timeout=30)
    details = raised.value.details() or ""
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in details, details
    audited = str([dict(r) for r in await audit_rows(jiangsu_with_desks, "ListChecksOfSubject")])
    assert PENALIZED[:14] not in details and PENALIZED[:14] not in audited


def test_a_config_binding_a_caller_to_a_raw_id_number_is_refused_without_repeating_it() -> None:
    with pytest.raises(ValidationError) as raised:
        NodeConfig.model_validate(
            {
                "origin": "320000",
                "access": {
                    "callers": {PERSON_DESK: "public"},
                    "caller_keys": {PERSON_DESK: "0" * 64},
                    "speaks_for": {PERSON_DESK: [f"{PENALIZED[:6]} {PENALIZED[6:]}"]},
                },
            }
        )
    assert "pseudonym" in str(raised.value) and PENALIZED[6:] not in str(raised.value)
    bound = AccessConfig(
        callers={PERSON_DESK: "public"},
        caller_keys={PERSON_DESK: "0" * 64},
        speaks_for={PERSON_DESK: ["psn:" + "a" * 32]},
    )
    assert bound.speaks_for[PERSON_DESK] == ["psn:" + "a" * 32]


def pseudonym_of(node: Node, number: str) -> str:
    assert node.pseudonymizer is not None
    return node.pseudonymizer.pseudonym(number)


# ---------------------------------------------------------------- the command line


def cli_options(federation: TestFederation, node: Node, caller: str = GOVERNMENT) -> list[str]:
    """What a caller passes to reach ``node`` with its certificate (issued by the federation CA on first use)."""
    ca_dir = federation.layout.ca_dir
    if not (ca_dir / f"{caller}.crt").exists():
        CertificateAuthority.load(ca_dir).issue(caller, []).write(ca_dir, caller)
    ca, cert, key = federation.layout.client_tls(caller)
    options = ["--config", str(federation.layout.config_path(node.config.origin))]
    return [*options, "--node", f"127.0.0.1:{node.port}", "--ca", str(ca), "--cert", str(cert), "--key", str(key)]


async def run_cli(*args: str, code: int = 0, stdin: str | None = None) -> Result:
    # Wide enough that no message is wrapped inside its box.
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args), input=stdin, env={"COLUMNS": "400"})
    assert result.exit_code == code, result.output
    return result


def authorization_file(directory: Path, number: str) -> Path:
    path = directory / "authorization.json"
    path.write_text(json_format.MessageToJson(authorization(number)), encoding="utf-8")
    return path


async def test_credex_check_checks_persons_with_an_authorization_file_in_a_table_and_as_json(
    federation: TestFederation, jiangsu: Node, tmp_path: Path
) -> None:
    base = ["check", "--scenario", "政府采购", "--unit", UNIT, "--purpose", "供应商资格审查"]
    given = ["--person", "-", "--authorization", str(authorization_file(tmp_path, PENALIZED))]
    typed = await run_cli(*base, *given, "--json", *cli_options(federation, jiangsu), stdin=f"{PENALIZED}\n")
    answer = json.loads(typed.stdout)
    assert PENALIZED not in typed.output
    (subject,) = answer["subjects"]
    assert subject["subject_id"] == pseudonym_of(jiangsu, PENALIZED)
    assert [h["record_id"] for h in subject["hits"]] == ["320000-CF-P1"]
    table = (await run_cli(*base, *given, *cli_options(federation, jiangsu), stdin=PENALIZED)).output
    assert "320000-CF-P1" in table and pseudonym_of(jiangsu, PENALIZED)[:12] in table
    hiring = ["check", "--scenario", "公职录用", "--unit", UNIT, "--purpose", "录用", "--legal-basis", HIRING_BASIS]
    both = json.loads(
        (await run_cli(*hiring, DISPUTED, "--person", SPOTLESS, "--json", *cli_options(federation, jiangsu))).stdout
    )
    assert [s["subject_id"] for s in both["subjects"]] == [DISPUTED, pseudonym_of(jiangsu, SPOTLESS)]


async def test_credex_check_explains_a_refusal_without_leave_and_a_malformed_authorization_file(
    federation: TestFederation, jiangsu: Node, tmp_path: Path
) -> None:
    base = ["check", "--scenario", "政府采购", "--unit", UNIT, "--purpose", "审查", "--person", PENALIZED]
    refused = await run_cli(*base, *cli_options(federation, jiangsu), code=1)
    assert "Check: PERMISSION_DENIED: person_ids[0]: a person is answered only with" in refused.output
    assert PENALIZED not in refused.output
    broken = tmp_path / "broken.json"
    broken.write_text('{"subject": "' + PENALIZED + '", "nonsense": 1}', encoding="utf-8")
    bad = await run_cli(*base, "--authorization", str(broken), *cli_options(federation, jiangsu), code=2)
    assert "not the JSON of a credex.v1.Authorization" in bad.output and PENALIZED not in bad.output
    nobody = await run_cli("check", "--scenario", "政府采购", "--unit", UNIT, *cli_options(federation, jiangsu), code=2)
    assert "--person" in nobody.output


async def test_credex_checks_of_person_lists_who_checked_them(
    federation: TestFederation, jiangsu_with_desks: Node, tmp_path: Path
) -> None:
    node = jiangsu_with_desks
    options = cli_options(federation, node, PERSON_DESK)
    numbers = tmp_path / "person.txt"
    numbers.write_text(f"{PENALIZED}\n", encoding="utf-8")
    listed = json.loads((await run_cli("checks", "of", "--person", f"@{numbers}", "--json", *options)).stdout)
    assert listed["subject_id"] == pseudonym_of(node, PENALIZED)
    assert [c["purpose"] for c in listed["checks"]] == ["供应商资格审查"]
    table = (await run_cli("checks", "of", "--person", PENALIZED, *options)).output
    assert "供应商资格审查" in table
    other = await run_cli("checks", "of", "--person", SPOTLESS, *options, code=1)
    assert SPOTLESS not in other.output


async def test_credex_checks_pseudonym_reads_the_number_hidden_and_prints_what_speaks_for_takes(
    federation: TestFederation, jiangsu: Node
) -> None:
    key = str(federation.layout.pseudonym_key)
    printed = await run_cli("checks", "pseudonym", "--pseudonym-key", key, stdin=f"{PENALIZED}\n")
    assert printed.output.strip().splitlines()[-1] == pseudonym_of(jiangsu, PENALIZED)
    assert PENALIZED not in printed.output
    mistyped = await run_cli("checks", "pseudonym", "--pseudonym-key", key, stdin=f"{PENALIZED[:-1]}1\n", code=2)
    assert "check character" in mistyped.output and PENALIZED[:14] not in mistyped.output


async def test_a_checking_officers_certificate_named_by_their_id_number_reaches_no_table_and_no_subject(
    federation: TestFederation, caplog: pytest.LogCaptureFixture
) -> None:
    """Personal certificates are often named by the holder's ID number: the check tables keep the name withheld.

    The check's rows are what who-checked-me shows the subject; the officer's number must not go to them,
    and the officer is still the one who may file the check's feedback.
    """
    caplog.set_level(logging.DEBUG)
    officer = f"officer-{SPOTLESS}"
    node = await seeded(
        await federation.start_node("320000", access={"callers": {officer: "government", "ops": "operator"}})
    )
    async with client_channel(federation, node, officer) as channel:
        checks_stub = check_pb2_grpc.CheckServiceStub(channel)
        answer = await checks_stub.Check(person_check(usccs=(DISPUTED,)), timeout=30)
        await checks_stub.SubmitFeedback(
            check_pb2.FeedbackRequest(
                check_id=answer.check_id,
                subject_id=DISPUTED,
                outcome=check_pb2.FEEDBACK_OUTCOME_NOT_ADOPTED,
                reason="已整改",
                applied_on=publicity_today().isoformat(),
            ),
            timeout=30,
        )
    async with client_channel(federation, node, "ops") as channel:
        checked = await check_pb2_grpc.CheckServiceStub(channel).ListChecksOfSubject(
            check_pb2.ListChecksOfSubjectRequest(uscc=DISPUTED), timeout=30
        )
    assert [c.check_id for c in checked.checks] == [answer.check_id]
    assert checked.checks[0].caller == "officer-[证件号码已隐去 ID number withheld]"
    text, _logged = await everything_kept(node, caplog)
    assert "check_feedback" in text and SPOTLESS not in text
