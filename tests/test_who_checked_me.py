"""Who checked me (credit-use.md, Check rule 8; 上海市社会信用条例 第三十四条).

A subject, or an operator on its behalf, lists who checked it, when, for which scenario
and purpose, newest first and paged. Least privilege: a caller that speaks for a
company (``access.speaks_for``, bound to its certificate's key) sees that company's
checks and no one else's; government offices, peers and the public see none. Every
listing is audited.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from credex.crypto.tls import CertificateAuthority, spki_sha256
from credex.domain import uscc as uscc_codes
from credex.node.cli import app
from credex.node.config import AccessConfig
from credex.node.runtime import Node
from credex.v1 import check_pb2, check_pb2_grpc

from .callers import GOVERNMENT, PUBLIC, audit_rows, client_channel, government_channel, peer_channel
from .conftest import TestFederation

OPERATOR = "operator-desk"
DESK = "company-desk"  # the company's own desk, speaking for COMPANY
COMPANY = uscc_codes.make("91", "320500", "JT000021")
NEIGHBOUR = uscc_codes.make("91", "320500", "JT000022")
UNIT = uscc_codes.make("11", "320500", "HCG00001")
PURPOSES = ("第一次 供应商审查", "第二次 供应商审查", "第三次 供应商审查")


@pytest.fixture
async def jiangsu(federation: TestFederation) -> AsyncIterator[Node]:
    ca_dir = federation.layout.ca_dir
    CertificateAuthority.load(ca_dir).issue(DESK, []).write(ca_dir, DESK)
    node = await federation.start_node(
        "320000",
        access={
            "callers": {GOVERNMENT: "government", OPERATOR: "operator", DESK: "public"},
            "caller_keys": {DESK: spki_sha256((ca_dir / f"{DESK}.crt").read_bytes())},
            "speaks_for": {DESK: [COMPANY.lower()]},
        },
    )
    async with government_channel(federation, node) as channel:
        stub = check_pb2_grpc.CheckServiceStub(channel)
        for purpose in PURPOSES:
            await stub.Check(check_request(purpose, COMPANY), timeout=30)
        await stub.Check(check_request("邻居", NEIGHBOUR), timeout=30)
    yield node


def check_request(purpose: str, *usccs: str) -> check_pb2.CheckRequest:
    return check_pb2.CheckRequest(
        usccs=list(usccs), scenario="政府采购", requesting_unit_uscc=UNIT, purpose=purpose, legal_basis="政府采购法"
    )


async def checks_of(
    channel: grpc.aio.Channel, uscc: str, page_size: int = 0, page_token: str = ""
) -> check_pb2.ChecksOfSubject:
    request = check_pb2.ListChecksOfSubjectRequest(
        uscc=uscc, page_size=page_size, page_token=page_token, purpose="信用核查记录查询"
    )
    return await check_pb2_grpc.CheckServiceStub(channel).ListChecksOfSubject(request, timeout=30)


async def test_an_operator_lists_who_checked_a_subject_newest_first_in_pages_that_neither_repeat_nor_skip(
    federation: TestFederation, jiangsu: Node
) -> None:
    async with client_channel(federation, jiangsu, OPERATOR) as channel:
        first = await checks_of(channel, COMPANY, page_size=2)
        second = await checks_of(channel, COMPANY, page_size=2, page_token=first.next_page_token)
    listed = [*first.checks, *second.checks]
    assert [c.purpose for c in listed] == list(reversed(PURPOSES))
    assert first.next_page_token and not second.next_page_token
    assert {(c.caller, c.requesting_unit, c.scenario, c.legal_basis) for c in listed} == {
        (GOVERNMENT, UNIT, "政府采购", "政府采购法")
    }
    assert len({c.check_id for c in listed}) == 3 and all(c.checked_at for c in listed)
    rows = await audit_rows(jiangsu, "ListChecksOfSubject")
    assert [(r["caller"], r["subject_id"], r["answered"], r["status"]) for r in rows] == [
        (OPERATOR, COMPANY, 2, "OK"),
        (OPERATOR, COMPANY, 1, "OK"),
    ]


async def test_a_company_desk_sees_who_checked_its_company_and_nobody_elses(
    federation: TestFederation, jiangsu: Node
) -> None:
    async with client_channel(federation, jiangsu, DESK) as channel:
        own = await checks_of(channel, COMPANY)
        with pytest.raises(grpc.aio.AioRpcError) as other:
            await checks_of(channel, NEIGHBOUR)
    assert [c.purpose for c in own.checks] == list(reversed(PURPOSES))
    assert other.value.code() == grpc.StatusCode.PERMISSION_DENIED
    rows = await audit_rows(jiangsu, "ListChecksOfSubject")
    assert [(r["caller"], r["subject_id"], r["status"]) for r in rows] == [
        (DESK, COMPANY, "OK"),
        (DESK, NEIGHBOUR, "PERMISSION_DENIED"),
    ]


async def test_government_peers_public_and_a_stray_certificate_with_the_desks_name_are_refused(
    federation: TestFederation, jiangsu: Node, tmp_path: Path
) -> None:
    stray_dir = tmp_path / "stray"
    stray_dir.mkdir()
    CertificateAuthority.load(federation.layout.ca_dir).issue(DESK, []).write(stray_dir, DESK)
    ca = federation.layout.ca_dir / "ca.crt"
    channels = [
        government_channel(federation, jiangsu),
        peer_channel(federation, jiangsu, "310000"),
        client_channel(federation, jiangsu, PUBLIC),
        grpc.aio.secure_channel(
            f"127.0.0.1:{jiangsu.port}",
            grpc.ssl_channel_credentials(
                ca.read_bytes(), (stray_dir / f"{DESK}.key").read_bytes(), (stray_dir / f"{DESK}.crt").read_bytes()
            ),
        ),
    ]
    for made in channels:
        async with made as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await checks_of(channel, COMPANY)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    rows = await audit_rows(jiangsu, "ListChecksOfSubject")
    assert len(rows) == 4 and {r["status"] for r in rows} == {"PERMISSION_DENIED"}


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        (check_pb2.ListChecksOfSubjectRequest(uscc=""), "uscc is required"),
        (check_pb2.ListChecksOfSubjectRequest(uscc="not-a-code"), "uscc"),
        (check_pb2.ListChecksOfSubjectRequest(uscc=COMPANY, page_size=501), "page_size is at most 500"),
        (check_pb2.ListChecksOfSubjectRequest(uscc=COMPANY, page_token="garbage"), "page_token"),
    ],
)
async def test_bad_listings_are_refused_and_audited(
    federation: TestFederation, jiangsu: Node, request_: check_pb2.ListChecksOfSubjectRequest, words: str
) -> None:
    async with client_channel(federation, jiangsu, OPERATOR) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await check_pb2_grpc.CheckServiceStub(channel).ListChecksOfSubject(request_, timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in (refused.value.details() or "")
    assert [r["status"] for r in await audit_rows(jiangsu, "ListChecksOfSubject")] == ["INVALID_ARGUMENT"]


async def test_a_page_token_for_one_subject_does_not_page_another(federation: TestFederation, jiangsu: Node) -> None:
    async with client_channel(federation, jiangsu, OPERATOR) as channel:
        first = await checks_of(channel, COMPANY, page_size=1)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await checks_of(channel, NEIGHBOUR, page_token=first.next_page_token)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_speaks_for_needs_a_key_binding_and_valid_codes() -> None:
    with pytest.raises(ValidationError, match="does not bind to a key"):
        AccessConfig(callers={DESK: "public"}, speaks_for={DESK: [COMPANY]})
    with pytest.raises(ValidationError, match="speaks_for"):
        AccessConfig(callers={DESK: "public"}, caller_keys={DESK: "0" * 64}, speaks_for={DESK: ["91320500JT00002X"]})


async def test_credex_checks_of_prints_the_table_and_json(federation: TestFederation, jiangsu: Node) -> None:
    CertificateAuthority.load(federation.layout.ca_dir).issue(OPERATOR, []).write(federation.layout.ca_dir, OPERATOR)
    ca, cert, key = federation.layout.client_tls(OPERATOR)
    base = [
        "checks",
        "of",
        COMPANY,
        "--node",
        f"127.0.0.1:{jiangsu.port}",
        "--config",
        str(federation.layout.config_path("320000")),
        "--ca",
        str(ca),
        "--cert",
        str(cert),
        "--key",
        str(key),
    ]
    runner = CliRunner()
    table = await asyncio.to_thread(runner.invoke, app, [*base, "--page-size", "2"])
    assert table.exit_code == 0, table.output
    assert PURPOSES[2] in table.output and PURPOSES[0] not in table.output and "--page-token" in table.output
    as_json = await asyncio.to_thread(runner.invoke, app, [*base, "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert all(p in as_json.output for p in PURPOSES) and f'"uscc": "{COMPANY}"' in as_json.output
