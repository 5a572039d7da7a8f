"""A three-region federation for case tests: Jiangsu (320000) publishes, Shanghai (310000) files, Zhejiang watches.

Jiangsu's records are taken in by both other nodes over the bus before a test starts.
Every node knows a government office and an operator desk by their certificates.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from credex.domain import uscc as uscc_codes
from credex.domain.publicity import publicity_today
from credex.node.ledger.appender import Change
from credex.node.runtime import Node
from credex.v1 import case_pb2, case_pb2_grpc, record_pb2

from .callers import GOVERNMENT, client_channel, government_channel
from .conftest import TestFederation, eventually

OPERATOR = "operator-desk"
CALLERS = {"access": {"callers": {GOVERNMENT: "government", OPERATOR: "operator"}}}
ENTITY = record_pb2.SUBJECT_TYPE_LEGAL_ENTITY
DECIDED = (publicity_today() - dt.timedelta(days=200)).isoformat()  # past 3 months, not yet a year


# The unit that provided Jiangsu's test records (数据来源单位): objections passed on go to it (部门审核).
SOURCE_UNIT = uscc_codes.make("11", "320500", "JCDW0001")


def subject(n: int) -> str:
    return uscc_codes.make("91", "320500", f"CX{n:06d}")


def penalty(
    n: int, severity: record_pb2.Severity.ValueType = record_pb2.SEVERITY_GENERAL, decided: str = DECIDED
) -> record_pb2.Record:
    return record_pb2.Record(
        record_id=f"320000-CF-{n}",
        origin="320000",
        kind=record_pb2.KIND_PENALTY,
        subject=record_pb2.Subject(type=ENTITY, uscc=subject(n), name=f"苏州案例{n}有限公司"),
        decision_date=decided,
        sharing_level=record_pb2.SHARING_LEVEL_PUBLIC,
        publicity=record_pb2.PublicityWindow(start=decided, end="2099-12-31"),
        deciding_authority=record_pb2.Authority(name="苏州市市场监督管理局"),
        source_unit=record_pb2.Authority(name="苏州市市场监督管理局", uscc=SOURCE_UNIT),
        penalty=record_pb2.PenaltyDetails(content="罚款 20000 元", fine_yuan="20000", severity=severity),
    )


def black_list(n: int) -> record_pb2.Record:
    return record_pb2.Record(
        record_id=f"320000-HMD-{n}",
        origin="320000",
        kind=record_pb2.KIND_BLACK_LIST,
        subject=record_pb2.Subject(type=ENTITY, uscc=subject(n), name=f"苏州名单{n}有限公司"),
        decision_date=DECIDED,
        sharing_level=record_pb2.SHARING_LEVEL_PUBLIC,
        publicity=record_pb2.PublicityWindow(start=DECIDED, end="2099-12-31"),
        black_list=record_pb2.BlackListDetails(
            list_name="严重失信主体名单", identifying_unit=record_pb2.Authority(name="江苏省发展和改革委员会")
        ),
    )


@dataclass
class Regions:
    federation: TestFederation
    jiangsu: Node
    shanghai: Node
    zhejiang: Node

    def nodes(self) -> list[Node]:
        return [self.jiangsu, self.shanghai, self.zhejiang]

    def filer(self, node: Node | None = None) -> case_pb2_grpc.CaseServiceAsyncStub:
        """The government office's stub on ``node`` (Shanghai by default)."""
        return case_pb2_grpc.CaseServiceStub(government_channel(self.federation, node or self.shanghai))

    def operator(self, node: Node | None = None) -> case_pb2_grpc.CaseServiceAsyncStub:
        """The operator desk's stub on ``node`` (Jiangsu, the origin, by default)."""
        return case_pb2_grpc.CaseServiceStub(client_channel(self.federation, node or self.jiangsu, OPERATOR))


async def publish(node: Node, records: list[record_pb2.Record], *others: Node) -> None:
    """Sign ``records`` at ``node`` and wait until every node of ``others`` holds them."""
    assert node.pool is not None
    async with node.pool.acquire() as conn, conn.transaction():
        await node.ledger.append(conn, [Change.of(r) for r in records])
    ids = [r.record_id for r in records]
    for other in others:
        await eventually(lambda other=other: count_records(other, ids), timeout=60)


async def count_records(node: Node, ids: list[str]) -> bool:
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        return bool(await conn.fetchval("SELECT count(*) = $2 FROM records WHERE record_id = ANY($1)", ids, len(ids)))


@pytest.fixture(name="regions")
async def regions_fixture(federation: TestFederation) -> AsyncIterator[Regions]:
    jiangsu = await federation.start_node("320000", **CALLERS)
    shanghai = await federation.start_node("310000", **CALLERS)
    zhejiang = await federation.start_node("330000", **CALLERS)
    yield Regions(federation, jiangsu, shanghai, zhejiang)


async def held(node: Node, record_id: str) -> dict[str, Any]:
    """What ``node`` holds of a record: status, disputed mark, seq and content."""
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT status, disputed, seq, record FROM records WHERE record_id = $1", record_id)
    assert row is not None, f"{record_id} not held"
    return {
        "status": row["status"],
        "disputed": row["disputed"],
        "seq": row["seq"],
        "record": record_pb2.Record.FromString(bytes(row["record"])),
    }


async def case_at(node: Node, case_id: str) -> dict[str, Any] | None:
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM cases WHERE case_id = $1", case_id)
    return dict(row) if row is not None else None


async def everywhere(regions: Regions, record_id: str, **expected: Any) -> None:
    """Wait until every node holds ``record_id`` with the ``expected`` status / disputed values."""
    for node in regions.nodes():

        async def matches(node: Node = node) -> bool:
            got = await held(node, record_id)
            return all(got[k] == v for k, v in expected.items())

        await eventually(matches, timeout=60)


async def refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value


def objection(record: record_pb2.Record, request_id: str, grounds: str = "error") -> case_pb2.FileObjectionRequest:
    return case_pb2.FileObjectionRequest(
        request_id=request_id,
        record_id=record.record_id,
        on_behalf_of=record.subject.uscc,
        grounds=grounds,
        statement="处罚信息有误",
        purpose="异议申请",
    )


def repair(record: record_pb2.Record, request_id: str, **fields: str) -> case_pb2.FileRepairRequest:
    given = {"proof_of_duty": "缴款凭证 2026-001", "commitment": "信用承诺书 sha256:ab12", **fields}
    return case_pb2.FileRepairRequest(
        request_id=request_id,
        record_id=record.record_id,
        on_behalf_of=record.subject.uscc,
        statement="已履行行政处罚决定",
        purpose="信用修复",
        **given,
    )


async def arrived(regions: Regions, case_id: str) -> dict[str, Any]:
    """Wait until the origin holds ``case_id``; its row."""

    async def there() -> dict[str, Any] | None:
        return await case_at(regions.jiangsu, case_id)

    row = await eventually(there, timeout=60)
    assert isinstance(row, dict)
    return row
