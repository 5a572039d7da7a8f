"""Natural persons in a check, dispute marks, responsible persons (credit-use.md, Check rules 2 and 5).

Records about persons stay at their origin (they never cross the bus), so Jiangsu's own
node answers: a Jiangsu office checks persons by resident ID number. The number is turned
into the federation's pseudonym before any other work and is kept nowhere; a person is
answered only with their authorization for the checking unit in the scenario, valid
today, or a legal basis the catalogue allows for persons in that scenario.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable

import grpc
import pytest
from stdnum.cn import ric

from credex.domain import uscc as uscc_codes
from credex.node.authorizations import recording
from credex.node.ledger.appender import Change
from credex.node.runtime import Node
from credex.v1 import authorization_pb2, check_pb2, check_pb2_grpc, event_pb2, record_pb2

from .callers import audit_rows, government_channel
from .conftest import TestFederation, eventually

TODAY = dt.date.today()
LAST_YEAR = (TODAY - dt.timedelta(days=200)).isoformat()
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
    node = await federation.start_node("320000")
    assert node.pool is not None
    async with node.pool.acquire() as conn, conn.transaction():
        await node.ledger.append(conn, [Change.of(person_penalty(node, PENALIZED)), Change.of(listed(DISPUTED))])
    async with node.pool.acquire() as conn, conn.transaction():
        await node.ledger.amend(conn, "320000-HMD-9", event_pb2.EVENT_TYPE_DISPUTE, "异议申请已受理", disputed=True)
    async with node.pool.acquire() as conn, conn.transaction():  # PENALIZED's authorization, recorded as a record
        await recording.grant(conn, node.ledger, authorization(PENALIZED), "operator-desk", node.pseudonymizer)
    yield node


def authorization(
    number: str,
    grantee: str = UNIT,
    scope: str = "政府采购",
    valid_from: dt.date = TODAY - dt.timedelta(days=1),
    valid_until: dt.date = TODAY + dt.timedelta(days=30),
) -> authorization_pb2.Authorization:
    return authorization_pb2.Authorization(
        authorization_id="AUTH-1",
        subject=number,
        grantee=grantee,
        scope=scope,
        valid_from=valid_from.isoformat(),
        valid_until=valid_until.isoformat(),
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
    "leave",
    [
        pytest.param({}, id="neither-authorization-nor-allowed-basis"),
        pytest.param({"authorizations": (authorization(PENALIZED, grantee=OTHER_UNIT),)}, id="another-grantee"),
        pytest.param({"authorizations": (authorization(PENALIZED, scope="行政许可"),)}, id="another-scenario"),
        pytest.param(
            {"authorizations": (authorization(PENALIZED, valid_until=TODAY - dt.timedelta(days=1)),)}, id="expired"
        ),
        pytest.param(
            {"authorizations": (authorization(PENALIZED, valid_from=TODAY + dt.timedelta(days=1)),)},
            id="not-yet-valid",
        ),
        pytest.param({"legal_basis": HIRING_BASIS}, id="a-basis-allowed-only-in-another-scenario"),
    ],
)
async def test_without_leave_a_person_check_is_permission_denied_audited_and_nothing_is_stored(
    federation: TestFederation, jiangsu: Node, leave: dict[str, object]
) -> None:
    error = await refused(federation, jiangsu, person_check(PENALIZED, **leave))  # type: ignore[arg-type]
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "person_ids[0]" in (error.details() or "") and PENALIZED not in (error.details() or "")
    rows = await audit_rows(jiangsu, "Check")
    assert [(r["status"], r["subject_id"]) for r in rows] == [("PERMISSION_DENIED", "")]
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
    assert jiangsu.pool is not None
    async with jiangsu.pool.acquire() as conn:
        tables = await conn.fetch(
            "SELECT schemaname, tablename FROM pg_tables"
            " WHERE schemaname <> 'information_schema' AND schemaname NOT LIKE 'pg\\_%'"
        )
        dump = []
        for table in tables:
            name = f'"{table["schemaname"]}"."{table["tablename"]}"'
            dump += [row[0] for row in await conn.fetch(f"SELECT t::text FROM {name} t")]
    text = "\n".join(dump)
    assert "audit_log" in {t["tablename"] for t in tables} and "check_answers" in {t["tablename"] for t in tables}
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for number in NUMBERS:
        for form in (number, number.encode().hex()):
            assert form not in text
            assert form not in logged
    assert jiangsu.pseudonymizer is not None
    assert jiangsu.pseudonymizer.pseudonym(SPOTLESS) in text  # what is kept instead


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
                    applied_on=TODAY.isoformat(),
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
