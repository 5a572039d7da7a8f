"""Natural persons in GetProfile and BatchGetProfiles (credit-use.md, Check rule 2), by a check's rule and code.

A person is looked up by resident ID number, which the answering node turns into the
federation's pseudonym before any other work; the profile is named by the pseudonym. A
person is answered only to a caller that may check (a government office, an operator)
and only with leave: the person's authorization for the requesting unit in the scenario,
valid today, or a legal basis the catalogue allows for persons in that scenario. One
person without leave refuses a whole batch.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from pathlib import Path

import grpc
import pytest

from credex.node.runtime import Node
from credex.v1 import authorization_pb2, lookup_pb2, lookup_pb2_grpc

from .callers import PUBLIC, audit_rows, client_channel, government_channel
from .conftest import TestFederation
from .test_check_persons import (
    COMPANY,
    DISPUTED,
    HIRING_BASIS,
    NUMBERS,
    OTHER_UNIT,
    PENALIZED,
    PERSON_DESK,
    SPOTLESS,
    UNIT,
    authorization,
    authorization_file,
    cli_options,
    jiangsu,
    jiangsu_with_desks,
    run_cli,
)

__all__ = ["jiangsu", "jiangsu_with_desks"]  # the fixtures, shared with the check's tests


def leave(
    *authorizations: authorization_pb2.Authorization,
    scenario: str = "政府采购",
    legal_basis: str = "依申请核查",
    unit: str = UNIT,
) -> lookup_pb2.PersonLeave:
    return lookup_pb2.PersonLeave(
        scenario=scenario, requesting_unit_uscc=unit, legal_basis=legal_basis, authorizations=list(authorizations)
    )


HIRING = leave(scenario="公职录用", legal_basis=HIRING_BASIS)
MISTYPED = "1" if COMPANY[-1] != "1" else "2"  # another check character


async def profile(
    federation: TestFederation, node: Node, request: lookup_pb2.GetProfileRequest, caller: str = ""
) -> lookup_pb2.Profile:
    channel = client_channel(federation, node, caller) if caller else government_channel(federation, node)
    async with channel:
        return await lookup_pb2_grpc.LookupServiceStub(channel).GetProfile(request, timeout=30)


async def batch(
    federation: TestFederation, node: Node, request: lookup_pb2.BatchGetProfilesRequest
) -> lookup_pb2.BatchGetProfilesResponse:
    async with government_channel(federation, node) as channel:
        return await lookup_pb2_grpc.LookupServiceStub(channel).BatchGetProfiles(request, timeout=30)


async def refused_with(awaitable: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await awaitable
    return raised.value


def pseudonym(node: Node, number: str) -> str:
    assert node.pseudonymizer is not None
    return node.pseudonymizer.pseudonym(number)


# ---------------------------------------------------------------- GetProfile


async def test_a_person_with_their_authorization_is_looked_up_under_their_pseudonym(
    federation: TestFederation, jiangsu: Node
) -> None:
    spaced = f" {PENALIZED[:6]} {PENALIZED[6:14]} {PENALIZED[14:].lower()} "
    request = lookup_pb2.GetProfileRequest(
        person_id=spaced, leave=leave(authorization(PENALIZED)), purpose="供应商资格审查"
    )
    answer = await profile(federation, jiangsu, request)
    assert answer.subject_id == pseudonym(jiangsu, PENALIZED)
    assert [(e.record.record_id, e.origin) for e in answer.entries] == [("320000-CF-P1", "320000")]
    assert answer.entries[0].record.subject.person_pseudonym == answer.subject_id
    (row,) = await audit_rows(jiangsu, "GetProfile")
    assert (row["subject_id"], row["status"], row["answered"]) == (answer.subject_id, "OK", 1)
    assert f"authorization held, document sha256:{bytes(range(32)).hex()[:16]}" in row["detail"]


async def test_a_legal_basis_the_catalogue_allows_for_the_scenario_looks_a_person_up_without_authorization(
    federation: TestFederation, jiangsu: Node
) -> None:
    answer = await profile(
        federation, jiangsu, lookup_pb2.GetProfileRequest(person_id=SPOTLESS, leave=HIRING, purpose="录用考察")
    )
    assert (answer.subject_id, list(answer.entries)) == (pseudonym(jiangsu, SPOTLESS), [])
    (row,) = await audit_rows(jiangsu, "GetProfile")
    assert "legal basis allowed for persons in the scenario" in row["detail"]


@pytest.mark.parametrize(
    "without",
    [
        pytest.param(lookup_pb2.PersonLeave(scenario="政府采购", requesting_unit_uscc=UNIT), id="no-leave-at-all"),
        pytest.param(leave(authorization(PENALIZED, grantee=OTHER_UNIT)), id="authorization-of-another-grantee"),
        pytest.param(leave(authorization(PENALIZED, scope="公职录用")), id="authorization-for-another-scenario"),
        pytest.param(leave(authorization(SPOTLESS)), id="another-persons-authorization"),
        pytest.param(leave(legal_basis=HIRING_BASIS), id="a-basis-allowed-only-in-another-scenario"),
    ],
)
async def test_without_leave_a_person_lookup_is_permission_denied_audited_without_the_person(
    federation: TestFederation, jiangsu: Node, without: lookup_pb2.PersonLeave
) -> None:
    error = await refused_with(
        profile(federation, jiangsu, lookup_pb2.GetProfileRequest(person_id=PENALIZED, leave=without, purpose="审查"))
    )
    details = error.details() or ""
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    # Refused on the person, or on an authorization presented for them that the node does not hold.
    assert ("person_id" in details or "leave.authorizations[0]" in details) and PENALIZED not in details
    rows = await audit_rows(jiangsu, "GetProfile")
    assert [(r["status"], r["subject_id"], r["answered"]) for r in rows] == [("PERMISSION_DENIED", "", 0)]


async def test_a_public_caller_is_refused_a_person_even_with_an_allowed_basis(
    federation: TestFederation, jiangsu: Node
) -> None:
    """Anyone can write an allowed legal basis into a request: only offices that may check are taken at their word."""
    request = lookup_pb2.GetProfileRequest(person_id=PENALIZED, leave=leave(authorization(PENALIZED)), purpose="看看")
    error = await refused_with(profile(federation, jiangsu, request, caller=PUBLIC))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and "government offices and operators" in (
        error.details() or ""
    )


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        pytest.param(
            lookup_pb2.GetProfileRequest(person_id=PENALIZED[:-1] + "1", leave=HIRING),
            "check character does not match",
            id="bad-check-character",
        ),
        pytest.param(
            lookup_pb2.GetProfileRequest(person_id=PENALIZED, uscc=COMPANY, leave=HIRING),
            "uscc or person_id, not both",
            id="both-a-uscc-and-a-person",
        ),
        pytest.param(
            lookup_pb2.GetProfileRequest(uscc=COMPANY, leave=HIRING),
            "send person_id with it",
            id="leave-without-person",
        ),
        pytest.param(
            lookup_pb2.GetProfileRequest(person_id=PENALIZED, leave=leave(scenario="买菜")),
            "leave.scenario",
            id="unknown-scenario",
        ),
        pytest.param(
            lookup_pb2.GetProfileRequest(person_id=PENALIZED, leave=leave(unit=SPOTLESS, legal_basis=HIRING_BASIS)),
            "leave.requesting_unit_uscc",
            id="an-id-number-as-the-unit",
        ),
        pytest.param(
            lookup_pb2.GetProfileRequest(
                person_id=PENALIZED, leave=leave(authorization_pb2.Authorization(authorization_id="A"))
            ),
            "leave.authorizations[0].document_sha256",
            id="malformed-authorization",
        ),
        pytest.param(
            lookup_pb2.GetProfileRequest(person_id=PENALIZED + "1", leave=HIRING),
            "must have 18 characters",
            id="too-long",
        ),
    ],
)
async def test_bad_person_lookups_are_invalid_and_neither_the_answer_nor_the_trail_repeats_the_number(
    federation: TestFederation, jiangsu: Node, request_: lookup_pb2.GetProfileRequest, words: str
) -> None:
    request_.purpose = "审查"
    error = await refused_with(profile(federation, jiangsu, request_))
    details = error.details() or ""
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and words in details, details
    audited = str([dict(r) for r in await audit_rows(jiangsu)])
    for number in NUMBERS:
        assert number[:14] not in details and number[:14] not in audited


async def test_a_node_without_the_pseudonym_key_cannot_look_persons_up(federation: TestFederation) -> None:
    node = await federation.start_node("320000", keys={"pseudonym_key": None})
    error = await refused_with(
        profile(federation, node, lookup_pb2.GetProfileRequest(person_id=PENALIZED, leave=HIRING, purpose="录用考察"))
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "pseudonym key" in (error.details() or "")


# ---------------------------------------------------------------- BatchGetProfiles


async def test_a_batch_answers_usccs_then_persons_in_request_order_each_audited_by_subject(
    federation: TestFederation, jiangsu: Node
) -> None:
    request = lookup_pb2.BatchGetProfilesRequest(
        usccs=[DISPUTED, COMPANY], person_ids=[SPOTLESS, PENALIZED], leave=HIRING, purpose="录用考察"
    )
    answer = await batch(federation, jiangsu, request)
    names = [DISPUTED, COMPANY, pseudonym(jiangsu, SPOTLESS), pseudonym(jiangsu, PENALIZED)]
    assert [p.subject_id for p in answer.profiles] == names
    assert [[e.record.record_id for e in p.entries] for p in answer.profiles] == [
        ["320000-HMD-9"],
        [],
        [],
        ["320000-CF-P1"],
    ]
    rows = await audit_rows(jiangsu, "BatchGetProfiles")
    assert [(r["subject_id"], r["answered"], r["status"]) for r in rows] == [
        (DISPUTED, 1, "OK"),
        (COMPANY, 0, "OK"),
        (names[2], 0, "OK"),
        (names[3], 1, "OK"),
    ]
    assert ["legal basis" in r["detail"] for r in rows] == [False, False, True, True]


async def test_one_person_without_leave_refuses_the_whole_batch_with_its_usccs(
    federation: TestFederation, jiangsu: Node
) -> None:
    """The refusal names the field, not whether anyone has records: nothing of the batch is answered."""
    request = lookup_pb2.BatchGetProfilesRequest(
        usccs=[DISPUTED],
        person_ids=[PENALIZED, SPOTLESS],
        leave=leave(authorization(PENALIZED)),
        purpose="供应商资格审查",
    )
    error = await refused_with(batch(federation, jiangsu, request))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and "person_ids[1]" in (error.details() or "")
    rows = await audit_rows(jiangsu, "BatchGetProfiles")
    assert [(r["status"], r["subject_id"], r["answered"]) for r in rows] == [("PERMISSION_DENIED", "", 0)]


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        pytest.param(
            lookup_pb2.BatchGetProfilesRequest(usccs=[DISPUTED], leave=HIRING),
            "send person_ids with it",
            id="leave-without-persons",
        ),
        pytest.param(
            lookup_pb2.BatchGetProfilesRequest(usccs=[COMPANY[:-1] + MISTYPED], person_ids=[SPOTLESS], leave=HIRING),
            "usccs[0]",
            id="a-bad-uscc-beside-persons",
        ),
        pytest.param(
            lookup_pb2.BatchGetProfilesRequest(usccs=[DISPUTED] * 600, person_ids=[SPOTLESS] * 401, leave=HIRING),
            "at most 1,000 subjects",
            id="over-the-limit-together",
        ),
        pytest.param(
            lookup_pb2.BatchGetProfilesRequest(usccs=[PENALIZED], person_ids=[SPOTLESS], leave=HIRING),
            "usccs[0]",
            id="a-person-among-the-usccs",
        ),
    ],
)
async def test_bad_batches_with_persons_are_invalid(
    federation: TestFederation, jiangsu: Node, request_: lookup_pb2.BatchGetProfilesRequest, words: str
) -> None:
    request_.purpose = "审查"
    error = await refused_with(batch(federation, jiangsu, request_))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and words in (error.details() or ""), error.details()
    assert PENALIZED[:14] not in (error.details() or "")


# ---------------------------------------------------------------- the command line


async def test_credex_lookup_person_shows_their_profile_verified_under_their_pseudonym(
    federation: TestFederation, jiangsu: Node, tmp_path: Path
) -> None:
    given = ["--person", PENALIZED, "--scenario", "政府采购", "--unit", UNIT, "--purpose", "供应商资格审查"]
    given += ["--authorization", str(authorization_file(tmp_path, PENALIZED))]
    (entry,) = json.loads((await run_cli("lookup", *given, "--json", *cli_options(federation, jiangsu))).stdout)
    assert (entry["verified"], entry["record"]["record_id"]) == (True, "320000-CF-P1")
    assert entry["record"]["subject"]["person_pseudonym"] == pseudonym(jiangsu, PENALIZED)
    table = (await run_cli("lookup", *given, *cli_options(federation, jiangsu))).output
    assert f"{pseudonym(jiangsu, PENALIZED)}: 1 records" in table and "verified" in table
    basis = ["--person", SPOTLESS, "--scenario", "公职录用", "--unit", UNIT, "--legal-basis", HIRING_BASIS]
    clear = (await run_cli("lookup", *basis, "--purpose", "录用", *cli_options(federation, jiangsu))).output
    assert f"{pseudonym(jiangsu, SPOTLESS)}: 0 records" in clear


async def test_credex_lookup_refuses_a_person_without_leave_and_mixed_arguments(
    federation: TestFederation, jiangsu: Node
) -> None:
    options = cli_options(federation, jiangsu)
    asked = ["--person", PENALIZED, "--scenario", "政府采购", "--unit", UNIT, "--purpose", "审查"]
    refused = await run_cli("lookup", *asked, *options, code=1)
    assert "GetProfile: PERMISSION_DENIED: person_id" in refused.output and PENALIZED not in refused.output
    both = await run_cli("lookup", COMPANY, "--person", PENALIZED, *options, code=2)
    assert "not both" in both.output
    stray = await run_cli("lookup", COMPANY, "--scenario", "政府采购", *options, code=2)
    assert "are for --person" in stray.output


async def test_a_person_looks_up_their_own_profile_without_leave_through_a_caller_bound_to_them(
    federation: TestFederation, jiangsu_with_desks: Node
) -> None:
    """A subject may see its own credit information: every record about them, government-shared ones too."""
    node = jiangsu_with_desks
    own = await profile(
        federation, node, lookup_pb2.GetProfileRequest(person_id=PENALIZED, purpose="查询本人信用信息"), PERSON_DESK
    )
    assert own.subject_id == pseudonym(node, PENALIZED)
    assert [e.record.record_id for e in own.entries] == ["320000-CF-P1"]  # shared with government only
    (row,) = await audit_rows(node, "GetProfile")
    assert (row["caller"], row["subject_id"], row["status"]) == (PERSON_DESK, own.subject_id, "OK")
    assert "the person themself" in row["detail"] and PENALIZED not in row["detail"]

    # Bound to one person, the caller is anyone else's public caller: no leave, nothing answered.
    error = await refused_with(
        profile(federation, node, lookup_pb2.GetProfileRequest(person_id=SPOTLESS, purpose="查询"), PERSON_DESK)
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and SPOTLESS not in (error.details() or "")
