"""Operators revoke, hide and unhide on a running node: the StandingService and ``credex revoke … --node``.

The same decisions as ``credex revoke --config`` on a stopped node (tests/test_revocation.py),
taken through the running node's own ledger; only the origin's operators may take them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from typer.testing import CliRunner, Result

from credex.node.cli import app
from credex.node.ledger.appender import Change
from credex.v1 import standing_pb2, standing_pb2_grpc

from .callers import GOVERNMENT, PUBLIC, audit_rows, client_channel, government_channel, peer_channel
from .cases_support import OPERATOR
from .conftest import TestFederation, eventually
from .test_revocation import (
    ACTIVE,
    HIDDEN,
    ORIGINS,
    REVOKED,
    Regions,
    black_list,
    check_hits,
    latest_event,
    log_state,
    public_entries,
    standing_everywhere,
    standings,
)

CALLERS = {"access": {"callers": {GOVERNMENT: "government", OPERATOR: "operator"}}}


@pytest.fixture
async def regions(federation: TestFederation) -> AsyncIterator[Regions]:
    nodes = {origin: await federation.start_node(origin, **CALLERS) for origin in ORIGINS}
    shanghai = nodes["310000"]
    assert shanghai.pool is not None
    async with shanghai.pool.acquire() as conn, conn.transaction():
        await shanghai.ledger.append(conn, [Change.of(black_list(n)) for n in (1, 2, 3)])
    for origin in ("320000", "330000"):
        await eventually(lambda origin=origin: standings(nodes[origin], [f"310000-HMD-rv{n}" for n in (1, 2, 3)]))
    yield Regions(federation, nodes)


def operator_options(regions: Regions, origin: str) -> list[str]:
    node = regions.nodes[origin]
    client_channel(regions.federation, node, OPERATOR)  # issues the certificate on first use
    ca, cert, key = regions.federation.layout.client_tls(OPERATOR)
    return ["--node", f"127.0.0.1:{node.port}", "--ca", str(ca), "--cert", str(cert), "--key", str(key)]


async def credex(*args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, app, list(args))


async def test_an_operator_revokes_on_the_running_origin_and_every_region_follows(regions: Regions) -> None:
    operator = operator_options(regions, "310000")
    done = await credex("revoke", "310000-HMD-rv1", "--reason", "行政复议决定撤销原认定", *operator)
    assert done.exit_code == 0, done.output
    assert "310000-HMD-rv1 revoked: event 310000#4 signed" in done.output

    await eventually(lambda: standing_everywhere(regions, "310000-HMD-rv1", REVOKED))
    for origin, node in regions.nodes.items():
        assert await public_entries(regions, node, 1) == [], origin
        assert await check_hits(regions, node, 1) == [], origin
        assert (await latest_event(node, "310000-HMD-rv1")).reason == "行政复议决定撤销原认定", origin
    rows = await eventually(lambda: audit_rows(regions.origin, "Revoke"))
    assert [(r["caller"], r["role"], r["subject_id"], r["status"]) for r in rows] == [
        (OPERATOR, "operator", "310000-HMD-rv1", "OK")
    ]
    again = await credex("revoke", "310000-HMD-rv1", "--reason", "重复", *operator)
    assert again.exit_code == 0 and "already revoked; nothing changed" in again.output


async def test_hiding_and_unhiding_on_the_running_origin_reach_every_region(regions: Regions) -> None:
    operator = operator_options(regions, "310000")
    hidden = await credex("hide", "310000-HMD-rv3", "--reason", "重整计划执行期间", *operator)
    assert hidden.exit_code == 0, hidden.output
    await eventually(lambda: standing_everywhere(regions, "310000-HMD-rv3", HIDDEN))
    shown = await credex("unhide", "310000-HMD-rv3", "--reason", "重整计划执行完毕", *operator)
    assert shown.exit_code == 0, shown.output
    await eventually(lambda: standing_everywhere(regions, "310000-HMD-rv3", ACTIVE))
    assert await check_hits(regions, regions.nodes["330000"], 3) == ["310000-HMD-rv3"]


@pytest.mark.parametrize("caller", ["government", "peer", "public"])
async def test_only_operators_may_decide_and_a_refusal_is_audited_and_changes_nothing(
    regions: Regions, caller: str
) -> None:
    origin = regions.origin
    before = await log_state(origin)
    channel = {
        "government": lambda: government_channel(regions.federation, origin),
        "peer": lambda: peer_channel(regions.federation, origin, "320000"),
        "public": lambda: client_channel(regions.federation, origin, PUBLIC),
    }[caller]()
    async with channel:
        stub = standing_pb2_grpc.StandingServiceStub(channel)
        for method in (stub.Revoke, stub.Hide, stub.Unhide):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await method(standing_pb2.StandingRequest(record_id="310000-HMD-rv2", reason="越权"), timeout=30)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "only this origin's operators" in (refused.value.details() or "")
    assert await log_state(origin) == before
    assert await standing_everywhere(regions, "310000-HMD-rv2", ACTIVE)

    async def denied() -> list[str] | None:
        rows = [r for r in await audit_rows(origin) if r["method"] in ("Revoke", "Hide", "Unhide")]
        return [r["status"] for r in rows] if len(rows) == 3 else None

    assert await eventually(denied) == ["PERMISSION_DENIED"] * 3


@pytest.mark.parametrize(
    ("origin", "record_id", "reason", "code", "says"),
    [
        ("320000", "310000-HMD-rv2", "越权撤销", grpc.StatusCode.FAILED_PRECONDITION, "only its origin can change it"),
        ("310000", "310000-HMD-nosuch", "撤销", grpc.StatusCode.NOT_FOUND, "no record 310000-HMD-nosuch"),
        ("310000", "310000-HMD-rv2", "   ", grpc.StatusCode.INVALID_ARGUMENT, "a reason is required"),
        ("310000", "310000-HMD-rv2", "", grpc.StatusCode.INVALID_ARGUMENT, "reason is required"),
        ("310000", "310000-HMD-rv2", "撤" * 501, grpc.StatusCode.INVALID_ARGUMENT, "at most 500"),
        ("310000", "310000-HMD-\x00", "撤销", grpc.StatusCode.INVALID_ARGUMENT, "control character"),
        ("310000", "", "撤销", grpc.StatusCode.INVALID_ARGUMENT, "record_id is required"),
    ],
)
async def test_an_operators_bad_request_is_refused_with_its_reason_and_nothing_changes(
    regions: Regions, origin: str, record_id: str, reason: str, code: grpc.StatusCode, says: str
) -> None:
    node = regions.nodes[origin]
    before = await log_state(node)
    async with client_channel(regions.federation, node, OPERATOR) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await standing_pb2_grpc.StandingServiceStub(channel).Revoke(
                standing_pb2.StandingRequest(record_id=record_id, reason=reason), timeout=30
            )
    assert refused.value.code() == code
    assert says in (refused.value.details() or "")
    assert await log_state(node) == before
    assert await standing_everywhere(regions, "310000-HMD-rv2", ACTIVE)


async def test_the_cli_needs_a_running_node_or_a_config() -> None:
    result = await credex("revoke", "310000-HMD-rv1", "--reason", "撤销")
    assert result.exit_code == 1
    assert "give --node ADDR" in result.output
