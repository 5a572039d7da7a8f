"""The demo's repair scene: a Jiangsu penalty repaired at 320000 stops counting in a Shanghai check.

A Suzhou company's 一般 penalty (decided 200 days ago, so past its 3-month minimum) hits a
Shanghai procurement check; the company's platform files a repair on the Shanghai node,
which delivers it signed to Jiangsu; Jiangsu's credit centre accepts and approves it, which
signs a REPAIR into Jiangsu's log; Shanghai's next check no longer returns the penalty or
its measures, and the measures the procurement office reported applying are listed lifted
(node/demo/lifted_scene.py); every region confirms; and the repair decision (修复决定书) downloaded from
Jiangsu verifies with the trust bundle alone.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from rich.console import Console

from credex.domain import uscc as uscc_codes
from credex.domain.publicity import publicity_today
from credex.node.cases import Viewer, verify_decision
from credex.node.channels import open_channel
from credex.node.demo.federation import LocalFederation
from credex.node.demo.lifted_scene import report_applied, show_lifted
from credex.node.ledger.appender import Change
from credex.node.runtime import Node
from credex.v1 import case_pb2, case_pb2_grpc, check_pb2, check_pb2_grpc, lookup_pb2, record_pb2

REPAIRED_COMPANY = uscc_codes.make("91", "320500", "DM000002")
PROCUREMENT_OFFICE = uscc_codes.make("11", "310000", "HCG00001")
CREDIT_CENTRE = "江苏省公共信用信息中心"
_OPERATOR = Viewer("demo", sees_all=True)


def _penalty(today: dt.date) -> record_pb2.Record:
    decided = (today - dt.timedelta(days=200)).isoformat()
    return record_pb2.Record(
        record_id="320000-CF-DEMO-REPAIR-1",
        origin="320000",
        kind=record_pb2.KIND_PENALTY,
        subject=record_pb2.Subject(
            type=record_pb2.SUBJECT_TYPE_LEGAL_ENTITY, uscc=REPAIRED_COMPANY, name="苏州示例整改科技有限公司"
        ),
        decision_date=decided,
        sharing_level=record_pb2.SHARING_LEVEL_PUBLIC,
        publicity=record_pb2.PublicityWindow(start=decided, end=(today + dt.timedelta(days=365)).isoformat()),
        deciding_authority=record_pb2.Authority(name="苏州市市场监督管理局"),
        document_number="苏市监罚〔2026〕12号",
        penalty=record_pb2.PenaltyDetails(
            content="罚款 80000 元", fine_yuan="80000", severity=record_pb2.SEVERITY_GENERAL
        ),
    )


async def _until(what: str, check: Callable[[], Awaitable[bool]], timeout: float) -> float:
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what} did not happen within {timeout:.0f}s")
        await asyncio.sleep(0.2)
    return time.monotonic() - started


async def repair_scene(
    console: Console, federation: LocalFederation, nodes: dict[str, Node], workdir: Path, timeout: float = 60
) -> None:
    jiangsu, shanghai = nodes["320000"], nodes["310000"]
    record = _penalty(publicity_today())
    assert jiangsu.pool is not None and shanghai.pool is not None
    async with jiangsu.pool.acquire() as conn, conn.transaction():
        await jiangsu.ledger.append(conn, [Change.of(record)])

    async def status_at_shanghai() -> int:
        assert shanghai.pool is not None
        async with shanghai.pool.acquire() as conn:
            return int(await conn.fetchval("SELECT coalesce(max(status), 0) FROM records WHERE record_id = $1",
                                           record.record_id))  # fmt: skip

    await _until("Shanghai taking in the penalty", lambda: _is(status_at_shanghai, lookup_pb2.ENTRY_STATUS_ACTIVE),
                 timeout)  # fmt: skip
    console.rule("信用修复: a Jiangsu penalty repaired at its origin, in force nowhere after")
    ca, cert, key = federation.layout.client_tls()
    check = check_pb2.CheckRequest(
        usccs=[REPAIRED_COMPANY],
        scenario="政府采购",
        requesting_unit_uscc=PROCUREMENT_OFFICE,
        purpose="demo: 供应商资格审查",
    )
    async with open_channel(f"127.0.0.1:{shanghai.port}", ca=ca, cert=cert, key=key) as channel:
        checks = check_pb2_grpc.CheckServiceStub(channel)
        checked = await checks.Check(check, timeout=30)
        before = checked.subjects[0]
        console.print(
            f"Shanghai check of {REPAIRED_COMPANY}: {len(before.hits)} hit(s), measures"
            f" {[m.id for h in before.hits for m in h.measures]}"
        )
        await report_applied(console, checks, checked)
        cases = case_pb2_grpc.CaseServiceStub(channel)
        filed = await cases.FileRepair(
            case_pb2.FileRepairRequest(
                request_id="demo-repair-1",
                record_id=record.record_id,
                on_behalf_of=REPAIRED_COMPANY,
                proof_of_duty="苏州市财政非税收入缴款凭证 2026-000812",
                commitment="信用承诺书 (sha256:9f2c…)",
                statement="罚款已全额缴纳，违法行为已整改",
                purpose="demo: 信用修复申请",
            ),
            timeout=30,
        )
        case_id = filed.case.case_id
        console.print(f"the company's platform files repair {case_id} on the Shanghai node: {filed.case.eligibility}")

        async def arrived() -> bool:
            assert jiangsu.pool is not None
            async with jiangsu.pool.acquire() as conn:
                return bool(await conn.fetchval("SELECT 1 FROM cases WHERE case_id = $1", case_id))

        waited = await _until("delivery to Jiangsu", arrived, timeout)
        console.print(f"  delivered, signed by 310000, to its origin 320000 ({waited:.1f}s)")
        await jiangsu.cases.accept(case_id, True, "材料齐全，予以受理", False, CREDIT_CENTRE)
        opinion = "已履行行政处罚决定并作出信用承诺"
        approved = await jiangsu.cases.decide(case_id, "approved", opinion, [], "苏州市市场监督管理局", CREDIT_CENTRE)
        console.print(f"  Jiangsu approves: REPAIR signed into its log, 修复决定书 {approved.decision_number}")
        waited = await _until(
            "Shanghai applying the repair", lambda: _is(status_at_shanghai, lookup_pb2.ENTRY_STATUS_REPAIRED), timeout
        )
        after = (await checks.Check(check, timeout=30)).subjects[0]
        console.print(
            f"  Shanghai holds it as repaired {waited:.1f}s later; its check of {REPAIRED_COMPANY} now has"
            f" {len(after.hits)} hit(s) and no measures"
        )
        await show_lifted(console, checks, PROCUREMENT_OFFICE, record.record_id)

        async def done() -> bool:
            return (await jiangsu.cases.get(case_id, _OPERATOR)).state == "done"

        waited = await _until("every region confirming the repair", done, timeout)
        console.print(f"  every region's verified checkpoint of 320000 covers the REPAIR: case done ({waited:.1f}s)")

        async def decision_at_shanghai() -> bool:
            assert shanghai.pool is not None
            async with shanghai.pool.acquire() as conn:
                return bool(await conn.fetchval("SELECT decision IS NOT NULL FROM cases WHERE case_id = $1", case_id))

        # The platform downloads it where it filed: a case is read on the node it was filed on.
        await _until("Shanghai's copy of the case holding the decision", decision_at_shanghai, timeout)
        document = await cases.GetRepairDecision(
            case_pb2.GetCaseRequest(case_id=case_id, purpose="demo: 下载修复决定书"), timeout=30
        )
    path = workdir / "repair-decision.bin"
    path.write_bytes(document.envelope.SerializeToString())
    decision = verify_decision(path.read_bytes(), federation.bundle_now())
    console.print(
        f"  修复决定书 {decision.decision_number} written to {path}; verified offline with the trust bundle:"
        f" {decision.decision} on {decision.decided_on} by {decision.unit}"
        f" (`credex repair verify {path.name} --trust bundle.json`)"
    )


async def _is(read: Callable[[], Awaitable[int]], status: int) -> bool:
    return await read() == status
